/* roxd: inbound TCP connections (accepted) and listening sockets, per container.
 *
 * No syscall tracepoint (each one slows every system call of the host) and no kernel struct
 * read: the programs' contexts hand over the fields, and they run only on socket events.
 *   roxd_inbound_ops    BPF_PROG_TYPE_SOCK_OPS, attached to the cgroup v2 root (a bpf link,
 *                       so it goes away with roxd):
 *     TCP_LISTEN_CB          listen() in process context: the caller's cgroup, pid and comm
 *                            are stored on the listening socket (sk_storage with BPF_F_CLONE,
 *                            so every socket it accepts inherits them) and reported;
 *     PASSIVE_ESTABLISHED_CB an accepted connection (softirq: `current` is whoever ran, so
 *                            the cgroup comes from the listener's storage, never from
 *                            bpf_get_current_cgroup_id); folded per (cgroup, peer address,
 *                            local address and port) for ACCEPT_QUIET_NS after each report;
 *     STATE_CB               asked for on listeners only: LISTEN -> CLOSE is reported.
 *   roxd_inbound_bind4/6 BPF_CGROUP_INET{4,6}_POST_BIND: a UDP socket bound to a port (UDP
 *                       has no listen()); TCP binds are ignored (listen() says more).
 * A listener opened before roxd started has no storage: its accepts carry cgroup 0 and
 * userspace attributes them by the local address (roxd/sensor/inbound.py). */

#ifndef ROXD_NO_INBOUND /* [netmap] inbound = false, or a kernel that refused these maps */
#include <uapi/linux/bpf.h>

#define REC_ACCEPT 16
#define REC_LISTEN 17
/* inbound_record.op for REC_LISTEN */
#define LISTEN_OPEN 1
#define LISTEN_CLOSE 2
#define LISTEN_UDP_BIND 3
#define TCP_STATE_LISTEN 10 /* BPF_TCP_LISTEN */
#define INBOUND_SOCK_DGRAM 2 /* SOCK_DGRAM (an enum in linux/net.h, not a macro) */

#ifndef ACCEPT_QUIET_NS
#define ACCEPT_QUIET_NS 10000000000ULL /* 10 s: at most one record per edge and window */
#endif

/* per-CPU counters, mirrored in roxd/sensor/inbound.py INBOUND_STAT_NAMES */
enum inbound_stat {
    IN_ACCEPT_SEEN = 0,
    IN_ACCEPT_EMITTED,
    IN_ACCEPT_FOLDED,
    IN_ACCEPT_DROPPED,
    IN_ACCEPT_NO_OWNER, /* the listener predates roxd: no cgroup in its storage */
    IN_LISTEN_SEEN,
    IN_LISTEN_EMITTED,
    IN_LISTEN_DROPPED,
    IN_STAT_MAX,
};
BPF_PERCPU_ARRAY(inbound_stats, u64, IN_STAT_MAX);

static __always_inline void in_stat(u32 index)
{
    u64 *v = inbound_stats.lookup(&index);
    if (v)
        *v += 1;
}

struct inbound_owner {
    u64 cgroup_id;
    u32 pid;
    u32 uid;
    char comm[TASK_COMM_LEN];
};
BPF_F_TABLE("sk_storage", int, struct inbound_owner, inbound_owner, 0,
            BPF_F_NO_PREALLOC | BPF_F_CLONE);

struct accept_key {
    u64 cgroup_id;
    u8 raddr[16]; /* peer (IPv4 as ::ffff:a.b.c.d) */
    u8 laddr[16]; /* the local address it reached */
    u16 family;
    u16 lport;
    u32 pad;
};

struct inbound_record {
    struct event_header h; /* pid/uid/comm: the listener's owner (who called listen) */
    struct accept_key key;
    u64 folded;
    u64 cookie; /* the socket's cookie: a listener's open and close carry the same one */
    u16 rport;
    u8 op;       /* LISTEN_* for REC_LISTEN, 0 for REC_ACCEPT */
    u8 protocol; /* IPPROTO_TCP (6) or IPPROTO_UDP (17) */
    u32 pad;
};

BPF_TABLE("lru_hash", struct accept_key, struct fold_state, accept_folds, 16384);
/* never used by a program: gives tests the compiler's own layout (test_sensor_layout.py) */
BPF_ARRAY(inbound_rec_layout, struct inbound_record, 1);

static __always_inline void v4_mapped(u8 *out, u32 addr_be)
{
    __builtin_memset(out, 0, 10);
    out[10] = 0xff;
    out[11] = 0xff;
    __builtin_memcpy(&out[12], &addr_be, 4);
}

/* The verifier allows only 4-byte loads of the ctx's IPv6 words; volatile keeps clang from
 * merging two of them into one 8-byte load ("invalid bpf_context access"). */
static __always_inline void ctx_ip6(u8 *out, const u32 *words)
{
    u32 w[4];
    w[0] = *(volatile const u32 *)&words[0];
    w[1] = *(volatile const u32 *)&words[1];
    w[2] = *(volatile const u32 *)&words[2];
    w[3] = *(volatile const u32 *)&words[3];
    __builtin_memcpy(out, w, 16);
}

static __always_inline void in_emit(struct inbound_record *r, u32 emitted, u32 dropped)
{
    if (events.ringbuf_output(r, sizeof(*r), ring_flags(0, 0, sizeof(*r))) < 0) {
        in_stat(dropped);
        cgroup_drop(r->h.cgroup_id);
        return;
    }
    in_stat(emitted);
}

static __always_inline void owner_header(struct inbound_record *r, u32 type,
                                         struct inbound_owner *o)
{
    r->h.type = type;
    r->h.ktime_ns = bpf_ktime_get_ns();
    if (o) {
        r->h.pid = o->pid;
        r->h.uid = o->uid;
        r->h.cgroup_id = o->cgroup_id;
        __builtin_memcpy(r->h.comm, o->comm, TASK_COMM_LEN);
    }
}

int roxd_inbound_ops(struct bpf_sock_ops *skops)
{
    u32 op = skops->op;
    if (op != BPF_SOCK_OPS_TCP_LISTEN_CB && op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB &&
        op != BPF_SOCK_OPS_STATE_CB)
        return 1;
    struct bpf_sock *sk = skops->sk;
    if (!sk)
        return 1;
    u32 family = skops->family;
    if (family != AF_INET && family != AF_INET6)
        return 1;
    struct inbound_record r = {};
    r.protocol = IPPROTO_TCP;
    r.key.family = family;
    r.key.lport = skops->local_port; /* host byte order */
    if (family == AF_INET) {
        v4_mapped(r.key.laddr, skops->local_ip4);
        v4_mapped(r.key.raddr, skops->remote_ip4);
    } else {
        ctx_ip6(r.key.laddr, skops->local_ip6);
        ctx_ip6(r.key.raddr, skops->remote_ip6);
    }

    if (op == BPF_SOCK_OPS_TCP_LISTEN_CB) {
        /* process context: listen() */
        in_stat(IN_LISTEN_SEEN);
        struct inbound_owner *o = inbound_owner.sk_storage_get(sk, 0,
                                                               BPF_SK_STORAGE_GET_F_CREATE);
        struct inbound_owner now = {};
        u64 pid_tgid = bpf_get_current_pid_tgid();
        now.cgroup_id = bpf_get_current_cgroup_id();
        now.pid = pid_tgid >> 32;
        now.uid = (u32)bpf_get_current_uid_gid();
        bpf_get_current_comm(&now.comm, sizeof(now.comm));
        if (o)
            __builtin_memcpy(o, &now, sizeof(now));
        /* the listener's own state changes (its close) come back as STATE_CB */
        bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags |
                                             BPF_SOCK_OPS_STATE_CB_FLAG);
        owner_header(&r, REC_LISTEN, &now);
        r.h.tid = (u32)pid_tgid;
        r.op = LISTEN_OPEN;
        r.key.cgroup_id = now.cgroup_id;
        __builtin_memset(r.key.raddr, 0, 16);
        r.cookie = bpf_get_socket_cookie(skops);
        in_emit(&r, IN_LISTEN_EMITTED, IN_LISTEN_DROPPED);
        return 1;
    }

    struct inbound_owner *o = inbound_owner.sk_storage_get(sk, 0, 0);
    if (op == BPF_SOCK_OPS_STATE_CB) {
        /* only listeners ask for it; an accepted socket cloned the flag until
         * PASSIVE_ESTABLISHED cleared it: anything but LISTEN -> x is ignored */
        if (skops->args[0] != TCP_STATE_LISTEN)
            return 1;
        in_stat(IN_LISTEN_SEEN); /* seen = emitted + dropped, opens and closes alike */
        owner_header(&r, REC_LISTEN, o);
        r.op = LISTEN_CLOSE;
        r.key.cgroup_id = r.h.cgroup_id;
        __builtin_memset(r.key.raddr, 0, 16);
        r.cookie = bpf_get_socket_cookie(skops);
        in_emit(&r, IN_LISTEN_EMITTED, IN_LISTEN_DROPPED);
        return 1;
    }

    /* PASSIVE_ESTABLISHED_CB: the accepted socket (a clone of its listener) */
    bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags &
                                         ~BPF_SOCK_OPS_STATE_CB_FLAG);
    in_stat(IN_ACCEPT_SEEN);
    if (!o)
        in_stat(IN_ACCEPT_NO_OWNER);
    owner_header(&r, REC_ACCEPT, o);
    r.key.cgroup_id = r.h.cgroup_id;
    r.rport = (u16)bpf_ntohl(skops->remote_port);
    struct fold_state *fs = accept_folds.lookup(&r.key);
    if (fs) {
        if (r.h.ktime_ns < fs->quiet_until_ns) {
            __sync_fetch_and_add(&fs->folded, 1);
            in_stat(IN_ACCEPT_FOLDED);
            return 1;
        }
        r.folded = __sync_lock_test_and_set(&fs->folded, 0);
        fs->quiet_until_ns = r.h.ktime_ns + ACCEPT_QUIET_NS;
    } else {
        struct fold_state init = {.quiet_until_ns = r.h.ktime_ns + ACCEPT_QUIET_NS};
        accept_folds.update(&r.key, &init);
    }
    in_emit(&r, IN_ACCEPT_EMITTED, IN_ACCEPT_DROPPED);
    return 1;
}

static __always_inline int inbound_udp_bind(struct bpf_sock *ctx, u32 family)
{
    if (ctx->type != INBOUND_SOCK_DGRAM || ctx->protocol != IPPROTO_UDP)
        return 1;
    in_stat(IN_LISTEN_SEEN);
    struct inbound_record r = {};
    u64 pid_tgid = bpf_get_current_pid_tgid();
    r.h.type = REC_LISTEN;
    r.h.pid = pid_tgid >> 32;
    r.h.tid = (u32)pid_tgid;
    r.h.uid = (u32)bpf_get_current_uid_gid();
    r.h.cgroup_id = bpf_get_current_cgroup_id();
    r.h.ktime_ns = bpf_ktime_get_ns();
    bpf_get_current_comm(&r.h.comm, sizeof(r.h.comm));
    r.op = LISTEN_UDP_BIND;
    r.protocol = IPPROTO_UDP;
    r.key.cgroup_id = r.h.cgroup_id;
    r.key.family = family;
    r.key.lport = ctx->src_port; /* host byte order */
    if (family == AF_INET) {
        v4_mapped(r.key.laddr, ctx->src_ip4);
    } else {
        ctx_ip6(r.key.laddr, ctx->src_ip6);
    }
    r.cookie = bpf_get_socket_cookie(ctx);
    in_emit(&r, IN_LISTEN_EMITTED, IN_LISTEN_DROPPED);
    return 1; /* never refuses a bind */
}

int roxd_inbound_bind4(struct bpf_sock *ctx)
{
    return inbound_udp_bind(ctx, AF_INET);
}

int roxd_inbound_bind6(struct bpf_sock *ctx)
{
    return inbound_udp_bind(ctx, AF_INET6);
}
#endif /* ROXD_NO_INBOUND */
