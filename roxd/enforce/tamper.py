"""A tampered quarantine as an alert: `roxd.quarantine-tampered`.

The periodic quarantine check (roxd.enforce.quarantine.Quarantine.reconcile) finds a table
deleted or changed from inside a quarantined container (CAP_NET_ADMIN is enough) and
re-applies it. Nothing the sensor saw names the change (nftables is driven over netlink), so
the alert's event is a synthetic `syscall` event, source `quarantine-check`, on the
container's init process: the alert says where and what was found, and the isolate action
says whether the table is back.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from roxd.containers.paths import parse_cgroup_path
from roxd.enforce.quarantine import Tampering
from roxd.model import (
    ActionKind,
    ActionResult,
    Container,
    EnrichedEvent,
    Outcome,
    Phase,
    Process,
    RuleRef,
    Severity,
    SyscallEvent,
)

TAMPER_RULE = RuleRef(
    id="roxd.quarantine-tampered",
    name="Network quarantine tampered with from inside the container",
    # the vocabulary has no "defense evasion": a quarantined container breaking out of its
    # isolation acts on its objectives (reach the network again)
    phase=Phase.OBJECTIVES,
    severity=Severity.CRITICAL,
    mitre=("T1562.004",),  # Impair Defenses: Disable or Modify System Firewall
    description="A quarantined container deleted or changed roxd's nftables table in its own "
                "network namespace (it holds CAP_NET_ADMIN). roxd re-applied the table. No "
                "benign hit: nothing but roxd should touch the table.",
)

ContainerOf = Callable[[str], "Container | None"]
RaiseAlert = Callable[[RuleRef, EnrichedEvent, Sequence[ActionResult]], object]


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            return f.read()
    except OSError:
        return ""


def tamper_event(t: Tampering, container: Container | None) -> EnrichedEvent:
    """The synthetic event of a tampering: the container's init process, what was found."""
    record = t.record
    if container is None:
        path = ""
        for line in _read(f"/proc/{t.pid}/cgroup").splitlines():
            if line.startswith("0::"):
                path = line[3:]
        ref = parse_cgroup_path(path)
        container = Container(id=record.container_id,
                              runtime=ref.runtime if ref is not None else "unknown",
                              name=record.name, cgroup_path=path,
                              pod=ref.pod_uid if ref is not None else None)
    comm = _read(f"/proc/{t.pid}/comm").rstrip("\n")
    args = tuple(a for a in _read(f"/proc/{t.pid}/cmdline").split("\0") if a)
    try:
        exe = os.readlink(f"/proc/{t.pid}/exe")
    except OSError:
        exe = ""
    now = time.time_ns()
    event = SyscallEvent(time_ns=now, pid=t.pid, uid=0, cgroup_id=0, comm=comm,
                         syscall="nftables", errno=0,
                         args={"table": "inet roxd_quarantine", "found": t.found},
                         source="quarantine-check")
    process = Process(pid=t.pid, ppid=0, uid=0, exe=exe, comm=comm, args=args, cgroup_id=0)
    return EnrichedEvent(event, container, process)


def tamper_actions(t: Tampering) -> list[ActionResult]:
    if t.reapplied:
        return [ActionResult(ActionKind.ALERT, Outcome.DONE),
                ActionResult(ActionKind.ISOLATE, Outcome.DONE,
                             f"quarantine table re-applied ({t.found})")]
    return [ActionResult(ActionKind.ALERT, Outcome.DONE),
            ActionResult(ActionKind.ISOLATE, Outcome.FAILED,
                         f"re-applying the quarantine table failed: {t.error}")]


@dataclass
class TamperAlerts:
    """Quarantine.on_tamper: one `roxd.quarantine-tampered` alert per tampered table, through
    the one alert fan-out (AlertDispatcher.raise_alert)."""

    raise_alert: RaiseAlert
    container_of: ContainerOf = lambda _cid: None

    def __call__(self, t: Tampering) -> None:
        self.raise_alert(TAMPER_RULE, tamper_event(t, self.container_of(t.record.container_id)),
                         tamper_actions(t))
