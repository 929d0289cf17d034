"""Inbound events (bpf/inbound.bpf.c) to their consumers: the communication map (accepted
connections), the listening sockets of each container (inventory, risk) and the network
baselines (inbound elements, and `baseline.new-inbound-peer` after lock).

They do not go through the rule engine: an accept has no process of its own (it completes in
the kernel, in softirq, before any accept() returns), so rules about processes say nothing
about it. The baseline anomaly is raised as an alert through the one alert fan-out, like
`roxd.quarantine-tampered` (roxd/enforce/tamper.py): its event is a synthetic `syscall`
event, syscall `accept`, source `sock_ops`, on the listener's owner.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from roxd.model import (
    ActionKind,
    ActionResult,
    BaselineFacts,
    Container,
    EnrichedEvent,
    Outcome,
    Phase,
    Process,
    RuleRef,
    Severity,
    SyscallEvent,
)
from roxd.netmap.flows import FlowMap, peer_name
from roxd.netmap.listeners import ListenerTable
from roxd.sensor.inbound import AcceptEvent, InboundEvent, ListenEvent

log = logging.getLogger(__name__)

NEW_INBOUND_PEER = RuleRef(
    id="baseline.new-inbound-peer",
    name="An inbound connection the workload never accepted while learning",
    phase=Phase.LATERAL_MOVEMENT,
    severity=Severity.WARNING,
    mitre=("T1021", "T1133"),  # Remote Services, External Remote Services
    description="An accepted connection from a (protocol, port, peer) that is not in the "
                "workload's locked network baseline: a neighbour or an outside network "
                "reaching a port it never reached while learning, e.g. lateral movement to a "
                "management or debug port. Benign hits: a new client of the service nobody "
                "learned (accept it into the baseline). Alerted, never blocked: the kernel "
                "reports the connection once it is established.")

Resolve = Callable[[int, "int | None"], "Container | None"]
RaiseAlert = Callable[[RuleRef, EnrichedEvent, Sequence[ActionResult]], object]


class InboundBaselines(Protocol):
    """What the observer asks of roxd.baselines.BaselineEngine."""

    def observe_inbound(self, workload: str, container: Container | None, cgroup_id: int,
                        peer: str, port: int, protocol: str) -> BaselineFacts | None: ...


@dataclass
class InboundObserver:
    resolve: Resolve  # cgroup id (and a pid seen in it) -> container, None for the host
    netmap: FlowMap | None
    listeners: ListenerTable
    baselines: InboundBaselines | None = None
    raise_alert: RaiseAlert | None = None
    # a container by id: for accepts on listeners that predate roxd (attributed by address)
    container_of: Callable[[str], Container | None] = lambda _cid: None
    counters: dict[str, int] = field(default_factory=lambda: {"accepts": 0, "listens": 0,
                                                              "alerts": 0})

    def observe(self, ev: InboundEvent) -> None:
        container = self.resolve(ev.cgroup_id, ev.pid or None) if ev.cgroup_id else None
        if isinstance(ev, ListenEvent):
            self.counters["listens"] += 1
            if container is not None:
                self.listeners.observe(container.id, ev)
            return
        self.counters["accepts"] += 1
        if self.netmap is None:
            return
        flow = self.netmap.observe_accept(container, ev)
        # the accepting end: the flow's destination, or its source for a loopback edge
        own = flow.source if flow.destination.kind == "loopback" else flow.destination
        if self.baselines is None or own.kind != "container" or not own.workload:
            return
        peer = "loopback" if flow.destination.kind == "loopback" else peer_name(flow.source)
        facts = self.baselines.observe_inbound(own.workload, container, ev.cgroup_id, peer,
                                               ev.lport, ev.protocol)
        if (facts is not None and facts.verdict == "anomaly" and facts.mode != "learn"
                and self.raise_alert is not None):
            self.counters["alerts"] += 1
            container = container or self.container_of(own.id)
            self.raise_alert(NEW_INBOUND_PEER, self._event(ev, container, facts, peer),
                             [ActionResult(ActionKind.ALERT, Outcome.DONE)])

    @staticmethod
    def _event(ev: AcceptEvent, container: Container | None, facts: BaselineFacts,
               peer: str) -> EnrichedEvent:
        event = SyscallEvent(
            time_ns=ev.time_ns, pid=ev.pid, uid=ev.uid, cgroup_id=ev.cgroup_id, comm=ev.comm,
            syscall="accept", errno=0, count=1 + ev.folded, source="sock_ops",
            args={"peer": peer, "peer_address": ev.saddr, "peer_port": ev.sport,
                  "local_address": ev.laddr, "port": ev.lport, "protocol": ev.protocol})
        process = Process(pid=ev.pid, ppid=0, uid=ev.uid, exe="", comm=ev.comm, args=(),
                          cgroup_id=ev.cgroup_id)
        return EnrichedEvent(event, container, process, baseline=facts)
