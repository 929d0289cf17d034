/* roxd: process lifecycle — fork (parent map only), exec (argv joined, folded, killed in kernel
 * when a rule says so), exit (only for processes whose exec was reported).
 * Loaded by roxd/sensor/program.py together with connect.bpf.c; see common.h for the rules.
 *
 * Cost per exec+exit (issue 22): three programs run (fork, exec, exit) when the kernel has BTF.
 * roxd/sensor/btf.py then passes the offsets of task_struct.mm, task_struct.exit_code and
 * mm_struct.arg_start/arg_end (TASK_MM_OFF ...), and
 *   - argv is read at sched_process_exec from the new program's stack in one read: no
 *     sys_enter/sys_exit_execve programs, no in-flight map, and the strings are always resident
 *     (the kernel has just written them there);
 *   - the exit code is task->exit_code at sched_process_exit: no sys_enter_exit_group program.
 * Without BTF the older path runs: argv captured at sys_enter_execve* into inflight_args, the
 * exit code from sys_enter_exit_group. */

#define FNV_OFFSET 0xcbf29ce484222325ULL
#define FNV_PRIME 0x100000001b3ULL

#ifndef TASK_REAL_PARENT_OFF
/* Without BTF: tgid -> parent tgid, filled at fork: the kernel's answer to "who is my parent"
 * without reading task_struct. Thread creations land here too (keyed by the new tid) and are
 * removed when that thread exits. A plain hash, not an LRU: every entry is deleted at its
 * task's exit. With BTF the parent is read from task->real_parent instead (no fork program,
 * no map: issue 22), which also knows the parent of a process forked before roxd started. */
BPF_HASH(parents, u32, u32, 65536);
#endif
/* tgid -> exec generation (ktime of its last exec); part of the fold keys. Bit 0 says the
 * process had an exec reported (EXEC_GEN_REPORTED): only those exits are worth a record. One
 * map, one update per exec and one delete per exit, where a separate "reported" map cost an
 * update per reported exec and a lookup+delete per exit. */
BPF_HASH(exec_gen, u32, u64, 65536); /* deleted at exit: no LRU lock needed (see parents) */
#define EXEC_GEN_REPORTED 1ULL
/* a process that exec'd before (a shell's exec, a wrapper) has its entry: written in place
 * (bcc allows no map calls in macros: a function) */
static __always_inline void store_gen(u64 *old, u32 pid, u64 gen)
{
    if (old)
        *old = gen;
    else
        exec_gen.update(&pid, &gen);
}
#ifndef TASK_MM_OFF
/* tid -> argv captured at sys_enter_execve*, consumed by sched_process_exec */
BPF_TABLE("lru_hash", u32, struct exec_args, inflight_args, 1024);
#endif
#ifndef TASK_EXIT_CODE_OFF
/* tgid -> exit_group() code */
BPF_TABLE("lru_hash", u32, s32, exit_codes, 4096);
#endif
/* [0]: seed of the argv hash, random per roxd start (program.py): a command line cannot be
 * built offline to hash like one roxd marked quiet */
BPF_ARRAY(args_hash_seed, u64, 1);
BPF_TABLE("lru_hash", struct exec_fold_key, struct fold_state, exec_folds, 16384);

/* In-kernel kill on exec. Userspace fills these from the rule set:
 *   container_cgroups: cgroup ids that belong to containers;
 *   exec_kill: {cgroup id or a scope sentinel, hash of exe path or basename} -> rule slot. */
#define SCOPE_HOST 0xFFFFFFFFFFFFFFFFULL
#define SCOPE_ANY_CONTAINER 0xFFFFFFFFFFFFFFFEULL
struct kill_key {
    u64 cgroup_id;
    u64 hash;
};
BPF_HASH(container_cgroups, u64, u8, 16384);
BPF_HASH(exec_kill, struct kill_key, u32, 16384);
/* [0]: which kinds of exec_kill keys exist (KILL_HAS_*), written by userspace around every
 * change (a superset while it changes): an exec skips the lookups no entry could answer. */
#define KILL_HAS_CGROUP 1
#define KILL_HAS_CONTAINER 2
#define KILL_HAS_HOST 4
BPF_ARRAY(exec_kill_kinds, u32, 1);
/* Closing the new-container gap: container-scoped kill entries need the container's cgroup,
 * which roxd learns only from the container's first event. When some kill rule needs that
 * (hold_unknown[0] = 1), an exec in a cgroup roxd has not classified yet (not in
 * known_cgroups) is stopped with SIGSTOP before its first instruction; roxd classifies the
 * cgroup, then kills or continues the process. */
BPF_HASH(known_cgroups, u64, u8, 65536);

/* Records in a place (containers, the host) where a rule may enforce from userspace (kill by
 * pidfd, isolate, ...) must wake a sleeping roxd at once, not at its next batched poll
 * (ring_flags in roxd.bpf.c): ring_urgent[0] bit 0 for containers, bit 1 for the host;
 * roxd/policy/wakeups.py writes it from the rule set. The whole place, every record type
 * but exits: nothing is enforced on an exit, and an urgent exit was a second wake-up of roxd
 * per exec wherever execs come slower than a linger (a build: cc1's exit comes long after
 * its exec; measured, docs/performance.md "Exits wake nobody"). A batched exit is read with
 * the next record that wakes roxd or at its next timed poll (at most ring_batch_ms + 2 ms).
 * A cgroup roxd has not classified yet counts as both places. */
BPF_ARRAY(ring_urgent, u32, 1);

static __always_inline int urgent_record(u64 cg)
{
#if RING_BATCH_NS > 0
    u32 zero = 0;
    u32 *mask = ring_urgent.lookup(&zero);
    u32 where = mask ? *mask & 3 : 0;
    if (where == 0 || where == 3)
        return where != 0;
    if (container_cgroups.lookup(&cg))
        return where & 1;
    return (where & 2) || !known_cgroups.lookup(&cg);
#else
    return 0;
#endif
}
/* hold_unknown[0] is a lease, not a switch: the bpf_ktime_get_ns() until which holding is on.
 * roxd renews it every second while it needs the hold; a roxd that hangs, is stopped or dies
 * stops renewing, and within seconds no new exec is held (a held exec waits for a roxd that
 * will never answer). */
BPF_ARRAY(hold_unknown, u64, 1);

/* Process baselines in enforce mode (roxd/baselines, written by roxd/policy): the cgroups of
 * enforcing workloads -> {workload number, verdict}; {workload number, hash of the exe path as
 * executed} -> allowed. An exec in such a cgroup whose path is not allowed is killed like a
 * kill rule's, the verdict naming the baseline. */
struct baseline_cgroup {
    u32 workload;
    u32 verdict;
};
/* not preallocated: kernel memory follows what is learned, not the capacity (1,000 workloads x
 * 50 executables: 11.5 MB preallocated, measured by bench/netenf.py); lookups cost the same */
BPF_F_TABLE("hash", u64, struct baseline_cgroup, baseline_cgroups, 16384, BPF_F_NO_PREALLOC);
BPF_F_TABLE("hash", struct kill_key, u8, baseline_allow, 131072, BPF_F_NO_PREALLOC);

#ifndef TASK_MM_OFF
BPF_PERCPU_ARRAY(args_scratch, struct exec_args, 1);
#endif
BPF_PERCPU_ARRAY(exec_scratch, struct exec_record, 1);

static __always_inline void fill_header(struct event_header *h, u32 type)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u64 uid_gid = bpf_get_current_uid_gid();
    h->type = type;
    h->pid = pid_tgid >> 32;
    h->tid = (u32)pid_tgid;
    h->uid = (u32)uid_gid;
    h->gid = uid_gid >> 32;
    h->cgroup_id = bpf_get_current_cgroup_id();
    h->ktime_ns = bpf_ktime_get_ns();
    bpf_get_current_comm(&h->comm, sizeof(h->comm));
#ifdef TASK_REAL_PARENT_OFF
    /* the parent now (a process whose parent died has been re-parented to a subreaper or
     * init, as getppid() says) */
    u64 parent = 0;
    u32 ppid = 0;
    bpf_probe_read_kernel(&parent, sizeof(parent),
                          (void *)(bpf_get_current_task() + TASK_REAL_PARENT_OFF));
    if (parent)
        bpf_probe_read_kernel(&ppid, sizeof(ppid), (void *)(parent + TASK_TGID_OFF));
    h->ppid = ppid;
#else
    u32 *ppid = parents.lookup(&h->pid);
    h->ppid = ppid ? *ppid : 0;
#endif
}

#ifndef TASK_REAL_PARENT_OFF
TRACEPOINT_PROBE(sched, sched_process_fork)
{
    u32 child = args->child_pid;
    u32 parent = bpf_get_current_pid_tgid() >> 32;
    if (parents.update(&child, &parent) < 0)
        stat_add(STAT_MAP_UPDATE_FAILED, 1);
    stat_add(STAT_FORK_SEEN, 1);
    return 0;
}
static __always_inline void forget_parent(u32 *tid)
{
    parents.delete(tid);
}
#else
static __always_inline void forget_parent(u32 *tid) {}
#endif

#ifndef TASK_MM_OFF
static __always_inline int capture_argv(const char *const *argv)
{
    u32 zero = 0;
    struct exec_args *a = args_scratch.lookup(&zero);
    if (!a)
        return 0;
    a->argc = 0;
    a->len = 0;
    a->truncated = 0;
    u32 off = 0;
#pragma unroll
    for (int i = 0; i < MAX_ARGS; i++) {
        const char *arg = NULL;
        if (bpf_probe_read_user(&arg, sizeof(arg), &argv[i]) < 0) {
            /* a page the caller never touched cannot be faulted in here: say so, and let
             * userspace read /proc/<pid>/cmdline instead */
            a->truncated |= ARGS_UNREADABLE;
            goto done;
        }
        if (!arg)
            goto done;
        if (off > ARGS_BUF - ARG_CHUNK) {
            a->truncated |= ARGS_CUT;
            goto done;
        }
        long n = bpf_probe_read_user_str(&a->buf[off], ARG_CHUNK, arg);
        if (n < 0) {
            a->truncated |= ARGS_UNREADABLE;
            goto done;
        }
        if (n == 0)
            goto done;
        if (n == ARG_CHUNK)
            a->truncated |= ARGS_CUT; /* this argument was cut */
        off += n;
        a->argc++;
    }
    /* MAX_ARGS read: truncated if there is one more */
    {
        const char *arg = NULL;
        if (bpf_probe_read_user(&arg, sizeof(arg), &argv[MAX_ARGS]) == 0 && arg)
            a->truncated |= ARGS_CUT;
    }
done:
    a->len = off;
    u32 tid = (u32)bpf_get_current_pid_tgid();
    if (inflight_args.update(&tid, a) < 0)
        stat_add(STAT_MAP_UPDATE_FAILED, 1);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_execve)
{
    return capture_argv(args->argv);
}

TRACEPOINT_PROBE(syscalls, sys_enter_execveat)
{
    return capture_argv(args->argv);
}

/* A failed exec never reaches sched_process_exec: forget its argv. A successful one has
 * already consumed it there. */
TRACEPOINT_PROBE(syscalls, sys_exit_execve)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    inflight_args.delete(&tid);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_execveat)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    inflight_args.delete(&tid);
    return 0;
}
#endif /* !TASK_MM_OFF */

/* The fold key's hash of the command line, 8 bytes per step (a byte-wise FNV-1a cost ~8x
 * more on long command lines). Seeded per roxd start (args_hash_seed), finished with
 * murmur3's mixer. Bytes past len are stale scratch: the last word is masked. The index mask
 * keeps every read inside the buffer for the verifier; unrolling is off because clang's
 * unroll loses the bound. Kernel-only: userspace hands the key back as bytes. */
static __always_inline u64 hash_args(const char *buf, u32 len)
{
    u32 zero = 0;
    u64 *seed = args_hash_seed.lookup(&zero);
    u64 h = (seed ? *seed : 0) ^ FNV_OFFSET ^ len;
#pragma clang loop unroll(disable)
    for (u32 i = 0; i < ARGS_BUF / 8; i++) {
        if (i * 8 >= len)
            break;
        u64 w = *(const u64 *)&buf[(i * 8) & (ARGS_BUF - 8)];
        u32 rest = len - i * 8;
        if (rest < 8)
            w &= (1ULL << (rest * 8)) - 1;
        h = (h ^ w) * FNV_PRIME;
        h ^= h >> 29;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

/* The pid as the process's own pid namespace numbers it (a container's entrypoint is 1):
 * task->thread_pid->numbers[level].nr, read only for records that are emitted. Saves
 * userspace a /proc/<pid>/status read per container exec. */
static __always_inline u32 ns_vpid(void)
{
#ifdef TASK_THREAD_PID_OFF
    u64 task = bpf_get_current_task();
    u64 pid = 0;
    u32 level = 0;
    s32 nr = 0;
    if (bpf_probe_read_kernel(&pid, sizeof(pid), (void *)(task + TASK_THREAD_PID_OFF)) || !pid)
        return 0;
    if (bpf_probe_read_kernel(&level, sizeof(level), (void *)(pid + PID_LEVEL_OFF)) || level > 32)
        return 0;
    if (bpf_probe_read_kernel(&nr, sizeof(nr),
                              (void *)(pid + PID_NUMBERS_OFF + (u64)level * UPID_SIZE +
                                       UPID_NR_OFF)))
        return 0;
    return nr > 0 ? nr : 0;
#else
    return 0;
#endif
}

#ifdef TASK_MM_OFF
/* argv from the new program's stack: mm->arg_start..arg_end, the NUL-separated strings the
 * kernel just copied there (so always resident). One read for all of them. A script's argv is
 * the interpreter's, as /proc/<pid>/cmdline shows it ("/bin/sh /path/script arg"). */
static __always_inline void argv_from_mm(struct exec_record *r)
{
    u64 task = bpf_get_current_task();
    u64 mm = 0, start = 0, end = 0;
    r->argc = 0; /* userspace counts the strings */
    r->args_len = 0;
    r->args_truncated = 0;
    r->args_captured = 1;
    bpf_probe_read_kernel(&mm, sizeof(mm), (void *)(task + TASK_MM_OFF));
    if (!mm || bpf_probe_read_kernel(&start, sizeof(start), (void *)(mm + MM_ARG_START_OFF)) ||
        bpf_probe_read_kernel(&end, sizeof(end), (void *)(mm + MM_ARG_END_OFF)) || end <= start) {
        r->args_truncated = ARGS_UNREADABLE;
        return;
    }
    u64 len = end - start;
    if (len > ARGS_BUF) {
        len = ARGS_BUF;
        r->args_truncated = ARGS_CUT;
    }
    if (bpf_probe_read_user(r->args, (u32)len, (void *)start)) {
        r->args_truncated = ARGS_UNREADABLE;
        return;
    }
    r->args_len = len;
}
#endif

/* Fileless execution: the kernel names an execveat(fd, "", AT_EMPTY_PATH) "/dev/fd/N", and a
 * memfd run by path is /proc/<pid|self|thread-self>/fd/N. Either way no path on disk names the
 * program (memfd_create, a deleted file, fexecve). /proc/self/exe (busybox, runc) is not one. */
static __always_inline u8 exec_from_fd(const char *f)
{
    if (f[0] == '/' && f[1] == 'd' && f[2] == 'e' && f[3] == 'v' && f[4] == '/' && f[5] == 'f' &&
        f[6] == 'd' && f[7] == '/')
        return 1;
    if (!(f[0] == '/' && f[1] == 'p' && f[2] == 'r' && f[3] == 'o' && f[4] == 'c' && f[5] == '/'))
        return 0;
#pragma clang loop unroll(disable)
    for (u32 i = 6; i < 24; i++) {
        char c = f[i & 31];
        if (c == 0)
            return 0;
        if (c == '/')
            return f[(i + 1) & 31] == 'f' && f[(i + 2) & 31] == 'd' && f[(i + 3) & 31] == '/';
    }
    return 0;
}

static __always_inline u32 kill_lookup(u64 cgroup_id, u64 path_hash, u64 base_hash)
{
    struct kill_key k = {.cgroup_id = cgroup_id, .hash = path_hash};
    u32 *slot = exec_kill.lookup(&k);
    if (slot)
        return *slot;
    k.hash = base_hash;
    slot = exec_kill.lookup(&k);
    if (slot)
        return *slot;
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exec)
{
    u32 zero = 0;
    struct exec_record *r = exec_scratch.lookup(&zero);
    if (!r)
        return 0;
    fill_header(&r->h, REC_EXEC);
    stat_add(STAT_EXEC_SEEN, 1);

    u32 fn_off = args->data_loc_filename & 0xFFFF;
    long fn_len = bpf_probe_read_kernel_str(r->filename, sizeof(r->filename),
                                            (void *)args + fn_off);
    if (fn_len < 0)
        fn_len = 0;

    /* exe path and basename hashes in one pass (FNV-1a; mirrored in records.py) */
    u64 path_hash = FNV_OFFSET, base_hash = FNV_OFFSET;
#pragma clang loop unroll(disable)
    for (u32 i = 0; i < FILENAME_LEN; i++) {
        u8 c = r->filename[i & (FILENAME_LEN - 1)];
        if (c == 0)
            break;
        path_hash = (path_hash ^ c) * FNV_PRIME;
        base_hash = c == '/' ? FNV_OFFSET : (base_hash ^ c) * FNV_PRIME;
    }

    r->fileless = exec_from_fd(r->filename);
    if (r->fileless)
        stat_add(STAT_EXEC_FILELESS, 1);

    /* Kill before the new image runs a single user-space instruction. */
    u64 cg = r->h.cgroup_id;
    u32 *kinds_p = exec_kill_kinds.lookup(&zero);
    u32 kinds = kinds_p ? *kinds_p : 0;
    u32 rule = 0;
    if (kinds & KILL_HAS_CGROUP)
        rule = kill_lookup(cg, path_hash, base_hash);
    if (!rule && (kinds & (KILL_HAS_CONTAINER | KILL_HAS_HOST))) {
        u8 *is_container = container_cgroups.lookup(&cg);
        if (is_container ? (kinds & KILL_HAS_CONTAINER) : (kinds & KILL_HAS_HOST))
            rule = kill_lookup(is_container ? SCOPE_ANY_CONTAINER : SCOPE_HOST, path_hash,
                               base_hash);
    }
    if (!rule) {
        struct baseline_cgroup *bc = baseline_cgroups.lookup(&cg);
        if (bc) {
            struct kill_key ak = {.cgroup_id = bc->workload, .hash = path_hash};
            if (!baseline_allow.lookup(&ak))
                rule = bc->verdict;
        }
    }
    r->kill_rule = rule;
    r->held = 0;
    if (rule) {
        bpf_send_signal(9);
        stat_add(STAT_EXEC_KILLED, 1);
    } else {
        u64 *hold = hold_unknown.lookup(&zero);
        if (hold && *hold > r->h.ktime_ns && !known_cgroups.lookup(&cg)) {
            bpf_send_signal(19); /* SIGSTOP: delivered before the first user instruction */
            r->held = 1;
            stat_add(STAT_EXEC_HELD, 1);
        }
    }

#ifdef TASK_MM_OFF
    argv_from_mm(r);
#else
    u32 old_tid = args->old_pid;
    struct exec_args *a = inflight_args.lookup(&old_tid);
    if (a) {
        r->argc = a->argc;
        u32 len = a->len;
        if (len > ARGS_BUF)
            len = ARGS_BUF;
        r->args_len = len;
        r->args_truncated = a->truncated;
        r->args_captured = 1;
        if (len) /* only what was captured: most command lines are far below ARGS_BUF */
            bpf_probe_read_kernel(r->args, len, a->buf);
        inflight_args.delete(&old_tid);
    } else {
        r->argc = 0;
        r->args_len = 0;
        r->args_truncated = 0;
        r->args_captured = 0;
        stat_add(STAT_EXEC_NO_ARGS, 1);
    }
#endif

    u64 now = r->h.ktime_ns;
    u32 pid = r->h.pid;
    /* a process whose earlier image was reported keeps its exit worth reporting */
    u64 *old_gen = exec_gen.lookup(&pid);
    u64 gen = (now & ~EXEC_GEN_REPORTED) | (old_gen ? *old_gen & EXEC_GEN_REPORTED : 0);

    /* fold key: same container, same parent (and its image), same user, same command line */
    u64 *pgen = exec_gen.lookup(&r->h.ppid);
    r->key.cgroup_id = cg;
    r->key.parent_gen = pgen ? *pgen & ~EXEC_GEN_REPORTED : 0;
    r->key.filename_hash = path_hash;
    r->key.args_hash = hash_args(r->args, r->args_len);
    r->key.ppid = r->h.ppid;
    r->key.uid = r->h.uid;
    r->folded = 0;

    /* A kill or a hold is always reported: enforcement is never folded away. */
    if (!rule && !r->held) {
        struct fold_state *fs = exec_folds.lookup(&r->key);
        if (fs) {
            if (now < fs->quiet_until_ns) {
                __sync_fetch_and_add(&fs->folded, 1);
                stat_add(STAT_EXEC_FOLDED, 1);
                store_gen(old_gen, pid, gen);
                return 0;
            }
            r->folded = __sync_lock_test_and_set(&fs->folded, 0);
        }
    }

    r->vpid = ns_vpid();
    u32 size = offsetof(struct exec_record, args) + (r->args_len & (ARGS_BUF - 1));
    if (r->args_len >= ARGS_BUF)
        size = sizeof(*r);
    u64 wake = ring_flags(cg, r->kill_rule || r->held, size);
    if (events.ringbuf_output(r, size, wake) < 0) {
        stat_add(STAT_EXEC_DROPPED, 1);
        cgroup_drop(cg);
        if (r->held)
            bpf_send_signal(18); /* SIGCONT: roxd will never hear of it, never leave it stopped */
        store_gen(old_gen, pid, gen);
        return 0;
    }
    stat_add(STAT_EXEC_EMITTED, 1);
    gen |= EXEC_GEN_REPORTED;
    store_gen(old_gen, pid, gen);
    return 0;
}

#ifndef TASK_EXIT_CODE_OFF
TRACEPOINT_PROBE(syscalls, sys_enter_exit_group)
{
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    s32 code = args->error_code;
    exit_codes.update(&tgid, &code);
    return 0;
}
#endif

TRACEPOINT_PROBE(sched, sched_process_exit)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u32 tid = (u32)pid_tgid;
    u32 tgid = pid_tgid >> 32;
    if (!args->group_dead) {
        forget_parent(&tid); /* a thread, not the process */
        return 0;
    }
    stat_add(STAT_EXIT_SEEN, 1);

    u64 *gen = exec_gen.lookup(&tgid);
    int report = gen && (*gen & EXEC_GEN_REPORTED);
    if (gen)
        exec_gen.delete(&tgid);
#ifndef TASK_EXIT_CODE_OFF
    s32 *code = exit_codes.lookup(&tgid);
    if (code)
        exit_codes.delete(&tgid);
#endif
    if (!report) {
        stat_add(STAT_EXIT_SKIPPED, 1);
        forget_parent(&tid);
        return 0;
    }
    struct exit_record r = {};
#ifdef TASK_EXIT_CODE_OFF
    /* the wait status the parent will see: exit(n) is n << 8, a signal's death its number
     * (reported as no exit code, as before: there was no exit_group call) */
    s32 status = 0;
    bpf_probe_read_kernel(&status, sizeof(status),
                          (void *)(bpf_get_current_task() + TASK_EXIT_CODE_OFF));
    if ((status & 0x7f) == 0) {
        r.exit_code = (status >> 8) & 0xff;
        r.has_exit_code = 1;
    }
#else
    r.exit_code = code ? *code : 0;
    r.has_exit_code = code ? 1 : 0;
#endif
    fill_header(&r.h, REC_EXIT); /* reads the parent: delete it after */
    forget_parent(&tid);
    /* cgroup 0 to ring_flags: never urgent (see ring_urgent) */
    if (events.ringbuf_output(&r, sizeof(r), ring_flags(0, 0, sizeof(r))) < 0) {
        stat_add(STAT_EXIT_DROPPED, 1);
        cgroup_drop(r.h.cgroup_id);
        return 0;
    }
    stat_add(STAT_EXIT_EMITTED, 1);
    return 0;
}
