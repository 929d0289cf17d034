/* roxd: sensitive system calls — ptrace, namespaces, mounts, modules, bpf, credentials, memfd,
 * setuid-bit chmod, ... — each with its decoded arguments and its result.
 *
 * Per-syscall tracepoints (never raw_syscalls): a sys_enter probe filters in the kernel and
 * captures the arguments that matter (user strings included) into inflight_syscall[tid]; the
 * sys_exit probe joins the return value, so a failed attempt is reported as an attempt.
 *
 * What reaches userspace is only what a rule can care about:
 *   - syscall_watch[id] is set by userspace from the rule set (RuleSet.syscall_watch_set());
 *     an unwatched syscall costs one array lookup;
 *   - argument filters: clone/clone3 only with namespace flags, chmod family only when the mode
 *     sets setuid/setgid, ptrace only for attach/seize/traceme/poke, personality not for the
 *     0xffffffff query;
 *   - roxd's own calls (bpf() all day long) are skipped by tgid (ROXD_TGID, set at load time);
 *   - folding as for exec/connect: {cgroup, tgid, exec generation, uid, syscall, two arguments,
 *     strings, result} keys marked quiet by userspace are only counted.
 * Syscalls this kernel does not have (no CONFIG_MODULES, no kexec) are compiled only when
 * tracefs lists them: the loader defines HAVE_TP_<name> for each optional probe it finds. */

#include <linux/capability.h> /* cap_user_header_t, cap_user_data_t in capset's arguments */
typedef s32 key_serial_t;       /* add_key's ringid; the uapi headers do not define it */

#ifndef ROXD_TGID
#define ROXD_TGID 0
#endif

#define NS_CLONE_FLAGS 0x7E020080ULL /* CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET|NEWTIME */
#define SETID_MODE_BITS 06000

BPF_ARRAY(syscall_watch, u8, SC_WATCH_SLOTS);
BPF_TABLE("lru_hash", u32, struct syscall_capture, inflight_syscall, 1024);
BPF_TABLE("lru_hash", struct syscall_fold_key, struct fold_state, syscall_folds, 8192);
BPF_PERCPU_ARRAY(syscall_scratch, struct syscall_capture, 1);
BPF_PERCPU_ARRAY(syscall_rec_scratch, struct syscall_record, 1);

static __always_inline struct syscall_capture *sc_begin(u32 sc)
{
    if ((bpf_get_current_pid_tgid() >> 32) == ROXD_TGID)
        return NULL;
    u32 slot = sc;
    u8 *on = syscall_watch.lookup(&slot);
    if (!on || !*on)
        return NULL;
    u32 zero = 0;
    struct syscall_capture *c = syscall_scratch.lookup(&zero);
    if (!c)
        return NULL;
    __builtin_memset(c, 0, sizeof(*c));
    c->sc = sc;
    return c;
}

static __always_inline int sc_commit(struct syscall_capture *c)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    stat_add(STAT_SYSCALL_SEEN, 1);
    if (inflight_syscall.update(&tid, c) < 0)
        stat_add(STAT_MAP_UPDATE_FAILED, 1);
    return 0;
}

/* The common probe body: capture up to four numeric arguments and no strings (an argument not
 * given stays 0, as sc_begin zeroes the capture). */
static __always_inline int sc_args(u32 sc, u64 a0, u64 a1, u64 a2, u64 a3)
{
    struct syscall_capture *c = sc_begin(sc);
    if (!c)
        return 0;
    c->args[0] = a0;
    c->args[1] = a1;
    c->args[2] = a2;
    c->args[3] = a3;
    return sc_commit(c);
}

static __always_inline void sc_str0(struct syscall_capture *c, const char *u)
{
    if (u)
        bpf_probe_read_user_str(&c->str[0], SC_STR0, u);
}

static __always_inline void sc_str1(struct syscall_capture *c, const char *u)
{
    if (u)
        bpf_probe_read_user_str(&c->str[SC_STR0], SC_STR1, u);
}

static __always_inline void sc_str2(struct syscall_capture *c, const char *u)
{
    if (u)
        bpf_probe_read_user_str(&c->str[SC_STR0 + SC_STR1], SC_STR_LEN - SC_STR0 - SC_STR1, u);
}

/* `blind`: the syscall id of an unfiltered watched syscall, 0 for the argument-filtered ones.
 * A seccomp filter that returns an errno (Docker's default profile for mount, unshare, bpf,
 * ...) stops the syscall before sys_enter tracepoints run, but sys_exit still runs: an exit
 * with -EPERM and no capture is such an attempt, reported with its arguments unknown
 * (c.args_unknown = 1). Filtered syscalls cannot tell this apart from a filtered-out call. */
static __always_inline int sc_exit(long ret, u32 blind)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    struct syscall_capture *c = inflight_syscall.lookup(&tid);
    if (!c) {
        if (!blind || ret != -1 /* -EPERM */)
            return 0;
        c = sc_begin(blind);
        if (!c)
            return 0;
        c->args_unknown = 1;
        stat_add(STAT_SYSCALL_SEEN, 1);
    }
    u32 zero = 0;
    struct syscall_record *r = syscall_rec_scratch.lookup(&zero);
    if (!r) {
        inflight_syscall.delete(&tid);
        return 0;
    }
    fill_header(&r->h, REC_SYSCALL);
    bpf_probe_read_kernel(&r->c, sizeof(r->c), c);
    if (!c->args_unknown)
        inflight_syscall.delete(&tid);
    r->ret = ret;
    r->folded = 0;

    u64 h = FNV_OFFSET;
#pragma clang loop unroll(disable)
    for (u32 i = 0; i < SC_STR_LEN; i++) {
        h ^= (u8)r->c.str[i & (SC_STR_LEN - 1)];
        h *= FNV_PRIME;
    }
    u64 *gen = exec_gen.lookup(&r->h.pid);
    r->key.cgroup_id = r->h.cgroup_id;
    r->key.exec_gen = gen ? *gen : 0;
    r->key.arg0 = r->c.args[0];
    r->key.arg1 = r->c.args[1];
    r->key.str_hash = h;
    r->key.pid = r->h.pid;
    r->key.uid = r->h.uid;
    r->key.sc = r->c.sc;
    r->key.ret = ret < 0 ? (s32)ret : 0;

    struct fold_state *fs = syscall_folds.lookup(&r->key);
    if (fs) {
        if (r->h.ktime_ns < fs->quiet_until_ns) {
            __sync_fetch_and_add(&fs->folded, 1);
            stat_add(STAT_SYSCALL_FOLDED, 1);
            return 0;
        }
        r->folded = __sync_lock_test_and_set(&fs->folded, 0);
    }
    u64 wake = ring_flags(r->h.cgroup_id, 0, sizeof(*r));
    if (events.ringbuf_output(r, sizeof(*r), wake) < 0) {
        stat_add(STAT_SYSCALL_DROPPED, 1);
        cgroup_drop(r->h.cgroup_id);
        return 0;
    }
    stat_add(STAT_SYSCALL_EMITTED, 1);
    return 0;
}

#define SC_EXIT(name)                                                                          \
    TRACEPOINT_PROBE(syscalls, sys_exit_##name) { return sc_exit(args->ret, 0); }
#define SC_EXIT_B(name, id)                                                                    \
    TRACEPOINT_PROBE(syscalls, sys_exit_##name) { return sc_exit(args->ret, id); }

/* ---- process access */

#define PTRACE_TRACEME 0
#define PTRACE_POKETEXT 4
#define PTRACE_POKEDATA 5
#define PTRACE_POKEUSR 6
#define PTRACE_ATTACH 16
#define PTRACE_SEIZE 0x4206

TRACEPOINT_PROBE(syscalls, sys_enter_ptrace)
{
    long req = args->request;
    if (req != PTRACE_ATTACH && req != PTRACE_SEIZE && req != PTRACE_TRACEME &&
        req != PTRACE_POKETEXT && req != PTRACE_POKEDATA && req != PTRACE_POKEUSR)
        return 0;
    return sc_args(SC_PTRACE, req, args->pid, 0, 0);
}
SC_EXIT(ptrace)

TRACEPOINT_PROBE(syscalls, sys_enter_process_vm_readv)
{
    return sc_args(SC_PROCESS_VM_READV, 0, args->pid, 0, 0);
}
SC_EXIT_B(process_vm_readv, SC_PROCESS_VM_READV)

TRACEPOINT_PROBE(syscalls, sys_enter_process_vm_writev)
{
    return sc_args(SC_PROCESS_VM_WRITEV, 0, args->pid, 0, 0);
}
SC_EXIT_B(process_vm_writev, SC_PROCESS_VM_WRITEV)

/* ---- mounts and namespaces */

TRACEPOINT_PROBE(syscalls, sys_enter_mount)
{
    struct syscall_capture *c = sc_begin(SC_MOUNT);
    if (!c)
        return 0;
    c->args[0] = args->flags;
    sc_str0(c, args->dir_name);
    sc_str1(c, args->type);
    sc_str2(c, args->dev_name);
    return sc_commit(c);
}
SC_EXIT_B(mount, SC_MOUNT)

TRACEPOINT_PROBE(syscalls, sys_enter_umount) /* umount2(2) */
{
    struct syscall_capture *c = sc_begin(SC_UMOUNT2);
    if (!c)
        return 0;
    c->args[0] = args->flags;
    sc_str0(c, args->name);
    return sc_commit(c);
}
SC_EXIT_B(umount, SC_UMOUNT2)

TRACEPOINT_PROBE(syscalls, sys_enter_pivot_root)
{
    struct syscall_capture *c = sc_begin(SC_PIVOT_ROOT);
    if (!c)
        return 0;
    sc_str0(c, args->new_root);
    sc_str1(c, args->put_old);
    return sc_commit(c);
}
SC_EXIT_B(pivot_root, SC_PIVOT_ROOT)

TRACEPOINT_PROBE(syscalls, sys_enter_unshare)
{
    return sc_args(SC_UNSHARE, args->unshare_flags, 0, 0, 0);
}
SC_EXIT_B(unshare, SC_UNSHARE)

TRACEPOINT_PROBE(syscalls, sys_enter_setns)
{
    return sc_args(SC_SETNS, args->flags /* nstype */, args->fd, 0, 0);
}
SC_EXIT_B(setns, SC_SETNS)

TRACEPOINT_PROBE(syscalls, sys_enter_clone)
{
    u64 flags = args->clone_flags;
    if (!(flags & NS_CLONE_FLAGS))
        return 0; /* every fork and thread: one test, nothing else */
    return sc_args(SC_CLONE, flags, 0, 0, 0);
}
SC_EXIT(clone)

TRACEPOINT_PROBE(syscalls, sys_enter_clone3)
{
    u64 flags = 0; /* struct clone_args starts with a u64 flags */
    if (bpf_probe_read_user(&flags, sizeof(flags), args->uargs) < 0 ||
        !(flags & NS_CLONE_FLAGS))
        return 0;
    return sc_args(SC_CLONE3, flags, 0, 0, 0);
}
SC_EXIT(clone3)

/* ---- kernel: modules, bpf, perf, kexec */

#ifdef HAVE_TP_sys_enter_init_module
TRACEPOINT_PROBE(syscalls, sys_enter_init_module)
{
    struct syscall_capture *c = sc_begin(SC_INIT_MODULE);
    if (!c)
        return 0;
    c->args[1] = args->len;
    sc_str0(c, args->uargs);
    return sc_commit(c);
}
SC_EXIT_B(init_module, SC_INIT_MODULE)
#endif

#ifdef HAVE_TP_sys_enter_finit_module
TRACEPOINT_PROBE(syscalls, sys_enter_finit_module)
{
    struct syscall_capture *c = sc_begin(SC_FINIT_MODULE);
    if (!c)
        return 0;
    c->args[0] = args->flags;
    c->args[1] = args->fd;
    sc_str0(c, args->uargs);
    return sc_commit(c);
}
SC_EXIT_B(finit_module, SC_FINIT_MODULE)
#endif

#ifdef HAVE_TP_sys_enter_delete_module
TRACEPOINT_PROBE(syscalls, sys_enter_delete_module)
{
    struct syscall_capture *c = sc_begin(SC_DELETE_MODULE);
    if (!c)
        return 0;
    c->args[0] = args->flags;
    sc_str0(c, args->name_user);
    return sc_commit(c);
}
SC_EXIT_B(delete_module, SC_DELETE_MODULE)
#endif

TRACEPOINT_PROBE(syscalls, sys_enter_bpf)
{
    return sc_args(SC_BPF, 0, args->cmd, 0, 0);
}
SC_EXIT_B(bpf, SC_BPF)

TRACEPOINT_PROBE(syscalls, sys_enter_perf_event_open)
{
    struct syscall_capture *c = sc_begin(SC_PERF_EVENT_OPEN);
    if (!c)
        return 0;
    u32 type = 0; /* struct perf_event_attr starts with a u32 type */
    bpf_probe_read_user(&type, sizeof(type), args->attr_uptr);
    c->args[0] = args->flags;
    c->args[1] = type;
    c->args[2] = (u32)args->pid;
    c->args[3] = (u32)args->cpu;
    return sc_commit(c);
}
SC_EXIT_B(perf_event_open, SC_PERF_EVENT_OPEN)

#ifdef HAVE_TP_sys_enter_kexec_load
TRACEPOINT_PROBE(syscalls, sys_enter_kexec_load)
{
    return sc_args(SC_KEXEC_LOAD, args->flags, 0, 0, 0);
}
SC_EXIT_B(kexec_load, SC_KEXEC_LOAD)
#endif

#ifdef HAVE_TP_sys_enter_kexec_file_load
TRACEPOINT_PROBE(syscalls, sys_enter_kexec_file_load)
{
    return sc_args(SC_KEXEC_FILE_LOAD, args->flags, 0, 0, 0);
}
SC_EXIT_B(kexec_file_load, SC_KEXEC_FILE_LOAD)
#endif

/* ---- credentials: args[1..3] hold the ids asked for (0xffffffff: unchanged) */

TRACEPOINT_PROBE(syscalls, sys_enter_setuid)
{
    return sc_args(SC_SETUID, 0, (u32)args->uid, 0, 0);
}
SC_EXIT_B(setuid, SC_SETUID)

TRACEPOINT_PROBE(syscalls, sys_enter_setgid)
{
    return sc_args(SC_SETGID, 0, (u32)args->gid, 0, 0);
}
SC_EXIT_B(setgid, SC_SETGID)

TRACEPOINT_PROBE(syscalls, sys_enter_setreuid)
{
    return sc_args(SC_SETREUID, 0, (u32)args->ruid, (u32)args->euid, 0);
}
SC_EXIT_B(setreuid, SC_SETREUID)

TRACEPOINT_PROBE(syscalls, sys_enter_setregid)
{
    return sc_args(SC_SETREGID, 0, (u32)args->rgid, (u32)args->egid, 0);
}
SC_EXIT_B(setregid, SC_SETREGID)

TRACEPOINT_PROBE(syscalls, sys_enter_setresuid)
{
    return sc_args(SC_SETRESUID, 0, (u32)args->ruid, (u32)args->euid, (u32)args->suid);
}
SC_EXIT_B(setresuid, SC_SETRESUID)

TRACEPOINT_PROBE(syscalls, sys_enter_setresgid)
{
    return sc_args(SC_SETRESGID, 0, (u32)args->rgid, (u32)args->egid, (u32)args->sgid);
}
SC_EXIT_B(setresgid, SC_SETRESGID)

TRACEPOINT_PROBE(syscalls, sys_enter_capset)
{
    struct syscall_capture *c = sc_begin(SC_CAPSET);
    if (!c)
        return 0;
    /* two struct __user_cap_data_struct {effective, permitted, inheritable} (version 3) */
    u32 data[6] = {};
    bpf_probe_read_user(data, sizeof(data), (void *)args->data);
    c->args[1] = data[0] | ((u64)data[3] << 32); /* effective */
    c->args[2] = data[1] | ((u64)data[4] << 32); /* permitted */
    c->args[3] = data[2] | ((u64)data[5] << 32); /* inheritable */
    return sc_commit(c);
}
SC_EXIT_B(capset, SC_CAPSET)

TRACEPOINT_PROBE(syscalls, sys_enter_personality)
{
    u32 persona = args->personality;
    if (persona == 0xffffffff)
        return 0; /* a query, changes nothing */
    return sc_args(SC_PERSONALITY, persona, 0, 0, 0);
}
SC_EXIT(personality)

/* ---- keys, memfd, userfaultfd */

TRACEPOINT_PROBE(syscalls, sys_enter_keyctl)
{
    return sc_args(SC_KEYCTL, 0, args->option, 0, 0);
}
SC_EXIT_B(keyctl, SC_KEYCTL)

TRACEPOINT_PROBE(syscalls, sys_enter_add_key)
{
    struct syscall_capture *c = sc_begin(SC_ADD_KEY);
    if (!c)
        return 0;
    c->args[1] = (u32)args->ringid;
    sc_str0(c, args->_description);
    sc_str1(c, args->_type);
    return sc_commit(c);
}
SC_EXIT_B(add_key, SC_ADD_KEY)

TRACEPOINT_PROBE(syscalls, sys_enter_memfd_create)
{
    struct syscall_capture *c = sc_begin(SC_MEMFD_CREATE);
    if (!c)
        return 0;
    c->args[0] = args->flags;
    sc_str0(c, args->uname);
    return sc_commit(c);
}
SC_EXIT_B(memfd_create, SC_MEMFD_CREATE)

TRACEPOINT_PROBE(syscalls, sys_enter_userfaultfd)
{
    return sc_args(SC_USERFAULTFD, args->flags, 0, 0, 0);
}
SC_EXIT_B(userfaultfd, SC_USERFAULTFD)

/* ---- chmod family, only when the new mode sets setuid or setgid */

TRACEPOINT_PROBE(syscalls, sys_enter_chmod)
{
    u32 mode = args->mode;
    if (!(mode & SETID_MODE_BITS))
        return 0;
    struct syscall_capture *c = sc_begin(SC_CHMOD);
    if (!c)
        return 0;
    c->args[1] = mode;
    sc_str0(c, args->filename);
    return sc_commit(c);
}
SC_EXIT(chmod)

TRACEPOINT_PROBE(syscalls, sys_enter_fchmod)
{
    u32 mode = args->mode;
    if (!(mode & SETID_MODE_BITS))
        return 0;
    return sc_args(SC_FCHMOD, 0, mode, (u32)args->fd, 0);
}
SC_EXIT(fchmod)

TRACEPOINT_PROBE(syscalls, sys_enter_fchmodat)
{
    u32 mode = args->mode;
    if (!(mode & SETID_MODE_BITS))
        return 0;
    struct syscall_capture *c = sc_begin(SC_FCHMODAT);
    if (!c)
        return 0;
    c->args[1] = mode;
    c->args[2] = (u32)args->dfd;
    sc_str0(c, args->filename);
    return sc_commit(c);
}
SC_EXIT(fchmodat)

#ifdef HAVE_TP_sys_enter_fchmodat2
TRACEPOINT_PROBE(syscalls, sys_enter_fchmodat2)
{
    u32 mode = args->mode;
    if (!(mode & SETID_MODE_BITS))
        return 0;
    struct syscall_capture *c = sc_begin(SC_FCHMODAT2);
    if (!c)
        return 0;
    c->args[0] = args->flags;
    c->args[1] = mode;
    c->args[2] = (u32)args->dfd;
    sc_str0(c, args->filename);
    return sc_commit(c);
}
SC_EXIT(fchmodat2)
#endif

/* ---- io_uring: a ring was set up
 * Work submitted through an io_uring (reads, writes, connects, opens) bypasses the system call
 * tracepoints above and connect.bpf.c / file.bpf.c: the kernel runs it from the ring, not from
 * a syscall. So the setup of a ring is itself worth reporting. io_uring:io_uring_create runs
 * once per successful io_uring_setup(2), in the caller's context, after the ring's fd exists:
 * captured and reported at once (args: sq_entries, cq_entries, IORING_SETUP_* flags; the
 * result is the ring's fd). A setup refused before the ring exists (seccomp, the
 * kernel.io_uring_disabled sysctl) does not reach this tracepoint. Not a syscalls:*
 * tracepoint, so it costs nothing to any other system call. */
#ifdef HAVE_TP_io_uring__io_uring_create
TRACEPOINT_PROBE(io_uring, io_uring_create)
{
    struct syscall_capture *c = sc_begin(SC_IO_URING_SETUP);
    if (!c)
        return 0;
    c->args[0] = args->flags;
    c->args[1] = args->sq_entries;
    c->args[2] = args->cq_entries;
    sc_commit(c);
    return sc_exit(args->fd, 0);
}
#endif

/* ---- io_uring: requests submitted through a ring, per opcode
 * io_uring:io_uring_submit_req runs for every request a ring takes (in the submitter's
 * context, or its SQPOLL thread's, which is a thread of the same process). Only the opcodes
 * that stand for a system call roxd traces are reported (URING_REPORTED_OPS: connect, socket,
 * bind, listen, open, rename, unlink, mkdir, link, symlink); the data path (reads, writes,
 * sends, polls, no-ops) returns after one bit test. Reported only while some rule names
 * io_uring_submit, and aggregated like UDP sends: the first request of a (cgroup, process,
 * opcode) at once, then at most one record per 10 s carrying in args[2] how many more were
 * submitted since. A connect or an open done by the ring makes no connect(2) or openat(2)
 * system call: this is the only trace of it. */
#ifdef HAVE_TP_io_uring__io_uring_submit_req
#define URING_OP_INTERVAL_NS (10ULL * 1000000000ULL)
/* IORING_OP_ numbers: CONNECT 16, OPENAT 18, OPENAT2 28, RENAMEAT 35, UNLINKAT 36,
 * MKDIRAT 37, SYMLINKAT 38, LINKAT 39, SOCKET 45, BIND 56, LISTEN 57 */
#define URING_REPORTED_OPS ((1ULL << 16) | (1ULL << 18) | (1ULL << 28) | (1ULL << 35) | \
                            (1ULL << 36) | (1ULL << 37) | (1ULL << 38) | (1ULL << 39) | \
                            (1ULL << 45) | (1ULL << 56) | (1ULL << 57))
struct uring_op_key {
    u64 cgroup_id;
    u32 tgid;
    u32 opcode;
};
struct uring_op_state {
    u64 next_report_ns;
    u64 count;
};
BPF_TABLE("lru_hash", struct uring_op_key, struct uring_op_state, uring_ops, 4096);

TRACEPOINT_PROBE(io_uring, io_uring_submit_req)
{
    u32 opcode = args->opcode;
    if (opcode >= 64 || !((URING_REPORTED_OPS >> opcode) & 1))
        return 0; /* the data path: one bit test */
    u32 slot = SC_IO_URING_SUBMIT;
    u8 *on = syscall_watch.lookup(&slot);
    if (!on || !*on)
        return 0;
    struct uring_op_key k = {};
    k.cgroup_id = bpf_get_current_cgroup_id();
    k.tgid = bpf_get_current_pid_tgid() >> 32;
    k.opcode = opcode;
    u64 now = bpf_ktime_get_ns();
    u64 more = 0;
    struct uring_op_state *s = uring_ops.lookup(&k);
    if (s) {
        if (now < s->next_report_ns) {
            __sync_fetch_and_add(&s->count, 1);
            return 0;
        }
        more = __sync_lock_test_and_set(&s->count, 0);
        s->next_report_ns = now + URING_OP_INTERVAL_NS;
    } else {
        struct uring_op_state init = {.next_report_ns = now + URING_OP_INTERVAL_NS};
        if (uring_ops.update(&k, &init) < 0)
            stat_add(STAT_MAP_UPDATE_FAILED, 1);
    }
    struct syscall_capture *c = sc_begin(SC_IO_URING_SUBMIT);
    if (!c)
        return 0;
    c->args[0] = opcode;
    c->args[2] = more;            /* not args[1]: args[0..1] are part of the fold key */
    c->args[3] = args->sq_thread; /* submitted by the ring's SQPOLL thread */
    sc_commit(c);
    return sc_exit(0, 0);
}
#endif

/* ---- module syscalls on kernels without their tracepoints (opt-in: [sensor]
 * module_syscalls_raw)
 * Without CONFIG_MODULES (or without syscall tracepoints for them) init_module, finit_module
 * and delete_module have no sys_enter/sys_exit tracepoints, yet a container can still try
 * them: the attempt fails (seccomp's EPERM, or ENOSYS) and is the signal. The only hook that
 * sees every such attempt is the raw sys_exit tracepoint, which runs for every system call on
 * the host: it is compiled in only when roxd is told to (MODULE_SYSCALLS_RAW) and the kernel
 * lacks the module tracepoints. Successful calls return 0 and are left to module:module_load
 * where it exists; the program returns on a non-negative result first, before it reads the
 * syscall number (measured cost in docs/detection.md, evasion). Arguments are read from the
 * caller's registers (x86_64 syscall ABI: di, si, dx) and user memory, which the failed call
 * left as they were. */
#if defined(MODULE_SYSCALLS_RAW) && !defined(HAVE_TP_sys_enter_init_module) \
    && !defined(HAVE_TP_sys_enter_finit_module) && !defined(HAVE_TP_sys_enter_delete_module)
#define NR_INIT_MODULE 175
#define NR_DELETE_MODULE 176
#define NR_FINIT_MODULE 313
RAW_TRACEPOINT_PROBE(sys_exit)
{
    long ret = (long)ctx->args[1];
    if (ret >= 0)
        return 0;
    struct pt_regs *regs = (struct pt_regs *)ctx->args[0];
    long nr = -1;
    bpf_probe_read_kernel(&nr, sizeof(nr), &regs->orig_ax);
    u32 sc;
    if (nr == NR_INIT_MODULE)
        sc = SC_INIT_MODULE;
    else if (nr == NR_FINIT_MODULE)
        sc = SC_FINIT_MODULE;
    else if (nr == NR_DELETE_MODULE)
        sc = SC_DELETE_MODULE;
    else
        return 0;
    struct syscall_capture *c = sc_begin(sc);
    if (!c)
        return 0;
    u64 di = 0, si = 0, dx = 0;
    bpf_probe_read_kernel(&di, sizeof(di), &regs->di);
    bpf_probe_read_kernel(&si, sizeof(si), &regs->si);
    bpf_probe_read_kernel(&dx, sizeof(dx), &regs->dx);
    if (sc == SC_INIT_MODULE) {
        c->args[1] = si; /* len */
        sc_str0(c, (const char *)dx); /* uargs */
    } else if (sc == SC_FINIT_MODULE) {
        c->args[0] = dx;      /* flags */
        c->args[1] = (u32)di; /* fd */
        sc_str0(c, (const char *)si); /* uargs */
    } else {
        c->args[0] = si; /* flags */
        sc_str0(c, (const char *)di); /* name */
    }
    sc_commit(c);
    sc_exit(ret, 0);
    u32 tid = (u32)bpf_get_current_pid_tgid();
    inflight_syscall.delete(&tid); /* sc_exit keeps nothing, but be sure no capture lingers */
    return 0;
}
#endif
