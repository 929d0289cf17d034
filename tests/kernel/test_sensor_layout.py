"""records.py's ctypes structs against the structs bcc generated from the compiled program.

bcc builds a ctypes class for the key and value of every map from clang's own description of
the C types (`bpf[name].Key` / `.Leaf`). Every struct records.py mirrors is the key or value of
some map of the real program (exit and connect records through the layout-only maps in
roxd.bpf.c), so loading it through roxd.sensor.program.Sensor and comparing field by field
(name, offset, size, scalar width and signedness, array length, nested structs) proves the
mirror is the layout the kernel writes. tests/unit/test_sensor_abi.py checks the same structs
against the text of common.h without a kernel.
"""

from __future__ import annotations

import ctypes as ct
from collections.abc import Iterator
from typing import Any

import pytest

from roxd.sensor import inbound, records
from roxd.sensor.program import Sensor, SensorConfig

pytestmark = pytest.mark.kernel

# (records.py struct, map, "Key" or "Leaf"); a struct may sit in several maps
MAPPED: tuple[tuple[type[ct.Structure], str, str], ...] = (
    (records.ExecRecord, "exec_scratch", "Leaf"),
    (records.ExitRecord, "exit_rec_layout", "Leaf"),
    (records.ConnectRecord, "connect_rec_layout", "Leaf"),
    (records.SyscallRecord, "syscall_rec_scratch", "Leaf"),
    (records.FileRecord, "file_rec_scratch", "Leaf"),
    (records.SyscallCapture, "syscall_scratch", "Leaf"),
    (records.SyscallCapture, "inflight_syscall", "Leaf"),
    (records.FileCapture, "file_scratch", "Leaf"),
    (records.FileCapture, "inflight_file", "Leaf"),
    (records.ExecFoldKey, "exec_folds", "Key"),
    (records.ConnectFoldKey, "connect_folds", "Key"),
    (records.SyscallFoldKey, "syscall_folds", "Key"),
    (records.FileFoldKey, "file_folds", "Key"),
    (records.PathKey, "file_watch_paths", "Key"),
    (inbound.InboundRecord, "inbound_rec_layout", "Leaf"),  # bpf/inbound.bpf.c
    (inbound.AcceptKey, "accept_folds", "Key"),
)


def _scalar(ctype: Any) -> str:
    code = ctype._type_
    if code == "c":
        return "char"
    return f"{'s' if code.islower() else 'u'}{8 * ct.sizeof(ctype)}"


def _kind(ctype: Any) -> str:
    if isinstance(ctype, type) and issubclass(ctype, ct.Array):
        return f"{_kind(ctype._type_)}[{ctype._length_}]"
    if isinstance(ctype, type) and issubclass(ctype, ct.Structure):
        return f"struct({ct.sizeof(ctype)})"
    return _scalar(ctype)


def layout(cls: type[ct.Structure], prefix: str = "", base: int = 0
           ) -> Iterator[tuple[str, int, int, str]]:
    """(dotted field name, absolute offset, size, kind) of every field, nested structs and the
    first element of arrays of structs included; bcc's own `__pad*` fillers left out."""
    for entry in cls._fields_:
        name, ctype = entry[0], entry[1]
        if name.startswith("__pad"):
            continue
        descriptor = getattr(cls, name)
        offset = base + descriptor.offset
        yield f"{prefix}{name}", offset, descriptor.size, _kind(ctype)
        element = ctype
        while isinstance(element, type) and issubclass(element, ct.Array):
            element, name = element._type_, f"{name}[0]"
        if isinstance(element, type) and issubclass(element, ct.Structure):
            yield from layout(element, f"{prefix}{name}.", offset)


def _generated(bpf: Any, table: str, part: str) -> type[ct.Structure]:
    ctype = getattr(bpf[table.encode()], part)
    if issubclass(ctype, ct.Array):  # per-CPU maps: one value per CPU
        ctype = ctype._type_
    assert issubclass(ctype, ct.Structure), f"{table}.{part} is {ctype}"
    return ctype


@pytest.fixture(scope="module")
def bpf(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    sensor = Sensor(SensorConfig(cache_dir=tmp_path_factory.mktemp("layout")), lambda d: None)
    sensor.start()
    try:
        yield sensor._require()  # the bcc object: its tables carry bcc's generated types
    finally:
        sensor.close()


@pytest.mark.parametrize(("mirror", "table", "part"), MAPPED,
                         ids=[f"{m.__name__}-{t}" for m, t, _ in MAPPED])
def test_mirror_is_the_compiled_layout(bpf: Any, mirror: type[ct.Structure], table: str,
                                       part: str) -> None:
    generated = _generated(bpf, table, part)
    assert list(layout(mirror)) == list(layout(generated))
    assert ct.sizeof(mirror) == ct.sizeof(generated)


def _structs_in(cls: type[ct.Structure]) -> set[type[ct.Structure]]:
    found = {cls}
    for entry in cls._fields_:
        element = entry[1]
        while issubclass(element, ct.Array):
            element = element._type_
        if isinstance(element, type) and issubclass(element, ct.Structure):
            found |= _structs_in(element)
    return found


def test_every_struct_of_records_is_compared() -> None:
    defined = {v for v in vars(records).values()
               if isinstance(v, type) and issubclass(v, ct.Structure) and v is not ct.Structure}
    compared = set().union(*(_structs_in(m) for m, _, _ in MAPPED))
    # ExecHead is ExecRecord without its argv buffer (decoding reads only the fixed part):
    # compared through ExecRecord, and held to being its exact prefix below
    assert defined - compared - {records.ExecHead} == set()


def test_exec_head_is_the_exec_record_without_argv() -> None:
    assert records.ExecHead._fields_ == records.ExecRecord._fields_[:-1]
    assert records.ExecRecord._fields_[-1][0] == "args"
    assert ct.sizeof(records.ExecHead) == records.ExecRecord.args.offset


def test_a_drifted_mirror_is_caught(bpf: Any) -> None:
    """The comparison is not vacuous: a field of the wrong width, a renamed field and a wrong
    array length each differ."""
    generated = list(layout(_generated(bpf, "exit_rec_layout", "Leaf")))

    class WrongWidth(ct.Structure):
        _fields_ = (("h", records.EventHeader), ("exit_code", ct.c_int64))

    class Renamed(ct.Structure):
        _fields_ = (("h", records.EventHeader), ("code", ct.c_int32),
                    ("has_exit_code", ct.c_uint32))

    class Signed(ct.Structure):
        _fields_ = (("h", records.EventHeader), ("exit_code", ct.c_int32),
                    ("has_exit_code", ct.c_int32))

    for wrong in (WrongWidth, Renamed, Signed):
        assert list(layout(wrong)) != generated, wrong.__name__
    key = list(layout(_generated(bpf, "file_watch_paths", "Key")))

    class ShortPath(ct.Structure):
        _fields_ = (("prefixlen", ct.c_uint32), ("data", ct.c_char * 128))

    assert list(layout(ShortPath)) != key
