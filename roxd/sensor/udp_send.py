"""Attach bpf/udp_send.bpf.c's cgroup hooks: UDP datagrams sent to an address without connect.

The programs are compiled with the rest of roxd.bpf.c (they share its ring buffer, counters
and process maps) but bcc does not attach cgroup programs by itself: this module loads them
as BPF_PROG_TYPE_CGROUP_SOCK_ADDR with their expected attach types and links them to the
cgroup v2 root with BPF_LINK_CREATE. A link, not BPF_PROG_ATTACH: it lives as long as its file
descriptor, so a roxd that dies (even by SIGKILL) leaves nothing attached behind, and it never
replaces or blocks another program attached at the same cgroup (links are always
multi-attach). Everything below the root (every container, every host service) runs them.
"""

from __future__ import annotations

import contextlib
import ctypes as ct
import errno
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from roxd.errors import SensorError

log = logging.getLogger(__name__)

BPF_PROG_QUERY = 16
BPF_LINK_CREATE = 28
SYS_BPF = 321  # x86_64
SYS_BPF_BY_MACHINE = {"x86_64": 321, "aarch64": 280}
# (program, attach type name in bcc's BPFAttachType, what it is)
PROGRAMS = (
    ("roxd_udp4_sendmsg", "CGROUP_UDP4_SENDMSG", "cgroup:udp4_sendmsg"),
    ("roxd_udp6_sendmsg", "CGROUP_UDP6_SENDMSG", "cgroup:udp6_sendmsg"),
)
DEFAULT_INTERVAL_S = 10.0


def cgroup2_root(mountinfo: str = "/proc/self/mountinfo") -> Path:
    """The first cgroup2 mount (/sys/fs/cgroup, or /sys/fs/cgroup/unified on hybrid hosts)."""
    try:
        text = Path(mountinfo).read_text()
    except OSError as exc:
        raise SensorError(f"cannot read {mountinfo}: {exc.strerror}") from exc
    for line in text.splitlines():
        left, _, right = line.partition(" - ")
        if right.split(" ", 1)[0] == "cgroup2":
            return Path(left.split()[4])
    raise SensorError("no cgroup2 filesystem is mounted: UDP sends without connect cannot be "
                      "observed (the hooks attach to the cgroup v2 root)")


@dataclass
class UdpSendHooks:
    """The two links; close() detaches them (so does the process's exit)."""

    root: Path
    attached: tuple[str, ...] = ()
    _link_fds: list[int] = field(default_factory=list)

    def close(self) -> None:
        for fd in self._link_fds:
            with contextlib.suppress(OSError):  # closed already: nothing left attached
                os.close(fd)
        self._link_fds.clear()
        self.attached = ()


def attach_udp_send(bpf: Any, interval_s: float = DEFAULT_INTERVAL_S,
                    root: Path | None = None) -> UdpSendHooks:
    """Load and link the sendmsg hooks of a compiled roxd.bpf.c; SensorError says why not."""
    import platform

    from bcc import BPF, BPFAttachType  # the sensor imported bcc already

    root = root or cgroup2_root()
    sys_bpf = SYS_BPF_BY_MACHINE.get(platform.machine(), SYS_BPF)
    bpf["udp_send_interval"][ct.c_int(0)] = ct.c_uint64(int(interval_s * 1e9))
    hooks = UdpSendHooks(root)
    libc = ct.CDLL(None, use_errno=True)
    cg_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        names = []
        for fn_name, attach_name, label in PROGRAMS:
            attach_type = int(getattr(BPFAttachType, attach_name))
            try:
                fn = bpf.load_func(fn_name.encode(), BPF.CGROUP_SOCK_ADDR,
                                   attach_type=attach_type)
            except Exception as exc:
                hooks.close()
                raise SensorError(f"loading {label} failed: {exc}") from exc
            # union bpf_attr for BPF_LINK_CREATE: prog_fd, target_fd, attach_type, flags
            attr = (ct.c_uint32 * 16)(fn.fd, cg_fd, attach_type, 0)
            link = libc.syscall(sys_bpf, BPF_LINK_CREATE, ct.byref(attr), ct.sizeof(attr))
            if link < 0:
                err = ct.get_errno()
                hooks.close()
                raise SensorError(f"attaching {label} at {root} failed: "
                                  f"{errno.errorcode.get(err, err)} ({os.strerror(err)})")
            hooks._link_fds.append(link)
            names.append(label)
        hooks.attached = tuple(names)
    finally:
        os.close(cg_fd)
    log.info("UDP sends without connect observed at %s (%s), one report per container, peer "
             "and port every %.0fs", root, ", ".join(hooks.attached), interval_s)
    return hooks


def attached_program_ids(attach_name: str, root: Path | None = None) -> frozenset[int]:
    """The ids of the programs of an attach type (e.g. "CGROUP_UDP4_SENDMSG") that the cgroup
    `root` holds itself (BPF_PROG_QUERY), whoever attached them: tests check that a roxd,
    however it ended, left none of its own behind."""
    import platform

    from bcc import BPFAttachType

    root = root or cgroup2_root()
    sys_bpf = SYS_BPF_BY_MACHINE.get(platform.machine(), SYS_BPF)
    libc = ct.CDLL(None, use_errno=True)
    ids = (ct.c_uint32 * 64)()
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        # union bpf_attr for BPF_PROG_QUERY: target_fd, attach_type, query_flags,
        # attach_flags (out), prog_ids (u64 pointer), prog_cnt (in: room, out: count)
        attr = (ct.c_uint32 * 16)()
        attr[0], attr[1] = fd, int(getattr(BPFAttachType, attach_name))
        ptr = ct.addressof(ids)
        attr[4], attr[5] = ptr & 0xFFFFFFFF, ptr >> 32
        attr[6] = len(ids)
        if libc.syscall(sys_bpf, BPF_PROG_QUERY, ct.byref(attr), ct.sizeof(attr)) < 0:
            err = ct.get_errno()
            raise SensorError(f"querying {attach_name} programs at {root} failed: "
                              f"{os.strerror(err)}")
        return frozenset(ids[i] for i in range(min(int(attr[6]), len(ids))))
    finally:
        os.close(fd)
