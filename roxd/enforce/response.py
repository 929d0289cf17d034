"""Turn a rule match into actions and report each one's real outcome.

Honesty first: "done" only when it happened; "would" in monitor mode; "not_supported" or
"failed" with the reason otherwise. Never "blocked" where only "alerted" happened.

Each action runs on its own: whatever one raises (a runtime client's connection error, a
container's netns gone mid-isolate, a bug) becomes that action's "failed" with the reason,
and the others still run. Kills never hit protected processes and, unless the operator opts
in (`KillGuard.host_kills`), never host processes (roxd.enforce.protect).
"""

from __future__ import annotations

import logging
import signal
from dataclasses import dataclass, field

from roxd.enforce.cgroups import CgroupKillError, ContainerCgroups
from roxd.enforce.fallbacks import ISOLATE_FALLBACKS as ISOLATE_FALLBACKS
from roxd.enforce.kill import kill_pid, start_ticks
from roxd.enforce.protect import HOST_KILLS_OFF, KillGuard
from roxd.enforce.quarantine import Quarantine, QuarantineError
from roxd.model import ActionKind, ActionResult, EnrichedEvent, Outcome, RuleMatch
from roxd.runtime import ContainerRuntime, NoRuntime, RuntimeControlError, container_action
from roxd.seccomp.control import SeccompControl

log = logging.getLogger(__name__)

TREE_WALKS = 16  # walks of a stopped tree for descendants forked while it was being stopped


@dataclass
class Responder:
    monitor: bool = False
    cgroup2_root: str | None = None
    quarantine: Quarantine | None = None
    # The shared container runtime; NoRuntime when none is configured (None, the old way of
    # saying so, is turned into NoRuntime).
    runtime: ContainerRuntime = field(default_factory=NoRuntime)
    # What isolate does for a container that shares the host network (no namespace of its
    # own to put a table in): "none" (report it), "pause" or "kill" the container.
    isolate_fallback: str = "none"
    seccomp: SeccompControl | None = None  # the SeccompService when available
    container_kill: str = "kill"  # kill_target = "container": the runtime's "kill" or "stop"
    # What kills may hit: protected processes, host kills on or off (the daemon gives it the
    # kernel policy's, built from [enforce]; this default is the built-in one, host kills off)
    guard: KillGuard = field(default_factory=KillGuard)
    # The container's cgroup: container kills through cgroup.kill, whatever the runtime
    # (None: through the runtime's API only)
    cgroups: ContainerCgroups | None = None

    def __post_init__(self) -> None:
        if self.runtime is None:
            self.runtime = NoRuntime()

    def respond(
        self, match: RuleMatch, event: EnrichedEvent, *, killed_in_kernel: bool = False,
        held: bool = False, guard: KillGuard | None = None,
    ) -> list[ActionResult]:
        """killed_in_kernel: the BPF program already killed the process for this rule; with
        held, it stopped it at exec and roxd killed it before its first instruction. guard:
        what kills may hit (default: this responder's)."""
        monitor = self.monitor or match.monitor
        guard = guard or self.guard
        results: list[ActionResult] = []
        for action in match.actions:
            try:
                results.extend(self._act(action, match, event, monitor, guard,
                                         killed_in_kernel, held))
            except Exception as exc:  # never lose the alert, nor the other actions' results
                log.exception("action %s of rule %s failed", action.value, match.rule.id)
                results.append(ActionResult(action, Outcome.FAILED, failure_reason(exc)))
        return results

    def _act(self, action: ActionKind, match: RuleMatch, event: EnrichedEvent, monitor: bool,
             guard: KillGuard, killed_in_kernel: bool, held: bool) -> list[ActionResult]:
        if action is ActionKind.ALERT:
            return [ActionResult(action, Outcome.DONE)]
        if action is ActionKind.KILL:
            if killed_in_kernel or monitor or match.kill_target == "process":
                return [self._kill(event, monitor, killed_in_kernel, held, guard)]
            if match.kill_target == "container":
                return [self._kill_container(event, guard)]
            if event.container is None and not guard.host_kills:
                return [ActionResult(ActionKind.KILL, Outcome.NOT_SUPPORTED, HOST_KILLS_OFF)]
            return [self._kill_tree(event, guard)]
        if action is ActionKind.ISOLATE:
            return self._isolate(event, match, monitor)
        if action is ActionKind.SECCOMP:
            return [self._seccomp(event, monitor)]
        if monitor:
            return [ActionResult(action, Outcome.WOULD, "monitor mode")]
        return [ActionResult(action, Outcome.NOT_SUPPORTED,
                             f"{action.value} is not available in this build")]

    def _kill(self, event: EnrichedEvent, monitor: bool, killed_in_kernel: bool,
              held: bool = False, guard: KillGuard | None = None) -> ActionResult:
        guard = guard or self.guard
        if killed_in_kernel and held:
            return ActionResult(ActionKind.KILL, Outcome.DONE,
                                "stopped by the eBPF program at exec (its container was new), "
                                "then SIGKILL by pidfd before its first instruction",
                                in_kernel=True)
        if killed_in_kernel:
            where = "connect() entry" if event.kind == "connect" else "exec"
            return ActionResult(ActionKind.KILL, Outcome.DONE,
                                f"SIGKILL sent by the eBPF program at {where}", in_kernel=True)
        if monitor:
            return ActionResult(ActionKind.KILL, Outcome.WOULD, "monitor mode")
        if event.container is None and not guard.host_kills:
            return ActionResult(ActionKind.KILL, Outcome.NOT_SUPPORTED, HOST_KILLS_OFF)
        proc = event.process
        outcome = kill_pid(proc.pid, started_by_ns=event.event.time_ns,
                           expect_cgroup_id=proc.cgroup_id, cgroup2_root=self.cgroup2_root,
                           protect=guard.protected, container=event.container is not None)
        return ActionResult(ActionKind.KILL, Outcome.DONE if outcome.killed else Outcome.FAILED,
                            outcome.reason)

    def _kill_tree(self, event: EnrichedEvent, guard: KillGuard) -> ActionResult:
        """The process and every descendant, each by pidfd. The tree is stopped before it is
        killed: SIGSTOP to the process, then to every descendant the walk finds, walking again
        until no new one appears; then SIGKILL to all, the process first. Killing while
        walking let a child forked between the walk and the kill live on (seen: a shell
        starting its sleepers while the rule fired). Each descendant's start time is read
        before it is stopped and checked again at the kill (a reused pid is never hit);
        protected descendants are neither stopped nor killed."""
        import psutil

        proc = event.process
        container = event.container is not None
        stop = kill_pid(proc.pid, sig=signal.SIGSTOP, started_by_ns=event.event.time_ns,
                        expect_cgroup_id=proc.cgroup_id, cgroup2_root=self.cgroup2_root,
                        protect=guard.protected, container=container)
        if not stop.killed:
            return ActionResult(ActionKind.KILL, Outcome.FAILED, stop.reason)
        root_ticks = start_ticks(proc.pid)
        stopped: dict[int, int] = {}  # descendants in the order found: their start ticks
        spared = 0
        try:
            root = psutil.Process(proc.pid)
            for _ in range(TREE_WALKS):
                new = [c.pid for c in root.children(recursive=True) if c.pid not in stopped]
                if not new:
                    break
                for pid in new:
                    ticks = start_ticks(pid)
                    if ticks is None:
                        continue  # gone already
                    outcome = kill_pid(pid, sig=signal.SIGSTOP, expect_start_ticks=ticks,
                                       protect=guard.protected)
                    if outcome.reason.startswith("protected"):
                        spared += 1
                        continue
                    stopped[pid] = ticks
        except Exception:  # psutil.Error: the root died meanwhile; anything else: a bug.
            # Either way, kill what was found: nothing stopped may be left stopped.
            log.exception("process tree walk of pid %d ended early", proc.pid)
        first = kill_pid(proc.pid, started_by_ns=event.event.time_ns,
                         expect_start_ticks=root_ticks)
        killed = int(first.killed)
        unkilled = [] if first.killed else [(proc.pid, root_ticks)]
        for pid, ticks in stopped.items():
            if kill_pid(pid, expect_start_ticks=ticks, protect=guard.protected).killed:
                killed += 1
            else:
                unkilled.append((pid, ticks))
        for pid, ticks in unkilled:  # whatever could not be killed is never left stopped
            kill_pid(pid, sig=signal.SIGCONT, expect_start_ticks=ticks)
        if not first.killed and not killed:
            return ActionResult(ActionKind.KILL, Outcome.FAILED, first.reason)
        note = f"; {spared} protected left alone" if spared else ""
        return ActionResult(ActionKind.KILL, Outcome.DONE,
                            f"process tree: {killed} of {1 + len(stopped)} processes "
                            f"stopped, then killed by pidfd{note}")

    def _kill_container(self, event: EnrichedEvent, guard: KillGuard) -> ActionResult:
        """Every process of the container: cgroup.kill (cgroup v2, any runtime, refused when
        a protected process sits in the cgroup), else the runtime's API. The configured
        `container_kill = "stop"` asks for a graceful stop: the runtime's API only."""
        container = event.container
        if container is None:
            return ActionResult(ActionKind.KILL, Outcome.NOT_SUPPORTED,
                                "kill_target container: the process runs on the host")
        label = container.name or container.id[:12]
        verb = self.container_kill
        why_not_cgroup = ""  # set when cgroup.kill was tried and could not be used
        if self.cgroups is not None and verb == "kill":
            try:
                done = self.cgroups.kill(container.id, guard.protected)
            except CgroupKillError as exc:
                why_not_cgroup = str(exc)
                if exc.args and str(exc).startswith("protected"):
                    return ActionResult(ActionKind.KILL, Outcome.FAILED, why_not_cgroup)
            else:
                left = "" if done.emptied else "; processes still exiting after 2 s"
                return ActionResult(ActionKind.KILL, Outcome.DONE,
                                    f"container {label}: SIGKILL to its {done.processes} "
                                    f"processes through cgroup.kill{left}")
        runtime = self.runtime
        note = f" (cgroup.kill: {why_not_cgroup})" if why_not_cgroup and verb == "kill" else ""
        outcome = Outcome.FAILED if note else Outcome.NOT_SUPPORTED
        if not runtime.configured:
            return ActionResult(ActionKind.KILL, outcome, "kill_target container: no container "
                                                          f"runtime configured{note}")
        if container.runtime != runtime.name:
            return ActionResult(ActionKind.KILL, outcome,
                                f"kill_target container: a {container.runtime} container, and "
                                f"the configured runtime is {runtime.label}{note}")
        try:
            container_action(runtime, verb, container.id)
        except RuntimeControlError as exc:
            return ActionResult(ActionKind.KILL, Outcome.FAILED, f"{exc}{note}")
        return ActionResult(ActionKind.KILL, Outcome.DONE,
                            f"container {label} "
                            f"{'stopped' if verb == 'stop' else 'killed'} through the "
                            f"{runtime.label} API{note}")

    def _isolate(self, event: EnrichedEvent, match: RuleMatch,
                 monitor: bool) -> list[ActionResult]:
        container = event.container
        if container is None:
            return [ActionResult(ActionKind.ISOLATE, Outcome.NOT_SUPPORTED,
                                 "host process: quarantine applies to containers only")]
        if monitor:
            return [ActionResult(ActionKind.ISOLATE, Outcome.WOULD, "monitor mode")]
        if self.quarantine is None:
            return [ActionResult(ActionKind.ISOLATE, Outcome.NOT_SUPPORTED,
                                 "quarantine unavailable (no nftables: see the start-up log)")]
        if self.quarantine.is_quarantined(container.id):
            return [ActionResult(ActionKind.ISOLATE, Outcome.DONE, "already quarantined")]
        try:
            record = self.quarantine.isolate(container.id, container.name,
                                             f"rule {match.rule.id}")
            shared = ""
            if getattr(record, "shared_with", None):  # a stand-in may return no record
                shared = (f"; quarantined together with {len(record.shared_with)} other "
                          "container(s) sharing that network namespace: "
                          + ", ".join(c[:12] for c in record.shared_with))
            return [ActionResult(ActionKind.ISOLATE, Outcome.DONE,
                                 "nftables table roxd_quarantine in the container's netns"
                                 + shared)]
        except QuarantineError as exc:
            failed = ActionResult(ActionKind.ISOLATE, Outcome.FAILED, str(exc))
            if "host's network" not in str(exc) or self.isolate_fallback == "none":
                return [failed]
            return [failed, self._fallback(container.id)]

    def _seccomp(self, event: EnrichedEvent, monitor: bool) -> ActionResult:
        """Move the container to seccomp enforce mode with its learned syscall set: any later
        syscall outside it is killed at sys_enter."""
        action = ActionKind.SECCOMP
        if event.container is None:
            return ActionResult(action, Outcome.NOT_SUPPORTED, "host process: no container")
        if monitor:
            return ActionResult(action, Outcome.WOULD, "monitor mode")
        if self.runtime.configured and event.container.runtime != self.runtime.name:
            # learned sets and profiles follow the runtime's images and containers (its API)
            return ActionResult(action, Outcome.NOT_SUPPORTED,
                                f"seccomp is not supported on runtime "
                                f"{event.container.runtime}: roxd learns and applies seccomp "
                                f"through the configured runtime's API "
                                f"({self.runtime.label})")
        if self.seccomp is None:
            return ActionResult(action, Outcome.NOT_SUPPORTED, "seccomp service unavailable")
        try:
            result = self.seccomp.enforce(event.container.id)
        except Exception as exc:  # typed errors from the seccomp stage: no learned set, ...
            return ActionResult(action, Outcome.FAILED, str(exc))
        return ActionResult(action, Outcome.DONE,
                            f"enforce mode: {result.denied} syscalls now killed")

    def _fallback(self, container_id: str) -> ActionResult:
        verb = self.isolate_fallback
        action = ActionKind.KILL
        runtime = self.runtime
        if not runtime.configured:
            return ActionResult(action, Outcome.NOT_SUPPORTED,
                                f"isolate fallback {verb}: no container runtime")
        try:
            container_action(runtime, verb, container_id)
        except RuntimeControlError as exc:
            return ActionResult(action, Outcome.FAILED, f"isolate fallback {verb}: {exc}")
        return ActionResult(action, Outcome.DONE,
                            f"isolate fallback: container {verb}{'d' if verb == 'pause' else 'ed'}"
                            f" through the {runtime.label} API")


def failure_reason(exc: BaseException) -> str:
    """An unexpected error as an action's reason: its type, then its message."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
