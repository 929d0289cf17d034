"""A bcc.BPF made from a cached compiled object (bpf_cache.py) instead of a compile.

roxd reads and writes maps, loads, attaches and detaches programs and polls the ring buffer
through bcc's BPF object. This subclass keeps all of that bcc code (attach_tracepoint, the
ring buffer manager, cleanup, the Table classes) and replaces only what reads bcc's compiled
module: the constructor (it creates the maps from the cached specs), load_func (it loads
cached instructions with this start's map descriptors and pid written in), get_table (key and
value types from the cached descriptions) and the list of programs to attach automatically.
bcc's Table classes read the map's type, flags and size from the module in their
constructor; a small base class placed before bcc's TableBase gives them the cached values.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import threading
from typing import Any

from roxd.sensor import bpf_sys
from roxd.sensor.bpf_cache import CompiledObject, TableRecord, program_name

_class_lock = threading.Lock()
_classes: dict[str, Any] = {}


def open_cached(obj: CompiledObject, tgid: int) -> Any:
    """A bcc.BPF-compatible object with the maps of `obj` created and no program loaded yet
    (load_autoload(), then attach_deferred(); or load_func() for one program)."""
    return _bpf_class()(obj, tgid)


def _bpf_class() -> Any:
    with _class_lock:
        if "bpf" not in _classes:
            _classes["bpf"] = _make_class()
        return _classes["bpf"]


def _make_class() -> Any:
    from bcc import BPF

    class CachedBPF(BPF):  # type: ignore[misc, valid-type]
        def __init__(self, obj: CompiledObject, tgid: int) -> None:
            # what BPF.__init__ sets, without its compile
            self.kprobe_fds: dict[Any, Any] = {}
            self.uprobe_fds: dict[Any, Any] = {}
            self.tracepoint_fds: dict[bytes, int] = {}
            self.raw_tracepoint_fds: dict[bytes, int] = {}
            self.kfunc_entry_fds: dict[Any, Any] = {}
            self.kfunc_exit_fds: dict[Any, Any] = {}
            self.lsm_fds: dict[Any, Any] = {}
            self.perf_buffers: dict[Any, Any] = {}
            self.open_perf_events: dict[Any, Any] = {}
            self._ringbuf_manager = None
            self.tracefile = None
            self.debug = 0
            self.funcs: dict[bytes, Any] = {}
            self.tables: dict[bytes, Any] = {}
            self.module = None
            self.roxd_object = obj
            self._tgid = tgid
            self._map_fds: dict[str, int] = {}
            self._btf_fd = -1
            atexit.register(self.cleanup)
            try:
                if obj.btf:
                    self._btf_fd = bpf_sys.load_btf(obj.btf)
                for table in obj.tables:
                    self._map_fds[table.name] = _create(table, self._btf_fd)
            except BaseException:
                self.close()
                raise

        # -------------------------------------------------------------- programs

        def load_func(self, func_name: bytes | str, prog_type: int, device: Any = None,
                      attach_type: int = -1) -> Any:
            key = func_name.encode() if isinstance(func_name, str) else func_name
            if key in self.funcs:
                return self.funcs[key]
            fn = self.roxd_object.function(key.decode())
            if fn is None:
                raise Exception(f"Unknown program {key.decode()}")
            obj = self.roxd_object
            try:
                fd = bpf_sys.load_program(
                    prog_type, obj.patched(fn, self._map_fds, self._tgid),
                    name=program_name(fn.name), license=obj.license,
                    kern_version=obj.kern_version, expected_attach_type=attach_type,
                    btf_fd=self._btf_fd, func_type_id=fn.btf_func_id)
            except OSError as exc:  # bcc raises bare Exception: callers expect that
                raise Exception(f"Failed to load BPF program {key.decode()}: "
                                f"{exc.strerror}") from exc
            loaded = BPF.Function(self, key, fd)
            self.funcs[key] = loaded
            return loaded

        def roxd_autoload(self) -> list[tuple[bytes, int]]:
            """(name, program type) of the programs bcc would attach by their name."""
            out = []
            for fn in self.roxd_object.functions:
                if fn.name.startswith("tracepoint__"):
                    out.append((fn.name.encode(), BPF.TRACEPOINT))
                elif fn.name.startswith("raw_tracepoint__"):
                    out.append((fn.name.encode(), BPF.RAW_TRACEPOINT))
            return out

        def attach_deferred(self) -> None:
            """Attach what roxd_autoload() names, as bcc's _trace_autoload does."""
            for name, kind in self.roxd_autoload():
                if kind == BPF.TRACEPOINT:
                    tp = name[len(b"tracepoint__"):].replace(b"__", b":")
                    if tp not in self.tracepoint_fds:
                        self.attach_tracepoint(tp=tp, fn_name=name)
                else:
                    tp = name[len(b"raw_tracepoint__"):]
                    if tp not in self.raw_tracepoint_fds:
                        self.attach_raw_tracepoint(tp=tp, fn_name=name)

        # -------------------------------------------------------------- maps

        def get_table(self, name: bytes | str, keytype: Any = None, leaftype: Any = None,
                      reducer: Any = None) -> Any:
            key = name.decode() if isinstance(name, bytes) else name
            index = next((i for i, t in enumerate(self.roxd_object.tables) if t.name == key),
                         None)
            if index is None:
                raise KeyError(name)
            record = self.roxd_object.tables[index]
            if keytype is None:
                keytype = BPF._decode_table_type(json.loads(record.key_desc))
            if leaftype is None:
                leaftype = BPF._decode_table_type(json.loads(record.leaf_desc))
            return _table(self, index, record, self._map_fds[key], keytype, leaftype,
                          key.encode(), reducer)

        def close(self) -> None:
            super().close()  # program fds (module is None: nothing else)
            for fd in self._map_fds.values():
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._map_fds = {}
            if self._btf_fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(self._btf_fd)
                self._btf_fd = -1

    return CachedBPF


def _create(table: TableRecord, btf_fd: int) -> int:
    try:
        return bpf_sys.create_map(table.spec, btf_fd)
    except OSError as exc:
        raise OSError(exc.errno, f"creating map {table.name}: {exc.strerror}") from exc


def _table(bpf: Any, index: int, record: TableRecord, fd: int, keytype: Any, leaftype: Any,
           name: bytes, reducer: Any) -> Any:
    from bcc import table as t

    classes = {t.BPF_MAP_TYPE_HASH: t.HashTable, t.BPF_MAP_TYPE_ARRAY: t.Array,
               t.BPF_MAP_TYPE_PERCPU_HASH: t.PerCpuHash,
               t.BPF_MAP_TYPE_PERCPU_ARRAY: t.PerCpuArray, t.BPF_MAP_TYPE_LPM_TRIE: t.LpmTrie,
               t.BPF_MAP_TYPE_LRU_HASH: t.LruHash,
               t.BPF_MAP_TYPE_LRU_PERCPU_HASH: t.LruPerCpuHash,
               t.BPF_MAP_TYPE_RINGBUF: t.RingBuf}
    base = classes.get(record.spec.map_type)
    if base is None:  # bcc's Table() raises the same for a type it has no class for
        raise Exception(f"Unknown table type {record.spec.map_type}")
    cls = _with_cached_meta(base)
    if base in (t.PerCpuHash, t.PerCpuArray, t.LruPerCpuHash):
        return cls(bpf, index, fd, keytype, leaftype, name, reducer=reducer)
    return cls(bpf, index, fd, keytype, leaftype, name)


def _with_cached_meta(base: Any) -> Any:
    """`base` (a bcc Table class) with a TableBase.__init__ that reads the cached record
    instead of bcc's module: the class is (base, _Meta), and _Meta comes right before
    TableBase in the method resolution order."""
    with _class_lock:
        name = f"table:{base.__name__}"
        if name not in _classes:
            _classes[name] = type(f"Cached{base.__name__}", (base, _meta_class()), {})
        return _classes[name]


def _meta_class() -> Any:
    if "meta" not in _classes:
        from bcc.table import TableBase

        class _Meta(TableBase):  # type: ignore[misc, valid-type]
            def __init__(self, bpf: Any, map_id: int, map_fd: int, keytype: Any,
                         leaftype: Any, name: bytes | None = None) -> None:
                spec = bpf.roxd_object.tables[map_id].spec
                self.bpf, self.map_id, self.map_fd = bpf, map_id, map_fd
                self.Key, self.Leaf = keytype, leaftype
                self.ttype, self.flags, self.max_entries = (spec.map_type, spec.flags,
                                                            spec.max_entries)
                self._cbs: dict[Any, Any] = {}
                self._name = name

        _classes["meta"] = _Meta
    return _classes["meta"]
