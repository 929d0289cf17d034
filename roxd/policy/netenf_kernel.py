"""The cgroup connect hook (bpf/netenf.bpf.c): load, attach, write its maps, read its verdicts.

The programs are compiled with the sensor's (one bcc object) but loaded and attached here, on
their own: a kernel that refuses them costs network enforcement (alert only, said in features
and status), never the sensor. They are attached to the cgroup v2 root through bpf_link
(BPF_LINK_CREATE), not the legacy attach: a link lives as long as its file descriptor, so the
hook goes away with roxd whatever way roxd ends (stop, crash, SIGKILL), and a dead roxd never
leaves workloads refused by a stale allow-list. BPF_F_ALLOW_MULTI semantics come with links:
other programs on the root (systemd's, a runtime's) keep running.
"""

from __future__ import annotations

import contextlib
import ctypes as ct
import errno as errno_mod
import ipaddress
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from roxd.policy.netenf import NetworkAllow, NetworkCgroups, NetworkExact

log = logging.getLogger(__name__)

BPF_PROG_TYPE_CGROUP_SOCK_ADDR = 18
BPF_LINK_CREATE = 28
SYS_BPF = 321  # x86_64
# (function, attach type): BPF_CGROUP_INET4_CONNECT, INET6_CONNECT, UDP4_SENDMSG, UDP6_SENDMSG
PROGRAMS = (("netenf_connect4", 10), ("netenf_connect6", 11),
            ("netenf_sendmsg4", 14), ("netenf_sendmsg6", 15))
STAT_NAMES = ("checked", "allowed", "refused_connect", "refused_sendmsg", "loopback")


@dataclass(frozen=True)
class Refusal:
    """What the hook refused for one thread (netenf_verdicts)."""

    cgroup_id: int
    workload: int
    port: int
    protocol: int
    op: str  # connect | sendmsg
    address: str


@dataclass(frozen=True)
class Probe:
    available: bool
    detail: str


def _link_create(prog_fd: int, target_fd: int, attach_type: int) -> int:
    libc = ct.CDLL(None, use_errno=True)
    attr = (ct.c_uint32 * 16)()  # union bpf_attr.link_create: prog_fd, target_fd, type, flags
    attr[0], attr[1], attr[2], attr[3] = prog_fd, target_fd, attach_type, 0
    fd = libc.syscall(SYS_BPF, BPF_LINK_CREATE, ct.byref(attr), ct.sizeof(attr))
    if fd < 0:
        err = ct.get_errno()
        raise OSError(err, os.strerror(err))
    return int(fd)


class NetworkHook:
    """The attached hook and its maps. Not thread-safe: the event loop owns it."""

    def __init__(self, bpf: Any, links: list[int]) -> None:
        self._bpf = bpf
        self._links = links

    @classmethod
    def attach(cls, bpf: Any, cgroup_root: str) -> tuple[NetworkHook | None, Probe]:
        """Load the four programs and link them to `cgroup_root`; (None, why) when the kernel
        refuses any of them (then nothing stays attached)."""
        if bpf is None:
            return None, Probe(False, "the sensor is not started")
        if os.uname().machine != "x86_64":
            return None, Probe(False, f"bpf(2) syscall number not known on "
                                      f"{os.uname().machine}")
        links: list[int] = []
        try:
            root = os.open(cgroup_root, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            return None, Probe(False, f"cgroup v2 root {cgroup_root}: {exc.strerror}")
        try:
            for name, attach_type in PROGRAMS:
                try:
                    fn = bpf.load_func(name.encode(), BPF_PROG_TYPE_CGROUP_SOCK_ADDR, None,
                                       attach_type)
                except Exception as exc:  # bcc raises bare Exception with the errno text
                    raise OSError(errno_mod.EINVAL, f"loading {name}: {exc}") from None
                try:
                    links.append(_link_create(fn.fd, root, attach_type))
                except OSError as exc:
                    raise OSError(exc.errno, f"attaching {name} to {cgroup_root}: "
                                             f"{exc.strerror}") from None
        except OSError as exc:
            for fd in links:
                os.close(fd)
            return None, Probe(False, str(exc.strerror or exc))
        finally:
            os.close(root)
        return cls(bpf, links), Probe(
            True, f"cgroup connect/sendmsg hooks (IPv4, IPv6) linked to {cgroup_root}")

    # ------------------------------------------------------------------ maps

    def set_network(self, cgroups: NetworkCgroups, exact: NetworkExact,
                    allow: NetworkAllow) -> None:
        """Make the maps hold exactly these, touching only what changed: allow entries first
        (a cgroup enforced before its allow-list exists would refuse learned peers), cgroups
        after; on removal, cgroups first."""
        allow_table = self._bpf["netenf_allow"]
        offset = allow_table.Key.data.offset
        size = ct.sizeof(allow_table.Key) - offset
        current_allow = {(int(k.prefixlen), ct.string_at(ct.addressof(k) + offset, size))
                         for k in allow_table}
        exact_table = self._bpf["netenf_exact"]
        current_exact = {bytes(k.data) for k in exact_table}
        for data in exact - current_exact:
            exact_table[self._exact_key(exact_table, data)] = ct.c_uint8(1)
        for prefixlen, data in allow - current_allow:
            allow_table[self._key(allow_table, prefixlen, data)] = ct.c_uint8(1)
        table = self._bpf["netenf_cgroups"]
        current = {int(k.value): (int(v.workload), bool(v.has_prefixes))
                   for k, v in table.items()}
        for cg in set(current) - set(cgroups):
            del table[table.Key(cg)]
        for cg, (number, has_prefixes) in cgroups.items():
            if current.get(cg) != (number, has_prefixes):
                leaf = table.Leaf()
                leaf.workload, leaf.has_prefixes = number, int(has_prefixes)
                table[table.Key(cg)] = leaf
        for prefixlen, data in current_allow - allow:
            del allow_table[self._key(allow_table, prefixlen, data)]
        for data in current_exact - exact:
            del exact_table[self._exact_key(exact_table, data)]

    @staticmethod
    def _exact_key(table: Any, data: bytes) -> Any:
        key = table.Key()
        ct.memmove(ct.addressof(key), data, len(data))
        return key

    @staticmethod
    def _key(table: Any, prefixlen: int, data: bytes) -> Any:
        key = table.Key()
        key.prefixlen = prefixlen
        ct.memmove(ct.addressof(key) + type(key).data.offset, data, len(data))
        return key

    def take_refusal(self, tid: int) -> Refusal | None:
        """The hook's last refusal for this thread, removed (None when it refused nothing)."""
        table = self._bpf["netenf_verdicts"]
        key = table.Key(tid)
        try:
            v = table[key]
        except KeyError:
            return None
        refusal = Refusal(int(v.cgroup_id), int(v.workload), int(v.port), int(v.protocol),
                          "connect" if v.op == 1 else "sendmsg",
                          _address(bytes(v.addr)))
        with contextlib.suppress(KeyError):
            del table[key]
        return refusal

    def sendmsg_refusals(self, limit: int = 256) -> list[tuple[int, Refusal, int]]:
        """(thread id, refusal, ktime ns) of UDP sends the hook refused: no tracepoint reports
        them, so roxd turns each into an event (left in the map: take_refusal claims it)."""
        table = self._bpf["netenf_verdicts"]
        found = []
        for k, v in table.items():
            if v.op != 2:
                continue
            found.append((int(k.value), Refusal(int(v.cgroup_id), int(v.workload), int(v.port),
                                                int(v.protocol), "sendmsg",
                                                _address(bytes(v.addr))), int(v.ktime_ns)))
            if len(found) >= limit:
                break
        return found

    def stats(self) -> dict[str, int]:
        table = self._bpf["netenf_stats"]
        return {name: sum(int(x) for x in table[ct.c_int(i)])
                for i, name in enumerate(STAT_NAMES)}

    def close(self) -> None:
        """Detach (close the links). Idempotent."""
        links, self._links = self._links, []
        for fd in links:
            try:
                os.close(fd)
            except OSError as exc:
                log.debug("closing link %d: %s", fd, exc)

    @property
    def attached(self) -> bool:
        return bool(self._links)

    @property
    def link_fds(self) -> Iterable[int]:
        return tuple(self._links)


def _address(raw: bytes) -> str:
    ip = ipaddress.IPv6Address(raw)
    return str(ip.ipv4_mapped) if ip.ipv4_mapped is not None else str(ip)


__all__ = ["NetworkHook", "Probe", "Refusal"]
