"""records.py against the C it mirrors, without a kernel: bpf/common.h (and the #defines of the
files compiled with it) is parsed here, and every enum, constant and struct of it that
records.py mirrors must agree, so a reordered `enum stat_index` or a field added on one side
fails a test instead of mislabelling counters. tests/kernel/test_sensor_layout.py checks the
same structs against what the compiler really laid out."""

from __future__ import annotations

import ctypes as ct
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from roxd.model import FileEvent, SyscallEvent
from roxd.sensor import records

pytestmark = pytest.mark.unit
BPF = Path(__file__).resolve().parents[2] / "bpf"
# the files of the one compilation unit (roxd.bpf.c includes the others); seccomp.bpf.c is a
# separate program with its own mirror (roxd/seccomp)
UNIT = ("common.h", "roxd.bpf.c", "process.bpf.c", "connect.bpf.c", "syscalls.bpf.c",
        "file.bpf.c", "inbound.bpf.c")


def _without_comments(text: str) -> str:
    return re.sub(r"//[^\n]*", "", re.sub(r"/\*.*?\*/", " ", text, flags=re.DOTALL))


def _int(literal: str) -> int:
    literal = re.sub(r"[uUlL]+$", "", literal)
    if re.fullmatch(r"0[0-7]+", literal):
        return int(literal, 8)
    return int(literal, 0)


@dataclass
class Header:
    defines: dict[str, int]
    enums: dict[str, list[tuple[str, int]]]
    structs: dict[str, list[tuple[str, str, int]]]  # common.h: [(type, field, array length)]


def _parse(names: tuple[str, ...] = UNIT) -> Header:
    defines: dict[str, int] = {}
    enums: dict[str, list[tuple[str, int]]] = {}
    structs: dict[str, list[tuple[str, str, int]]] = {}
    for name in names:
        text = _without_comments((BPF / name).read_text())
        for macro, value in re.findall(r"^\s*#define\s+(\w+)\s+(0[xX][0-9a-fA-F]+|\d+)[uUlL]*\s*$",
                                       text, re.MULTILINE):
            assert defines.setdefault(macro, _int(value)) == _int(value), f"{macro} twice"
        for enum, body in re.findall(r"enum\s+(\w+)\s*\{(.*?)\}\s*;", text, re.DOTALL):
            members, nxt = [], 0
            for item in filter(None, (i.strip() for i in body.split(","))):
                member, _, value = (p.strip() for p in item.partition("="))
                nxt = _int(value) if value else nxt
                members.append((member, nxt))
                nxt += 1
            enums[enum] = members
        if name != "common.h":  # the shared structs; the programs' own ones are theirs
            continue
        for struct, body in re.findall(r"struct\s+(\w+)\s*\{(.*?)\}\s*;", text, re.DOTALL):
            fields = []
            for decl in filter(None, (d.strip() for d in body.split(";"))):
                m = re.fullmatch(r"((?:struct\s+)?\w+)\s+(\w+)(?:\[([^\]]+)\])?", decl)
                assert m, f"struct {struct}: cannot read {decl!r}"
                length = m.group(3)
                fields.append((m.group(1), m.group(2), _length(length, defines) if length else 0))
            structs[struct] = fields
    return Header(defines, enums, structs)


def _length(expr: str, defines: dict[str, int]) -> int:
    """An array length: a number, a macro, or a sum of them (`8 + 2 + 16`)."""
    return sum(defines[t] if t in defines else _int(t) for t in re.split(r"\s*\+\s*", expr.strip()))


HEADER = _parse()


def test_stat_index_is_stat_names_in_order() -> None:
    members = HEADER.enums["stat_index"]
    assert members[-1] == ("STAT_MAX", len(records.STAT_NAMES))
    assert members[:-1] == [(f"STAT_{n.upper()}", i) for i, n in enumerate(records.STAT_NAMES)]


def test_syscall_id_is_syscall_names_in_order() -> None:
    members = HEADER.enums["syscall_id"]
    assert members[-1] == ("SC_MAX_ID", len(records.SYSCALL_NAMES))
    assert records.SYSCALL_NAMES[0] == ""
    assert members[:-1] == [(f"SC_{n.upper()}", i) for i, n in enumerate(records.SYSCALL_NAMES)
                            if i]
    assert len(records.SYSCALL_NAMES) <= records.SC_WATCH_SLOTS


def _prefixed(prefix: str) -> dict[str, int]:
    return {k: v for k, v in HEADER.defines.items() if k.startswith(prefix)}


def test_access_bits_are_access_names() -> None:
    assert _prefixed("ACC_") == {f"ACC_{n.upper()}": bit for n, bit in records.ACCESS_BITS.items()}
    assert list(records.ACCESS_BITS.values()) == [1 << i for i in range(len(records.ACCESS_NAMES))]


def test_file_operations_are_file_ops() -> None:
    ops = _prefixed("FOP_")
    assert ops == {f"FOP_{n.upper()}": i for i, n in enumerate(records.FILE_OPS) if i}
    for name, value in ops.items():
        assert getattr(records, name) == value


def test_record_types_match() -> None:
    assert _prefixed("REC_") == {k: v for k, v in vars(records).items()
                                 if k.startswith("REC_") and isinstance(v, int)}


def test_every_constant_of_records_is_the_c_one() -> None:
    mirrored = {k: v for k, v in vars(records).items()
                if re.fullmatch(r"[A-Z][A-Z0-9_]+", k) and type(v) is int}
    missing = sorted(set(mirrored) - set(HEADER.defines))
    assert missing == [], "constants in records.py that bpf/ does not define"
    for name, value in mirrored.items():
        if name in HEADER.defines:
            assert value == HEADER.defines[name], name
    # and the other way round for the families records.py mirrors
    for prefix in ("REC_", "VIA_", "FOP_", "MATCHED_", "ARGS_", "SC_STR", "SCOPE_", "GATE_",
                   "FNV_"):
        for name in _prefixed(prefix):
            assert name in mirrored, f"{name} of bpf/ is not mirrored in records.py"


# C struct -> its ctypes mirror
MIRRORS: dict[str, type[ct.Structure]] = {
    "event_header": records.EventHeader,
    "exec_fold_key": records.ExecFoldKey,
    "connect_fold_key": records.ConnectFoldKey,
    "exec_record": records.ExecRecord,
    "exit_record": records.ExitRecord,
    "connect_record": records.ConnectRecord,
    "syscall_fold_key": records.SyscallFoldKey,
    "syscall_capture": records.SyscallCapture,
    "syscall_record": records.SyscallRecord,
    "path_key": records.PathKey,
    "file_capture": records.FileCapture,
    "file_fold_key": records.FileFoldKey,
    "file_record": records.FileRecord,
}
SCALARS = {"u8": (1, False), "u16": (2, False), "u32": (4, False), "u64": (8, False),
           "s32": (4, True), "s64": (8, True), "char": (1, None)}


def _scalar(ctype: type) -> tuple[int, bool | None]:
    code = getattr(ctype, "_type_", None)
    if code == "c":
        return 1, None
    assert isinstance(code, str), ctype
    return ct.sizeof(ctype), code.islower()


def test_every_record_struct_of_common_h_is_mirrored() -> None:
    kernel_only = {"fold_state", "exec_args"}  # used only through bcc's own Leaf types
    assert set(HEADER.structs) - kernel_only == set(MIRRORS)


@pytest.mark.parametrize("struct", sorted(MIRRORS))
def test_struct_fields_types_and_lengths_match(struct: str) -> None:
    mirror = MIRRORS[struct]
    c_fields = HEADER.structs[struct]
    assert [f for _, f, _ in c_fields] == [f for f, _ in mirror._fields_]
    for (c_type, name, length), (_, py_type) in zip(c_fields, mirror._fields_, strict=True):
        if length:
            assert issubclass(py_type, ct.Array), name
            assert py_type._length_ == length, name
            py_type = py_type._type_
        if c_type.startswith("struct "):
            assert py_type is MIRRORS[c_type.split()[1]], name
        else:
            assert _scalar(py_type) == SCALARS[c_type], f"{struct}.{name}: {c_type} vs {py_type}"


def _file_record(op: int, path: bytes, path2: bytes, matched: int) -> records.FileRecord:
    rec = records.FileRecord()
    rec.h.type = records.REC_FILE
    rec.c.op, rec.c.matched, rec.c.access = op, matched, records.ACCESS_BITS["rename"]
    rec.c.dfd, rec.c.dfd2 = 3, 4
    for key, data in zip(rec.c.k, (path, path2), strict=True):
        key.data = data
    return rec


def test_file_record_names_the_watched_path_and_the_other_one() -> None:
    def decode(rec: records.FileRecord) -> FileEvent:
        event = records.decode(bytes(rec), 0).event
        assert isinstance(event, FileEvent)
        return event

    new_watched = decode(_file_record(records.FOP_RENAME, b"/etc/new", b"/tmp/old",
                                      records.MATCHED_PATH))
    assert (new_watched.operation, new_watched.path, new_watched.other_path) == (
        "rename", "/etc/new", "/tmp/old")
    assert (new_watched.dfd, new_watched.other_dfd) == (3, 4)
    old_watched = decode(_file_record(records.FOP_RENAME, b"/tmp/new", b"/etc/old",
                                      records.MATCHED_PATH2))
    assert (old_watched.path, old_watched.other_path) == ("/etc/old", "/tmp/new")
    assert (old_watched.dfd, old_watched.other_dfd) == (4, 3)
    both = decode(_file_record(records.FOP_LINK, b"/etc/a", b"/etc/b",
                               records.MATCHED_PATH | records.MATCHED_PATH2))
    assert (both.operation, both.path, both.other_path) == ("link", "/etc/a", "/etc/b")
    opened = decode(_file_record(records.FOP_OPEN, b"/etc/shadow", b"", records.MATCHED_PATH))
    assert (opened.path, opened.other_path, opened.other_dfd) == ("/etc/shadow", None, None)


def test_syscall_record_without_its_entry_has_unknown_arguments() -> None:
    rec = records.SyscallRecord()
    rec.h.type = records.REC_SYSCALL
    rec.c.sc, rec.ret = records.SYSCALL_IDS["mount"], -1
    rec.c.args_unknown = 1
    event = records.decode(bytes(rec), 0).event
    assert isinstance(event, SyscallEvent)
    assert (event.syscall, event.errno, event.args) == ("mount", 1, records.BLIND_ARGS)
    rec.c.args_unknown = 0
    assert records.decode(bytes(rec), 0).event.args != records.BLIND_ARGS
