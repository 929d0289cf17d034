"""The Python mirror of bpf/common.h: ring-buffer records, counters, the exe hash.

Defined once here, decoded once here; nothing else in roxd knows the byte layout. Checked
against the C side by tests: tests/unit/test_sensor_abi.py parses common.h (every enum and
#define mirrored here), tests/kernel/test_sensor_layout.py compares each ctypes struct, field
by field, with the struct bcc generated from the compiled program.
"""

from __future__ import annotations

import ctypes as ct
import socket
import struct
from dataclasses import dataclass

from roxd.fastinit import fast_init
from roxd.model import ConnectEvent, ExecEvent, ExitEvent, FileEvent, SensorEvent, SyscallEvent
from roxd.sensor.decoders import decode_file_flags, decode_syscall_args
from roxd.sensor.inbound import REC_ACCEPT, REC_LISTEN, decode_inbound
from roxd.text import from_bytes
from roxd.vocabulary import FILE_ACCESS_KINDS

TASK_COMM_LEN = 16
FILENAME_LEN = 256
ARGS_BUF = 2048
ARGS_CUT = 1  # exec_record.args_truncated bits (common.h)
ARGS_UNREADABLE = 2

REC_EXEC = 1
REC_EXIT = 2
REC_CONNECT = 3
REC_SYSCALL = 4
REC_FILE = 5

# enum stat_index in common.h, in order
STAT_NAMES: tuple[str, ...] = (
    "exec_seen",
    "exec_emitted",
    "exec_folded",
    "exec_dropped",
    "connect_seen",
    "connect_emitted",
    "connect_folded",
    "connect_dropped",
    "exit_seen",
    "exit_emitted",
    "exit_skipped",
    "exit_dropped",
    "fork_seen",
    "exec_no_args",
    "exec_killed",
    "connect_killed",
    "map_update_failed",
    "syscall_seen",
    "syscall_emitted",
    "syscall_folded",
    "syscall_dropped",
    "file_seen",
    "file_filtered",
    "file_emitted",
    "file_folded",
    "file_dropped",
    "exec_fileless",
    "exec_held",
    "udp_send_seen",
    "udp_send_emitted",
    "udp_send_folded",
    "udp_send_dropped",
)

# enum syscall_id in common.h: index = roxd's syscall id (0 unused)
SYSCALL_NAMES: tuple[str, ...] = (
    "",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "mount",
    "umount2",
    "pivot_root",
    "unshare",
    "setns",
    "clone",
    "clone3",
    "init_module",
    "finit_module",
    "delete_module",
    "bpf",
    "perf_event_open",
    "kexec_load",
    "kexec_file_load",
    "setuid",
    "setgid",
    "setreuid",
    "setregid",
    "setresuid",
    "setresgid",
    "capset",
    "personality",
    "keyctl",
    "add_key",
    "memfd_create",
    "userfaultfd",
    "chmod",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "io_uring_setup",
    "io_uring_submit",
)
SYSCALL_IDS: dict[str, int] = {name: i for i, name in enumerate(SYSCALL_NAMES) if name}
SC_WATCH_SLOTS = 64
SC_STR_LEN = 256
SC_STR0 = 128
SC_STR1 = 64

FILE_PATH_LEN = 256
# ACC_* bits in common.h, lowest bit first
ACCESS_NAMES: tuple[str, ...] = FILE_ACCESS_KINDS
ACCESS_BITS: dict[str, int] = {name: 1 << i for i, name in enumerate(ACCESS_NAMES)}
# FOP_* in common.h: index = operation
FILE_OPS: tuple[str, ...] = ("", "open", "creat", "truncate", "unlink", "rename", "link", "symlink")
FOP_OPEN = 1
FOP_CREAT = 2
FOP_TRUNCATE = 3
FOP_UNLINK = 4
FOP_RENAME = 5
FOP_LINK = 6
FOP_SYMLINK = 7
TWO_PATH_OPS = frozenset({FOP_RENAME, FOP_LINK, FOP_SYMLINK})  # these fill k[1] (path2)
# file_capture.matched bits: which name a watch matched
# connect_record.via: how the destination was named (connect(), or a datagram's address)
VIA_CONNECT = 0
VIA_SENDMSG = 1
VIA_NAMES = {VIA_CONNECT: "connect", VIA_SENDMSG: "sendmsg"}

MATCHED_PATH = 1
MATCHED_PATH2 = 2
# file watch gates (file.bpf.c: file_gate_bits, file_watch_all)
FILE_GATE_WORDS = 1024
GATE_HEAD_OFF = 1
GATE_TAIL_OFF = 2


FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
_MASK64 = (1 << 64) - 1

# exec_kill scope sentinels (process.bpf.c)
SCOPE_HOST = 0xFFFFFFFFFFFFFFFF
SCOPE_ANY_CONTAINER = 0xFFFFFFFFFFFFFFFE


def fnv1a(data: bytes) -> int:
    """FNV-1a 64, exactly as the BPF programs hash exe paths and basenames."""
    h = FNV_OFFSET
    for byte in data:
        h = ((h ^ byte) * FNV_PRIME) & _MASK64
    return h


class EventHeader(ct.Structure):
    _fields_ = (
        ("type", ct.c_uint32),
        ("pid", ct.c_uint32),
        ("tid", ct.c_uint32),
        ("ppid", ct.c_uint32),
        ("uid", ct.c_uint32),
        ("gid", ct.c_uint32),
        ("cgroup_id", ct.c_uint64),
        ("ktime_ns", ct.c_uint64),
        ("comm", ct.c_char * TASK_COMM_LEN),
    )


class ExecFoldKey(ct.Structure):
    _fields_ = (
        ("cgroup_id", ct.c_uint64),
        ("parent_gen", ct.c_uint64),
        ("filename_hash", ct.c_uint64),
        ("args_hash", ct.c_uint64),
        ("ppid", ct.c_uint32),
        ("uid", ct.c_uint32),
    )


class ConnectFoldKey(ct.Structure):
    _fields_ = (
        ("cgroup_id", ct.c_uint64),
        ("exec_gen", ct.c_uint64),
        ("pid", ct.c_uint32),
        ("uid", ct.c_uint32),
        ("daddr", ct.c_uint8 * 16),
        ("family", ct.c_uint16),
        ("dport", ct.c_uint16),
        ("ret", ct.c_int32),
    )


class ExecRecord(ct.Structure):
    _fields_ = (
        ("h", EventHeader),
        ("key", ExecFoldKey),
        ("folded", ct.c_uint64),
        ("kill_rule", ct.c_uint32),
        ("argc", ct.c_uint16),
        ("args_len", ct.c_uint16),
        ("args_truncated", ct.c_uint8),
        ("args_captured", ct.c_uint8),
        ("fileless", ct.c_uint8),
        ("held", ct.c_uint8),
        ("vpid", ct.c_uint32),
        ("filename", ct.c_char * FILENAME_LEN),
        ("args", ct.c_char * ARGS_BUF),
    )


class ExecHead(ct.Structure):
    """ExecRecord without its argv buffer: what every exec record carries in full."""

    _fields_ = ExecRecord._fields_[:-1]


class ExitRecord(ct.Structure):
    _fields_ = (
        ("h", EventHeader),
        ("exit_code", ct.c_int32),
        ("has_exit_code", ct.c_uint32),
    )


class ConnectRecord(ct.Structure):
    _fields_ = (
        ("h", EventHeader),
        ("key", ConnectFoldKey),
        ("folded", ct.c_uint64),
        ("ret", ct.c_int32),
        ("family", ct.c_uint16),
        ("dport", ct.c_uint16),
        ("daddr", ct.c_uint8 * 16),
        ("kill_rule", ct.c_uint32),
        ("sock_type", ct.c_uint16),
        ("via", ct.c_uint16),
    )


class SyscallFoldKey(ct.Structure):
    _fields_ = (
        ("cgroup_id", ct.c_uint64),
        ("exec_gen", ct.c_uint64),
        ("arg0", ct.c_uint64),
        ("arg1", ct.c_uint64),
        ("str_hash", ct.c_uint64),
        ("pid", ct.c_uint32),
        ("uid", ct.c_uint32),
        ("sc", ct.c_uint32),
        ("ret", ct.c_int32),
    )


class SyscallCapture(ct.Structure):
    _fields_ = (
        ("sc", ct.c_uint32),
        ("args_unknown", ct.c_uint32),
        ("args", ct.c_uint64 * 4),
        ("str", ct.c_char * SC_STR_LEN),
    )


class SyscallRecord(ct.Structure):
    _fields_ = (
        ("h", EventHeader),
        ("key", SyscallFoldKey),
        ("folded", ct.c_uint64),
        ("ret", ct.c_int64),
        ("c", SyscallCapture),
    )


class PathKey(ct.Structure):
    _fields_ = (("prefixlen", ct.c_uint32), ("data", ct.c_char * FILE_PATH_LEN))


class FileCapture(ct.Structure):
    _fields_ = (
        ("op", ct.c_uint16),
        ("access", ct.c_uint16),
        ("matched", ct.c_uint8),
        ("pad", ct.c_uint8 * 3),
        ("flags", ct.c_uint32),
        ("mode", ct.c_uint32),
        ("dfd", ct.c_int32),
        ("dfd2", ct.c_int32),
        ("k", PathKey * 2),
    )


class FileFoldKey(ct.Structure):
    _fields_ = (
        ("cgroup_id", ct.c_uint64),
        ("exec_gen", ct.c_uint64),
        ("path_hash", ct.c_uint64),
        ("pid", ct.c_uint32),
        ("uid", ct.c_uint32),
        ("op_access", ct.c_uint32),
        ("ret", ct.c_int32),
    )


class FileRecord(ct.Structure):
    _fields_ = (
        ("h", EventHeader),
        ("key", FileFoldKey),
        ("folded", ct.c_uint64),
        ("ret", ct.c_int64),
        ("c", FileCapture),
    )


# Layout checks against common.h (a mismatch here means the mirror drifted).
assert ct.sizeof(EventHeader) == 56
assert ct.sizeof(ExecRecord) == 2424
assert ct.sizeof(ExitRecord) == 64
assert ct.sizeof(ConnectRecord) == 144
assert ExecRecord.args.offset == 376
assert ct.sizeof(SyscallRecord) == 56 + 56 + 16 + 296
assert ct.sizeof(FileRecord) == 56 + 40 + 16 + 544


@fast_init
@dataclass(frozen=True, slots=True)
class Decoded:
    """A sensor event plus the kernel-side facts only the sensor needs (fold key, kill slot)."""

    event: SensorEvent
    fold_key: bytes | None = None  # raw key bytes to mark quiet; None for exits
    kill_slot: int = 0  # nonzero: the kernel already sent SIGKILL for this rule slot
    args_captured: bool = True
    # The kernel stopped the process (SIGSTOP) at exec: its cgroup was new. The daemon must
    # classify the cgroup, then kill or continue it.
    held: bool = False
    # An exec whose process's exit record came later in the same read of the ring buffer
    # (Sensor._hand_over): the process is gone, so nothing of it is left in /proc to read.
    exited: bool = False


class DecodeError(ValueError):
    pass


def _text(raw: bytes) -> str:
    """Process-controlled bytes as roxd's text: a non-UTF-8 byte as \\xNN (roxd/text.py)."""
    return from_bytes(raw)


_HEADER_SIZE = ct.sizeof(EventHeader)
_TYPE = struct.Struct("<I")


def decode(raw: bytes, clock_offset_ns: int, max_args: int | None = None) -> Decoded:
    """Decode one ring-buffer record. clock_offset_ns turns CLOCK_MONOTONIC into wall time;
    max_args bounds an exec's argument count (sensor.max_args: argv read from the new
    program's stack is bounded by bytes only, the count is applied here)."""
    if len(raw) < _HEADER_SIZE:
        raise DecodeError(f"record of {len(raw)} bytes is shorter than its header")
    rtype = _TYPE.unpack_from(raw)[0]
    if rtype == REC_EXEC:
        return _decode_exec(raw, clock_offset_ns, max_args)
    if rtype == REC_CONNECT:
        return _decode_connect(raw, clock_offset_ns)
    if rtype == REC_EXIT:
        return _decode_exit(raw, clock_offset_ns)
    if rtype == REC_SYSCALL:
        return _decode_syscall(raw, clock_offset_ns)
    if rtype == REC_FILE:
        return _decode_file(raw, clock_offset_ns)
    if rtype in (REC_ACCEPT, REC_LISTEN):  # bpf/inbound.bpf.c, mirrored in inbound.py
        try:
            return Decoded(decode_inbound(raw, clock_offset_ns))  # type: ignore[arg-type]
        except ValueError as exc:
            raise DecodeError(str(exc)) from exc
    raise DecodeError(f"unknown record type {rtype}")


def _padded(raw: bytes, cls: type[ct.Structure]) -> ct.Structure:
    size = ct.sizeof(cls)
    if len(raw) < size:
        raw = raw + bytes(size - len(raw))
    return cls.from_buffer_copy(raw[:size])


# The fixed parts of the two records every exec brings (the exec and its exit), read with one
# struct.unpack_from each: a ctypes Structure copy and its attribute reads (a new object per
# nested struct) cost several µs per record (issue 22). The ctypes classes above stay the
# definition (checked against the kernel's BTF by tests/kernel/test_sensor_layout.py); these
# formats are checked against them below, field by field in tests/unit/test_sensor_records.py.
_HEADER_FMT = "6I2Q16s"  # type pid tid ppid uid gid cgroup_id ktime_ns comm
EXEC_HEAD = struct.Struct("<" + _HEADER_FMT + "40sQIHHBBBBI256s")  # key .. vpid filename
EXIT_FIXED = struct.Struct("<" + _HEADER_FMT + "iI")  # exit_code has_exit_code
assert EXEC_HEAD.size == ExecRecord.args.offset
# what the decoder reads of EXEC_HEAD: the fields it does not use (type, tid, the fold key,
# the padding) skipped as pad bytes and the filename found in place, so no bytes object is
# made for them (the 256-byte filename was copied whole, then cut at its NUL)
EXEC_READ = struct.Struct("<4x5I2Q16s40xQI2xHBBBBI")
_FILENAME_AT = EXEC_READ.size
assert ExecRecord.filename.offset == _FILENAME_AT
assert EXEC_HEAD.size == _FILENAME_AT + FILENAME_LEN
assert EXIT_FIXED.size == ct.sizeof(ExitRecord)
# what the decoder reads of EXIT_FIXED: pid, cgroup_id, ktime_ns, comm, exit_code,
# has_exit_code (type, tid, ppid, uid and gid skipped as pad bytes, as for EXEC_READ)
EXIT_READ = struct.Struct("<4xI16x2Q16siI")
assert EXIT_READ.size == EXIT_FIXED.size
_KEY_AT = ExecRecord.key.offset
_KEY_END = _KEY_AT + ct.sizeof(ExecFoldKey)


def _cut(raw: bytes) -> bytes:
    """A fixed-size char array's C string (what ctypes' c_char array value gives)."""
    return raw.partition(b"\0")[0]


def _decode_exec(raw: bytes, clock_offset_ns: int, max_args: int | None = None) -> Decoded:
    args_at = EXEC_HEAD.size
    if len(raw) < args_at:
        raise DecodeError(f"exec record of {len(raw)} bytes is truncated")
    # the fixed part only: padding every record to the full 2 KiB argv buffer and copying it
    # was a tenth of roxd's time per exec (py-spy, issue 22)
    (pid, _, ppid, uid, gid, cgroup_id, ktime_ns, comm, folded, kill_rule,
     args_len, args_truncated, args_captured, fileless, held, vpid) = EXEC_READ.unpack_from(raw)
    end = raw.find(b"\0", _FILENAME_AT, args_at)
    filename = raw[_FILENAME_AT : end if end >= 0 else args_at]
    args_len = min(args_len, ARGS_BUF, len(raw) - args_at)
    args = split_args(raw[args_at : args_at + args_len])
    truncated = bool(args_truncated)
    if max_args is not None and len(args) > max_args:
        args, truncated = args[:max_args], True
    # positional, in ExecEvent's field order: fourteen keyword arguments cost about 0.8 µs
    # more per record (tests/unit/test_sensor_records.py checks every field)
    event = ExecEvent(
        ktime_ns + clock_offset_ns,  # time_ns
        pid,
        ppid,
        uid,
        gid,
        cgroup_id,
        _text(_cut(comm)),  # comm
        _text(filename),  # filename (up to its NUL, above)
        args,
        truncated,  # args_truncated
        folded,
        bool(fileless),
        bool(args_truncated & ARGS_UNREADABLE),  # args_unreadable
        vpid or None,
    )
    return Decoded(event, raw[_KEY_AT:_KEY_END], kill_rule, bool(args_captured), bool(held))


def split_args(raw: bytes) -> tuple[str, ...]:
    """NUL-separated strings, as the kernel lays argv out: each ends with a NUL, so the empty
    piece after the last one is not an argument (an empty argument in the middle is). The
    count comes from the strings, not from a count field: argv read from the new program's
    stack (process.bpf.c) carries none."""
    try:
        # the usual argv: valid UTF-8 with no text that reads as an escape, decoded at once
        # (NUL never sits inside a UTF-8 sequence, so each piece is what from_bytes gives)
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = "\\x"
    if "\\x" not in text:
        parts = text.split("\0")
        if parts and parts[-1] == "":
            parts.pop()
        return tuple(parts)
    pieces = raw.split(b"\0")
    if pieces and pieces[-1] == b"":
        pieces.pop()
    return tuple(_text(a) for a in pieces)


def _decode_exit(raw: bytes, clock_offset_ns: int) -> Decoded:
    if len(raw) < EXIT_FIXED.size:
        raw = raw + bytes(EXIT_FIXED.size - len(raw))
    pid, cgroup_id, ktime_ns, comm, exit_code, has_exit_code = EXIT_READ.unpack_from(raw)
    # positional, in ExitEvent's field order (time_ns, pid, cgroup_id, comm, exit_code)
    return Decoded(ExitEvent(ktime_ns + clock_offset_ns, pid, cgroup_id, _text(_cut(comm)),
                             exit_code if has_exit_code else None))


# socket types as the kernel numbers them on x86 and arm (SOCK_STREAM 1, SOCK_DGRAM 2)
SOCKET_PROTOCOLS = {int(socket.SOCK_STREAM): "tcp", int(socket.SOCK_DGRAM): "udp"}


def _decode_connect(raw: bytes, clock_offset_ns: int) -> Decoded:
    rec = _padded(raw, ConnectRecord)
    h = rec.h
    if rec.family == socket.AF_INET:
        # stored v4-mapped (::ffff:a.b.c.d) by the kernel side, as the kill tries want it
        family, daddr = "ipv4", socket.inet_ntop(socket.AF_INET, bytes(rec.daddr)[12:16])
    elif rec.family == socket.AF_INET6:
        family, daddr = "ipv6", socket.inet_ntop(socket.AF_INET6, bytes(rec.daddr))
    else:
        raise DecodeError(f"connect record with address family {rec.family}")
    event = ConnectEvent(
        time_ns=h.ktime_ns + clock_offset_ns,
        pid=h.pid,
        tid=h.tid,
        uid=h.uid,
        cgroup_id=h.cgroup_id,
        comm=_text(h.comm),
        family=family,
        daddr=daddr,
        dport=rec.dport,
        errno=-rec.ret if rec.ret < 0 else 0,
        folded=rec.folded,
        protocol=SOCKET_PROTOCOLS.get(rec.sock_type, ""),
        via=VIA_NAMES.get(rec.via, f"via{rec.via}"),
    )
    # a datagram record is folded by the kernel's own aggregation (udp_send.bpf.c): no quiet
    # mark, its key is empty
    fold_key = bytes(rec.key) if rec.via == VIA_CONNECT else None
    return Decoded(event, fold_key, rec.kill_rule)


def _cstr(raw: bytes) -> str:
    return _text(raw.split(b"\0", 1)[0])


BLIND_ARGS: dict[str, int | str] = {"arguments": "unknown: stopped before entry (seccomp)"}


def _decode_syscall(raw: bytes, clock_offset_ns: int) -> Decoded:
    rec = _padded(raw, SyscallRecord)
    h = rec.h
    sc = rec.c.sc
    if not 0 < sc < len(SYSCALL_NAMES):
        raise DecodeError(f"syscall record with unknown syscall id {sc}")
    name = SYSCALL_NAMES[sc]
    start = SyscallRecord.c.offset + SyscallCapture.str.offset
    strs = bytes(raw[start : start + SC_STR_LEN]).ljust(SC_STR_LEN, b"\0")
    strings = (
        _cstr(strs[:SC_STR0]),
        _cstr(strs[SC_STR0 : SC_STR0 + SC_STR1]),
        _cstr(strs[SC_STR0 + SC_STR1 :]),
    )
    event = SyscallEvent(
        time_ns=h.ktime_ns + clock_offset_ns,
        pid=h.pid,
        uid=h.uid,
        cgroup_id=h.cgroup_id,
        comm=_text(h.comm),
        syscall=name,
        errno=-rec.ret if rec.ret < 0 else 0,
        # only sys_exit ran (a seccomp errno stopped it before entry): no arguments
        args=BLIND_ARGS if rec.c.args_unknown
        else decode_syscall_args(name, tuple(rec.c.args), strings, rec.ret),
        count=1 + rec.folded,
        source="sensor",
    )
    return Decoded(event, bytes(rec.key))


def _decode_file(raw: bytes, clock_offset_ns: int) -> Decoded:
    rec = _padded(raw, FileRecord)
    h = rec.h
    c = rec.c
    op = FILE_OPS[c.op] if 0 < c.op < len(FILE_OPS) else f"op{c.op}"
    path, path2 = _cstr(c.k[0].data), _cstr(c.k[1].data)
    two_paths = c.op in TWO_PATH_OPS
    # the event is about the watched name: for rename/link the new one unless only the old
    # one was watched
    if c.matched == MATCHED_PATH2:
        path, path2 = path2, path
        dfd, dfd2 = c.dfd2, c.dfd
    else:
        dfd, dfd2 = c.dfd, c.dfd2
    event = FileEvent(
        time_ns=h.ktime_ns + clock_offset_ns,
        pid=h.pid,
        uid=h.uid,
        cgroup_id=h.cgroup_id,
        comm=_text(h.comm),
        operation=op,
        path=path,
        access=tuple(n for n in ACCESS_NAMES if c.access & ACCESS_BITS[n]),
        flags=decode_file_flags(op, c.flags),
        mode=c.mode,
        errno=-rec.ret if rec.ret < 0 else 0,
        other_path=path2 if two_paths else None,
        dfd=dfd,
        other_dfd=dfd2 if two_paths else None,
        folded=rec.folded,
    )
    return Decoded(event, bytes(rec.key))
