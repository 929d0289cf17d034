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

/* Batched wake-ups (docs/performance.md, "Batched ring-buffer wake-ups"). With flags 0 the
 * kernel wakes the consumer for every record written while it has caught up: a consumer that
 * keeps up sleeps in epoll_wait, so every record paid an irq_work and a scheduler wake-up of
 * a sleeping task (an IPI to an idle CPU; VM exits under a hypervisor), charged to the
 * program that wrote it. Now no record wakes a consumer that is awake (ring_consumer.awake:
 * it reads the ring again before it sleeps), and one that sleeps is woken by a record that
 * must be seen at once (urgent: an in-kernel kill or hold, or any record from a place where
 * a rule may enforce from userspace, process.bpf.c urgent_record), by the first record after
 * this CPU sent no wake-up for RING_BATCH_NS, or when this CPU wrote RING_BATCH_BYTES since
 * its last one.
 * The others are written with BPF_RB_NO_WAKEUP and read by the consumer's timed poll
 * (Sensor.poll), which after any record waits at most RING_BATCH_NS plus a margin.
 * RING_BATCH_NS 0: the kernel's own policy (flags 0), as before. */
#ifndef RING_BATCH_NS
#define RING_BATCH_NS 0
#endif
#ifndef RING_CPUS
#define RING_CPUS 64
#endif
/* the CPUs together wake the consumer before 1/8 of the ring is full */
#define RING_BATCH_BYTES ((u64)RINGBUF_PAGES * 4096 / 8 / RING_CPUS)

struct ring_wake_state {
    u64 last_ns; /* this CPU's last due wake-up (bpf_ktime_get_ns) */
    u64 bytes;   /* written by this CPU since */
};
/* per CPU: no atomics, no cache line bouncing between CPUs (a shared one cost the exec
 * program about a microsecond in an exec storm); the argument in Sensor.poll holds per CPU */
BPF_PERCPU_ARRAY(ring_wake, struct ring_wake_state, 1);
/* Shared with the consumer through mmap (no bpf() call per poll; should the mmap fail, it
 * stays 0 and `pending` is never cleared: every due wake-up is forced). */
struct ring_consumer_state {
    u32 awake;   /* 1 while the consumer is between two reads of the ring, 0 before it sleeps */
    u32 pending; /* a record was written without a wake-up while it slept; it clears this
                  * whenever it reads the ring */
};
BPF_F_TABLE("array", u32, struct ring_consumer_state, ring_consumer, 1, BPF_F_MMAPABLE);

static __always_inline int urgent_record(u64 cg); /* process.bpf.c */

/* cg: the record's cgroup (0: a record no rule reads, the inbound ones); known_urgent: the
 * program knows it must be seen at once (an in-kernel kill or hold) */
static __always_inline u64 ring_flags(u64 cg, int known_urgent, u32 size)
{
#if RING_BATCH_NS > 0
    u32 zero = 0;
    struct ring_consumer_state *c = ring_consumer.lookup(&zero);
    if (!c)
        return BPF_RB_FORCE_WAKEUP;
    if (c->awake)
        return BPF_RB_NO_WAKEUP; /* first: the urgency lookups are skipped */
    struct ring_wake_state *w = ring_wake.lookup(&zero);
    if (!w)
        return BPF_RB_FORCE_WAKEUP;
    u64 now = bpf_ktime_get_ns();
    w->bytes += size;
    if (known_urgent || now - w->last_ns >= RING_BATCH_NS || w->bytes >= RING_BATCH_BYTES ||
        (cg && urgent_record(cg))) {
        w->last_ns = now;
        w->bytes = 0;
        /* Forcing costs an irq_work even when a wake-up is already on its way. With nothing
         * written without a wake-up ahead of this record, the kernel's own rule (flags 0:
         * wake the consumer if it has read everything before this record) is enough, and
         * skips the wake-up a consumer still reading does not need (measured: forcing every
         * record of an exec storm cost the exit program 8.6 us against 4.8 us). */
        return c->pending ? BPF_RB_FORCE_WAKEUP : 0;
    }
    if (!c->pending)
        c->pending = 1; /* written only when it changes: the line stays shared */
    return BPF_RB_NO_WAKEUP;
#else
    return 0;
#endif
}
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
