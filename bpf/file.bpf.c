/* roxd: file access on watched paths — open/openat/openat2/creat (read, write, create,
 * truncate), truncate, unlink/unlinkat, rename/renameat/renameat2, link/linkat/symlink/symlinkat —
 * with the flags and the result.
 *
 * The watch set comes from the rules (RuleSet.file_watch_set()), pushed by userspace:
 *   file_watch_paths  LPM trie over the path as the process gave it (user string, at most
 *                     FILE_PATH_LEN bytes): exact paths are stored with their NUL, prefixes
 *                     (directories, the fixed head of a glob) without; one lookup finds the
 *                     longest watch, whose value already holds the access kinds of every
 *                     shorter watch it extends (userspace folds them in);
 *   file_watch_names  FNV-1a of a basename -> access
 *                     kinds: authorized_keys, .bashrc, release_agent, ... and the basenames of
 *                     exact watches, so /etc//shadow, ../etc/shadow and `cd /etc; cat shadow`
 *                     still reach userspace, which resolves and decides;
 *   file_watch_all    [0] access kinds wanted for every path (a rule whose paths cannot be
 *                     derived), 0 on a normal pack; [1] which gates are open (GATE_*_OFF);
 *   file_gate_bits    two 65,536-bit sets that let almost every open skip the lookups:
 *                     the head gate holds the two bytes after the leading '/' of every trie
 *                     entry ("/etc/..." -> "et"), the tail gate the last two bytes of every
 *                     watched basename ("shadow" -> "ow"). An absolute path whose head bit is
 *                     clear cannot match the trie; a path whose tail bit is clear cannot match
 *                     a basename, and skips the FNV loop. A gate that cannot be built (an entry
 *                     too short for two bytes) is switched off, never guessed.
 * Everything else is dropped at sys_enter and counted (file_filtered). Nothing is resolved
 * in the kernel: not symlinks, not the cwd, not dirfds, not the container's root.
 * A match is captured into inflight_file[tid] and reported at sys_exit with the result;
 * file_inflight_n counts captures not yet reported, so the sys_exit of an unwatched open (all
 * of them, nearly) returns after one array read instead of a hash lookup. */

BPF_LPM_TRIE(file_watch_paths, struct path_key, u32, 1024);
BPF_HASH(file_watch_names, u64, u32, 1024);
BPF_ARRAY(file_watch_all, u32, 2);
BPF_ARRAY(file_gate_bits, u64, 2 * FILE_GATE_WORDS);
BPF_ARRAY(file_inflight_n, s64, 1);
BPF_TABLE("lru_hash", u32, struct file_capture, inflight_file, 1024);
BPF_TABLE("lru_hash", struct file_fold_key, struct fold_state, file_folds, 8192);
BPF_PERCPU_ARRAY(file_scratch, struct file_capture, 1);
BPF_PERCPU_ARRAY(file_rec_scratch, struct file_record, 1);

/* Is bit (a | b << 8) set in the gate that starts at word `base`? */
static __always_inline int gate_bit(u32 base, u8 a, u8 b)
{
    u32 bit = (u32)a | ((u32)b << 8);
    u32 slot = base + (bit >> 6);
    u64 *word = file_gate_bits.lookup(&slot);
    return word && ((*word >> (bit & 63)) & 1);
}

/* The access kinds watched for the user path u, read into k. */
static __always_inline u32 path_watch(struct path_key *k, const char *u, u32 want)
{
    long n = bpf_probe_read_user_str(k->data, FILE_PATH_LEN, u);
    if (n <= 1)
        return 0; /* unreadable or "" (AT_EMPTY_PATH) */
    u32 zero = 0, one = 1;
    u32 mask = 0;
    u32 *all = file_watch_all.lookup(&zero);
    if (all)
        mask |= *all;
    u32 *gates_off = file_watch_all.lookup(&one);
    u32 off = gates_off ? *gates_off : GATE_HEAD_OFF | GATE_TAIL_OFF;
    if (k->data[0] == '/' &&
        (n < 4 || (off & GATE_HEAD_OFF) || gate_bit(0, k->data[1], k->data[2]))) {
        k->prefixlen = (u32)n * 8;
        u32 *v = file_watch_paths.lookup(k);
        if (v)
            mask |= *v;
    }
    if (mask & want)
        return mask & want;
    /* n counts the NUL: the last two bytes of the path are at n - 3 and n - 2 */
    if (n >= 3 && !(off & GATE_TAIL_OFF) &&
        !gate_bit(FILE_GATE_WORDS, k->data[(u32)(n - 3) & (FILE_PATH_LEN - 1)],
                  k->data[(u32)(n - 2) & (FILE_PATH_LEN - 1)]))
        return mask & want;
    /* basename hash (FNV-1a, restarted at each '/'), as process.bpf.c hashes exe basenames */
    u64 h = FNV_OFFSET;
#pragma clang loop unroll(disable)
    for (u32 i = 0; i < FILE_PATH_LEN; i++) {
        u8 c = k->data[i & (FILE_PATH_LEN - 1)];
        if (c == 0)
            break;
        h = c == '/' ? FNV_OFFSET : (h ^ c) * FNV_PRIME;
    }
    u32 *v = file_watch_names.lookup(&h);
    if (v)
        mask |= *v;
    return mask & want;
}

static __always_inline struct file_capture *file_begin(void)
{
    if ((bpf_get_current_pid_tgid() >> 32) == ROXD_TGID)
        return NULL;
    u32 zero = 0;
    stat_add(STAT_FILE_SEEN, 1);
    return file_scratch.lookup(&zero);
}

static __always_inline int file_commit(struct file_capture *c)
{
    if (!c->access) {
        stat_add(STAT_FILE_FILTERED, 1);
        return 0;
    }
    u32 tid = (u32)bpf_get_current_pid_tgid();
    if (inflight_file.update(&tid, c) < 0) {
        stat_add(STAT_MAP_UPDATE_FAILED, 1);
        return 0;
    }
    u32 zero = 0;
    s64 *pending = file_inflight_n.lookup(&zero);
    if (pending)
        __sync_fetch_and_add(pending, 1);
    return 0;
}

/* one path: open, creat, truncate, unlink */
static __always_inline int file_one(u16 op, s32 dfd, const char *path, u32 flags, u32 mode,
                                    u32 want)
{
    struct file_capture *c = file_begin();
    if (!c)
        return 0;
    c->op = op;
    c->flags = flags;
    c->mode = mode;
    c->dfd = dfd;
    c->dfd2 = 0;
    c->k[1].data[0] = 0;
    c->access = path_watch(&c->k[0], path, want);
    c->matched = c->access ? MATCHED_PATH : 0;
    return file_commit(c);
}

/* two paths: rename and link. The new name is path, the old one path2. A watched new name is
 * written to (rename: create, write; link: link, create); a watched old name loses its name
 * (rename: unlink) or gains one (link). */
static __always_inline int file_two(u16 op, s32 olddfd, const char *oldname, s32 newdfd,
                                    const char *newname, u32 flags)
{
    struct file_capture *c = file_begin();
    if (!c)
        return 0;
    c->op = op;
    c->flags = flags;
    c->mode = 0;
    c->dfd = newdfd;
    c->dfd2 = olddfd;
    u32 kind = op == FOP_RENAME ? ACC_RENAME : ACC_LINK;
    u32 to = path_watch(&c->k[0], newname, kind | ACC_CREATE | ACC_WRITE);
    u32 from = 0;
    if (op == FOP_SYMLINK) /* the target is only text: kept for the record, never matched */
        bpf_probe_read_user_str(c->k[1].data, FILE_PATH_LEN, oldname);
    else
        from = path_watch(&c->k[1], oldname, kind | (op == FOP_RENAME ? ACC_UNLINK : 0));
    c->matched = (to ? MATCHED_PATH : 0) | (from ? MATCHED_PATH2 : 0);
    c->access = to ? (kind | ACC_CREATE | ACC_WRITE) : (from ? from | kind : 0);
    return file_commit(c);
}

#define O_ACCMODE_ 3
#define O_CREAT_ 0100
#define O_TRUNC_ 01000

static __always_inline u32 open_kinds(u32 flags)
{
    u32 acc = flags & O_ACCMODE_;
    u32 kinds = acc == 0 ? ACC_READ : (acc == 1 ? ACC_WRITE : ACC_READ | ACC_WRITE);
    if (flags & O_CREAT_)
        kinds |= ACC_CREATE;
    if ((flags & O_TRUNC_) && acc)
        kinds |= ACC_TRUNCATE;
    return kinds;
}

#define AT_FDCWD_ -100

TRACEPOINT_PROBE(syscalls, sys_enter_open)
{
    u32 flags = args->flags;
    return file_one(FOP_OPEN, AT_FDCWD_, args->filename, flags, args->mode, open_kinds(flags));
}

TRACEPOINT_PROBE(syscalls, sys_enter_openat)
{
    u32 flags = args->flags;
    return file_one(FOP_OPEN, args->dfd, args->filename, flags, args->mode, open_kinds(flags));
}

TRACEPOINT_PROBE(syscalls, sys_enter_openat2)
{
    u64 how[2] = {}; /* struct open_how { u64 flags; u64 mode; ... } */
    bpf_probe_read_user(how, sizeof(how), args->how);
    u32 flags = how[0];
    return file_one(FOP_OPEN, args->dfd, args->filename, flags, how[1], open_kinds(flags));
}

TRACEPOINT_PROBE(syscalls, sys_enter_creat)
{
    return file_one(FOP_CREAT, AT_FDCWD_, args->pathname, 01 | O_CREAT_ | O_TRUNC_, args->mode,
                    ACC_WRITE | ACC_CREATE | ACC_TRUNCATE);
}

TRACEPOINT_PROBE(syscalls, sys_enter_truncate)
{
    return file_one(FOP_TRUNCATE, AT_FDCWD_, args->path, 0, 0, ACC_TRUNCATE | ACC_WRITE);
}

TRACEPOINT_PROBE(syscalls, sys_enter_unlink)
{
    return file_one(FOP_UNLINK, AT_FDCWD_, args->pathname, 0, 0, ACC_UNLINK);
}

TRACEPOINT_PROBE(syscalls, sys_enter_unlinkat)
{
    return file_one(FOP_UNLINK, args->dfd, args->pathname, args->flag, 0, ACC_UNLINK);
}

TRACEPOINT_PROBE(syscalls, sys_enter_rename)
{
    return file_two(FOP_RENAME, AT_FDCWD_, args->oldname, AT_FDCWD_, args->newname, 0);
}

TRACEPOINT_PROBE(syscalls, sys_enter_renameat)
{
    return file_two(FOP_RENAME, args->olddfd, args->oldname, args->newdfd, args->newname, 0);
}

TRACEPOINT_PROBE(syscalls, sys_enter_renameat2)
{
    return file_two(FOP_RENAME, args->olddfd, args->oldname, args->newdfd, args->newname,
                    args->flags);
}

TRACEPOINT_PROBE(syscalls, sys_enter_link)
{
    return file_two(FOP_LINK, AT_FDCWD_, args->oldname, AT_FDCWD_, args->newname, 0);
}

TRACEPOINT_PROBE(syscalls, sys_enter_linkat)
{
    return file_two(FOP_LINK, args->olddfd, args->oldname, args->newdfd, args->newname,
                    args->flags);
}

TRACEPOINT_PROBE(syscalls, sys_enter_symlink)
{
    return file_two(FOP_SYMLINK, AT_FDCWD_, args->oldname, AT_FDCWD_, args->newname, 0);
}

TRACEPOINT_PROBE(syscalls, sys_enter_symlinkat)
{
    return file_two(FOP_SYMLINK, AT_FDCWD_, args->oldname, args->newdfd, args->newname, 0);
}

static __always_inline u64 fnv_path(const char *p, u64 h)
{
#pragma clang loop unroll(disable)
    for (u32 i = 0; i < FILE_PATH_LEN; i++) {
        u8 c = p[i & (FILE_PATH_LEN - 1)];
        if (c == 0)
            break;
        h = (h ^ c) * FNV_PRIME;
    }
    return h;
}

/* Forget tid's capture; the pending count only ever counts captures still in the map (a
 * capture the LRU evicted keeps it above zero: exits then take the slow path, never miss). */
static __always_inline void file_forget(u32 tid, s64 *pending)
{
    if (inflight_file.delete(&tid) == 0)
        __sync_fetch_and_add(pending, -1);
}

static __always_inline int file_exit(long ret)
{
    u32 zero = 0;
    s64 *pending = file_inflight_n.lookup(&zero);
    if (!pending || *pending <= 0)
        return 0; /* the common case: no watched access is in flight anywhere */
    u32 tid = (u32)bpf_get_current_pid_tgid();
    struct file_capture *c = inflight_file.lookup(&tid);
    if (!c)
        return 0;
    struct file_record *r = file_rec_scratch.lookup(&zero);
    if (!r) {
        file_forget(tid, pending);
        return 0;
    }
    fill_header(&r->h, REC_FILE);
    bpf_probe_read_kernel(&r->c, sizeof(r->c), c);
    file_forget(tid, pending);
    r->ret = ret;
    r->folded = 0;

    u64 *gen = exec_gen.lookup(&r->h.pid);
    r->key.cgroup_id = r->h.cgroup_id;
    r->key.exec_gen = gen ? *gen : 0;
    r->key.path_hash = fnv_path(r->c.k[1].data, fnv_path(r->c.k[0].data, FNV_OFFSET));
    r->key.pid = r->h.pid;
    r->key.uid = r->h.uid;
    r->key.op_access = ((u32)r->c.op << 16) | r->c.access;
    r->key.ret = ret < 0 ? (s32)ret : 0;

    struct fold_state *fs = file_folds.lookup(&r->key);
    if (fs) {
        if (r->h.ktime_ns < fs->quiet_until_ns) {
            __sync_fetch_and_add(&fs->folded, 1);
            stat_add(STAT_FILE_FOLDED, 1);
            return 0;
        }
        r->folded = __sync_lock_test_and_set(&fs->folded, 0);
    }
    u64 wake = ring_flags(r->h.cgroup_id, 0, sizeof(*r));
    if (events.ringbuf_output(r, sizeof(*r), wake) < 0) {
        stat_add(STAT_FILE_DROPPED, 1);
        cgroup_drop(r->h.cgroup_id);
        return 0;
    }
    stat_add(STAT_FILE_EMITTED, 1);
    return 0;
}

#define FILE_EXIT(name)                                                                        \
    TRACEPOINT_PROBE(syscalls, sys_exit_##name) { return file_exit(args->ret); }

FILE_EXIT(open)
FILE_EXIT(openat)
FILE_EXIT(openat2)
FILE_EXIT(creat)
FILE_EXIT(truncate)
FILE_EXIT(unlink)
FILE_EXIT(unlinkat)
FILE_EXIT(rename)
FILE_EXIT(renameat)
FILE_EXIT(renameat2)
FILE_EXIT(link)
FILE_EXIT(linkat)
FILE_EXIT(symlink)
FILE_EXIT(symlinkat)
