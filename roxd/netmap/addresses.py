"""The local addresses of a network namespace, read through one of its processes' /proc.

Used to tell where a connect went (another container on this host, the host itself) and
by incidents to follow an attack from one container to another. No runtime API: any process
of the namespace will do, so Docker, containerd, podman and CRI-O containers are alike.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable


def container_addresses(pids: Iterable[int], proc: str = "/proc") -> frozenset[str]:
    """The local addresses of the network namespace of the first of `pids` that still lives:
    IPv4 from net/fib_trie ("/32 host LOCAL"), IPv6 from net/if_inet6; loopback left out.
    Empty when none of them can be read."""
    for pid in pids:
        out: set[str] = set()
        try:
            with open(f"{proc}/{pid}/net/fib_trie", encoding="ascii", errors="replace") as f:
                last = None
                for line in f:
                    text = line.strip()
                    if text.startswith("|--"):
                        last = text[3:].strip()
                    elif "/32 host LOCAL" in text and last:
                        out.add(last)
        except OSError:
            continue
        try:
            with open(f"{proc}/{pid}/net/if_inet6", encoding="ascii", errors="replace") as f:
                for line in f:
                    raw = line.split()[0] if line.split() else ""
                    if len(raw) == 32:
                        out.add(str(ipaddress.IPv6Address(int(raw, 16))))
        except (OSError, ValueError):
            pass
        return frozenset(a for a in out if _routable(a))
    return frozenset()


def plain_address(address: str) -> str:
    """One spelling per address, so flows and listeners meet on the same key: ::ffff:a.b.c.d
    (an IPv4 peer of an IPv6 socket) as a.b.c.d, any other address in its canonical text,
    what is not an address as it came."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def _routable(addr: str) -> bool:
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return False
    return not (ip.is_loopback or ip.is_unspecified or ip.is_link_local)


def first_pid(cgroup_dir: str) -> int | None:
    """A process of a cgroup (cgroup v2 `cgroup.procs`), or None when it has none now."""
    try:
        with open(f"{cgroup_dir}/cgroup.procs", encoding="ascii") as f:
            for line in f:
                if line.strip().isdigit():
                    return int(line)
    except OSError:
        return None
    return None
