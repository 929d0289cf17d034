/* roxd: outbound connect() on IPv4/IPv6 sockets, with its result (0, -EINPROGRESS,
 * -ECONNREFUSED, ...); an IPv4-mapped IPv6 destination (::ffff:a.b.c.d) is reported as IPv4.
 * The address is read from the caller's own sockaddr (user memory) at
 * sys_enter_connect and joined to the result at sys_exit_connect; unix and other families
 * are ignored at entry and cost one 2-byte read. */

struct connect_args {
    u16 family;
    u16 dport; /* host byte order */
    u8 daddr[16];
    u32 kill_rule; /* nonzero: SIGKILL sent at entry by this rule slot */
    u16 sock_type;
    u16 pad;
};

/* Socket types by (tgid, fd), recorded when socket() returns: the connect record says
 * whether it was TCP (SOCK_STREAM) or UDP (SOCK_DGRAM) without reading kernel structs (their
 * layout is not known here: no headers for the running kernel). Sockets made before roxd
 * started, or received from another process, read as 0 (unknown). */
BPF_TABLE("lru_hash", u32, u16, inflight_socket, 1024);
BPF_TABLE("lru_hash", u64, u16, socket_types, 16384);

TRACEPOINT_PROBE(syscalls, sys_enter_socket)
{
    if (args->family != AF_INET && args->family != AF_INET6)
        return 0;
    u32 tid = (u32)bpf_get_current_pid_tgid();
    u16 type = (u16)(args->type & 0xf); /* without SOCK_NONBLOCK / SOCK_CLOEXEC */
    inflight_socket.update(&tid, &type);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_socket)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 tid = (u32)id;
    u16 *type = inflight_socket.lookup(&tid);
    if (!type)
        return 0;
    if (args->ret >= 0) {
        u64 key = (id & 0xffffffff00000000ULL) | (u32)args->ret;
        socket_types.update(&key, type);
    }
    inflight_socket.delete(&tid);
    return 0;
}

static __always_inline u16 socket_type_of(int fd)
{
    u64 key = (bpf_get_current_pid_tgid() & 0xffffffff00000000ULL) | (u32)fd;
    u16 *type = socket_types.lookup(&key);
    return type ? *type : 0;
}


/* In-kernel kill at connect() entry. Userspace fills two LPM tries from the rule set:
 *   connect_kill_port: {scope, port, address prefix}   (rules naming a port)
 *   connect_kill_any:  {scope, address prefix}         (rules naming only addresses)
 * scope is a cgroup id or SCOPE_HOST / SCOPE_ANY_CONTAINER as for exec kills; addresses are
 * IPv6, IPv4 as ::ffff:a.b.c.d. The first 64 (+16) bits of every prefix are the exact scope
 * (and port); the address bits after them are the rule's network. */
struct cport_key {
    u32 prefixlen;
    u8 data[8 + 2 + 16];
};
struct cany_key {
    u32 prefixlen;
    u8 data[8 + 16];
};
BPF_LPM_TRIE(connect_kill_port, struct cport_key, u32, 4096);
BPF_LPM_TRIE(connect_kill_any, struct cany_key, u32, 4096);

static __always_inline u32 connect_kill_lookup(u64 scope, u16 port, const u8 *addr16)
{
    struct cport_key pk = {.prefixlen = (8 + 2 + 16) * 8};
    __builtin_memcpy(pk.data, &scope, 8);
    pk.data[8] = port >> 8;
    pk.data[9] = port & 0xff;
    __builtin_memcpy(&pk.data[10], addr16, 16);
    u32 *slot = connect_kill_port.lookup(&pk);
    if (slot)
        return *slot;
    struct cany_key ak = {.prefixlen = (8 + 16) * 8};
    __builtin_memcpy(ak.data, &scope, 8);
    __builtin_memcpy(&ak.data[8], addr16, 16);
    slot = connect_kill_any.lookup(&ak);
    return slot ? *slot : 0;
}

BPF_TABLE("lru_hash", u32, struct connect_args, inflight_connect, 4096);
BPF_TABLE("lru_hash", struct connect_fold_key, struct fold_state, connect_folds, 16384);

TRACEPOINT_PROBE(syscalls, sys_enter_connect)
{
    const struct sockaddr *uaddr = (const struct sockaddr *)args->uservaddr;
    u16 family = 0;
    if (bpf_probe_read_user(&family, sizeof(family), &uaddr->sa_family) < 0)
        return 0;
    struct connect_args c = {.family = family};
    if (family == AF_INET) {
        struct sockaddr_in sin = {};
        if (bpf_probe_read_user(&sin, sizeof(sin), uaddr) < 0)
            return 0;
        c.dport = bpf_ntohs(sin.sin_port);
        /* the v4-mapped form, as the kill tries store IPv4 rules */
        u8 mapped[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        __builtin_memcpy(&mapped[12], &sin.sin_addr.s_addr, 4);
        __builtin_memcpy(c.daddr, mapped, 16);
    } else if (family == AF_INET6) {
        struct sockaddr_in6 sin6 = {};
        if (bpf_probe_read_user(&sin6, sizeof(sin6), uaddr) < 0)
            return 0;
        c.dport = bpf_ntohs(sin6.sin6_port);
        __builtin_memcpy(c.daddr, &sin6.sin6_addr, 16);
        /* ::ffff:a.b.c.d from an IPv6 socket is an IPv4 connect (the kernel sends it over
         * IPv4): reported as IPv4, so rules on IPv4 networks and the kill tries (which store
         * IPv4 in this same mapped form) match it */
        u32 w[4];
        __builtin_memcpy(w, c.daddr, 16);
        if (w[0] == 0 && w[1] == 0 && w[2] == bpf_htonl(0xffff))
            c.family = AF_INET;
    } else {
        return 0;
    }
    /* Kill before the connect does anything: the signal is fatal on the way out of the
     * syscall, and a blocking connect is interrupted; no payload byte is ever written. */
    u64 cg = bpf_get_current_cgroup_id();
    u32 rule = connect_kill_lookup(cg, c.dport, c.daddr);
    if (!rule) {
        u8 *is_container = container_cgroups.lookup(&cg);
        rule = connect_kill_lookup(is_container ? SCOPE_ANY_CONTAINER : SCOPE_HOST, c.dport,
                                   c.daddr);
    }
    if (rule) {
        bpf_send_signal(9);
        stat_add(STAT_CONNECT_KILLED, 1);
    }
    c.kill_rule = rule;
    c.sock_type = socket_type_of(args->fd);
    u32 tid = (u32)bpf_get_current_pid_tgid();
    inflight_connect.update(&tid, &c);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_connect)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    struct connect_args *c = inflight_connect.lookup(&tid);
    if (!c)
        return 0;
    struct connect_record r = {};
    fill_header(&r.h, REC_CONNECT);
    stat_add(STAT_CONNECT_SEEN, 1);
    r.ret = args->ret;
    r.family = c->family;
    r.dport = c->dport;
    __builtin_memcpy(r.daddr, c->daddr, 16);
    r.kill_rule = c->kill_rule;
    r.sock_type = c->sock_type;
    inflight_connect.delete(&tid);

    u64 *gen = exec_gen.lookup(&r.h.pid);
    r.key.cgroup_id = r.h.cgroup_id;
    r.key.exec_gen = gen ? *gen : 0;
    r.key.pid = r.h.pid;
    r.key.uid = r.h.uid;
    __builtin_memcpy(r.key.daddr, r.daddr, 16);
    r.key.family = r.family;
    r.key.dport = r.dport;
    r.key.ret = r.ret;

    struct fold_state *fs = r.kill_rule ? NULL : connect_folds.lookup(&r.key);
    if (fs) {
        if (r.h.ktime_ns < fs->quiet_until_ns) {
            __sync_fetch_and_add(&fs->folded, 1);
            stat_add(STAT_CONNECT_FOLDED, 1);
            return 0;
        }
        r.folded = __sync_lock_test_and_set(&fs->folded, 0);
    }
    u64 wake = ring_flags(r.h.cgroup_id, r.kill_rule != 0, sizeof(r));
    if (events.ringbuf_output(&r, sizeof(r), wake) < 0) {
        stat_add(STAT_CONNECT_DROPPED, 1);
        cgroup_drop(r.h.cgroup_id);
        return 0;
    }
    stat_add(STAT_CONNECT_EMITTED, 1);
    return 0;
}
