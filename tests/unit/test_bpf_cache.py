"""The compiled-object cache's file and relocation logic (roxd/sensor/bpf_cache.py), without
a kernel: what is saved loads back the same, a damaged or foreign file is refused with a reason,
map descriptors and the pid land in the right instruction fields, and bytecode that needs a
relocation the cache does not record is refused at extraction."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest

from roxd.sensor import bpf_cache
from roxd.sensor.bpf_cache import (
    TGID_SENTINEL,
    CacheError,
    CompiledObject,
    FunctionRecord,
    TableRecord,
)
from roxd.sensor.bpf_sys import MapSpec


def insn(op: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", op, (src << 4) | dst, off, imm)


def ld_imm64(dst: int, src: int, lo: int, hi: int = 0) -> bytes:
    return insn(0x18, dst, src, 0, lo) + insn(0, 0, 0, 0, hi)


EXIT = insn(0x95)
MAP_FD = 7  # the descriptor bcc's map had when the object was compiled


def _program() -> bytes:
    """r1 = map `events`; r2 = ROXD_TGID << 32 (the sentinel); r0 = 0; exit."""
    return (ld_imm64(1, 1, MAP_FD) + ld_imm64(2, 0, 0, TGID_SENTINEL)
            + insn(0xB7, 0, 0, 0, 0) + EXIT)


def _object(key: str = "k" * 64) -> CompiledObject:
    fn = bpf_cache._function("tracepoint__sched__sched_process_exec", _program(),
                             {MAP_FD: "events"}, 3)
    table = TableRecord("events", MapSpec(27, 0, 0, 4096 * 1024, 0, "events"),
                        '"int"', '"int"')
    return CompiledObject(key, b"GPL", 0, b"", (table,), (fn,))


def test_extraction_finds_map_loads_and_the_pid() -> None:
    fn = _object().functions[0]
    assert fn.map_refs == ((0, "events"),)
    assert fn.tgid_refs == (2,)
    assert fn.btf_func_id == 3


def test_patching_writes_this_starts_descriptors_and_pid() -> None:
    obj = _object()
    code = obj.patched(obj.functions[0], {"events": 42}, 31337)
    assert len(code) == len(_program())
    assert struct.unpack_from("<i", code, 4)[0] == 42  # map fd in the first half's imm
    assert code[1] >> 4 == 1  # still a map-fd load
    lo, hi = struct.unpack_from("<i", code, 16 + 4)[0], struct.unpack_from("<i", code, 24 + 4)[0]
    assert (lo, hi) == (0, 31337)  # pid << 32
    assert code[24:28] == b"\0\0\0\0"  # the second half's opcode and registers untouched
    assert code[32:] == _program()[32:]


@pytest.mark.parametrize("code, reason", [
    (ld_imm64(1, 1, 99) + EXIT, "unknown map fd"),
    (ld_imm64(1, 2, MAP_FD) + EXIT, "ld_imm64 of kind 2"),
    (insn(0x85, 0, 1, 0, 4) + EXIT, "calls another BPF function"),
    (insn(0x15, 1, 0, 2, TGID_SENTINEL) + EXIT, "ROXD_TGID as an immediate"),
    (ld_imm64(1, 0, TGID_SENTINEL, 0) + EXIT, "ROXD_TGID in an ld_imm64 of another form"),
    (EXIT + b"\0\0\0", "bytes of instructions"),
])
def test_bytecode_needing_other_relocations_is_not_cached(code: bytes, reason: str) -> None:
    with pytest.raises(CacheError, match=reason):
        bpf_cache._function("f", code, {MAP_FD: "events"}, 0)


def test_saved_object_loads_back_the_same(tmp_path: Path) -> None:
    obj = _object()
    path = bpf_cache.save(tmp_path, obj)
    assert path == bpf_cache.cache_file(tmp_path, obj.key)
    assert not list(path.parent.glob(".tmp-*"))  # written atomically, nothing left behind
    assert bpf_cache.load(tmp_path, obj.key) == obj


def test_no_file_is_a_plain_miss(tmp_path: Path) -> None:
    assert bpf_cache.load(tmp_path, "0" * 64) is None


def test_a_damaged_file_is_refused_with_the_reason(tmp_path: Path) -> None:
    obj = _object()
    path = bpf_cache.save(tmp_path, obj)
    doc = json.loads(path.read_text())
    doc["functions"][0]["tgid_refs"] = [0]  # bytes flipped: the checksum no longer matches
    path.write_text(json.dumps(doc))
    with pytest.raises(CacheError, match="checksum mismatch"):
        bpf_cache.load(tmp_path, obj.key)
    path.write_text(path.read_text()[:100])  # truncated
    with pytest.raises(CacheError, match="unreadable"):
        bpf_cache.load(tmp_path, obj.key)
    bpf_cache.set_aside(tmp_path, obj.key)
    assert bpf_cache.load(tmp_path, obj.key) is None


def test_a_file_for_other_inputs_is_refused(tmp_path: Path) -> None:
    obj = _object()
    path = bpf_cache.save(tmp_path, obj)
    other = bpf_cache.cache_file(tmp_path, "x" * 64)
    os.replace(path, other)
    with pytest.raises(CacheError, match="other inputs"):
        bpf_cache.load(tmp_path, "x" * 64)


def test_a_file_others_can_write_is_not_trusted(tmp_path: Path) -> None:
    obj = _object()
    path = bpf_cache.save(tmp_path, obj)
    path.chmod(0o666)
    with pytest.raises(CacheError, match="trusted"):
        bpf_cache.load(tmp_path, obj.key)
    path.chmod(0o600)
    path.parent.chmod(0o777)
    with pytest.raises(CacheError, match="trusted"):
        bpf_cache.load(tmp_path, obj.key)
    path.parent.chmod(0o755)
    assert bpf_cache.load(tmp_path, obj.key) == obj


def test_inconsistent_references_are_refused_even_with_a_good_checksum(tmp_path: Path) -> None:
    obj = _object()
    bad = FunctionRecord("f", EXIT, ((5, "events"),), (), 0)  # index past the end
    bpf_cache.save(tmp_path, CompiledObject(obj.key, obj.license, 0, b"", obj.tables, (bad,)))
    with pytest.raises(CacheError, match="inconsistent"):
        bpf_cache.load(tmp_path, obj.key)


def test_old_objects_are_pruned(tmp_path: Path) -> None:
    for i in range(bpf_cache.KEEP + 3):
        path = bpf_cache.save(tmp_path, _object(f"{i:064d}"))
        os.utime(path, (1000 + i, 1000 + i))
    kept = sorted(p.stem for p in (tmp_path / bpf_cache.CACHE_SUBDIR).glob("*.json"))
    assert len(kept) == bpf_cache.KEEP
    assert f"{bpf_cache.KEEP + 2:064d}" in kept and f"{0:064d}" not in kept


def test_a_writer_killed_mid_write_leaves_nothing_for_long(tmp_path: Path) -> None:
    directory = tmp_path / bpf_cache.CACHE_SUBDIR
    directory.mkdir()
    old, fresh = directory / ".tmp-old.json", directory / ".tmp-fresh.json"
    old.write_text("{")
    fresh.write_text("{")  # another writer's, right now: left alone
    os.utime(old, (1000, 1000))
    bpf_cache.save(tmp_path, _object())
    assert not old.exists() and fresh.exists()


def test_a_refusal_is_remembered_per_key(tmp_path: Path) -> None:
    assert bpf_cache.refused(tmp_path, "a" * 64) == ""
    bpf_cache.mark_refused(tmp_path, "a" * 64, "loading the cached object failed: EINVAL")
    assert "EINVAL" in bpf_cache.refused(tmp_path, "a" * 64)
    assert bpf_cache.refused(tmp_path, "b" * 64) == ""


def test_the_key_follows_every_input() -> None:
    base = bpf_cache.cache_key("src", ["-DA=1"], ["h"])
    assert base == bpf_cache.cache_key("src", ["-DA=1"], ["h"])
    assert base != bpf_cache.cache_key("src2", ["-DA=1"], ["h"])
    assert base != bpf_cache.cache_key("src", ["-DA=2"], ["h"])
    assert base != bpf_cache.cache_key("src", ["-DA=1"], ["h2"])


def test_the_pid_flag_is_replaced_by_the_sentinel() -> None:
    flags = bpf_cache.with_sentinel(["-I/x", "-DROXD_TGID=1234", "-DMAX_ARGS=32"])
    assert flags == ["-I/x", "-DMAX_ARGS=32", f"-DROXD_TGID={TGID_SENTINEL}"]
    assert TGID_SENTINEL > 4194304  # no kernel hands out this pid (PID_MAX_LIMIT)


def test_headers_are_identified_by_content_not_path(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name / "include/generated/uapi/linux").mkdir(parents=True)
        (tmp_path / name / "include/generated/autoconf.h").write_text("#define CONFIG_X 1\n")
        (tmp_path / name / "include/generated/uapi/linux/version.h").write_text("v\n")
    assert (bpf_cache.headers_identity(str(tmp_path / "a"))
            == bpf_cache.headers_identity(str(tmp_path / "b")))
    (tmp_path / "b/include/generated/autoconf.h").write_text("#define CONFIG_X 2\n")
    assert (bpf_cache.headers_identity(str(tmp_path / "a"))
            != bpf_cache.headers_identity(str(tmp_path / "b")))


def test_program_names_are_bccs() -> None:
    assert bpf_cache.program_name("tracepoint__sched__sched_process_exec") == "sched__sched_pr"
    assert bpf_cache.program_name("roxd_inbound_ops") == "roxd_inbound_op"


def _btf(types: list[tuple[int, int, int, bytes]], strings: bytes) -> bytes:
    body = b"".join(struct.pack("<III", n, k << 24 | v, s) + extra for n, k, v, s, extra in
                    [(n, k, 0, s, extra) for n, k, s, extra in types])
    header = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(body), len(body), len(strings))
    return header + body + strings


def test_btf_functions_maps_names_to_func_ids() -> None:
    strings = b"\0int\0f_one\0f_two\0"
    blob = _btf([(1, 1, 4, struct.pack("<I", 32)),  # [1] INT int (4 extra bytes)
                 (0, 13, 1, b""),                     # [2] FUNC_PROTO, no params
                 (5, 12, 2, b""),                     # [3] FUNC f_one
                 (11, 12, 2, b"")], strings)          # [4] FUNC f_two
    assert bpf_cache.btf_functions(blob) == {"f_one": 3, "f_two": 4}
