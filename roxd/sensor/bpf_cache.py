"""A cache of bcc's compiled, relocatable bytecode, so a start skips clang and LLVM (issue 22).

bcc 0.26 has no ELF loader (iovisor/bcc#2367), but after a compile its module holds each
program's final instructions (`bpf_function_start/size`), and it has created every map, with
the map's file descriptor written into the instructions as `ld_imm64` with src_reg =
BPF_PSEUDO_MAP_FD (1) and imm = fd. So after one real compile roxd saves, per program, its
instructions and which instruction loads which map, and per map what BPF_MAP_CREATE needs (as
the kernel reports it for bcc's map), the key and value type descriptions bcc gives Python,
and the object's BTF (the kernel hands back the blob bcc loaded). A later start with the same
key recreates the maps, writes their new descriptors into the instructions and loads the
programs itself (cached_bpf.py). Nothing is guessed: a program with anything else that needs
relocating (a map value address, a call to another BPF function) is not cached.

roxd's own pid is compiled into two checks of the source, inlined into 65 programs
(ROXD_TGID: roxd's own bpf() calls and file opens are not reported). The cached object is
compiled with a sentinel pid instead, and each start writes its own pid where the sentinel
is: the compiler turns `(pid_tgid >> 32) == ROXD_TGID` into a 64-bit compare against
`ROXD_TGID << 32`, so the sentinel sits in an `ld_imm64`; any other form of it refuses the
cache.

The key is the SHA-256 of everything the bytecode depends on: the final source text, the
cflags (BTF offsets, optional tracepoints, ring size ... ), the kernel release and build, the
kernel's BTF, the header tree, bcc's and roxd's versions and this format. A file that does not
match, cannot be read or does not load is set aside with one log line and the object is
compiled as before; `origin` says which happened.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import struct
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from roxd import __version__
from roxd.sensor import bpf_sys
from roxd.sensor.btf import _EXTRA, MAGIC, VMLINUX

log = logging.getLogger(__name__)

FORMAT = 1
CACHE_SUBDIR = "bpf-objects"
KEEP = 16  # objects kept per cache dir, ~0.4 MB each (configs differ: inbound, ring size...)
# a pid no kernel hands out (PID_MAX_LIMIT is 4194304), odd bits so it is no other constant
TGID_SENTINEL = 0x3D5A_C0E1
TGID_FLAG = "-DROXD_TGID="
LD_IMM64, PSEUDO_MAP_FD, CALL = 0x18, 1, 0x85
KIND_FUNC = 12
# bcc names a program after its function, without these prefixes (libbpf.c)
_NAME_PREFIXES = ("kprobe__", "kretprobe__", "tracepoint__", "raw_tracepoint__", "kfunc__",
                  "kretfunc__", "lsm__")


class CacheError(Exception):
    """Why a cached object cannot be used (or a compiled one cannot be cached)."""


@dataclass(frozen=True)
class TableRecord:
    name: str
    spec: bpf_sys.MapSpec
    key_desc: str  # bcc's JSON type descriptions (BPF._decode_table_type reads them)
    leaf_desc: str


@dataclass(frozen=True)
class FunctionRecord:
    name: str
    insns: bytes  # as bcc compiled them; map fds and the pid are patched at load
    map_refs: tuple[tuple[int, str], ...]  # (ld_imm64 instruction index, table name)
    tgid_refs: tuple[int, ...]  # ld_imm64 instruction indexes holding ROXD_TGID << 32
    btf_func_id: int  # the function's BTF FUNC type (0: none): bpftool shows its full name


@dataclass(frozen=True)
class CompiledObject:
    key: str
    license: bytes
    kern_version: int
    btf: bytes  # the object's BTF as loaded by bcc (b"": none)
    tables: tuple[TableRecord, ...]
    functions: tuple[FunctionRecord, ...]

    def function(self, name: str) -> FunctionRecord | None:
        return next((f for f in self.functions if f.name == name), None)

    def patched(self, fn: FunctionRecord, map_fds: dict[str, int], tgid: int) -> bytes:
        """The instructions with this start's map descriptors and pid written in."""
        code = bytearray(fn.insns)
        for index, table in fn.map_refs:
            struct.pack_into("<i", code, index * 8 + 4, map_fds[table])
        for index in fn.tgid_refs:
            struct.pack_into("<i", code, index * 8 + 4, 0)  # low half; high: the pid
            struct.pack_into("<i", code, index * 8 + 12, tgid)
        return bytes(code)


def program_name(function: str) -> str:
    """The kernel's name for a program, as bcc gives it (prefix off, 15 characters)."""
    for prefix in _NAME_PREFIXES:
        if function.startswith(prefix):
            function = function[len(prefix):]
            break
    return function[:bpf_sys.OBJ_NAME_LEN - 1]


# ---------------------------------------------------------------------------- key


def with_sentinel(cflags: Sequence[str]) -> list[str]:
    """The cflags with ROXD_TGID set to the sentinel (the cached bytecode is the same for
    every start)."""
    return [f for f in cflags if not f.startswith(TGID_FLAG)] + [f"{TGID_FLAG}{TGID_SENTINEL}"]


def headers_identity(path: str) -> list[str]:
    """What identifies a kernel header tree for the compile: the SHA-256 of its generated
    configuration (autoconf.h; version.h names the release), or of the archive (kheaders);
    not its path (a tree assembled of symlinks sits in each cache dir, with the same content)
    nor how it was found (bcc's environment variable, once set, names it)."""
    out = []
    base = Path(path)
    files = [base] if base.is_file() else [
        base / "include/generated/autoconf.h", base / "include/generated/uapi/linux/version.h"]
    for file in files:
        try:
            out.append(hashlib.sha256(file.read_bytes()).hexdigest())
        except OSError:
            out.append("-")
    return out


def cache_key(source: str, cflags: Sequence[str], headers: Sequence[str]) -> str:
    uname = os.uname()
    try:
        btf = hashlib.sha256(VMLINUX.read_bytes()).hexdigest()
    except OSError:
        btf = "none"
    parts = {"format": FORMAT, "source": hashlib.sha256(source.encode()).hexdigest(),
             "cflags": list(cflags), "kernel": [uname.release, uname.version, uname.machine],
             "btf": btf, "headers": list(headers), "bcc": _bcc_version(), "roxd": __version__}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _bcc_version() -> str:
    try:
        from bcc.version import __version__ as bcc_version
    except ImportError:
        return "unknown"
    return str(bcc_version)


# ---------------------------------------------------------------------------- from bcc


def extract(bpf: Any, key: str) -> CompiledObject:
    """The CompiledObject of a compiled bcc.BPF whose programs are not loaded yet."""
    from bcc.libbcc import lib

    tables_lib = _table_calls()
    module = bpf.module
    tables, by_fd, btf_ids = [], {}, set()
    for i in range(tables_lib.bpf_num_tables(module)):
        name = tables_lib.bpf_table_name(module, i).decode()
        fd = int(tables_lib.bpf_table_fd_id(module, i))
        spec, btf_id = bpf_sys.map_spec(fd)
        if spec.map_type in (12, 13):  # array/hash of maps: the inner map is not recorded
            raise CacheError(f"map {name} holds maps")
        if btf_id:
            btf_ids.add(btf_id)
        tables.append(TableRecord(name, spec,
                                  lib.bpf_table_key_desc(module, name.encode()).decode(),
                                  lib.bpf_table_leaf_desc(module, name.encode()).decode()))
        by_fd[fd] = name
    if len(btf_ids) > 1:
        raise CacheError(f"maps refer to {len(btf_ids)} BTF objects")
    blob = bpf_sys.btf_blob(btf_ids.pop()) if btf_ids else b""
    funcs = btf_functions(blob) if blob else {}
    functions = []
    for i in range(lib.bpf_num_functions(module)):
        name = lib.bpf_function_name(module, i).decode()
        functions.append(_function(name, bpf.dump_func(name.encode()), by_fd,
                                   funcs.get(name, 0)))
    return CompiledObject(key, bytes(lib.bpf_module_license(module)),
                          int(lib.bpf_module_kern_version(module)), blob, tuple(tables),
                          tuple(functions))


def _table_calls() -> Any:
    """libbcc's table listing, declared: bcc's own ctypes handle leaves bpf_num_tables,
    bpf_table_name and bpf_table_fd_id undeclared, so Python would pass the module pointer as
    a 32-bit int (a crash wherever the heap lies above 4 GiB). A handle of our own, so bcc's
    is left as it is."""
    import ctypes as ct

    from bcc.libbcc import lib

    own = ct.CDLL(lib._name, use_errno=True)
    own.bpf_num_tables.restype = ct.c_size_t
    own.bpf_num_tables.argtypes = [ct.c_void_p]
    own.bpf_table_name.restype = ct.c_char_p
    own.bpf_table_name.argtypes = [ct.c_void_p, ct.c_size_t]
    own.bpf_table_fd_id.restype = ct.c_int
    own.bpf_table_fd_id.argtypes = [ct.c_void_p, ct.c_size_t]
    return own


def _function(name: str, code: bytes, by_fd: dict[int, str], btf_id: int) -> FunctionRecord:
    if len(code) % 8:
        raise CacheError(f"{name}: {len(code)} bytes of instructions")
    map_refs, tgid_refs = [], []
    i, n = 0, len(code) // 8
    while i < n:
        op, regs, _off, imm = struct.unpack_from("<BBhi", code, i * 8)
        src = regs >> 4
        if op == LD_IMM64:
            hi = struct.unpack_from("<i", code, i * 8 + 12)[0]
            if src == PSEUDO_MAP_FD:
                if imm not in by_fd:
                    raise CacheError(f"{name}: instruction {i} loads an unknown map fd {imm}")
                map_refs.append((i, by_fd[imm]))
            elif src != 0:
                raise CacheError(f"{name}: instruction {i} is an ld_imm64 of kind {src}")
            elif hi == TGID_SENTINEL and imm == 0:
                tgid_refs.append(i)
            elif TGID_SENTINEL in (imm, hi):
                raise CacheError(f"{name}: ROXD_TGID in an ld_imm64 of another form")
            i += 2
            continue
        if op == CALL and src != 0:
            raise CacheError(f"{name}: instruction {i} calls another BPF function")
        if imm == TGID_SENTINEL:
            raise CacheError(f"{name}: ROXD_TGID as an immediate (instruction {i})")
        i += 1
    return FunctionRecord(name, code, tuple(map_refs), tuple(tgid_refs), btf_id)


def btf_functions(blob: bytes) -> dict[str, int]:
    """{function name: BTF FUNC type id} of a BTF blob."""
    magic, _version, _flags, hdr_len = struct.unpack_from("<HBBI", blob, 0)
    if magic != MAGIC:
        raise CacheError(f"bad BTF magic {magic:#x}")
    type_off, type_len, str_off, _str_len = struct.unpack_from("<IIII", blob, 8)
    strings = blob[hdr_len + str_off:]
    out = {}
    pos, end, tid = hdr_len + type_off, hdr_len + type_off + type_len, 1
    while pos < end:
        name_off, info, _ = struct.unpack_from("<III", blob, pos)
        kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
        if kind == KIND_FUNC:
            out[strings[name_off:strings.index(b"\0", name_off)].decode()] = tid
        fixed, per = _EXTRA.get(kind, (0, 0))
        pos += 12 + fixed + per * vlen
        tid += 1
    return out


# ---------------------------------------------------------------------------- the file


def cache_file(cache_dir: Path, key: str) -> Path:
    return cache_dir / CACHE_SUBDIR / f"{key}.json"


def save(cache_dir: Path, obj: CompiledObject) -> Path:
    """Write atomically (a reader sees the old file or the whole new one) and keep the KEEP
    most recently used objects."""
    target = cache_file(cache_dir, obj.key)
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o755)  # see _trusted
    doc = {"format": FORMAT, "key": obj.key, "license": obj.license.decode(),
           "kern_version": obj.kern_version, "btf": _b64(obj.btf),
           "tables": [{"name": t.name, "type": t.spec.map_type, "key_size": t.spec.key_size,
                       "value_size": t.spec.value_size, "max_entries": t.spec.max_entries,
                       "flags": t.spec.flags, "map_name": t.spec.name,
                       "btf_key_type_id": t.spec.btf_key_type_id,
                       "btf_value_type_id": t.spec.btf_value_type_id,
                       "key_desc": t.key_desc, "leaf_desc": t.leaf_desc} for t in obj.tables],
           "functions": [{"name": f.name, "insns": _b64(f.insns),
                          "map_refs": [list(r) for r in f.map_refs],
                          "tgid_refs": list(f.tgid_refs), "btf_func_id": f.btf_func_id}
                         for f in obj.functions]}
    doc["sha256"] = _digest(doc)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, separators=(",", ":"))
        os.replace(tmp, target)
    except BaseException:
        with _quiet():
            os.unlink(tmp)
        raise
    _prune(target.parent)
    return target


def load(cache_dir: Path, key: str) -> CompiledObject | None:
    """The cached object for `key`; None when there is none (first start with these inputs);
    CacheError when the file is there but unreadable or inconsistent."""
    path = cache_file(cache_dir, key)
    try:
        with path.open() as f:
            _trusted(path, os.fstat(f.fileno()))
            _trusted(path.parent, path.parent.stat())
            text = f.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CacheError(f"{path}: {exc.strerror}") from exc
    try:
        doc = json.loads(text)
        if doc.get("format") != FORMAT or doc.get("key") != key:
            raise CacheError(f"{path}: written for other inputs")
        digest = doc.pop("sha256", None)
        if digest != _digest(doc):
            raise CacheError(f"{path}: checksum mismatch (damaged)")
        tables = tuple(TableRecord(t["name"], bpf_sys.MapSpec(
            int(t["type"]), int(t["key_size"]), int(t["value_size"]), int(t["max_entries"]),
            int(t["flags"]), str(t["map_name"]), int(t["btf_key_type_id"]),
            int(t["btf_value_type_id"])), str(t["key_desc"]), str(t["leaf_desc"]))
            for t in doc["tables"])
        functions = tuple(FunctionRecord(
            str(f["name"]), base64.b64decode(f["insns"], validate=True),
            tuple((int(i), str(n)) for i, n in f["map_refs"]),
            tuple(int(i) for i in f["tgid_refs"]), int(f["btf_func_id"]))
            for f in doc["functions"])
        obj = CompiledObject(key, str(doc["license"]).encode(), int(doc["kern_version"]),
                             base64.b64decode(doc["btf"], validate=True), tables, functions)
    except CacheError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CacheError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from exc
    names = {t.name for t in tables}
    for fn in functions:
        if len(fn.insns) % 8 or any(n not in names for _, n in fn.map_refs) or any(
                i < 0 or i * 8 + 16 > len(fn.insns) for i, _ in fn.map_refs) or any(
                i < 0 or i * 8 + 16 > len(fn.insns) for i in fn.tgid_refs):
            raise CacheError(f"{path}: function {fn.name} is inconsistent")
    with _quiet():
        os.utime(path)  # most recently used: kept by _prune
    return obj


def _trusted(path: Path, st: os.stat_result) -> None:
    """The kernel runs what this file holds, with roxd's privileges: only a file and directory
    that nobody but roxd's own user can write are used."""
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise CacheError(f"{path}: owned by uid {st.st_uid} with mode {st.st_mode & 0o777:o}; "
                         f"only a file and directory that only uid {os.geteuid()} can write "
                         f"are trusted")


def set_aside(cache_dir: Path, key: str) -> None:
    """Remove a file that failed, so the next start compiles and writes a good one."""
    with _quiet():
        cache_file(cache_dir, key).unlink()


def mark_refused(cache_dir: Path, key: str, why: str) -> None:
    """Remember that the object for `key` cannot be cached or loaded on this host (a fresh
    compile's bytecode was refused): later starts compile once, as before the cache, instead
    of compiling for the cache, failing and compiling again."""
    path = cache_file(cache_dir, key).with_suffix(".refused")
    with _quiet():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        path.write_text(why + "\n")
        _prune(path.parent)


def refused(cache_dir: Path, key: str) -> str:
    """Why the object for `key` was found not cacheable here ("" when it was not)."""
    try:
        return cache_file(cache_dir, key).with_suffix(".refused").read_text().strip()
    except OSError:
        return ""


def _prune(directory: Path) -> None:
    """Keep the KEEP most recently used objects (and refusals); drop what a writer killed
    mid-write left behind (a temporary file older than ten minutes)."""
    with _quiet():
        for pattern in ("*.json", "*.refused"):
            files = sorted(directory.glob(pattern), key=lambda p: p.stat().st_mtime,
                           reverse=True)
            for old in files[KEEP:]:
                old.unlink()
        stale = time.time() - 600
        for tmp in directory.glob(".tmp-*"):
            if tmp.stat().st_mtime < stale:
                tmp.unlink()


def _digest(doc: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _quiet() -> contextlib.suppress:
    """Housekeeping (prune, utime, unlink) that may fail harmlessly."""
    return contextlib.suppress(OSError)
