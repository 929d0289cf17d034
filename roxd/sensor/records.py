"""The Python mirror of bpf/common.h: ring-buffer records, counters, the exe hash.

Defined once here, decoded once here; nothing else in roxd knows the byte layout.
"""

from __future__ import annotations

import ctypes as ct
import socket
from dataclasses import dataclass

from roxd.model import ConnectEvent, ExecEvent, ExitEvent, SensorEvent

TASK_COMM_LEN = 16
FILENAME_LEN = 256
ARGS_BUF = 2048

REC_EXEC = 1
REC_EXIT = 2
REC_CONNECT = 3

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
)

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
        ("pad", ct.c_uint8 * 6),
        ("filename", ct.c_char * FILENAME_LEN),
        ("args", ct.c_char * ARGS_BUF),
    )


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
        ("pad", ct.c_uint32),
    )


# Layout checks against common.h (a mismatch here means the mirror drifted).
assert ct.sizeof(EventHeader) == 56
assert ct.sizeof(ExecRecord) == 2424
assert ct.sizeof(ExitRecord) == 64
assert ct.sizeof(ConnectRecord) == 144
assert ExecRecord.args.offset == 376


@dataclass(frozen=True, slots=True)
class Decoded:
    """A sensor event plus the kernel-side facts only the sensor needs (fold key, kill slot)."""

    event: SensorEvent
    fold_key: bytes | None = None  # raw key bytes to mark quiet; None for exits
    kill_slot: int = 0  # nonzero: the kernel already sent SIGKILL for this rule slot
    args_captured: bool = True


class DecodeError(ValueError):
    pass


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


def decode(raw: bytes, clock_offset_ns: int) -> Decoded:
    """Decode one ring-buffer record. clock_offset_ns turns CLOCK_MONOTONIC into wall time."""
    if len(raw) < ct.sizeof(EventHeader):
        raise DecodeError(f"record of {len(raw)} bytes is shorter than its header")
    rtype = int.from_bytes(raw[:4], "little")
    if rtype == REC_EXEC:
        return _decode_exec(raw, clock_offset_ns)
    if rtype == REC_CONNECT:
        return _decode_connect(raw, clock_offset_ns)
    if rtype == REC_EXIT:
        return _decode_exit(raw, clock_offset_ns)
    raise DecodeError(f"unknown record type {rtype}")


def _padded(raw: bytes, cls: type[ct.Structure]) -> ct.Structure:
    size = ct.sizeof(cls)
    if len(raw) < size:
        raw = raw + bytes(size - len(raw))
    return cls.from_buffer_copy(raw[:size])


def _decode_exec(raw: bytes, clock_offset_ns: int) -> Decoded:
    if len(raw) < ExecRecord.args.offset:
        raise DecodeError(f"exec record of {len(raw)} bytes is truncated")
    rec = _padded(raw, ExecRecord)
    h = rec.h
    args_len = min(rec.args_len, ARGS_BUF, len(raw) - ExecRecord.args.offset)
    args_raw = raw[ExecRecord.args.offset : ExecRecord.args.offset + args_len]
    args = tuple(_text(a) for a in args_raw.split(b"\0")[: rec.argc])
    event = ExecEvent(
        time_ns=h.ktime_ns + clock_offset_ns,
        pid=h.pid,
        ppid=h.ppid,
        uid=h.uid,
        gid=h.gid,
        cgroup_id=h.cgroup_id,
        comm=_text(h.comm),
        filename=_text(rec.filename),
        args=args,
        args_truncated=bool(rec.args_truncated),
        folded=rec.folded,
    )
    return Decoded(event, bytes(rec.key), rec.kill_rule, bool(rec.args_captured))


def _decode_exit(raw: bytes, clock_offset_ns: int) -> Decoded:
    rec = _padded(raw, ExitRecord)
    h = rec.h
    event = ExitEvent(
        time_ns=h.ktime_ns + clock_offset_ns,
        pid=h.pid,
        cgroup_id=h.cgroup_id,
        comm=_text(h.comm),
        exit_code=rec.exit_code if rec.has_exit_code else None,
    )
    return Decoded(event)


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
    )
    return Decoded(event, bytes(rec.key), rec.kill_rule)
