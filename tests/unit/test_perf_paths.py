"""Issue 22's userspace pieces: argv as the kernel lays it out on the new stack (no count
field), sensor.max_args applied when decoding, the namespace pid from the record, field
offsets from a BTF blob (anonymous members included), pooled ids, and the bench's regression
guard."""

from __future__ import annotations

import ctypes as ct
import re
import struct
from pathlib import Path

import pytest

from bench import compare
from roxd.ids import new_id
from roxd.model import ExecEvent
from roxd.sensor import btf, records


def _exec_raw(args: bytes, vpid: int = 0) -> bytes:
    rec = records.ExecRecord()
    rec.h.type = records.REC_EXEC
    rec.h.pid = 42
    rec.filename = b"/bin/echo"
    ct.memmove(ct.addressof(rec) + records.ExecRecord.args.offset, args, len(args))
    rec.argc, rec.args_len, rec.args_captured = 0, len(args), 1  # the stack read has no count
    rec.vpid = vpid
    return bytes(rec)[: records.ExecRecord.args.offset + len(args)]


def test_args_counted_from_the_strings_empty_ones_kept() -> None:
    ev = records.decode(_exec_raw(b"echo\0\0x\0"), 0).event
    assert isinstance(ev, ExecEvent)
    assert ev.args == ("echo", "", "x")
    assert not ev.args_truncated


def test_an_argument_cut_at_the_byte_bound_is_kept_as_read() -> None:
    ev = records.decode(_exec_raw(b"echo\0abc"), 0).event
    assert ev.args == ("echo", "abc")


def test_max_args_applied_when_decoding() -> None:
    raw = _exec_raw(b"".join(b"a%d\0" % i for i in range(40)))
    ev = records.decode(raw, 0, max_args=32).event
    assert len(ev.args) == 32 and ev.args[31] == "a31"
    assert ev.args_truncated
    assert len(records.decode(raw, 0).event.args) == 40


def test_vpid_from_the_record_zero_is_unknown() -> None:
    assert records.decode(_exec_raw(b"sh\0", vpid=1), 0).event.vpid == 1
    assert records.decode(_exec_raw(b"sh\0"), 0).event.vpid is None


def _blob(types: list[bytes], strings: bytes) -> bytes:
    body = b"".join(types)
    hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(body), len(body), len(strings))
    return hdr + body + strings


def test_btf_offsets_through_anonymous_members(tmp_path: Path) -> None:
    names = [b"", b"task_struct", b"mm", b"exit_code", b"real_parent", b"tgid", b"mm_struct",
             b"arg_start", b"arg_end", b"thread_pid", b"pid", b"level", b"numbers", b"upid",
             b"nr", b"int"]
    strings = b"\0".join(names) + b"\0"
    off = {n: strings.index(b"\0" + n + b"\0") + 1 for n in names if n}

    def struct_(name: str, size: int, members: list[tuple[str, int, int]]) -> bytes:
        out = struct.pack("<III", off[name.encode()] if name else 0,
                          (4 << 24) | len(members), size)
        for m, t, bits in members:
            out += struct.pack("<III", off[m.encode()] if m else 0, t, bits)
        return out

    types = [
        struct.pack("<IIII", off[b"int"], 1 << 24, 4, 32),  # 1: int
        struct_("task_struct", 2000, [("mm", 1, 8 * 100), ("exit_code", 1, 8 * 108),
                                      ("real_parent", 1, 8 * 112), ("tgid", 1, 8 * 120),
                                      ("thread_pid", 1, 8 * 128)]),  # 2
        struct_("", 600, [("arg_start", 1, 8 * 480), ("arg_end", 1, 8 * 488)]),  # 3: anon
        struct.pack("<III", 0, 10 << 24, 3),  # 4: const of the anonymous struct
        struct_("mm_struct", 1472, [("", 4, 64)]),  # 5: fields inside the anonymous one
        struct_("pid", 160, [("level", 1, 32), ("numbers", 1, 8 * 144)]),  # 6
        struct_("upid", 16, [("nr", 1, 0)]),  # 7
    ]
    path = tmp_path / "vmlinux"
    path.write_bytes(_blob(types, strings))
    found = btf.offsets(path)
    assert found["TASK_MM_OFF"] == 100 and found["TASK_TGID_OFF"] == 120
    assert found["MM_ARG_START_OFF"] == 8 + 480 and found["MM_ARG_END_OFF"] == 8 + 488
    assert found["PID_NUMBERS_OFF"] == 144 and found["UPID_SIZE"] == 16


def test_btf_missing_or_foreign_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(btf.BtfError, match="No such file"):
        btf.offsets(tmp_path / "absent")
    (tmp_path / "junk").write_bytes(b"\0" * 64)
    with pytest.raises(btf.BtfError, match="magic"):
        btf.offsets(tmp_path / "junk")


def test_pooled_ids_are_distinct_version_4() -> None:
    ids = {new_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(re.fullmatch(r"[0-9a-f]{12}4[0-9a-f]{3}[89ab][0-9a-f]{15}", i) for i in ids)


def _run(median: float, lo: float, hi: float) -> dict:
    return {"profile": {"exec_storm": {"exec_path_bpf_ns_per_exec": {
        "median": median, "min": lo, "max": hi, "n": 3}}}}


def test_guard_flags_a_move_beyond_the_noise_only() -> None:
    key = "profile.exec_storm.exec_path_bpf_ns_per_exec"
    within = compare.compare(_run(3000, 2800, 3200), _run(3150, 3000, 3300))
    assert [(c.key, c.moved) for c in within] == [(key, False)]
    beyond = compare.compare(_run(4200, 4100, 4300), _run(3000, 2900, 3100))
    assert beyond[0].moved and beyond[0].relative == pytest.approx(-2 / 7)
    assert "MOVED" in compare.table(_run(4200, 4100, 4300), _run(3000, 2900, 3100))
    # one repetition: no spread measured, never flagged
    assert not compare.compare(_run(1, 1, 1), _run(2, 2, 2))[0].moved


class _FakeBpf:
    def __init__(self) -> None:
        self.cleaned = False

    def cleanup(self) -> None:
        self.cleaned = True


def test_prewarmed_object_is_taken_only_for_the_same_inputs(monkeypatch: pytest.MonkeyPatch,
                                                            tmp_path: Path) -> None:
    from roxd.sensor import loader, program

    made: list[tuple[list[str], bool]] = []

    def fake_compile(config: program.SensorConfig, cflags: list[str],
                     attach: bool = True) -> loader.BccObject:
        made.append((cflags, attach))
        return loader.BccObject(_FakeBpf(), "", None, None, 0.1)  # type: ignore[arg-type]

    monkeypatch.setattr(program, "_compile", fake_compile)
    monkeypatch.setattr(program, "_btf_flags", lambda *_: ["-DTASK_MM_OFF=1"])
    config = program.SensorConfig(cache_dir=tmp_path)
    program.prewarm(config)
    got = program._take_prewarmed(config, program.sensor_cflags(config))
    assert got is not None and made == [(program.sensor_cflags(config), False)]
    assert program._take_prewarmed(config, program.sensor_cflags(config)) is None  # taken once

    # a different config (here: ring buffer size) compiles again; the stale object is detached
    program.prewarm(config)
    other = program.SensorConfig(cache_dir=tmp_path, ringbuf_pages=8)
    stale = program._prewarm
    assert stale is not None
    assert program._take_prewarmed(other, program.sensor_cflags(other)) is None
    assert stale.result is not None and stale.result.bpf.cleaned

    # start-up failed before the sensor started: the prewarmed object is detached
    program.prewarm(config)
    pending = program._prewarm
    program.discard_prewarmed()
    assert pending is not None and pending.result is not None and pending.result.bpf.cleaned
    assert program._prewarm is None
