"""Break-glass: a time-limited exemption of one workload from enforce mode, audited.

`roxctl baselines breakglass W --for 30m --reason "incident 42"` makes an enforce-mode
workload behave as in monitor mode until the time is up: nothing is killed or refused in the
kernel, every anomaly is still alerted. Granting, ending (`--for 0`) and expiring are each an
alert, `baseline.breakglass` (warning), so the exemption is on the record wherever alerts go.
The end time is wall clock and persisted with the baseline: after a restart an exemption still
running is honoured until it ends, one that ended meanwhile is expired (and said) at once.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

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

MAX_S = 7 * 86400.0  # longer than a week is not break-glass: use `mode W monitor`

BREAKGLASS_RULE = RuleRef(
    id="baseline.breakglass",
    name="Baseline enforcement suspended for a workload (break-glass)",
    # not an attack phase: an operator lowered a defence; the phase of the first thing an
    # attacker could do with it (run something new) is the honest one
    phase=Phase.FOOTHOLD,
    severity=Severity.WARNING,
    mitre=("T1562.001",),  # Impair Defenses: Disable or Modify Tools
    description="An operator exempted a workload from enforce mode for a limited time "
                "(roxctl baselines breakglass), or that exemption ended. While it runs, "
                "anomalies are alerted and nothing is killed or refused in the kernel.",
)


REOPEN_RULE = RuleRef(
    id="baseline.reopened",
    name="Baseline learning reopened: a new image digest for the workload",
    phase=Phase.FOOTHOLD,
    severity=Severity.NOTICE,
    mitre=(),
    description="A container of the workload runs an image digest its baseline had not seen "
                "([baselines] reopen_on_new_digest = true): the baseline learns again for a "
                "new window, then locks. What it learns in that window is trusted.",
)


@dataclass(frozen=True)
class BreakglassChange:
    """A change of a workload's baseline that is audited as an alert: a break-glass granted,
    ended or expired, or learning reopened for a new image digest."""

    workload: str
    what: str  # granted | ended | expired | reopened
    until_ns: int
    reason: str

    @property
    def rule(self) -> RuleRef:
        return REOPEN_RULE if self.what == "reopened" else BREAKGLASS_RULE


RaiseAlert = Callable[[RuleRef, EnrichedEvent, Sequence[ActionResult]], object]


def breakglass_event(change: BreakglassChange, container: Container | None) -> EnrichedEvent:
    """The synthetic event of a grant or end: roxd itself as the process (the operator's
    command reached it through the API), what changed in the args."""
    now = time.time_ns()
    event = SyscallEvent(time_ns=now, pid=os.getpid(), uid=os.getuid(), cgroup_id=0,
                         comm="roxd", syscall="breakglass",
                         args={"workload": change.workload, "change": change.what,
                               "until_ns": change.until_ns, "reason": change.reason},
                         source="baselines")
    process = Process(pid=os.getpid(), ppid=os.getppid(), uid=os.getuid(), exe="roxd",
                      comm="roxd", args=(), cgroup_id=0)
    return EnrichedEvent(event, container, process)


def breakglass_actions(change: BreakglassChange) -> list[ActionResult]:
    return [ActionResult(ActionKind.ALERT, Outcome.DONE,
                         (f"learning reopened for {change.workload}"
                          if change.what == "reopened"
                          else f"break-glass {change.what} for {change.workload}")
                         + (f": {change.reason}" if change.reason else ""))]


__all__ = ["BREAKGLASS_RULE", "MAX_S", "REOPEN_RULE", "BreakglassChange", "breakglass_actions",
           "breakglass_event"]
