/* roxd seccomp: learn each selected container's system calls in the kernel, enforce a deny list
 * with SIGKILL, and spot syscalls that an applied seccomp profile denied.
 *
 * A separate bcc compilation unit from roxd.bpf.c: roxd/seccomp/learner.py loads it once and
 * attaches its groups only while they are needed (raw_syscalls costs every syscall on the host):
 *   arming   syscalls:sys_enter/exit_seccomp, sys_enter/exit_prctl, sched_process_fork/exit
 *   syscall  raw tracepoint sys_enter  (learning bitmap, enforce kill)
 *   exit     raw tracepoint sys_exit   (denials under an applied profile: -EPERM, not allowed)
 * The two per-syscall programs are raw tracepoints (BPF_PROG_TYPE_RAW_TRACEPOINT): they get the
 * syscall's registers and number directly, where a raw_syscalls:* perf tracepoint first copies
 * a record of six arguments for every syscall on the host (measured: ~20 ns more per syscall).
 *
 * The learning window. A task is "armed" from the moment it installs a seccomp filter
 * (seccomp(SECCOMP_SET_MODE_FILTER) or prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER)); children
 * inherit armed-ness at fork, as they inherit the filter. Only armed tasks are recorded. runc
 * init installs the container's filter in the container's cgroup just before its last setup
 * calls and the execve of the entrypoint, so the recorded set is exactly what a profile must
 * allow: runc's own calls before the filter (mount, pivot_root, ...) are never recorded.
 *
 * No race with userspace: when `provisional` is set (some image or label is selected for
 * learning), a filter installation in a cgroup that userspace has not classified yet creates a
 * PROVISIONAL state for that cgroup and arms the task at once; userspace later decides (learn
 * or forget). So a container is recorded from its filter installation even if roxd hears of the
 * container only afterwards.
 *
 * Cost: a task in a cgroup without state pays one array read at sys_enter and returns: the
 * cgroup gate has a bit (cgroup id mod 4096) set for every cgroup with a state, and only a set
 * bit leads to the hash lookup. Bits are set before their state exists (userspace: before
 * set_state; kernel: with a provisional insert) and cleared by userspace only while neither
 * per-syscall program is attached. No event crosses to userspace per syscall: userspace reads
 * the bitmaps. */
#include <uapi/linux/ptrace.h>

#define NR_WORDS 8 /* 512 syscall numbers; x86_64 uses < 512 */
#define CG_GATE_WORDS 64 /* 4096 bits, indexed by cgroup id mod 4096 */
#define NR_MAX (NR_WORDS * 64)

#define CG_PROVISIONAL 1 /* armed by a filter installation, not yet classified by userspace */
#define CG_LEARN 2       /* record armed tasks' syscalls into learned[] */
#define CG_ENFORCE 4     /* SIGKILL armed tasks making a syscall set in deny[] */
#define CG_WATCH 8       /* count -EPERM exits of syscalls not set in allowed[] */

#define SECCOMP_SET_MODE_FILTER 1
#define PR_SET_SECCOMP 22
#define SECCOMP_MODE_FILTER 2
#define EPERM 1
#define SIGKILL 9

struct cg_state {
    u32 flags;
    u32 first_tgid;   /* a task that armed this cgroup (for userspace to resolve it) */
    u64 armed_ns;     /* when the first task was armed here */
    u64 out_of_range; /* syscalls with numbers >= NR_MAX (x32, unknown) */
    u64 kills;
    u64 learned[NR_WORDS];
    u64 deny[NR_WORDS];
    u64 allowed[NR_WORDS];
};

struct arm {
    u64 cgroup_id; /* the cgroup the task was armed in */
};

struct event_key {
    u64 cgroup_id;
    u32 nr;
    u32 kind; /* 1 = killed (enforce), 2 = denied by seccomp (watch) */
};

struct event_val {
    u64 count;
    u64 last_ns;
    u32 last_pid;
    u32 pad;
};

struct settings {
    u32 provisional; /* arm tasks that install a filter in cgroups without state */
    u32 pad;
};

BPF_HASH(cg_states, u64, struct cg_state, 16384);
BPF_TABLE("lru_hash", u32, struct arm, armed, 65536);
BPF_TABLE("lru_hash", u32, u8, installing, 4096); /* tid -> newly armed at enter */
BPF_TABLE("lru_hash", struct event_key, struct event_val, sc_events, 16384);
BPF_ARRAY(settings, struct settings, 1);
BPF_ARRAY(cg_gate, u64, CG_GATE_WORDS);
BPF_PERCPU_ARRAY(counters, u64, 4); /* 0 arms, 1 kills, 2 denials, 3 out of range */

static __always_inline void count(u32 index)
{
    u64 *v = counters.lookup(&index);
    if (v)
        *v += 1;
}

static __always_inline u64 *cg_gate_word(u64 cg)
{
    u32 word = (cg >> 6) & (CG_GATE_WORDS - 1);
    return cg_gate.lookup(&word);
}

/* May cgroup cg have a state? (false: certainly not) */
static __always_inline int cg_gate_open(u64 cg)
{
    u64 *w = cg_gate_word(cg);
    return w && ((*w >> (cg & 63)) & 1);
}

static __always_inline void note_event(u64 cgroup_id, u32 nr, u32 kind, u32 pid)
{
    struct event_key key = {.cgroup_id = cgroup_id, .nr = nr, .kind = kind};
    struct event_val *v = sc_events.lookup(&key);
    if (v) {
        __sync_fetch_and_add(&v->count, 1);
        v->last_ns = bpf_ktime_get_ns();
        v->last_pid = pid;
        return;
    }
    struct event_val fresh = {.count = 1, .last_ns = bpf_ktime_get_ns(), .last_pid = pid};
    sc_events.update(&key, &fresh);
}

/* The task is about to install a seccomp filter: arm it (its tgid) in its current cgroup. */
static __always_inline void arm_current(void)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u32 tgid = pid_tgid >> 32;
    u32 tid = (u32)pid_tgid;
    if (armed.lookup(&tgid))
        return; /* already armed: a second filter changes nothing for us */
    u64 cg = bpf_get_current_cgroup_id();
    struct cg_state *st = cg_states.lookup(&cg);
    if (!st) {
        u32 zero = 0;
        struct settings *s = settings.lookup(&zero);
        if (!s || !s->provisional)
            return;
        struct cg_state fresh = {};
        fresh.flags = CG_PROVISIONAL;
        fresh.first_tgid = tgid;
        fresh.armed_ns = bpf_ktime_get_ns();
        u64 *gate = cg_gate_word(cg);
        if (gate)
            __sync_fetch_and_or(gate, 1ULL << (cg & 63));
        cg_states.insert(&cg, &fresh);
        st = cg_states.lookup(&cg);
        if (!st)
            return; /* map full: userspace sees the arms counter without a state */
    }
    if (!(st->flags & (CG_PROVISIONAL | CG_LEARN | CG_ENFORCE)))
        return;
    struct arm a = {.cgroup_id = cg};
    armed.update(&tgid, &a);
    u8 one = 1;
    installing.update(&tid, &one);
    if (!st->armed_ns)
        st->armed_ns = bpf_ktime_get_ns();
    if (!st->first_tgid)
        st->first_tgid = tgid;
    count(0);
}

/* The installation failed: undo an arm made at its entry. */
static __always_inline void settle_arm(long ret)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u32 tid = (u32)pid_tgid;
    u32 tgid = pid_tgid >> 32;
    if (!installing.lookup(&tid))
        return;
    installing.delete(&tid);
    if (ret < 0)
        armed.delete(&tgid);
}

/* Arm at the entry of the installing call, not at its exit: with SECCOMP_FILTER_FLAG_TSYNC the
 * filter reaches the task's other threads during the call, and their syscalls from then on
 * must be recorded too. The cost is that a few calls made by sibling threads in that window
 * may be recorded although they ran a hair before the filter: a superset, never a subset. */
TRACEPOINT_PROBE(syscalls, sys_enter_seccomp)
{
    if (args->op == SECCOMP_SET_MODE_FILTER)
        arm_current();
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_seccomp)
{
    settle_arm(args->ret);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_prctl)
{
    if (args->option == PR_SET_SECCOMP && args->arg2 == SECCOMP_MODE_FILTER)
        arm_current();
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_prctl)
{
    settle_arm(args->ret);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_fork)
{
    u32 parent = bpf_get_current_pid_tgid() >> 32;
    struct arm *a = armed.lookup(&parent);
    if (!a)
        return 0;
    u32 child = args->child_pid; /* a thread id for new threads: harmless, never a tgid */
    struct arm copy = *a;
    armed.update(&child, &copy);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exit)
{
    u32 tid = args->pid;
    armed.delete(&tid);
    return 0;
}

static __always_inline int bit_set(const u64 *words, u32 nr)
{
    return (words[nr >> 6] >> (nr & 63)) & 1;
}

/* sys_enter(struct pt_regs *regs, long id) */
RAW_TRACEPOINT_PROBE(sys_enter)
{
    u64 cg = bpf_get_current_cgroup_id();
    if (!cg_gate_open(cg))
        return 0; /* the only cost for everyone not selected */
    struct cg_state *st = cg_states.lookup(&cg);
    if (!st)
        return 0;
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    if (!armed.lookup(&tgid))
        return 0; /* before the filter installation (runc's own setup): not the workload */
    long id = (long)ctx->args[1];
    if (id < 0)
        return 0;
    if (id >= NR_MAX) {
        __sync_fetch_and_add(&st->out_of_range, 1);
        count(3);
        return 0;
    }
    u32 nr = id;
    u32 word = nr >> 6;
    u64 bit = 1ULL << (nr & 63);
    if (st->flags & (CG_LEARN | CG_PROVISIONAL)) {
        if (!(st->learned[word] & bit))
            __sync_fetch_and_or(&st->learned[word], bit);
    }
    if ((st->flags & CG_ENFORCE) && (st->deny[word] & bit)) {
        bpf_send_signal(SIGKILL);
        __sync_fetch_and_add(&st->kills, 1);
        note_event(cg, nr, 1, tgid);
        count(1);
    }
    return 0;
}

/* A syscall that seccomp denied never reached sys_enter (seccomp runs first) but does exit,
 * with -EPERM (the profile's defaultErrnoRet). A syscall the applied profile does not allow
 * can only fail that way by being denied, so -EPERM + not allowed = a denial. */
/* sys_exit(struct pt_regs *regs, long ret); the number is the registers' orig_ax */
RAW_TRACEPOINT_PROBE(sys_exit)
{
    if ((long)ctx->args[1] != -EPERM)
        return 0;
    u64 cg = bpf_get_current_cgroup_id();
    if (!cg_gate_open(cg))
        return 0;
    struct cg_state *st = cg_states.lookup(&cg);
    if (!st || !(st->flags & CG_WATCH))
        return 0;
    struct pt_regs *regs = (struct pt_regs *)ctx->args[0];
    long id = -1;
    bpf_probe_read_kernel(&id, sizeof(id), &regs->orig_ax);
    if (id < 0 || id >= NR_MAX)
        return 0;
    u32 nr = id;
    if (bit_set(st->allowed, nr))
        return 0;
    note_event(cg, nr, 2, bpf_get_current_pid_tgid() >> 32);
    count(2);
    return 0;
}
