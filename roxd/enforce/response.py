"""Turn a rule match into actions and report each one's real outcome.

Honesty first: "done" only when it happened; "would" in monitor mode; "not_supported" with a
reason where this build or host cannot do it.
"""

from __future__ import annotations

from roxd.enforce.kill import kill_pid
from roxd.model import ActionKind, ActionResult, EnrichedEvent, Outcome, RuleMatch


class Responder:
    def __init__(self, *, monitor: bool = False, cgroup2_root: str | None = None) -> None:
        self._monitor = monitor
        self._cgroup2_root = cgroup2_root

    def respond(
        self, match: RuleMatch, event: EnrichedEvent, *, killed_in_kernel: bool = False
    ) -> list[ActionResult]:
        monitor = self._monitor or match.monitor
        results: list[ActionResult] = []
        for action in match.actions:
            if action is ActionKind.ALERT:
                results.append(ActionResult(action, Outcome.DONE))
            elif action is ActionKind.KILL:
                results.append(self._kill(event, monitor, killed_in_kernel))
            elif monitor:
                results.append(ActionResult(action, Outcome.WOULD, "monitor mode"))
            else:
                results.append(ActionResult(action, Outcome.NOT_SUPPORTED,
                                            f"{action.value} is not implemented in this build"))
        return results

    def _kill(self, event: EnrichedEvent, monitor: bool, killed_in_kernel: bool) -> ActionResult:
        if killed_in_kernel:
            return ActionResult(ActionKind.KILL, Outcome.DONE,
                                "SIGKILL sent by the eBPF program at exec", in_kernel=True)
        if monitor:
            return ActionResult(ActionKind.KILL, Outcome.WOULD, "monitor mode")
        proc = event.process
        outcome = kill_pid(proc.pid, expect_comm=proc.comm or None,
                           expect_cgroup_id=proc.cgroup_id, cgroup2_root=self._cgroup2_root)
        return ActionResult(ActionKind.KILL, Outcome.DONE if outcome.killed else Outcome.FAILED,
                            outcome.reason)
