"""The container communication map: who talks to whom on this host (docs/netmap.md).

Every outbound connect (IPv4/IPv6, TCP or UDP, with its result) is aggregated into a flow:

    (source, destination, port, protocol) -> count, succeeded, failed, first/last seen

The source is the container that connected (its id, name and workload key) or `host`. The
destination is classified from the address:

- `container`: an address of a container on this host (its network namespace's own
  addresses, read from /proc through one of its processes: any runtime);
- `host`: an address of the host itself (the host's network namespace);
- `loopback`: 127.0.0.0/8 or ::1 (inside a container that is the container itself);
- `external`: anything else, aggregated to a prefix (/24 for IPv4, /64 for IPv6 by default)
  so a client of a CDN is one edge, not a thousand.

Memory is bounded: at most `max_flows` flows; the least recently seen is evicted first and
counted. Counts include the connects the kernel folded (`folded`).

Accepted inbound connections (bpf/inbound.bpf.c) land on the same edges, seen from the other
end: the accepting container is the destination, the peer address is classified like a
destination (another container, the host, an external prefix) and becomes the source. So
container A connecting to container B is one edge A -> B whose `observed` says which ends
saw it (`connect`: A's connect, `accept`: B's accept) with a count for each; a client outside
the host is an edge from its prefix with `accept` only. An accept from loopback is the
container talking to itself: the same edge as its own connect to loopback.
"""

from __future__ import annotations

import ipaddress
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from roxd.model import ConnectEvent, ConnectResult, Container, EnrichedEvent, rfc3339
from roxd.netmap.addresses import plain_address
from roxd.sensor.inbound import AcceptEvent

HOST = "host"
LOOPBACK = "loopback"


@dataclass(frozen=True, slots=True)
class NetmapSettings:
    enabled: bool = True
    max_flows: int = 20_000  # beyond: the least recently seen flow is evicted (counted)
    external_prefix_v4: int = 24
    external_prefix_v6: int = 64
    refresh_s: float = 10.0  # how often container and host addresses are re-read
    # accepted connections and listening sockets from the kernel (bpf/inbound.bpf.c); false:
    # no inbound edges, listeners read from /proc every refresh_s
    inbound: bool = True

    def check(self) -> list[str]:
        problems = []
        if self.max_flows < 1:
            problems.append("max_flows must be >= 1")
        if not 8 <= self.external_prefix_v4 <= 32:
            problems.append("external_prefix_v4 must be 8..32")
        if not 16 <= self.external_prefix_v6 <= 128:
            problems.append("external_prefix_v6 must be 16..128")
        if self.refresh_s <= 0:
            problems.append("refresh_s must be > 0")
        return problems


@dataclass(frozen=True, slots=True)
class Endpoint:
    kind: str  # container | host | loopback | external
    id: str  # container id, "host", "loopback" or a prefix such as 203.0.113.0/24
    name: str | None = None  # container name
    workload: str | None = None  # the container's workload key (roxd/baselines/workload.py)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "id": self.id, "name": self.name, "workload": self.workload}


@dataclass(slots=True)
class Flow:
    source: Endpoint
    destination: Endpoint
    port: int
    protocol: str  # tcp | udp | "" (unknown)
    first_ns: int
    last_ns: int
    count: int = 0
    succeeded: int = 0  # connect() returned 0
    pending: int = 0  # non-blocking connect() in progress (EINPROGRESS): outcome not seen
    failed: int = 0
    addresses: set[str] = field(default_factory=set)  # destination addresses seen (max 16)
    accepted: int = 0  # accepts seen at the destination (inbound side)
    peers: set[str] = field(default_factory=set)  # source addresses of the accepts (max 16)

    @property
    def observed(self) -> list[str]:
        """Which ends saw the edge: the source's connect, the destination's accept."""
        return [name for name, n in (("connect", self.count), ("accept", self.accepted)) if n]

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source.to_dict(), "destination": self.destination.to_dict(),
                "port": self.port, "protocol": self.protocol or None, "count": self.count,
                "succeeded": self.succeeded, "pending": self.pending, "failed": self.failed,
                "accepted": self.accepted, "observed": self.observed,
                "first_seen": rfc3339(self.first_ns), "last_seen": rfc3339(self.last_ns),
                "first_ns": self.first_ns, "last_ns": self.last_ns,
                "addresses": sorted(self.addresses), "peer_addresses": sorted(self.peers)}


FlowKey = tuple[str, str, str, int, str]  # source id, destination kind, id, port, protocol
MAX_ADDRESSES = 16


class AddressBook:
    """Address -> container (or the host), rebuilt by refresh() from a list of live
    containers; lookups from the event loop, refreshes from housekeeping, one lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owners: dict[str, Endpoint] = {}

    def replace(self, owners: dict[str, Endpoint]) -> None:
        with self._lock:
            self._owners = owners

    def owners(self) -> dict[str, Endpoint]:
        """Every address and its owner now (a copy)."""
        with self._lock:
            return dict(self._owners)

    def owner(self, address: str) -> Endpoint | None:
        with self._lock:
            return self._owners.get(address)

    def __len__(self) -> int:
        with self._lock:
            return len(self._owners)


def peer_name(ep: Endpoint) -> str:
    """How a baseline names a destination: `workload:<key>` for a container on this host (so
    replicas are one peer), `host`, `loopback`, or the external prefix."""
    if ep.kind == "container":
        return f"workload:{ep.workload or ep.id}"
    return ep.id


def container_endpoint(container: Container, workload: Callable[[Container], str]) -> Endpoint:
    return Endpoint("container", container.id, container.name, workload(container))


class FlowMap:
    def __init__(self, settings: NetmapSettings | None = None,
                 workload: Callable[[Container], str] | None = None) -> None:
        from roxd.baselines.workload import workload_key

        self.settings = settings or NetmapSettings()
        self.addresses = AddressBook()
        self._workload = workload or workload_key
        self._flows: OrderedDict[FlowKey, Flow] = OrderedDict()
        self._lock = threading.Lock()
        self.counters = {"connects": 0, "accepts": 0, "flows_evicted": 0}
        # a connect went to a private address nobody on this host owns (yet): a container
        # whose network was not set up when its addresses were last read; housekeeping
        # re-reads sooner (no I/O here: this runs per event)
        self.unknown_private_seen = False
        self.inbound: dict[str, Any] = {"state": "off", "reason": "the sensor has not started"}

    # ------------------------------------------------------------------ pipeline

    def observe(self, enriched: EnrichedEvent) -> None:
        ev = enriched.event
        if not isinstance(ev, ConnectEvent):
            return
        if enriched.container is not None:
            source = container_endpoint(enriched.container, self._workload)
        else:
            source = Endpoint(HOST, HOST)
        destination = self.classify(ev.daddr)
        n = 1 + ev.folded
        with self._lock:
            self.counters["connects"] += n
            flow = self._flow(source, destination, ev.dport, ev.protocol, ev.time_ns)
            flow.count += n
            if ev.result is ConnectResult.OK:
                flow.succeeded += n
            elif ev.result is ConnectResult.IN_PROGRESS:
                flow.pending += n
            else:
                flow.failed += n
            flow.first_ns = min(flow.first_ns, ev.time_ns)
            flow.last_ns = max(flow.last_ns, ev.time_ns)
            if len(flow.addresses) < MAX_ADDRESSES:
                flow.addresses.add(ev.daddr)

    def observe_accept(self, container: Container | None, ev: AcceptEvent) -> Flow:
        """An accepted inbound connection of `container` (None: the host, or a listener that
        predates roxd, whose local address then tells who accepted)."""
        if container is not None:
            destination = container_endpoint(container, self._workload)
        else:  # the host's, or a listener older than roxd (cgroup 0): its local address says
            destination = self.classify(ev.laddr)
            if destination.kind not in ("container", HOST):
                destination = Endpoint(HOST, HOST)
        source = self.classify(ev.saddr)
        if source.kind == LOOPBACK:  # itself: the edge of its own connect to loopback
            source, destination = destination, source
        n = 1 + ev.folded
        with self._lock:
            self.counters["accepts"] += n
            flow = self._flow(source, destination, ev.lport, ev.protocol, ev.time_ns)
            flow.accepted += n
            flow.first_ns = min(flow.first_ns, ev.time_ns)
            flow.last_ns = max(flow.last_ns, ev.time_ns)
            if len(flow.peers) < MAX_ADDRESSES:
                flow.peers.add(plain_address(ev.saddr))
            return flow

    def _flow(self, source: Endpoint, destination: Endpoint, port: int, protocol: str,
              time_ns: int) -> Flow:
        """The flow of this edge, new or moved to the most recent end (under the lock)."""
        key = (source.id, destination.kind, destination.id, port, protocol)
        flow = self._flows.get(key)
        if flow is None:
            flow = self._flows[key] = Flow(source, destination, port, protocol, time_ns, time_ns)
            while len(self._flows) > self.settings.max_flows:
                self._flows.popitem(last=False)
                self.counters["flows_evicted"] += 1
        else:
            self._flows.move_to_end(key)
            # a container's name can arrive after its first event
            flow.source, flow.destination = source, destination
        return flow

    def classify(self, address: str) -> Endpoint:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return Endpoint("external", address)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if ip.is_loopback:
            return Endpoint(LOOPBACK, LOOPBACK)
        owner = self.addresses.owner(str(ip))
        if owner is not None:
            return owner
        if ip.is_private and not ip.is_link_local:
            self.unknown_private_seen = True
        bits = (self.settings.external_prefix_v4 if ip.version == 4
                else self.settings.external_prefix_v6)
        return Endpoint("external", str(ipaddress.ip_network(f"{ip}/{bits}", strict=False)))

    # ------------------------------------------------------------------ addresses

    def refresh(self, containers: Iterable[tuple[Container, int | None]],
                addresses_of: Callable[[list[int]], frozenset[str]],
                host_pid: int = 1) -> None:
        """Re-read who owns which address: each live container through one of its pids, the
        host through `host_pid`'s network namespace. Host-network containers share the host's
        addresses, which stay the host's."""
        owners: dict[str, Endpoint] = {}
        for container, pid in containers:
            if pid is None:
                continue
            for addr in addresses_of([pid]):
                owners[addr] = container_endpoint(container, self._workload)
        for addr in addresses_of([host_pid]):
            owners[addr] = Endpoint(HOST, HOST)
        self.addresses.replace(owners)

    # ------------------------------------------------------------------ reads

    def flows(self, since_ns: int | None = None, container: str | None = None,
              limit: int | None = None) -> list[dict[str, Any]]:
        """Most recently seen first. `container`: flows from or to it (id, id prefix of 6+,
        or name), each with its `direction` seen from that container: outbound (it is the
        source), inbound (the destination) or loopback (itself)."""
        with self._lock:
            items = []
            for f in reversed(self._flows.values()):
                if since_ns is not None and f.last_ns < since_ns:
                    continue
                if container is None:
                    items.append(f.to_dict())
                    continue
                direction = _direction(f, container)
                if direction is not None:
                    items.append({**f.to_dict(), "direction": direction})
        return items[:limit] if limit is not None else items

    def stats(self) -> dict[str, Any]:
        """Counters, and `inbound`: whether accepted connections are traced on this host
        (roxd/sensor/inbound.py InboundStatus; set by the daemon once the sensor started)."""
        with self._lock:
            return {**self.counters, "flows": len(self._flows),
                    "addresses": len(self.addresses), "inbound": dict(self.inbound)}


def _is(ep: Endpoint, ref: str) -> bool:
    if ep.kind == "container" and (ep.name == ref or ep.id == ref
                                   or (len(ref) >= 6 and ep.id.startswith(ref))):
        return True
    return ep.kind == HOST and ref == HOST


def _direction(flow: Flow, ref: str) -> str | None:
    if _is(flow.source, ref):
        return LOOPBACK if flow.destination.kind == LOOPBACK else "outbound"
    if _is(flow.destination, ref):
        return "inbound"
    return None
