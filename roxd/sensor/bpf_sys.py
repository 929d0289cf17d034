"""The few bpf(2) commands the compiled-object cache needs, called directly through ctypes.

libbcc's exported wrappers take no BTF for a map (an sk_storage map needs it) and no expected
attach type for a program (cgroup sock_addr programs need it), so the cache calls bpf() itself:
create a map, load BTF, load a program, and read a map's or a BTF object's info. Each returns a
file descriptor or raises OSError with the kernel's errno (and the verifier's log for a
program). The structures are `union bpf_attr` and `struct bpf_*_info` from
include/uapi/linux/bpf.h (stable kernel ABI; fields only ever appended).
"""

from __future__ import annotations

import ctypes as ct
import os
from dataclasses import dataclass

_SYS_BPF = {"x86_64": 321, "aarch64": 280}.get(os.uname().machine, 321)
BPF_MAP_CREATE, BPF_PROG_LOAD, BPF_OBJ_GET_INFO_BY_FD = 0, 5, 15
BPF_BTF_LOAD, BPF_BTF_GET_FD_BY_ID = 18, 19
OBJ_NAME_LEN = 16

_libc = ct.CDLL(None, use_errno=True)
_libc.syscall.restype = ct.c_long


def _bpf(cmd: int, attr: ct.Structure) -> int:
    ret = _libc.syscall(_SYS_BPF, cmd, ct.byref(attr), ct.sizeof(attr))
    if ret < 0:
        errno = ct.get_errno()
        raise OSError(errno, os.strerror(errno))
    return int(ret)


class _MapCreate(ct.Structure):
    _fields_ = [("map_type", ct.c_uint32), ("key_size", ct.c_uint32),
                ("value_size", ct.c_uint32), ("max_entries", ct.c_uint32),
                ("map_flags", ct.c_uint32), ("inner_map_fd", ct.c_uint32),
                ("numa_node", ct.c_uint32), ("map_name", ct.c_char * OBJ_NAME_LEN),
                ("map_ifindex", ct.c_uint32), ("btf_fd", ct.c_uint32),
                ("btf_key_type_id", ct.c_uint32), ("btf_value_type_id", ct.c_uint32),
                ("btf_vmlinux_value_type_id", ct.c_uint32), ("map_extra", ct.c_uint64)]


class _ProgLoad(ct.Structure):
    _fields_ = [("prog_type", ct.c_uint32), ("insn_cnt", ct.c_uint32),
                ("insns", ct.c_uint64), ("license", ct.c_uint64),
                ("log_level", ct.c_uint32), ("log_size", ct.c_uint32),
                ("log_buf", ct.c_uint64), ("kern_version", ct.c_uint32),
                ("prog_flags", ct.c_uint32), ("prog_name", ct.c_char * OBJ_NAME_LEN),
                ("prog_ifindex", ct.c_uint32), ("expected_attach_type", ct.c_uint32),
                ("prog_btf_fd", ct.c_uint32), ("func_info_rec_size", ct.c_uint32),
                ("func_info", ct.c_uint64), ("func_info_cnt", ct.c_uint32),
                ("line_info_rec_size", ct.c_uint32), ("line_info", ct.c_uint64),
                ("line_info_cnt", ct.c_uint32), ("attach_btf_id", ct.c_uint32)]


class _BtfLoad(ct.Structure):
    _fields_ = [("btf", ct.c_uint64), ("btf_log_buf", ct.c_uint64),
                ("btf_size", ct.c_uint32), ("btf_log_size", ct.c_uint32),
                ("btf_log_level", ct.c_uint32)]


class _InfoByFd(ct.Structure):
    _fields_ = [("bpf_fd", ct.c_uint32), ("info_len", ct.c_uint32), ("info", ct.c_uint64)]


class _GetFdById(ct.Structure):
    _fields_ = [("id", ct.c_uint32), ("next_id", ct.c_uint32), ("open_flags", ct.c_uint32)]


class _MapInfo(ct.Structure):
    _fields_ = [("type", ct.c_uint32), ("id", ct.c_uint32), ("key_size", ct.c_uint32),
                ("value_size", ct.c_uint32), ("max_entries", ct.c_uint32),
                ("map_flags", ct.c_uint32), ("name", ct.c_char * OBJ_NAME_LEN),
                ("ifindex", ct.c_uint32), ("btf_vmlinux_value_type_id", ct.c_uint32),
                ("netns_dev", ct.c_uint64), ("netns_ino", ct.c_uint64),
                ("btf_id", ct.c_uint32), ("btf_key_type_id", ct.c_uint32),
                ("btf_value_type_id", ct.c_uint32), ("_pad", ct.c_uint32),
                ("map_extra", ct.c_uint64)]


class _BtfInfo(ct.Structure):
    _fields_ = [("btf", ct.c_uint64), ("btf_size", ct.c_uint32), ("id", ct.c_uint32),
                ("name", ct.c_uint64), ("name_len", ct.c_uint32), ("kernel_btf", ct.c_uint32)]


@dataclass(frozen=True)
class MapSpec:
    """What BPF_MAP_CREATE needs, as the kernel reports it for a map bcc created."""

    map_type: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int
    name: str  # the kernel's (at most 15 characters)
    btf_key_type_id: int = 0  # ids in the object's BTF (0: none)
    btf_value_type_id: int = 0


def map_spec(fd: int) -> tuple[MapSpec, int]:
    """The spec of the map behind `fd` and the id of its BTF object (0: none)."""
    info = _MapInfo()
    attr = _InfoByFd(fd, ct.sizeof(info), ct.addressof(info))
    _bpf(BPF_OBJ_GET_INFO_BY_FD, attr)
    spec = MapSpec(info.type, info.key_size, info.value_size, info.max_entries,
                   info.map_flags, info.name.decode(), info.btf_key_type_id,
                   info.btf_value_type_id)
    return spec, info.btf_id


def btf_blob(btf_id: int) -> bytes:
    """The raw BTF (header, types, strings) of the loaded BTF object `btf_id`, exactly as it
    was loaded."""
    fd = _bpf(BPF_BTF_GET_FD_BY_ID, _GetFdById(btf_id))
    try:
        info = _BtfInfo()
        attr = _InfoByFd(fd, ct.sizeof(info), ct.addressof(info))
        _bpf(BPF_OBJ_GET_INFO_BY_FD, attr)  # first call: the size
        buf = ct.create_string_buffer(info.btf_size)
        info = _BtfInfo(btf=ct.addressof(buf), btf_size=len(buf))
        attr = _InfoByFd(fd, ct.sizeof(info), ct.addressof(info))
        _bpf(BPF_OBJ_GET_INFO_BY_FD, attr)
        return buf.raw[:info.btf_size]
    finally:
        os.close(fd)


def load_btf(blob: bytes) -> int:
    buf = ct.create_string_buffer(blob, len(blob))
    return _bpf(BPF_BTF_LOAD, _BtfLoad(btf=ct.addressof(buf), btf_size=len(blob)))


def create_map(spec: MapSpec, btf_fd: int = 0) -> int:
    with_btf = btf_fd > 0 and spec.btf_value_type_id > 0
    attr = _MapCreate(map_type=spec.map_type, key_size=spec.key_size,
                      value_size=spec.value_size, max_entries=spec.max_entries,
                      map_flags=spec.flags, map_name=spec.name.encode()[:OBJ_NAME_LEN - 1],
                      btf_fd=btf_fd if with_btf else 0,
                      btf_key_type_id=spec.btf_key_type_id if with_btf else 0,
                      btf_value_type_id=spec.btf_value_type_id if with_btf else 0)
    return _bpf(BPF_MAP_CREATE, attr)


def load_program(prog_type: int, insns: bytes, *, name: str, license: bytes,
                 kern_version: int, expected_attach_type: int = 0, btf_fd: int = 0,
                 func_type_id: int = 0) -> int:
    """Load one program; on failure, load it again with the verifier's log and raise an
    OSError carrying the log's tail (what the verifier refused)."""
    code = ct.create_string_buffer(insns, len(insns))
    lic = ct.create_string_buffer(license)
    func_info = (ct.c_uint32 * 2)(0, func_type_id)  # bpf_func_info: insn_off 0, type_id

    def attr(log: ct.Array[ct.c_char] | None) -> _ProgLoad:
        a = _ProgLoad(prog_type=prog_type, insn_cnt=len(insns) // 8,
                      insns=ct.addressof(code), license=ct.addressof(lic),
                      kern_version=kern_version, prog_name=name.encode()[:OBJ_NAME_LEN - 1],
                      expected_attach_type=max(expected_attach_type, 0))
        if btf_fd > 0 and func_type_id > 0:
            a.prog_btf_fd, a.func_info_rec_size = btf_fd, 8
            a.func_info, a.func_info_cnt = ct.addressof(func_info), 1
        if log is not None:
            a.log_level, a.log_size, a.log_buf = 1, len(log), ct.addressof(log)
        return a

    try:
        return _bpf(BPF_PROG_LOAD, attr(None))
    except OSError as first:
        log = ct.create_string_buffer(1 << 22)
        try:
            return _bpf(BPF_PROG_LOAD, attr(log))  # loaded after all: keep it
        except OSError:
            tail = log.value.decode(errors="replace").strip().splitlines()[-3:]
            raise OSError(first.errno, f"{first.strerror}: {' | '.join(tail)}") from None


def program_name_of(fd: int) -> str:
    """The kernel's name of the program behind `fd` (struct bpf_prog_info.name, 15 chars)."""
    info = (ct.c_uint8 * 256)()  # bpf_prog_info up to name and beyond; the kernel fills less
    attr = _InfoByFd(fd, 80, ct.addressof(info))  # through name[16] at offset 64
    _bpf(BPF_OBJ_GET_INFO_BY_FD, attr)
    return bytes(info[64:80]).split(b"\0", 1)[0].decode()
