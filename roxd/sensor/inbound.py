"""Inbound TCP connections and listening sockets (bpf/inbound.bpf.c): the events, the Python
mirror of their record, and the loader that attaches the cgroup programs.

The programs live in the one compilation unit (roxd.bpf.c includes inbound.bpf.c), so they
share the ring buffer and the drop counters; but they are not tracepoints: bcc does not load
them by itself. `InboundProbe.attach` loads them with their program types and attaches them to
the cgroup v2 root with bpf links (BPF_LINK_CREATE): a link belongs to roxd's file
descriptor, so a roxd that dies - SIGKILL included - leaves nothing attached, and other
programs on the root (another tool's, the network-baseline connect hooks) are not displaced.

What the kernel refuses is reported, never hidden: `status` says "kernel" or why not.
"""

from __future__ import annotations

import contextlib
import ctypes as ct
import errno
import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from roxd.text import from_bytes

log = logging.getLogger(__name__)

REC_ACCEPT = 16
REC_LISTEN = 17
LISTEN_OPEN = 1
LISTEN_CLOSE = 2
LISTEN_UDP_BIND = 3
LISTEN_OPS = {LISTEN_OPEN: "listen", LISTEN_CLOSE: "close", LISTEN_UDP_BIND: "bind"}
PROTOCOLS = {6: "tcp", 17: "udp"}

# enum inbound_stat in bpf/inbound.bpf.c, in order
INBOUND_STAT_NAMES: tuple[str, ...] = (
    "accept_seen",
    "accept_emitted",
    "accept_folded",
    "accept_dropped",
    "accept_no_owner",
    "listen_seen",
    "listen_emitted",
    "listen_dropped",
)


@dataclass(frozen=True, slots=True)
class AcceptEvent:
    """An accepted inbound TCP connection (the handshake completed on a listener).

    The pid, uid and comm are the listener's owner (the process that called listen()), not
    necessarily the one that will accept() it; cgroup_id is the listener's cgroup, 0 when the
    listener predates roxd (then the local address tells the container: roxd/netmap)."""

    time_ns: int
    pid: int
    uid: int
    cgroup_id: int
    comm: str
    family: str  # ipv4 | ipv6
    saddr: str  # the peer
    sport: int
    laddr: str  # the local address reached
    lport: int
    protocol: str = "tcp"
    folded: int = 0  # identical accepts (same peer address, local address and port) folded


@dataclass(frozen=True, slots=True)
class ListenEvent:
    """A listening socket opened (TCP listen(), UDP bind()) or closed (TCP only)."""

    time_ns: int
    pid: int
    uid: int
    cgroup_id: int
    comm: str
    op: str  # listen | close | bind
    family: str
    laddr: str
    lport: int
    protocol: str  # tcp | udp
    cookie: int  # the socket's cookie: a listener's listen and close carry the same one


InboundEvent = AcceptEvent | ListenEvent
INBOUND_TYPES = frozenset({AcceptEvent, ListenEvent})  # `type(e) in`: one set lookup per event


class _Header(ct.Structure):  # struct event_header (common.h); records.EventHeader's twin
    _fields_ = (
        ("type", ct.c_uint32),
        ("pid", ct.c_uint32),
        ("tid", ct.c_uint32),
        ("ppid", ct.c_uint32),
        ("uid", ct.c_uint32),
        ("gid", ct.c_uint32),
        ("cgroup_id", ct.c_uint64),
        ("ktime_ns", ct.c_uint64),
        ("comm", ct.c_char * 16),
    )


class AcceptKey(ct.Structure):
    _fields_ = (
        ("cgroup_id", ct.c_uint64),
        ("raddr", ct.c_uint8 * 16),
        ("laddr", ct.c_uint8 * 16),
        ("family", ct.c_uint16),
        ("lport", ct.c_uint16),
        ("pad", ct.c_uint32),
    )


class InboundRecord(ct.Structure):
    _fields_ = (
        ("h", _Header),
        ("key", AcceptKey),
        ("folded", ct.c_uint64),
        ("cookie", ct.c_uint64),
        ("rport", ct.c_uint16),
        ("op", ct.c_uint8),
        ("protocol", ct.c_uint8),
        ("pad", ct.c_uint32),
    )


assert ct.sizeof(AcceptKey) == 48
assert ct.sizeof(InboundRecord) == 56 + 48 + 8 + 8 + 8


def _address(family: int, raw: bytes) -> tuple[str, str]:
    if family == socket.AF_INET:
        return "ipv4", socket.inet_ntop(socket.AF_INET, raw[12:16])
    if family == socket.AF_INET6:
        return "ipv6", socket.inet_ntop(socket.AF_INET6, raw)
    raise ValueError(f"inbound record with address family {family}")


def decode_inbound(raw: bytes, clock_offset_ns: int) -> InboundEvent:
    """One REC_ACCEPT / REC_LISTEN record (ValueError when it cannot be read)."""
    size = ct.sizeof(InboundRecord)
    rec = InboundRecord.from_buffer_copy(raw[:size].ljust(size, b"\0"))
    h = rec.h
    family, laddr = _address(rec.key.family, bytes(rec.key.laddr))
    comm = from_bytes(h.comm.split(b"\0", 1)[0])
    time_ns = h.ktime_ns + clock_offset_ns
    protocol = PROTOCOLS.get(rec.protocol, str(rec.protocol))
    if h.type == REC_ACCEPT:
        _, saddr = _address(rec.key.family, bytes(rec.key.raddr))
        return AcceptEvent(time_ns=time_ns, pid=h.pid, uid=h.uid, cgroup_id=h.cgroup_id,
                           comm=comm, family=family, saddr=saddr, sport=rec.rport, laddr=laddr,
                           lport=rec.key.lport, protocol=protocol, folded=rec.folded)
    if h.type == REC_LISTEN:
        if rec.op not in LISTEN_OPS:
            raise ValueError(f"listen record with operation {rec.op}")
        return ListenEvent(time_ns=time_ns, pid=h.pid, uid=h.uid, cgroup_id=h.cgroup_id,
                           comm=comm, op=LISTEN_OPS[rec.op], family=family, laddr=laddr,
                           lport=rec.key.lport, protocol=protocol, cookie=rec.cookie)
    raise ValueError(f"not an inbound record type: {h.type}")


# ---------------------------------------------------------------------------- attaching

# program name -> (bcc program type, attach type); numbers as in linux/bpf.h (and bcc)
SOCK_OPS, CGROUP_SOCK = 13, 9
ATTACH_SOCK_OPS, ATTACH_INET4_POST_BIND, ATTACH_INET6_POST_BIND = 3, 12, 13
PROGRAMS: tuple[tuple[str, int, int], ...] = (
    ("roxd_inbound_ops", SOCK_OPS, ATTACH_SOCK_OPS),
    ("roxd_inbound_bind4", CGROUP_SOCK, ATTACH_INET4_POST_BIND),
    ("roxd_inbound_bind6", CGROUP_SOCK, ATTACH_INET6_POST_BIND),
)


@dataclass
class InboundStatus:
    state: str  # kernel | off | unavailable
    reason: str = ""
    cgroup_root: str = ""
    programs: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"state": self.state, "reason": self.reason or None,
                "cgroup_root": self.cgroup_root or None, "programs": list(self.programs)}


class InboundProbe:
    """Loads and attaches the inbound programs of a loaded bcc object; detach() closes the
    links (the kernel detaches them); stats() reads their counters."""

    def __init__(self) -> None:
        self.status = InboundStatus("off", "not attached")
        self._links: list[int] = []
        self._bpf: Any = None

    def attach(self, bpf: Any, cgroup_root: str) -> InboundStatus:
        """Attach to the cgroup v2 root at `cgroup_root`; never raises: what the kernel
        answered is in the returned status (state "unavailable")."""
        self._bpf = bpf
        try:
            from bcc import libbcc
        except ImportError as exc:  # the sensor loaded, so bcc is there; be safe anyway
            self.status = InboundStatus("unavailable", f"bcc: {exc}", cgroup_root)
            return self.status
        lib = libbcc.lib
        lib.bpf_link_create.argtypes = (ct.c_int, ct.c_int, ct.c_int, ct.c_void_p)
        lib.bpf_link_create.restype = ct.c_int
        try:
            root_fd = os.open(cgroup_root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            self.status = InboundStatus("unavailable", f"cgroup v2 root {cgroup_root}: "
                                        f"{exc.strerror}", cgroup_root)
            return self.status
        attached: list[str] = []
        try:
            for name, prog_type, attach_type in PROGRAMS:
                try:
                    fn = bpf.load_func(name, prog_type, attach_type=attach_type)
                except Exception as exc:  # the verifier's refusal, as bcc words it
                    raise _Refused(f"loading {name}: {exc}") from exc
                link = lib.bpf_link_create(fn.fd, root_fd, attach_type, None)
                if link < 0:
                    code = ct.get_errno() or -link
                    raise _Refused(f"attaching {name} to {cgroup_root}: "
                                   f"{errno.errorcode.get(code, code)} {os.strerror(code)}")
                self._links.append(link)
                attached.append(name)
        except _Refused as exc:
            self.detach()
            self.status = InboundStatus("unavailable", str(exc), cgroup_root)
            log.warning("inbound connections and listening sockets are not traced: %s", exc)
            return self.status
        finally:
            os.close(root_fd)
        self.status = InboundStatus("kernel", "", cgroup_root, tuple(attached))
        log.info("inbound: %s attached to %s (bpf links)", ", ".join(attached), cgroup_root)
        return self.status

    def off(self, reason: str) -> None:
        """Not attached: turned off by the configuration, or refused at compile/load time
        (then the state is `unavailable`); said either way."""
        state = "unavailable" if reason.startswith("refused") else "off"
        self.status = InboundStatus(state, reason)
        log.info("inbound connections and listening sockets are not traced: %s", reason)

    def detach(self) -> None:
        for link in self._links:
            with contextlib.suppress(OSError):
                os.close(link)  # the last reference to a bpf link: the kernel detaches it
        self._links = []
        if self.status.state == "kernel":
            self.status = InboundStatus("off", "detached", self.status.cgroup_root)

    def stats(self) -> Mapping[str, int]:
        if self._bpf is None or self.status.state != "kernel":
            return {}
        try:
            table = self._bpf["inbound_stats"]
            return {name: sum(int(v) for v in table[ct.c_int(i)])
                    for i, name in enumerate(INBOUND_STAT_NAMES)}
        except Exception:  # the object is gone (closed): nothing to read
            return {}


class _Refused(Exception):
    pass
