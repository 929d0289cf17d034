"""Incidents: alerts that belong to one attack, tied together (docs/incidents.md).

    tracker = IncidentTracker(settings, sinks=[store, journal])
    AlertDispatcher(delivery, raw_taps=[tracker])   # every alert as raised, before folding
    tracker.query(IncidentQuery(state="open")); tracker.get(incident_id)

Correlation of an alert raised in container C (the host counts as one workload, "host"), in
this order:

1. ancestry: the alert's session chain (its pid and its ancestors' pids up to the first
   container-runtime or system process, `BOUNDARY`) shares a pid with the chains of an open
   incident that touches C: it descends from an earlier alert's process, or from the shell
   that process ran in;
2. network: an open incident made an outbound connect (an alert on a connect event) to one of
   C's addresses (read from /proc/<pid>/net of the alert's processes): the attack moved to C;
   or an alerted accept in C (`baseline.new-inbound-peer`) came from an address of a
   container of an open incident: the attack reached C from there; or an open incident
   accepted such a connection from one of C's addresses: C is where it came from;
3. time window: the alert's ancestry is incomplete (no ancestors, the chain cut at 8, or it
   ends before reaching a boundary process), and some incident touching C is still open: the
   most recent one;
4. otherwise a new incident opens.

An incident closes after `quiet_window_s` without a new alert (checked on every alert, by the
tracker's timer and by tick()). Changes (opened, phase added, container added, closed, and
plain updates for the store) go to the sinks; emit() runs on the event loop and never blocks:
the sinks queue.

Plain updates (one more alert in a phase already reached) are coalesced: the incident is only
marked, and its latest state goes out as one `updated` change at most every `UPDATE_EVERY_NS`
(on the next alert or tick after that, and at close()), or not at all when another change of
the same incident (which carries the whole state) goes out first. Every change snapshots the
incident (Incident.to_dict copies its process tree, up to 256 nodes, and its timeline): done
per alert, that copy and the store's JSON of it were a quarter of roxd's CPU in an alert storm
inside one incident (docs/performance.md).
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from roxd.alerts.worker import sink_problems
from roxd.ids import new_id
from roxd.incidents.settings import IncidentsSettings
from roxd.model import Alert, ConnectEvent, Outcome, Severity, SyscallEvent, rfc3339
from roxd.netmap.addresses import container_addresses, first_pid
from roxd.vocabulary import PHASES, SEVERITIES

log = logging.getLogger("roxd.incidents")

NS = 1_000_000_000
HOST = "host"
MAX_TREE_NODES = 256
MAX_CLOSED_IN_MEMORY = 200
MAX_TARGETS = 64
# where a process's session ends going up its ancestry: the runtime that started the container
# process (docker exec, the entrypoint) and the host's service managers and login daemons
BOUNDARY = frozenset({
    "runc", "crun", "youki", "runsc", "conmon", "containerd", "containerd-shim",
    "containerd-shim-runc-v1", "containerd-shim-runc-v2", "docker-containerd-shim", "dockerd",
    "docker-proxy", "docker-init", "tini", "systemd", "init", "sshd", "cron", "crond",
})
# the most severe an incident can be: emergency means "the system is unusable"
MAX_SEVERITY_CODE = SEVERITIES.index("alert")
# how often a plain `updated` change of one incident goes out at most (see the module doc)
UPDATE_EVERY_NS = NS
# Severity -> syslog code (a Severity is a str: its value finds it too); Severity(x).code
# looked the word up in a tuple per alert
_SEVERITY_CODE = {s: s.code for s in Severity}
CHANGE_KINDS = ("opened", "phase_added", "container_added", "action", "updated", "closed")


class IncidentSink(Protocol):
    def incident_changed(self, change: IncidentChange) -> None: ...


@dataclass(frozen=True, slots=True)
class IncidentChange:
    kind: str  # one of CHANGE_KINDS
    time_ns: int
    incident: dict[str, Any]  # Incident.to_dict() at the change
    phase: str | None = None  # phase_added: the phase reached
    container: str | None = None  # container_added: its id
    alert_id: str | None = None  # the alert that caused it (None for closed)
    action: dict[str, Any] | None = None  # action: what the incident policy did, its outcome


@dataclass(frozen=True, slots=True)
class IncidentQuery:
    state: str | None = None  # "open" | "closed"
    container: str | None = None  # id, id prefix (6+), name, or "host"
    since_ns: int | None = None  # last seen at or after
    limit: int = 100


def incident_severity(worst_code: int, phases: int) -> str:
    """The most severe alert's syslog severity, one step more severe for each phase reached
    beyond the first, never beyond `alert` (docs/incidents.md)."""
    code = max(MAX_SEVERITY_CODE, worst_code - max(0, phases - 1))
    return SEVERITIES[min(code, len(SEVERITIES) - 1)]


def session_chain(alert: Alert) -> tuple[list[tuple[int, str]], bool, tuple[int, str] | None]:
    """The alert's process and its ancestors up to (not including) the first boundary
    process, nearest first; whether the chain is complete (reached a boundary); the boundary
    process itself (the tree's root) when reached."""
    proc = alert.event.process
    chain = [(proc.pid, proc.exe)]
    for anc in proc.ancestors:
        if _basename(anc.exe, anc.args) in BOUNDARY or anc.pid <= 1:
            return chain, True, (anc.pid, anc.exe)
        chain.append((anc.pid, anc.exe))
    return chain, False, None


def _basename(exe: str, args: Sequence[str]) -> str:
    name = _last_part(exe)
    if name in ("busybox", "exe", "") and args:  # a multi-call binary or /proc/self/exe
        return _last_part(args[0])
    return name


def _last_part(path: str) -> str:
    """PurePosixPath(path).name without building one (µs per ancestor, per alert), except
    that a `.` part is not skipped: `runc/.` names no boundary process."""
    return path.rstrip("/").rpartition("/")[2]


def _connect_target(alert: Alert) -> str | None:
    ev = alert.event.event
    if not isinstance(ev, ConnectEvent):
        return None
    return _linkable(ev.daddr)


def _inbound_peer(alert: Alert) -> str | None:
    """The peer address of an alerted accept (roxd/netmap/inbound.py raises
    `baseline.new-inbound-peer` on a synthetic `accept` event from `sock_ops`)."""
    ev = alert.event.event
    if not isinstance(ev, SyscallEvent) or ev.syscall != "accept" or ev.source != "sock_ops":
        return None
    return _linkable(str(ev.args.get("peer_address") or ""))


def _linkable(address: str) -> str | None:
    """The address in the form container_addresses() gives, or None for one that names no
    container (loopback, unspecified, multicast, not an address)."""
    try:
        addr = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if addr.is_loopback or addr.is_unspecified or addr.is_multicast:
        return None
    return str(addr)


@dataclass
class Incident:
    id: str
    first_ns: int
    last_ns: int
    state: str = "open"
    closed_ns: int | None = None
    containers: dict[str, dict[str, Any]] = field(default_factory=dict)
    phases: dict[str, int] = field(default_factory=dict)  # phase -> first reached (ns)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    alerts: int = 0
    timeline_dropped: int = 0
    worst_code: int = len(SEVERITIES) - 1
    actions: list[dict[str, Any]] = field(default_factory=list)
    tree: dict[int, dict[str, Any]] = field(default_factory=dict)  # pid -> node
    link_pids: set[int] = field(default_factory=set)
    targets: dict[str, int] = field(default_factory=dict)  # outbound address -> last ns
    # peers whose connection into one of its containers raised an alert: address -> last ns
    sources: dict[str, int] = field(default_factory=dict)

    @property
    def severity(self) -> str:
        return incident_severity(self.worst_code, len(self.phases))

    def phases_in_order(self) -> list[str]:
        return [p for p in PHASES if p in self.phases]

    def touches(self, container_id: str) -> bool:
        return container_id in self.containers

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state,
            "severity": self.severity,
            "first_seen": rfc3339(self.first_ns),
            "last_seen": rfc3339(self.last_ns),
            "closed_at": rfc3339(self.closed_ns) if self.closed_ns else None,
            "first_ns": self.first_ns,
            "last_ns": self.last_ns,
            "containers": list(self.containers.values()),
            "phases": [{"phase": p, "first_seen": rfc3339(self.phases[p]),
                        "first_ns": self.phases[p]} for p in self.phases_in_order()],
            "alerts": self.alerts,
            "timeline": list(self.timeline),
            "timeline_dropped": self.timeline_dropped,
            "actions": list(self.actions),
            "process_tree": [{**n, "alerts": list(n["alerts"])} for n in self.tree.values()],
            "worst_alert_severity": SEVERITIES[self.worst_code],
            "links": {"pids": sorted(self.link_pids), "targets": dict(self.targets),
                      "sources": dict(self.sources)},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Incident:
        links = d.get("links") or {}
        return cls(
            id=d["id"], first_ns=int(d["first_ns"]), last_ns=int(d["last_ns"]),
            state=d["state"], closed_ns=None if d.get("closed_at") is None else int(
                d.get("closed_ns") or d["last_ns"]),
            containers={c["id"]: dict(c) for c in d.get("containers", [])},
            phases={p["phase"]: int(p["first_ns"]) for p in d.get("phases", [])},
            timeline=list(d.get("timeline", [])), alerts=int(d.get("alerts", 0)),
            timeline_dropped=int(d.get("timeline_dropped", 0)),
            worst_code=SEVERITIES.index(d.get("worst_alert_severity", "debug")),
            actions=list(d.get("actions", [])),
            tree={int(n["pid"]): dict(n) for n in d.get("process_tree", [])},
            link_pids={int(p) for p in links.get("pids", [])},
            targets={str(k): int(v) for k, v in (links.get("targets") or {}).items()},
            sources={str(k): int(v) for k, v in (links.get("sources") or {}).items()})


def _container_of(alert: Alert) -> dict[str, Any]:
    c = alert.event.container
    if c is None:
        return {"id": HOST, "name": None, "image": None}
    return {"id": c.id, "name": c.name, "image": c.image}


class IncidentTracker:
    """An AlertSink for AlertDispatcher's raw taps. Thread-safe: emit() (event loop), tick()
    (its timer) and the API's reads share one lock; sinks are called under it and must only
    queue."""

    def __init__(self, settings: IncidentsSettings | None = None,
                 sinks: Sequence[IncidentSink] = (), *, store: Any = None,
                 clock: Callable[[], int] = time.time_ns,
                 addresses: Callable[[Iterable[int]], frozenset[str]] = container_addresses,
                 timer: bool = True, cgroup_root: str | None = None) -> None:
        self.settings = settings or IncidentsSettings()
        self._cgroup_root = cgroup_root
        self._sinks = list(sinks)
        self._store = store  # IncidentStore or None: reads of what is no longer in memory
        self._clock = clock
        self._addresses = addresses
        self._window_ns = int(self.settings.quiet_window_s * NS)
        self._open: dict[str, Incident] = {}  # by id, oldest first
        self._closed: dict[str, Incident] = {}  # the most recent closed ones, oldest first
        self._address_cache: dict[str, frozenset[str]] = {}
        # incidents with a plain update not yet published: id -> the alert behind the latest
        self._updated: dict[str, str] = {}
        self._updates_sent_ns = 0
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(("alerts", "opened", "closed", "linked_ancestry",
                                      "linked_network", "linked_window"), 0)
        self._stop = threading.Event()
        self._timer: threading.Thread | None = None
        if store is not None:
            for d in store.open_incidents():  # carried on across a restart
                inc = Incident.from_dict(d)
                self._open[inc.id] = inc
        if timer:
            self._timer = threading.Thread(target=self._tick_loop, name="roxd-incidents",
                                           daemon=True)
            self._timer.start()

    def add_sink(self, sink: IncidentSink) -> None:
        """One more consumer of incident changes (an exporter), before alerts flow."""
        with self._lock:
            self._sinks.append(sink)

    # ------------------------------------------------------------------ sink

    def emit(self, alert: Alert) -> None:
        now = self._clock()
        with self._lock:
            self._counts["alerts"] += 1
            self._close_quiet(now)
            self._correlate(alert, now)
            if self._updated and now - self._updates_sent_ns >= UPDATE_EVERY_NS:
                self._publish_updates(now)

    def record_action(self, incident_id: str, action: dict[str, Any]) -> bool:
        """An action taken because of the incident as a whole (the incident response policy),
        with its outcome: kept in the incident's actions and published as an `action` change.
        False when the incident is unknown (closed and evicted meanwhile)."""
        now = self._clock()
        with self._lock:
            inc = self._open.get(incident_id) or self._closed.get(incident_id)
            if inc is None:
                return False
            entry = {"alert_id": None, "time": rfc3339(now), "by": "incident-policy", **action}
            inc.actions.append(entry)
            self._updated.pop(inc.id, None)  # this change carries the state
            self._publish(IncidentChange("action", now, inc.to_dict(), action=entry))
            return True

    def tick(self) -> None:
        now = self._clock()
        with self._lock:
            self._close_quiet(now)
            if self._updated and now - self._updates_sent_ns >= UPDATE_EVERY_NS:
                self._publish_updates(now)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {**self._counts, "open": len(self._open)}

    def problems(self) -> list[str]:
        """Every incident sink that reports a problem of its own (the store's file failing),
        for /v1/health beside the alert sinks'."""
        with self._lock:
            sinks = list(self._sinks)
        return sink_problems(("incident sink", s) for s in sinks)

    def close(self, timeout: float = 1.0) -> None:
        """Stop the timer, then flush and close the sinks (after the last alert). Open
        incidents stay open: the store has them for the next start."""
        self._stop.set()
        if self._timer is not None:
            self._timer.join(timeout)
        with self._lock:  # the latest state of every incident reaches the store
            self._publish_updates(self._clock())
        for sink in self._sinks:
            closer = getattr(sink, "close", None)
            if closer is not None:
                try:
                    closer(timeout)
                except Exception:
                    log.exception("incident sink %s did not close cleanly", type(sink).__name__)

    # ------------------------------------------------------------------ reads

    def get(self, incident_id: str) -> dict[str, Any] | None:
        with self._lock:
            inc = self._open.get(incident_id) or self._closed.get(incident_id)
            if inc is not None:
                return _public(inc.to_dict())
        if self._store is not None:
            d = self._store.get(incident_id)
            return _public(d) if d is not None else None
        return None

    def query(self, q: IncidentQuery = IncidentQuery()) -> list[dict[str, Any]]:  # noqa: B008
        with self._lock:
            mine = [i.to_dict() for i in (*self._open.values(), *self._closed.values())]
        found = {d["id"]: d for d in mine if _accepts(q, d)}
        if self._store is not None:
            for d in self._store.query(q):
                found.setdefault(d["id"], d)
        items = sorted(found.values(), key=lambda d: (d["last_ns"], d["id"]), reverse=True)
        return [_public(d) for d in items[:max(1, q.limit)]]

    # ------------------------------------------------------------------ correlation

    def _correlate(self, alert: Alert, now: int) -> None:
        where = _container_of(alert)
        cid = where["id"]
        chain, complete, root = session_chain(alert)
        pids = {pid for pid, _ in chain}
        candidates = [i for i in self._open.values() if i.touches(cid)]
        inc, how = None, "first"
        for i in reversed(candidates):  # the most recent first
            if pids & i.link_pids:
                inc, how = i, "ancestry"
                break
        if inc is None:
            inc = self._network_link(cid, alert, chain) or self._inbound_link(cid, alert)
            how = "network" if inc is not None else how
        if inc is None and candidates and not complete:
            inc, how = candidates[-1], "window"
        if how != "first":
            self._counts[f"linked_{how}"] += 1
        opened = inc is None
        if inc is None:
            inc = Incident(id=new_id(), first_ns=alert.time_ns, last_ns=alert.time_ns)
            self._open[inc.id] = inc
            self._counts["opened"] += 1
        changes = self._add(inc, alert, where, chain, root, how)
        if opened:
            changes = [("opened", {})]
        if changes == [("updated", {})]:  # coalesced: published by _publish_updates
            self._updated[inc.id] = alert.id
            return
        self._updated.pop(inc.id, None)  # these changes carry the state
        state = inc.to_dict()  # one snapshot for the changes of one alert (sinks only read)
        for kind, extra in changes:
            self._publish(IncidentChange(kind, now, state, alert_id=alert.id, **extra))

    def _publish_updates(self, now: int) -> None:
        """One `updated` change per marked incident, with its state now (under the lock)."""
        self._updates_sent_ns = now
        updated, self._updated = self._updated, {}
        for incident_id, alert_id in updated.items():
            inc = self._open.get(incident_id)
            if inc is not None:  # a closed one went out with its `closed` change
                self._publish(IncidentChange("updated", now, inc.to_dict(), alert_id=alert_id))

    def _network_link(self, cid: str, alert: Alert,
                      chain: list[tuple[int, str]]) -> Incident | None:
        """An open incident that connected to C, or that accepted a connection from C, both
        alerted: C's addresses among its targets or sources."""
        others = [i for i in self._open.values()
                  if (i.targets or i.sources) and not i.touches(cid)]
        if not others:
            return None
        addrs = self._addresses_of(cid, alert, chain)
        if not addrs:
            return None
        for i in reversed(others):
            if addrs & (set(i.targets) | set(i.sources)):
                return i
        return None

    def _inbound_link(self, cid: str, alert: Alert) -> Incident | None:
        """An alerted accept in C from an address of a container of an open incident (its
        addresses were read when it joined the incident: _add)."""
        peer = _inbound_peer(alert)
        if peer is None:
            return None
        for i in reversed([i for i in self._open.values() if not i.touches(cid)]):
            if any(peer in self._address_cache.get(c, frozenset()) for c in i.containers):
                return i
        return None

    def _addresses_of(self, cid: str, alert: Alert,
                      chain: list[tuple[int, str]]) -> frozenset[str]:
        """C's own addresses (its network namespace's), cached per container once read."""
        addrs = self._address_cache.get(cid)
        if addrs is not None or cid == HOST:
            return addrs or frozenset()
        pids = [pid for pid, _ in chain]
        container = alert.event.container
        if self._cgroup_root and container is not None and container.cgroup_path:
            # the alert's processes may be gone already: any live process of the
            # container (its entrypoint) shares its network namespace
            member = first_pid(f"{self._cgroup_root}/{container.cgroup_path.strip('/')}")
            if member is not None:
                pids.append(member)
        addrs = self._addresses(pids)
        if addrs:  # the alert's processes may all be gone: try again next time
            self._address_cache[cid] = addrs
        return addrs

    def _add(self, inc: Incident, alert: Alert, where: dict[str, Any],
             chain: list[tuple[int, str]], root: tuple[int, str] | None,
             how: str) -> list[tuple[str, dict[str, Any]]]:
        changes: list[tuple[str, dict[str, Any]]] = []
        rule = alert.rule
        t = alert.time_ns
        inc.alerts += 1
        inc.first_ns = min(inc.first_ns, t)
        inc.last_ns = max(inc.last_ns, t)
        inc.worst_code = min(inc.worst_code, _SEVERITY_CODE[rule.severity])
        if where["id"] not in inc.containers:
            if inc.containers:
                changes.append(("container_added", {"container": where["id"]}))
            inc.containers[where["id"]] = where
            # read now, while the alert's processes live: an alerted accept elsewhere from
            # one of these addresses is this attack arriving there (_inbound_link)
            self._addresses_of(where["id"], alert, chain)
        new_phase = rule.phase.value not in inc.phases
        if new_phase:
            inc.phases[rule.phase.value] = t
            if inc.alerts > 1:
                changes.append(("phase_added", {"phase": rule.phase.value}))
        proc = alert.event.process
        if len(inc.timeline) < self.settings.max_timeline or new_phase:
            inc.timeline.append({
                "alert_id": alert.id, "time": rfc3339(t), "time_ns": t, "rule": rule.id,
                "name": rule.name, "phase": rule.phase.value, "severity": rule.severity.value,
                "container": where["id"], "container_name": where["name"], "pid": proc.pid,
                "exe": proc.exe, "args": list(proc.args[:16]), "link": how,
                "actions": [f"{a.action.value}:{a.outcome.value}" for a in alert.actions]})
        else:
            inc.timeline_dropped += 1
        for a in alert.actions:
            if a.action.value != "alert" or a.outcome is not Outcome.DONE:
                inc.actions.append({"alert_id": alert.id, "time": rfc3339(t), **a.to_dict()})
        inc.link_pids.update(pid for pid, _ in chain)
        self._grow_tree(inc, alert.id, chain, root)
        for address, known in ((_connect_target(alert), inc.targets),
                               (_inbound_peer(alert), inc.sources)):
            if address is not None:
                known[address] = t
                while len(known) > MAX_TARGETS:
                    del known[next(iter(known))]
        return changes or [("updated", {})]

    @staticmethod
    def _grow_tree(inc: Incident, alert_id: str, chain: list[tuple[int, str]],
                   root: tuple[int, str] | None) -> None:
        nodes = [*reversed(chain)] if root is None else [root, *reversed(chain)]
        parent: int | None = None
        for pid, exe in nodes:  # from the top down
            node = inc.tree.get(pid)
            if node is None:
                if len(inc.tree) >= MAX_TREE_NODES:
                    return
                node = inc.tree[pid] = {"pid": pid, "exe": exe, "parent": parent, "alerts": []}
            elif node["parent"] is None and parent is not None and parent != pid:
                node["parent"] = parent
            parent = pid
        leaf = inc.tree.get(chain[0][0])
        if leaf is not None and alert_id not in leaf["alerts"] and len(leaf["alerts"]) < 64:
            leaf["alerts"].append(alert_id)

    def _close_quiet(self, now: int) -> None:
        due = [i for i in self._open.values() if now - i.last_ns >= self._window_ns]
        for inc in due:
            del self._open[inc.id]
            inc.state = "closed"
            inc.closed_ns = now
            self._closed[inc.id] = inc
            while len(self._closed) > MAX_CLOSED_IN_MEMORY:
                del self._closed[next(iter(self._closed))]
            self._counts["closed"] += 1
            self._updated.pop(inc.id, None)  # the closed change carries the state
            self._publish(IncidentChange("closed", now, inc.to_dict()))

    def _publish(self, change: IncidentChange) -> None:
        for sink in self._sinks:
            try:
                sink.incident_changed(change)
            except Exception:
                log.exception("incident sink %s failed", type(sink).__name__)

    def _tick_loop(self) -> None:
        period = min(1.0, max(0.05, self.settings.quiet_window_s / 4))
        while not self._stop.wait(period):
            try:
                self.tick()
            except Exception:
                log.exception("incident tick failed")


def _accepts(q: IncidentQuery, d: dict[str, Any]) -> bool:
    if q.state is not None and d["state"] != q.state:
        return False
    if q.since_ns is not None and d["last_ns"] < q.since_ns:
        return False
    if q.container is not None:
        ref = q.container
        return any(c["id"] == ref or c.get("name") == ref
                   or (len(ref) >= 6 and c["id"].startswith(ref)) for c in d["containers"])
    return True


def _public(d: dict[str, Any]) -> dict[str, Any]:
    """The API's shape: the correlation's internal links stay inside roxd."""
    out = dict(d)
    out.pop("links", None)
    return out

