/* roxd: in-kernel enforcement of locked network baselines (issue 15).
 *
 * cgroup sock_addr programs (BPF_PROG_TYPE_CGROUP_SOCK_ADDR) attached by roxd (through a
 * bpf_link, so they go away with roxd) to the cgroup v2 root: they run for every connect()
 * (TCP and UDP) and every unconnected UDP sendmsg() of every process below it, in the
 * caller's context, before the kernel does anything with the address.
 *
 *   netenf_cgroups: cgroup id -> {workload number, has prefixes}, for the cgroups of locked
 *                   workloads in enforce mode (the only map a connect elsewhere touches: one
 *                   hash lookup)
 *   netenf_exact:   hash {workload, protocol, port, address} -> 1: learned peers that are
 *                   addresses (other workloads, the host): most of them, and a hash lookup
 *                   costs far less than a walk of a 50,000-entry trie (bench/netenf.py)
 *   netenf_allow:   LPM trie {workload, protocol, port, address prefix} -> 1: learned peers
 *                   that are prefixes (external), looked up only for workloads that have any
 * (protocol 0: any; IPv4 as ::ffff:a.b.c.d)
 *
 * A destination in no entry is refused: returning 0 makes connect()/sendmsg() fail with
 * EPERM, before any packet leaves. Loopback (127.0.0.0/8, ::1, ::ffff:127.0.0.0/104) always
 * passes: it is the container itself, never an anomaly in the baseline either. Each refusal
 * is counted and leaves a verdict for the calling thread (netenf_verdicts), which roxd reads
 * when the connect tracepoint reports that thread's connect failing with EPERM: the alert
 * then says the kernel refused it, and says so only then. Not in the events ring buffer: a
 * sock_addr program cannot know whether the connect record will be emitted, and the
 * tracepoint record already carries everything else.
 *
 * Compiled with the other programs (one bcc object) but loaded and attached on their own
 * (roxd/policy/netenf.py): a kernel that refuses them costs this feature, not the sensor. */

#include <uapi/linux/bpf.h>

#ifndef NETENF_CGROUPS
#define NETENF_CGROUPS 8192
#endif
#ifndef NETENF_ALLOW
#define NETENF_ALLOW 16384
#endif
#ifndef NETENF_EXACT
#define NETENF_EXACT 65536
#endif

struct netenf_key {
    u32 prefixlen;
    u8 data[4 + 1 + 2 + 16]; /* workload (host order), protocol, port (network order), addr */
};

struct netenf_cgroup {
    u32 workload;
    u32 has_prefixes; /* nonzero: some learned peer is a prefix, look in netenf_allow too */
};

struct netenf_verdict {
    u64 ktime_ns;
    u64 cgroup_id;
    u32 workload;
    u16 port; /* host order */
    u8 protocol;
    u8 op; /* 1 connect, 2 sendmsg */
    u8 addr[16];
};

enum {
    NETENF_CHECKED = 0, /* connects/sends in enforced cgroups */
    NETENF_ALLOWED,
    NETENF_REFUSED_CONNECT,
    NETENF_REFUSED_SENDMSG,
    NETENF_LOOPBACK,
    NETENF_MAX,
};

BPF_F_TABLE("hash", u64, struct netenf_cgroup, netenf_cgroups, NETENF_CGROUPS, BPF_F_NO_PREALLOC);
BPF_LPM_TRIE(netenf_allow, struct netenf_key, u8, NETENF_ALLOW);
/* the key bytes of netenf_key without the prefix length: one layout for both maps */
struct netenf_exact_key {
    u8 data[4 + 1 + 2 + 16];
};
/* not preallocated: its memory follows what is learned (50,000 addresses: bench/netenf.py) */
BPF_F_TABLE("hash", struct netenf_exact_key, u8, netenf_exact, NETENF_EXACT, BPF_F_NO_PREALLOC);
BPF_TABLE("lru_hash", u32, struct netenf_verdict, netenf_verdicts, 4096);
BPF_PERCPU_ARRAY(netenf_stats, u64, NETENF_MAX);

static __always_inline void netenf_count(u32 index)
{
    u64 *v = netenf_stats.lookup(&index);
    if (v)
        *v += 1;
}

/* The caller's cgroup is enforced: find the destination (already in k) in its allow-list,
 * or refuse it. */
static __always_inline int netenf_allowed(struct netenf_key *k, u32 has_prefixes)
{
    if (netenf_exact.lookup((struct netenf_exact_key *)k->data))
        return 1;
    return has_prefixes && netenf_allow.lookup(k);
}

static __always_inline int netenf_decide(struct netenf_key *k, u64 cg,
                                         struct netenf_cgroup *c, u8 op)
{
    u32 w = c->workload;
    u32 has_prefixes = c->has_prefixes;
    if (netenf_allowed(k, has_prefixes)) {
        netenf_count(NETENF_ALLOWED);
        return 1;
    }
    u8 protocol = k->data[4];
    k->data[4] = 0; /* learned with an unknown protocol: any */
    if (netenf_allowed(k, has_prefixes)) {
        netenf_count(NETENF_ALLOWED);
        return 1;
    }
    netenf_count(op == 1 ? NETENF_REFUSED_CONNECT : NETENF_REFUSED_SENDMSG);
    struct netenf_verdict v = {};
    v.ktime_ns = bpf_ktime_get_ns();
    v.cgroup_id = cg;
    v.workload = w;
    v.port = ((u16)k->data[5] << 8) | k->data[6];
    v.protocol = protocol;
    v.op = op;
    __builtin_memcpy(v.addr, &k->data[7], 16);
    u32 tid = (u32)bpf_get_current_pid_tgid();
    netenf_verdicts.update(&tid, &v);
    return 0; /* EPERM to the caller */
}

/* workload, protocol and port into k; 0 when the caller's cgroup is not enforced */
static __always_inline struct netenf_cgroup *netenf_start(struct bpf_sock_addr *ctx,
                                                          struct netenf_key *k, u64 cg)
{
    struct netenf_cgroup *workload = netenf_cgroups.lookup(&cg);
    if (!workload)
        return 0; /* not enforced: the one lookup everyone pays */
    netenf_count(NETENF_CHECKED);
    u32 w = workload->workload;
    __builtin_memcpy(k->data, &w, 4);
    u8 protocol = ctx->protocol;
    if (protocol == 0) /* some callers leave it 0: the socket type says which */
        protocol = ctx->type == 1 /* SOCK_STREAM */ ? IPPROTO_TCP : IPPROTO_UDP;
    k->data[4] = protocol;
    u32 port = ctx->user_port; /* network order in the low 16 bits */
    k->data[5] = port & 0xff;
    k->data[6] = (port >> 8) & 0xff;
    return workload;
}

/* The v4 and v6 programs read only their own family's fields: the verifier refuses
 * user_ip6 in a program attached for INET4 and the other way round. */
static __always_inline int netenf_check4(struct bpf_sock_addr *ctx, u8 op)
{
    u64 cg = bpf_get_current_cgroup_id();
    struct netenf_key k = {.prefixlen = sizeof(k.data) * 8};
    struct netenf_cgroup *workload = netenf_start(ctx, &k, cg);
    if (!workload)
        return 1;
    u32 ip4 = ctx->user_ip4; /* network order */
    if ((ip4 & 0xff) == 127) {
        netenf_count(NETENF_LOOPBACK);
        return 1;
    }
    k.data[7 + 10] = 0xff;
    k.data[7 + 11] = 0xff;
    __builtin_memcpy(&k.data[7 + 12], &ip4, 4);
    return netenf_decide(&k, cg, workload, op);
}

static __always_inline int netenf_check6(struct bpf_sock_addr *ctx, u8 op)
{
    u64 cg = bpf_get_current_cgroup_id();
    struct netenf_key k = {.prefixlen = sizeof(k.data) * 8};
    struct netenf_cgroup *workload = netenf_start(ctx, &k, cg);
    if (!workload)
        return 1;
    u32 a0 = ctx->user_ip6[0], a1 = ctx->user_ip6[1], a2 = ctx->user_ip6[2],
        a3 = ctx->user_ip6[3];
    if (a0 == 0 && a1 == 0 && ((a2 == 0 && a3 == bpf_htonl(1)) ||
                               (a2 == bpf_htonl(0xffff) && (a3 & 0xff) == 127))) {
        netenf_count(NETENF_LOOPBACK);
        return 1;
    }
    __builtin_memcpy(&k.data[7], &a0, 4);
    __builtin_memcpy(&k.data[7 + 4], &a1, 4);
    __builtin_memcpy(&k.data[7 + 8], &a2, 4);
    __builtin_memcpy(&k.data[7 + 12], &a3, 4);
    return netenf_decide(&k, cg, workload, op);
}

int netenf_connect4(struct bpf_sock_addr *ctx) { return netenf_check4(ctx, 1); }
int netenf_connect6(struct bpf_sock_addr *ctx) { return netenf_check6(ctx, 1); }
int netenf_sendmsg4(struct bpf_sock_addr *ctx) { return netenf_check4(ctx, 2); }
int netenf_sendmsg6(struct bpf_sock_addr *ctx) { return netenf_check6(ctx, 2); }
