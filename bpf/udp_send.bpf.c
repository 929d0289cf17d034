/* roxd: UDP datagrams sent without connect() — sendto()/sendmsg()/sendmmsg() with an address.
 *
 * A UDP socket needs no connect(): `sendto(fd, buf, len, 0, addr)` reaches any peer, and the
 * connect tracepoints never see it (DNS tunnels, C2 beacons, pool protocols over UDP). These
 * two programs are cgroup sock_addr hooks (BPF_CGROUP_UDP4_SENDMSG / UDP6_SENDMSG), attached
 * at the cgroup v2 root by roxd/sensor/udp_send.py: the kernel runs them only inside
 * udp_sendmsg()/udpv6_sendmsg() for a datagram that names its destination, before routing, so
 * no other system call pays anything (a syscalls:* tracepoint on sendto would put every system
 * call of the host on the slow entry path). They read only the uapi `struct bpf_sock_addr`
 * (no kernel struct layouts) and always return 1: they observe, they never refuse a send.
 *
 * An IPv6 socket sending to ::ffff:a.b.c.d goes through the kernel's IPv4 path, so the UDP4
 * hook sees it as IPv4; the UDP6 program also maps such an address, should a kernel hand it
 * over, so rules match it as IPv4 either way.
 *
 * Aggregated in the kernel: one record per (cgroup, peer address, port) per interval
 * (udp_send_interval[0] ns, set by userspace), the first datagram at once, then at most one per
 * interval carrying in `folded` how many datagrams were sent since the last record. A flood of
 * a million datagrams to one peer is a handful of records. The record is a connect_record
 * (REC_CONNECT) with via = VIA_SENDMSG, so every rule about a destination port or address sees
 * it as it sees a connect. */

#define IPPROTO_UDP_NR 17
#define IPPROTO_UDPLITE_NR 136
#define UDP_SEND_INTERVAL_DEFAULT_NS (10ULL * 1000000000ULL)

struct udp_send_key {
    u64 cgroup_id;
    u8 daddr[16]; /* IPv4 as ::ffff:a.b.c.d */
    u16 family;
    u16 dport;
    u32 pad;
};

struct udp_send_state {
    u64 next_report_ns; /* CLOCK_MONOTONIC: datagrams before this are only counted */
    u64 count;          /* counted since the last record */
};

BPF_TABLE("lru_hash", struct udp_send_key, struct udp_send_state, udp_send_agg, 16384);
BPF_ARRAY(udp_send_interval, u64, 1);

static __always_inline int udp_send_observe(u16 family, const u8 *addr16, u16 dport)
{
    stat_add(STAT_UDP_SEND_SEEN, 1);
    struct udp_send_key k = {};
    k.cgroup_id = bpf_get_current_cgroup_id();
    /* A cgroup whose network baseline is enforced (netenf.bpf.c, same object): its sends
     * to unlearned peers are refused and reported by that hook with the verdict; reporting
     * them here too would raise a second alert for the same send that could not say it was
     * blocked. Its sends to learned peers are its baseline. */
    if (netenf_cgroups.lookup(&k.cgroup_id))
        return 1;
    __builtin_memcpy(k.daddr, addr16, 16);
    k.family = family;
    k.dport = dport;

    u32 zero = 0;
    u64 *iv = udp_send_interval.lookup(&zero);
    u64 interval = (iv && *iv) ? *iv : UDP_SEND_INTERVAL_DEFAULT_NS;
    u64 now = bpf_ktime_get_ns();
    u64 folded = 0;
    struct udp_send_state *s = udp_send_agg.lookup(&k);
    if (s) {
        if (now < s->next_report_ns) {
            __sync_fetch_and_add(&s->count, 1);
            stat_add(STAT_UDP_SEND_FOLDED, 1);
            return 1;
        }
        folded = __sync_lock_test_and_set(&s->count, 0);
        s->next_report_ns = now + interval;
    } else {
        struct udp_send_state init = {.next_report_ns = now + interval};
        if (udp_send_agg.update(&k, &init) < 0)
            stat_add(STAT_MAP_UPDATE_FAILED, 1);
    }

    struct connect_record r = {};
    fill_header(&r.h, REC_CONNECT);
    r.ret = 0; /* the hook runs before routing: the send's own result is not known here */
    r.family = family;
    r.dport = dport;
    __builtin_memcpy(r.daddr, addr16, 16);
    r.sock_type = 2; /* SOCK_DGRAM */
    r.via = VIA_SENDMSG;
    r.folded = folded;
    /* r.key stays zero: userspace never marks these quiet, the aggregation above folds them */
    u64 wake = ring_flags(r.h.cgroup_id, 0, sizeof(r));
    if (events.ringbuf_output(&r, sizeof(r), wake) < 0) {
        stat_add(STAT_UDP_SEND_DROPPED, 1);
        cgroup_drop(r.h.cgroup_id);
        return 1;
    }
    stat_add(STAT_UDP_SEND_EMITTED, 1);
    return 1;
}

static __always_inline int udp_protocol(struct bpf_sock_addr *ctx)
{
    u32 proto = ctx->protocol;
    return proto == IPPROTO_UDP_NR || proto == IPPROTO_UDPLITE_NR;
}

int roxd_udp4_sendmsg(struct bpf_sock_addr *ctx)
{
    if (!udp_protocol(ctx))
        return 1;
    u8 a[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    u32 ip = ctx->user_ip4; /* network byte order */
    __builtin_memcpy(&a[12], &ip, 4);
    return udp_send_observe(AF_INET, a, bpf_ntohs((u16)ctx->user_port));
}

int roxd_udp6_sendmsg(struct bpf_sock_addr *ctx)
{
    if (!udp_protocol(ctx))
        return 1;
    u32 w[4];
    w[0] = ctx->user_ip6[0]; /* the context allows only 4-byte loads of user_ip6 */
    w[1] = ctx->user_ip6[1];
    w[2] = ctx->user_ip6[2];
    w[3] = ctx->user_ip6[3];
    u8 a[16];
    __builtin_memcpy(a, w, 16);
    /* ::ffff:a.b.c.d is IPv4 for every rule (the kernel sends it over IPv4) */
    u16 family = (w[0] == 0 && w[1] == 0 && w[2] == bpf_htonl(0xffff)) ? AF_INET : AF_INET6;
    return udp_send_observe(family, a, bpf_ntohs((u16)ctx->user_port));
}
