"""Listening sockets observed per container: what `roxctl inventory` shows as "listening
sockets (observed)" and what the risk score's exposure factor counts.

Fed by the kernel (bpf/inbound.bpf.c): a TCP listen() with the process that called it, the
listener's close, a UDP bind(). A UDP socket's close is not seen, so a UDP entry stays until
its container is gone (`forget`). Where the kernel programs are not attached, or for sockets
that were listening before roxd started, `from_proc` reads the LISTEN entries of a container's
/proc/<pid>/net/tcp{,6} (no process is known for those).
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from roxd.model import rfc3339
from roxd.netmap.addresses import plain_address
from roxd.sensor.inbound import ListenEvent

MAX_PER_CONTAINER = 256  # beyond: the oldest is dropped (counted)
TCP_LISTEN = "0A"  # st column of /proc/net/tcp


@dataclass(slots=True)
class Listener:
    protocol: str  # tcp | udp
    address: str  # local address ("::" or "0.0.0.0": every address)
    port: int
    pid: int | None
    process: str | None  # comm of the process that called listen()/bind(); None from /proc
    since_ns: int
    source: str  # kernel | proc
    cookie: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"protocol": self.protocol, "address": self.address, "port": self.port,
                "pid": self.pid, "process": self.process, "since": rfc3339(self.since_ns),
                "source": self.source}


class ListenerTable:
    """container id -> its listening sockets; thread-safe (the loop writes, the API reads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_container: dict[str, dict[tuple[str, str, int], Listener]] = {}
        self.counters = {"opened": 0, "closed": 0, "dropped": 0}

    def observe(self, container_id: str, ev: ListenEvent) -> None:
        key = (ev.protocol, plain_address(ev.laddr), ev.lport)
        with self._lock:
            table = self._by_container.setdefault(container_id, {})
            if ev.op == "close":
                known = table.get(key)
                if known is not None and known.cookie in (0, ev.cookie):
                    del table[key]
                    self.counters["closed"] += 1
                return
            table[key] = Listener(ev.protocol, key[1], ev.lport, ev.pid or None,
                                  ev.comm or None, ev.time_ns, "kernel", ev.cookie)
            self.counters["opened"] += 1
            while len(table) > MAX_PER_CONTAINER:
                table.pop(next(iter(table)))
                self.counters["dropped"] += 1

    def seed(self, container_id: str, found: Iterable[tuple[str, str, int]], now_ns: int) -> None:
        """Listeners read from /proc (`from_proc`) now: added where the kernel reported none;
        earlier /proc entries no longer there are removed (kernel entries are not touched)."""
        wanted = set(found)
        with self._lock:
            table = self._by_container.setdefault(container_id, {})
            for key in [k for k, v in table.items() if v.source == "proc" and k not in wanted]:
                del table[key]
            for protocol, address, port in sorted(wanted):
                table.setdefault((protocol, address, port),
                                 Listener(protocol, address, port, None, None, now_ns, "proc"))

    def of(self, container_id: str) -> list[dict[str, Any]]:
        with self._lock:
            table = self._by_container.get(container_id, {})
            return [v.to_dict() for _, v in sorted(table.items())]

    def forget(self, keep: set[str]) -> None:
        """Drop the tables of containers not in `keep` (gone)."""
        with self._lock:
            for cid in [c for c in self._by_container if c not in keep]:
                del self._by_container[cid]


def from_proc(pid: int, proc: str = "/proc") -> list[tuple[str, str, int]]:
    """(tcp, address, port) of every LISTEN socket in the network namespace of `pid`."""
    found: list[tuple[str, str, int]] = []
    for name in ("tcp", "tcp6"):
        try:
            with open(f"{proc}/{pid}/net/{name}", encoding="ascii", errors="replace") as f:
                next(f, None)  # the header line
                for line in f:
                    fields = line.split()
                    if len(fields) < 4 or fields[3] != TCP_LISTEN:
                        continue
                    address, port = _proc_address(fields[1])
                    found.append(("tcp", address, port))
        except (OSError, ValueError):
            continue
    return sorted(set(found))


def _proc_address(field: str) -> tuple[str, int]:
    """/proc/net/tcp's local_address: hex address in host-endian 32-bit words, hex port."""
    raw, port = field.split(":")
    data = bytes.fromhex(raw)
    words = b"".join(data[i:i + 4][::-1] for i in range(0, len(data), 4))
    return plain_address(str(ipaddress.ip_address(words))), int(port, 16)
