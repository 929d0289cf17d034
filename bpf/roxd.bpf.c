/* roxd: the one compilation unit bcc loads. It holds what every program shares (the ring
 * buffer, the counters) and includes one file per concern:
 *   process.bpf.c  fork / exec / exit
 *   connect.bpf.c  outbound IPv4/IPv6 connect with its result
 *   syscalls.bpf.c sensitive system calls (ptrace, namespaces, mounts, bpf, setuid, ...)
 *   file.bpf.c     file access on the paths the rules watch
 *   netenf.bpf.c   cgroup connect hooks: locked network baselines in enforce mode
 *   inbound.bpf.c  accepted TCP connections and listening sockets (cgroup sock programs,
 *                  loaded and attached by roxd/sensor/inbound.py, not tracepoints)
 *   udp_send.bpf.c UDP datagrams sent to an address without connect (cgroup sock_addr hooks,
 *                  loaded and attached by roxd/sensor/udp_send.py, not at compile time)
 * Compiled once (about a second) instead of once per concern, so maps are shared for free. */
#include <uapi/linux/ptrace.h>
#include <linux/socket.h>
#include <linux/in.h>
#include <linux/in6.h>
#include "common.h"

#ifndef RINGBUF_PAGES
#define RINGBUF_PAGES 256 /* 1 MiB with 4 KiB pages */
#endif

BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
BPF_PERCPU_ARRAY(stats, u64, STAT_MAX);
/* cgroup id -> records lost to a full ring buffer, so a blind spot has a name */
BPF_TABLE("lru_hash", u64, u64, cgroup_drops, 4096);
/* Never read or written by a program. bcc builds a ctypes class for every map's key and value
 * (`bpf[name].Leaf`); exit and connect records are built on the stack and are in no other
 * map, so these give tests/kernel/test_sensor_layout.py the compiler's own layout of them to
 * compare with records.py. One entry each: 208 bytes. */
BPF_ARRAY(exit_rec_layout, struct exit_record, 1);
BPF_ARRAY(connect_rec_layout, struct connect_record, 1);

static __always_inline void stat_add(u32 index, u64 n)
{
    u64 *v = stats.lookup(&index);
    if (v)
        *v += n; /* per-CPU slot: no atomics needed */
}

static __always_inline void cgroup_drop(u64 cgroup_id)
{
    u64 one = 1;
    u64 *v = cgroup_drops.lookup(&cgroup_id);
    if (v)
        __sync_fetch_and_add(v, 1);
    else
        cgroup_drops.update(&cgroup_id, &one);
}

#include "process.bpf.c"
#include "connect.bpf.c"
#include "syscalls.bpf.c"
#include "file.bpf.c"
#include "netenf.bpf.c"
#include "inbound.bpf.c"
#include "udp_send.bpf.c"
