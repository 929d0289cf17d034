"""records.py reads exec and exit records with struct formats (issue 22: faster than a ctypes
copy); the ctypes classes stay the definition the kernel tests check against BTF. These tests
tie the two: every field of random records decodes as the ctypes mirror reads it."""

from __future__ import annotations

import ctypes as ct
import random

import pytest

from roxd.model import ExecEvent, ExitEvent
from roxd.sensor import records
from roxd.text import from_bytes

pytestmark = pytest.mark.unit


def _random_exec(rng: random.Random) -> tuple[records.ExecRecord, bytes]:
    rec = records.ExecRecord()
    h = rec.h
    h.type = records.REC_EXEC
    h.pid, h.tid, h.ppid, h.uid, h.gid = (rng.randrange(2**32) for _ in range(5))
    h.cgroup_id, h.ktime_ns = rng.randrange(2**64), rng.randrange(2**62)
    h.comm = bytes(rng.randrange(1, 256) for _ in range(rng.randrange(16)))
    for name, _ in records.ExecFoldKey._fields_:
        size = 8 if name not in ("ppid", "uid") else 4
        setattr(rec.key, name, rng.randrange(2 ** (8 * size)))
    rec.folded, rec.kill_rule = rng.randrange(2**64), rng.randrange(2**32)
    rec.args_truncated = rng.randrange(4)
    rec.args_captured, rec.fileless, rec.held = (rng.randrange(2) for _ in range(3))
    rec.vpid = rng.choice((0, rng.randrange(2**32)))
    rec.filename = bytes(rng.randrange(1, 256) for _ in range(rng.randrange(255)))
    # argv: pieces of printable text, some with bytes that are not UTF-8 or a literal "\x41"
    pieces = [rng.choice((b"sh", b"-c", b"", b"caf\xc3\xa9", b"\xff\xfe", b"a\\x41b",
                          bytes(rng.randrange(1, 256) for _ in range(rng.randrange(20)))))
              for _ in range(rng.randrange(6))]
    argv = b"".join(p + b"\0" for p in pieces)[: records.ARGS_BUF]
    ct.memmove(ct.addressof(rec) + records.ExecRecord.args.offset, argv, len(argv))
    rec.args_len = len(argv)
    return rec, bytes(rec)[: records.ExecRecord.args.offset + len(argv)]


def test_exec_records_decode_as_the_ctypes_mirror_reads_them() -> None:
    rng = random.Random(22)
    for _ in range(500):
        rec, raw = _random_exec(rng)
        decoded = records.decode(raw, clock_offset_ns=5)
        ev = decoded.event
        assert isinstance(ev, ExecEvent)
        h = rec.h
        assert (ev.pid, ev.ppid, ev.uid, ev.gid, ev.cgroup_id, ev.time_ns) == (
            h.pid, h.ppid, h.uid, h.gid, h.cgroup_id, h.ktime_ns + 5)
        assert ev.comm == from_bytes(h.comm) and ev.filename == from_bytes(rec.filename)
        argv = raw[records.ExecRecord.args.offset:]
        pieces = argv.split(b"\0")[:-1] if argv else []
        assert ev.args == tuple(from_bytes(p) for p in pieces)
        assert ev.folded == rec.folded and ev.fileless == bool(rec.fileless)
        assert ev.args_truncated == bool(rec.args_truncated)
        assert ev.args_unreadable == bool(rec.args_truncated & records.ARGS_UNREADABLE)
        assert ev.vpid == (rec.vpid or None)
        assert decoded.fold_key == bytes(rec.key)
        assert decoded.kill_slot == rec.kill_rule
        assert decoded.args_captured == bool(rec.args_captured)
        assert decoded.held == bool(rec.held)


def test_exit_records_decode_as_the_ctypes_mirror_reads_them() -> None:
    rng = random.Random(23)
    for _ in range(200):
        rec = records.ExitRecord()
        rec.h.type, rec.h.pid = records.REC_EXIT, rng.randrange(2**32)
        rec.h.cgroup_id, rec.h.ktime_ns = rng.randrange(2**64), rng.randrange(2**62)
        rec.h.comm = bytes(rng.randrange(1, 256) for _ in range(rng.randrange(16)))
        rec.exit_code, rec.has_exit_code = rng.randrange(-2**31, 2**31), rng.randrange(2)
        ev = records.decode(bytes(rec), 7).event
        assert isinstance(ev, ExitEvent)
        assert (ev.pid, ev.cgroup_id, ev.time_ns, ev.comm) == (
            rec.h.pid, rec.h.cgroup_id, rec.h.ktime_ns + 7, from_bytes(rec.h.comm))
        assert ev.exit_code == (rec.exit_code if rec.has_exit_code else None)


def test_the_struct_formats_cover_the_ctypes_layout() -> None:
    assert records.EXEC_HEAD.size == records.ExecRecord.args.offset
    assert records.EXIT_FIXED.size == ct.sizeof(records.ExitRecord)
    # a short exit record (an older kernel side) still decodes, zero-padded as before
    rec = records.ExitRecord()
    rec.h.type, rec.h.pid = records.REC_EXIT, 9
    ev = records.decode(bytes(rec)[:60], 0).event
    assert isinstance(ev, ExitEvent) and ev.pid == 9 and ev.exit_code is None


def test_the_hot_path_builds_records_in_their_field_order() -> None:
    """The decoder, the process table and the enricher build these positionally (keyword
    arguments cost about a µs per event, issue 22): a reordered or inserted field fails here
    before it can put a value in the wrong place."""
    import dataclasses

    from roxd.containers.process_table import ProcessInfo
    from roxd.model import Process

    def names(cls: type) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    assert names(ExecEvent) == ["time_ns", "pid", "ppid", "uid", "gid", "cgroup_id", "comm",
                                "filename", "args", "args_truncated", "folded", "fileless",
                                "args_unreadable", "vpid"]
    assert names(ExitEvent) == ["time_ns", "pid", "cgroup_id", "comm", "exit_code"]
    assert names(records.Decoded) == ["event", "fold_key", "kill_slot", "args_captured",
                                      "held", "exited"]  # (exited: sensor/program.py)
    assert names(Process)[:10] == ["pid", "ppid", "uid", "exe", "comm", "args", "cgroup_id",
                                   "args_truncated", "ancestors", "vpid"]
    assert names(ProcessInfo)[:10] == ["pid", "ppid", "exe", "args", "uid", "cgroup_id", "comm",
                                       "start_time_ns", "exec_time_ns", "args_truncated"]
