"""Numbers the kernel hands over, as names: syscall flags, requests, modes, open flags.

Pure functions over what bpf/syscalls.bpf.c and bpf/file.bpf.c capture (see their comments for
which args[] slot holds what). `flags` in a decoded syscall is the `|`-joined names the rule
field `flags` tests; unknown bits are kept as hex so nothing silently disappears.
"""

from __future__ import annotations

from collections.abc import Mapping

NS_FLAGS: dict[int, str] = {
    0x00000080: "CLONE_NEWTIME",
    0x00020000: "CLONE_NEWNS",
    0x02000000: "CLONE_NEWCGROUP",
    0x04000000: "CLONE_NEWUTS",
    0x08000000: "CLONE_NEWIPC",
    0x10000000: "CLONE_NEWUSER",
    0x20000000: "CLONE_NEWPID",
    0x40000000: "CLONE_NEWNET",
}
CLONE_FLAGS: dict[int, str] = {
    0x00000100: "CLONE_VM",
    0x00000200: "CLONE_FS",
    0x00000400: "CLONE_FILES",
    0x00000800: "CLONE_SIGHAND",
    0x00004000: "CLONE_VFORK",
    0x00008000: "CLONE_PARENT",
    0x00010000: "CLONE_THREAD",
    0x00040000: "CLONE_SYSVSEM",
    **NS_FLAGS,
}
MOUNT_FLAGS: dict[int, str] = {
    1: "MS_RDONLY",
    2: "MS_NOSUID",
    4: "MS_NODEV",
    8: "MS_NOEXEC",
    16: "MS_SYNCHRONOUS",
    32: "MS_REMOUNT",
    4096: "MS_BIND",
    8192: "MS_MOVE",
    16384: "MS_REC",
    1 << 17: "MS_UNBINDABLE",
    1 << 18: "MS_PRIVATE",
    1 << 19: "MS_SLAVE",
    1 << 20: "MS_SHARED",
}
UMOUNT_FLAGS: dict[int, str] = {1: "MNT_FORCE", 2: "MNT_DETACH", 4: "MNT_EXPIRE",
                                8: "UMOUNT_NOFOLLOW"}
MEMFD_FLAGS: dict[int, str] = {1: "MFD_CLOEXEC", 2: "MFD_ALLOW_SEALING", 4: "MFD_HUGETLB",
                               8: "MFD_NOEXEC_SEAL", 16: "MFD_EXEC"}
MODE_FLAGS: dict[int, str] = {0o4000: "S_ISUID", 0o2000: "S_ISGID", 0o1000: "S_ISVTX"}
PERSONALITY_FLAGS: dict[int, str] = {0x0040000: "ADDR_NO_RANDOMIZE", 0x0400000: "READ_IMPLIES_EXEC",
                                     0x0200000: "MMAP_PAGE_ZERO", 0x0800000: "ADDR_LIMIT_32BIT"}
PTRACE_REQUESTS: dict[int, str] = {0: "PTRACE_TRACEME", 4: "PTRACE_POKETEXT",
                                   5: "PTRACE_POKEDATA", 6: "PTRACE_POKEUSER",
                                   16: "PTRACE_ATTACH", 0x4206: "PTRACE_SEIZE"}
BPF_COMMANDS: tuple[str, ...] = (
    "BPF_MAP_CREATE", "BPF_MAP_LOOKUP_ELEM", "BPF_MAP_UPDATE_ELEM", "BPF_MAP_DELETE_ELEM",
    "BPF_MAP_GET_NEXT_KEY", "BPF_PROG_LOAD", "BPF_OBJ_PIN", "BPF_OBJ_GET", "BPF_PROG_ATTACH",
    "BPF_PROG_DETACH", "BPF_PROG_TEST_RUN", "BPF_PROG_GET_NEXT_ID", "BPF_MAP_GET_NEXT_ID",
    "BPF_PROG_GET_FD_BY_ID", "BPF_MAP_GET_FD_BY_ID", "BPF_OBJ_GET_INFO_BY_FD", "BPF_PROG_QUERY",
    "BPF_RAW_TRACEPOINT_OPEN", "BPF_BTF_LOAD", "BPF_BTF_GET_FD_BY_ID", "BPF_TASK_FD_QUERY",
    "BPF_MAP_LOOKUP_AND_DELETE_ELEM", "BPF_MAP_FREEZE", "BPF_BTF_GET_NEXT_ID",
    "BPF_MAP_LOOKUP_BATCH", "BPF_MAP_LOOKUP_AND_DELETE_BATCH", "BPF_MAP_UPDATE_BATCH",
    "BPF_MAP_DELETE_BATCH", "BPF_LINK_CREATE", "BPF_LINK_UPDATE", "BPF_LINK_GET_FD_BY_ID",
    "BPF_LINK_GET_NEXT_ID", "BPF_ENABLE_STATS", "BPF_ITER_CREATE", "BPF_LINK_DETACH",
    "BPF_PROG_BIND_MAP", "BPF_TOKEN_CREATE",
)
OPEN_FLAGS: dict[int, str] = {
    0o100: "O_CREAT",
    0o200: "O_EXCL",
    0o1000: "O_TRUNC",
    0o2000: "O_APPEND",
    0o4000: "O_NONBLOCK",
    0o200000: "O_DIRECTORY",
    0o400000: "O_NOFOLLOW",
    0o2000000: "O_CLOEXEC",
    0o10000000: "O_PATH",
    0o20000000: "O_TMPFILE",  # with O_DIRECTORY
}
IORING_SETUP_FLAGS: dict[int, str] = {
    1 << 0: "IORING_SETUP_IOPOLL", 1 << 1: "IORING_SETUP_SQPOLL", 1 << 2: "IORING_SETUP_SQ_AFF",
    1 << 3: "IORING_SETUP_CQSIZE", 1 << 4: "IORING_SETUP_CLAMP",
    1 << 5: "IORING_SETUP_ATTACH_WQ", 1 << 6: "IORING_SETUP_R_DISABLED",
    1 << 7: "IORING_SETUP_SUBMIT_ALL", 1 << 8: "IORING_SETUP_COOP_TASKRUN",
    1 << 9: "IORING_SETUP_TASKRUN_FLAG", 1 << 10: "IORING_SETUP_SQE128",
    1 << 11: "IORING_SETUP_CQE32", 1 << 12: "IORING_SETUP_SINGLE_ISSUER",
    1 << 13: "IORING_SETUP_DEFER_TASKRUN", 1 << 14: "IORING_SETUP_NO_MMAP",
    1 << 15: "IORING_SETUP_REGISTERED_FD_ONLY", 1 << 16: "IORING_SETUP_NO_SQARRAY",
}
IORING_OPS: tuple[str, ...] = (
    "NOP", "READV", "WRITEV", "FSYNC", "READ_FIXED", "WRITE_FIXED", "POLL_ADD", "POLL_REMOVE",
    "SYNC_FILE_RANGE", "SENDMSG", "RECVMSG", "TIMEOUT", "TIMEOUT_REMOVE", "ACCEPT",
    "ASYNC_CANCEL", "LINK_TIMEOUT", "CONNECT", "FALLOCATE", "OPENAT", "CLOSE", "FILES_UPDATE",
    "STATX", "READ", "WRITE", "FADVISE", "MADVISE", "SEND", "RECV", "OPENAT2", "EPOLL_CTL",
    "SPLICE", "PROVIDE_BUFFERS", "REMOVE_BUFFERS", "TEE", "SHUTDOWN", "RENAMEAT", "UNLINKAT",
    "MKDIRAT", "SYMLINKAT", "LINKAT", "MSG_RING", "FSETXATTR", "SETXATTR", "FGETXATTR",
    "GETXATTR", "SOCKET", "URING_CMD", "SEND_ZC", "SENDMSG_ZC", "READ_MULTISHOT", "WAITID",
    "FUTEX_WAIT", "FUTEX_WAKE", "FUTEX_WAITV", "FIXED_FD_INSTALL", "FTRUNCATE", "BIND",
    "LISTEN",
)
RENAME_FLAGS: dict[int, str] = {1: "RENAME_NOREPLACE", 2: "RENAME_EXCHANGE", 4: "RENAME_WHITEOUT"}
UNLINK_FLAGS: dict[int, str] = {0x200: "AT_REMOVEDIR"}
LINK_FLAGS: dict[int, str] = {0x400: "AT_SYMLINK_FOLLOW", 0x1000: "AT_EMPTY_PATH"}

UNCHANGED_ID = 0xFFFFFFFF


def flag_names(value: int, names: Mapping[int, str]) -> tuple[str, ...]:
    """The names of the set bits, in bit order; leftover bits as one hex value."""
    out = [name for bit, name in sorted(names.items()) if value & bit]
    rest = value & ~sum(names)
    if rest:
        out.append(hex(rest))
    return tuple(out)


def _id(value: int) -> int:
    return -1 if value == UNCHANGED_ID else value


def decode_syscall_args(
    name: str, args: tuple[int, ...], strings: tuple[str, str, str], ret: int
) -> dict[str, int | str]:
    """The arguments that matter for one syscall; `flags` (when present) is `|`-joined."""
    a0, a1, a2, a3 = (*args, 0, 0, 0, 0)[:4]
    s0, s1, s2 = strings
    out: dict[str, int | str] = {}
    flags: tuple[str, ...] = ()
    if name == "ptrace":
        flags = (PTRACE_REQUESTS.get(a0, str(a0)),)
        out["request"] = flags[0]
        out["target_pid"] = a1
    elif name in ("process_vm_readv", "process_vm_writev"):
        out["target_pid"] = a1
    elif name == "mount":
        flags = flag_names(a0, MOUNT_FLAGS)
        out.update(path=s0, fstype=s1, source=s2)
    elif name == "umount2":
        flags = flag_names(a0, UMOUNT_FLAGS)
        out["path"] = s0
    elif name == "pivot_root":
        out.update(path=s0, put_old=s1)
    elif name in ("unshare", "clone", "clone3"):
        flags = flag_names(a0, CLONE_FLAGS)
        if name != "unshare" and ret > 0:
            out["child_pid"] = ret
    elif name == "setns":
        flags = flag_names(a0, NS_FLAGS) if a0 else ("any",)
        out["fd"] = a1
    elif name in ("init_module", "finit_module"):
        out["params"] = s0
        if name == "finit_module":
            out["fd"] = a1
    elif name == "delete_module":
        out["module"] = s0
    elif name == "bpf":
        flags = (BPF_COMMANDS[a1] if a1 < len(BPF_COMMANDS) else str(a1),)
        out["cmd"] = flags[0]
    elif name == "perf_event_open":
        out.update(type=a1, target_pid=_signed32(a2), cpu=_signed32(a3))
    elif name in ("kexec_load", "kexec_file_load"):
        out["kexec_flags"] = a0
    elif name in ("setuid", "setgid"):
        out["id"] = _id(a1)
    elif name in ("setreuid", "setregid"):
        out.update(real=_id(a1), effective=_id(a2))
    elif name in ("setresuid", "setresgid"):
        out.update(real=_id(a1), effective=_id(a2), saved=_id(a3))
    elif name == "capset":
        out.update(effective=hex(a1), permitted=hex(a2), inheritable=hex(a3))
    elif name == "personality":
        flags = flag_names(a0 & ~0xFF, PERSONALITY_FLAGS)
        out["persona"] = hex(a0)
    elif name == "keyctl":
        out["operation"] = a1
    elif name == "add_key":
        out.update(key_type=s1, description=s0)
    elif name == "memfd_create":
        flags = flag_names(a0, MEMFD_FLAGS)
        out["name"] = s0
    elif name == "io_uring_setup":
        # from io_uring:io_uring_create: the ring exists, ret is its fd
        flags = flag_names(a0, IORING_SETUP_FLAGS)
        out.update(sq_entries=a1, cq_entries=a2)
    elif name == "io_uring_submit":
        # from io_uring:io_uring_submit_req, aggregated per (cgroup, process, opcode)
        op = f"IORING_OP_{IORING_OPS[a0]}" if a0 < len(IORING_OPS) else f"IORING_OP_{a0}"
        flags = (op,)
        out.update(opcode=op, requests=1 + a2, sq_thread=bool(a3))
    elif name == "userfaultfd":
        out["uffd_flags"] = a0
    elif name in ("chmod", "fchmod", "fchmodat", "fchmodat2"):
        flags = flag_names(a1 & 0o7000, MODE_FLAGS)
        out["mode"] = oct(a1)
        if name == "fchmod":
            out["fd"] = _signed32(a2)
        else:
            out["path"] = s0
    if flags:
        out["flags"] = "|".join(flags)
    return out


def _signed32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def decode_file_flags(op: str, flags: int) -> tuple[str, ...]:
    if op in ("open", "creat"):
        access = ("O_RDONLY", "O_WRONLY", "O_RDWR", "O_ACCMODE")[flags & 3]
        return (access, *flag_names(flags & ~3 & ~0o100000, OPEN_FLAGS))  # O_LARGEFILE: noise
    if op == "rename":
        return flag_names(flags, RENAME_FLAGS)
    if op == "unlink":
        return flag_names(flags, UNLINK_FLAGS)
    if op == "link":
        return flag_names(flags, LINK_FLAGS)
    return ()
