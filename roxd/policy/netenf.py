"""Network baselines -> the cgroup connect hook's maps (bpf/netenf.bpf.c).

For every locked workload in enforce mode: its containers' cgroups -> its number and whether
it has prefix entries (`netenf_cgroups`), and each learned network element (`outbound tcp/5432
workload:shop/db`) -> entries {workload, protocol, port, address}: whole addresses in a hash
(`netenf_exact`), prefixes in an LPM trie (`netenf_allow`, looked up only for workloads that
have any). Peers are resolved to addresses the way the communication map names them,
backwards:

- `workload:<key>`: the addresses of that workload's containers on this host now (/32, /128);
- `host`: the host's own addresses;
- `loopback`: nothing to write, the hook always passes loopback (it is the container itself);
- an external prefix (`203.0.113.0/24`, `2001:db8::/64`): that prefix.

A peer with no address now (a workload whose containers are all gone) gets no entry: a
connect to it could only go to an address nobody on this host owns, which is not that peer.
IPv4 is stored as ::ffff:a.b.c.d, the form the hook builds.

The table is all or nothing per workload: a workload whose entries do not fit the maps is left
out whole (alert only, counted and logged), never enforced with a partial allow-list.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from roxd.model import Container

# what KernelPolicy.on_event returns for a connect the hook refused: the kernel refused it for
# the workload's locked network baseline (kernel_actions in pipeline.py reports it)
NETWORK_VERDICT = "baseline.network-enforce"

# bpf/netenf.bpf.c: NETENF_CGROUPS, NETENF_ALLOW
CGROUP_CAPACITY = 8192
ALLOW_CAPACITY = 16384  # prefixes
EXACT_CAPACITY = 65536  # whole addresses
KEY_HEAD_BITS = (4 + 1 + 2) * 8  # workload, protocol, port: always matched exactly
FULL_BITS = KEY_HEAD_BITS + 128  # a whole address: netenf_exact

PROTOCOLS = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP, "ip": 0, "": 0}
_ELEMENT = re.compile(r"^outbound (\w*)/(\d{1,5}) (\S+)$")

NetworkCgroups = dict[int, tuple[int, bool]]  # cgroup id -> (workload number, has prefixes)
NetworkAllow = set[tuple[int, bytes]]  # (prefix bits, key bytes) of netenf_allow
NetworkExact = set[bytes]  # key bytes of netenf_exact


@dataclass(frozen=True)
class Element:
    protocol: int  # IPPROTO_TCP, IPPROTO_UDP, 0: any
    port: int
    peer: str


def parse_element(text: str) -> Element | None:
    """`outbound tcp/5432 workload:shop/db` -> Element; None for what is not one."""
    m = _ELEMENT.match(text)
    if m is None or m.group(1) not in PROTOCOLS or int(m.group(2)) > 65535:
        return None
    return Element(PROTOCOLS[m.group(1)], int(m.group(2)), m.group(3))


def peer_networks(peer: str, owners: Mapping[str, str]
                  ) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """The networks a peer element stands for now. owners: address -> peer name
    (`workload:<key>` or `host`), the communication map's address book."""
    if peer == "loopback":
        return []
    if peer == "host" or peer.startswith("workload:"):
        return [ipaddress.ip_network(a) for a, p in owners.items() if p == peer]
    try:
        return [ipaddress.ip_network(peer, strict=False)]
    except ValueError:
        return []


def allow_key(workload: int, protocol: int, port: int,
              net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> tuple[int, bytes]:
    """One netenf_allow entry: (prefix bits, key bytes) as the hook builds its lookup key."""
    if isinstance(net, ipaddress.IPv4Network):
        addr = b"\0" * 10 + b"\xff\xff" + net.network_address.packed
        bits = 96 + net.prefixlen
    else:
        addr = net.network_address.packed
        bits = net.prefixlen
    head = struct.pack("<IB", workload, protocol) + struct.pack(">H", port)
    return KEY_HEAD_BITS + bits, head + addr


@dataclass
class NetworkTable:
    cgroups: NetworkCgroups = field(default_factory=dict)
    allow: NetworkAllow = field(default_factory=set)
    exact: NetworkExact = field(default_factory=set)
    workloads: int = 0  # enforced in the kernel
    left_out: list[str] = field(default_factory=list)  # over capacity: alert only
    unresolved: int = 0  # learned peers with no address now (no entry)

    def summary(self) -> NetworkSummary:
        """What the policy keeps once the hook's maps are written: the counts its status
        reports. Not the entries (45,000 addresses are 4.5 MB as a set of bytes): the next
        write diffs against the kernel's maps themselves."""
        return NetworkSummary(len(self.cgroups), len(self.exact) + len(self.allow),
                              self.workloads, tuple(self.left_out), self.unresolved)


@dataclass(frozen=True)
class NetworkSummary:
    cgroups: int = 0
    entries: int = 0  # addresses + prefixes
    workloads: int = 0
    left_out: tuple[str, ...] = ()
    unresolved: int = 0


def build_network_table(enforcing: Mapping[str, frozenset[str]],
                        workload_of: Callable[[Container], str],
                        containers: Iterable[tuple[int, Container]],
                        numbers: dict[str, int], owners: Mapping[str, str], *,
                        cgroup_capacity: int = CGROUP_CAPACITY,
                        allow_capacity: int = ALLOW_CAPACITY,
                        exact_capacity: int = EXACT_CAPACITY) -> NetworkTable:
    """The hook's maps for the enforcing workloads' network baselines. `numbers` keeps each
    workload's number stable for roxd's lifetime (shared with the process baselines)."""
    table = NetworkTable()
    if not enforcing:
        return table
    cgroups_of: dict[str, list[int]] = {}
    for cg, container in containers:
        key = workload_of(container)
        if key in enforcing:
            cgroups_of.setdefault(key, []).append(cg)
    for key in sorted(enforcing):
        if key not in cgroups_of:
            continue  # no container now: nothing to enforce (a replica comes with its entries)
        number = numbers.setdefault(key, len(numbers) + 1)
        entries: NetworkAllow = set()
        for text in enforcing[key]:
            element = parse_element(text)
            if element is None:
                continue
            nets = peer_networks(element.peer, owners)
            if not nets and element.peer != "loopback":
                table.unresolved += 1
            entries.update(allow_key(number, element.protocol, element.port, n) for n in nets)
        cgs = cgroups_of[key]
        exact = {data for bits, data in entries if bits == FULL_BITS}
        prefixes = {e for e in entries if e[0] != FULL_BITS}
        if (len(table.allow) + len(prefixes) > allow_capacity
                or len(table.exact) + len(exact) > exact_capacity
                or len(table.cgroups) + len(cgs) > cgroup_capacity):
            table.left_out.append(key)
            continue
        table.allow |= prefixes
        table.exact |= exact
        table.cgroups.update((cg, (number, bool(prefixes))) for cg in cgs)
        table.workloads += 1
    return table


__all__ = ["ALLOW_CAPACITY", "CGROUP_CAPACITY", "EXACT_CAPACITY", "FULL_BITS",
           "NETWORK_VERDICT", "Element", "NetworkAllow", "NetworkCgroups", "NetworkExact",
           "NetworkSummary", "NetworkTable", "allow_key", "build_network_table", "parse_element",
           "peer_networks"]
