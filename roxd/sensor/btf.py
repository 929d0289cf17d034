"""Field offsets of a few kernel structures, read from the running kernel's BTF
(/sys/kernel/btf/vmlinux).

roxd's programs are compiled by bcc against whatever header tree is installed, which need not
match the running kernel (headers.py): a `task->mm` written in C could read the wrong bytes.
BTF describes the running kernel itself, so the offsets come from there and reach the programs
as -D flags (TASK_MM_OFF, ...). Without BTF (CONFIG_DEBUG_INFO_BTF unset) the flags are
absent and the programs fall back to what needs no kernel structure (process.bpf.c).

Only the BTF type section is walked, once, in one pass; no libbpf needed."""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

VMLINUX = Path("/sys/kernel/btf/vmlinux")
MAGIC = 0xEB9F

KIND_INT, KIND_PTR, KIND_ARRAY, KIND_STRUCT, KIND_UNION, KIND_ENUM = 1, 2, 3, 4, 5, 6
KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT = 8, 9, 10, 11
KIND_FUNC_PROTO, KIND_VAR, KIND_DATASEC, KIND_DECL_TAG, KIND_ENUM64 = 13, 14, 15, 17, 19
# bytes that follow the 12-byte common header, per kind: fixed, and per vlen entry
_EXTRA = {KIND_INT: (4, 0), KIND_ARRAY: (12, 0), KIND_STRUCT: (0, 12), KIND_UNION: (0, 12),
          KIND_ENUM: (0, 8), KIND_FUNC_PROTO: (0, 8), KIND_VAR: (4, 0), KIND_DATASEC: (0, 12),
          KIND_DECL_TAG: (4, 0), KIND_ENUM64: (0, 12)}

# (macro, struct, member path): what roxd's programs read
WANTED = (
    ("TASK_MM_OFF", "task_struct", "mm"),
    ("TASK_EXIT_CODE_OFF", "task_struct", "exit_code"),
    ("TASK_REAL_PARENT_OFF", "task_struct", "real_parent"),
    ("TASK_TGID_OFF", "task_struct", "tgid"),
    ("MM_ARG_START_OFF", "mm_struct", "arg_start"),
    ("MM_ARG_END_OFF", "mm_struct", "arg_end"),
    # the pid as the process's own namespace numbers it: thread_pid->numbers[level].nr
    ("TASK_THREAD_PID_OFF", "task_struct", "thread_pid"),
    ("PID_LEVEL_OFF", "pid", "level"),
    ("PID_NUMBERS_OFF", "pid", "numbers"),
    ("UPID_NR_OFF", "upid", "nr"),
)
SIZES = (("UPID_SIZE", "upid"),)


class BtfError(Exception):
    pass


@dataclass(frozen=True)
class _Type:
    kind: int
    name: str
    ref: int  # size for struct/union, referenced type id otherwise
    members: tuple[tuple[str, int, int], ...]  # (name, type id, bit offset)


def _parse(data: bytes) -> dict[int, _Type]:
    """Type id -> type, keeping every struct/union (anonymous ones are needed to resolve
    nested members) and the typedef/const chains, skipping the rest."""
    if len(data) < 24:
        raise BtfError("BTF blob too short")
    magic, _version, _flags, hdr_len = struct.unpack_from("<HBBI", data, 0)
    if magic != MAGIC:
        raise BtfError(f"bad BTF magic {magic:#x} (big-endian or not BTF)")
    type_off, type_len, str_off, _str_len = struct.unpack_from("<IIII", data, 8)
    types_at, strings_at = hdr_len + type_off, hdr_len + str_off
    strings = data[strings_at:]

    def name_of(off: int) -> str:
        end = strings.index(b"\0", off)
        return strings[off:end].decode()

    out: dict[int, _Type] = {}
    pos, end, tid = types_at, types_at + type_len, 1
    unpack = struct.unpack_from
    while pos < end:
        name_off, info, size_or_type = unpack("<III", data, pos)
        kind, vlen, kflag = (info >> 24) & 0x1F, info & 0xFFFF, info >> 31
        pos += 12
        fixed, per = _EXTRA.get(kind, (0, 0))
        if kind in (KIND_STRUCT, KIND_UNION):
            members = []
            for i in range(vlen):
                m_name, m_type, m_off = unpack("<III", data, pos + 12 * i)
                members.append((name_of(m_name) if m_name else "", m_type,
                                m_off & 0xFFFFFF if kflag else m_off))
            out[tid] = _Type(kind, name_of(name_off) if name_off else "", size_or_type,
                             tuple(members))
        elif kind in (KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT):
            out[tid] = _Type(kind, "", size_or_type, ())
        pos += fixed + per * vlen
        tid += 1
    return out


def _member_offset(types: dict[int, _Type], tid: int, member: str) -> int | None:
    """Byte offset of `member` in struct `tid`, looking into anonymous struct/union members
    (mm_struct keeps its fields in one: `struct { ... } __randomize_layout;`)."""
    t = types.get(tid)
    if t is None:
        return None
    for name, mtype, bit_off in t.members:
        if name == member:
            return bit_off // 8
        if not name:
            inner = mtype
            while inner in types and types[inner].kind not in (KIND_STRUCT, KIND_UNION):
                inner = types[inner].ref
            sub = _member_offset(types, inner, member)
            if sub is not None:
                return bit_off // 8 + sub
    return None


def offsets(path: Path = VMLINUX, cache_dir: Path | None = None) -> dict[str, int]:
    """{macro: byte offset} for WANTED; BtfError when the BTF is missing or lacks one.

    With cache_dir, remembered in cache_dir/btf-offsets.json under the SHA-256 of the BTF and
    of what is wanted: the hash costs about 10 ms, the walk about 120 ms, and the walk sits
    before the eBPF compile on the way to READY (issue 22). A new kernel has another BTF,
    hence another key; an unreadable or unwritable cache only costs the walk."""
    data = _read(path)
    if cache_dir is None:
        return _offsets_in(data, path)
    key = hashlib.sha256(data + repr((WANTED, SIZES)).encode()).hexdigest()
    file = cache_dir / "btf-offsets.json"
    try:
        cached = json.loads(file.read_text())
        if cached.get("key") == key:
            return {str(k): int(v) for k, v in cached["offsets"].items()}
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        pass
    out = _offsets_in(data, path)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"key": key, "offsets": out}))
        os.replace(tmp, file)
    except OSError:
        pass
    return out


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise BtfError(f"{path}: {exc.strerror}") from exc


def _offsets_in(data: bytes, path: Path) -> dict[str, int]:
    types = _parse(data)
    by_name: dict[str, int] = {}
    for tid, t in types.items():
        if t.kind == KIND_STRUCT and t.name and t.members and t.name not in by_name:
            by_name[t.name] = tid
    out = {}
    for macro, struct_name, member in WANTED:
        if struct_name not in by_name:
            raise BtfError(f"struct {struct_name} not in {path}")
        off = _member_offset(types, by_name[struct_name], member)
        if off is None:
            raise BtfError(f"{struct_name}.{member} not in {path}")
        out[macro] = off
    for macro, struct_name in SIZES:
        if struct_name not in by_name:
            raise BtfError(f"struct {struct_name} not in {path}")
        out[macro] = types[by_name[struct_name]].ref
    return out
