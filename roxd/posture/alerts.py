"""A posture regression as an alert: `roxd.posture-regression`.

Between two scans, a check whose result went from PASS to WARN is a regression. It is one
alert per container the check names now (or one for the host when the check concerns the
host, the daemon or files). A check that was already WARN and now names one more container
raises nothing: on most hosts several container checks are WARN for every default container
(no memory limit, no health check), and an alert per container start would be noise.

The alert goes to every alert sink, but not to the incident tracker: an incident is an
attack's story, and a configuration change is not one. It counts in the container's risk
score through its own factor, `posture_regressions` (docs/incidents.md).

Nothing the sensor saw names the change, so, as for a tampered quarantine, the alert's event is
a synthetic `syscall` event, syscall `posture-scan`, source `posture-scan`, on the container's
init process (pid 0 on the host), its arguments the CIS id, the results before and after and
the reason. The rule's phase is the attack phase the weakness opens the way to
(`PHASE_OF`, docs/posture.md); its severity is warning.

The first scan after roxd starts has nothing to compare with: it raises nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
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
from roxd.posture.model import Finding, Report, Result

RULE_ID = "roxd.posture-regression"

# the phase a weakness opens the way to: a way out of the container or to more rights is
# privilege escalation, a remote login kept in a container persistence, a resource left
# unbounded (memory, pids, CPU) the attacker's objectives (denial of service, mining); the rest,
# the daemon's and the host's configuration, privilege escalation (who controls dockerd controls
# the host)
PHASE_OF: Mapping[str, Phase] = {
    "5.7": Phase.PERSISTENCE,
    "5.11": Phase.OBJECTIVES, "5.12": Phase.OBJECTIVES, "5.29": Phase.OBJECTIVES,
    "5.8": Phase.FOOTHOLD, "5.9": Phase.FOOTHOLD, "5.14": Phase.FOOTHOLD,
}


@dataclass(frozen=True)
class Regression:
    finding: Finding  # the check and its outcome now
    was: str  # its result in the scan before
    container_id: str = ""  # "" for the host
    container_name: str = ""
    init_pid: int = 0


@dataclass(frozen=True)
class ContainerRef:
    id: str
    name: str
    init_pid: int


# Container checks whose WARN opens a way out of the container or onto the host: a container
# started with one of these raises a regression alert from its first scan. Other container
# checks (health check, memory or pids limits, read-only root, restart policy, ...) alert only
# for a container that was already running at the previous scan and changed (its weakness is
# new, not merely a new container's configuration, which the report and the risk score show):
# the benign suite's production-like containers lack health checks and limits, and alerted.
ESCAPE_CHECKS = frozenset({
    "5.5",   # privileged
    "5.6",   # sensitive host directories mounted
    "5.7",   # sshd running in it
    "5.10", "5.16", "5.17", "5.21", "5.31",  # the host's net / pid / ipc / uts / user ns
    "5.20",  # shared mount propagation
    "5.22",  # seccomp disabled
    "5.23",  # privileged exec session
    "5.32",  # the Docker socket mounted
})


def regressions(before: Report | None, after: Report,
                containers: Mapping[str, ContainerRef],
                seen_before: frozenset[str] | None = None) -> list[Regression]:
    """Every Automated check that went from PASS to WARN between two scans, one per container
    it names (`containers`: the running containers by name, from the scan's facts), or one for
    the host. A container not in `seen_before` (the previous scan's container ids) counts only
    for ESCAPE_CHECKS. Manual checks (the benchmark's own word: a person decides) stay in the report
    and raise no alert: 5.9's undeclared listening port is what many production images do
    (no EXPOSE), and the benign suite's health-checked web server alerted on it."""
    if before is None:
        return []
    old = before.results()
    out: list[Regression] = []
    for f in after.findings:
        if not f.check.automated:
            continue
        if old.get(f.check.id) != str(Result.PASS) or f.outcome.result is not Result.WARN:
            continue
        if f.check.concerns != "containers":
            out.append(Regression(f, "PASS"))
            continue
        for name in f.outcome.items:
            ref = containers.get(name)
            new_container = seen_before is not None and (ref is None or ref.id not in seen_before)
            if new_container and f.check.id not in ESCAPE_CHECKS:
                continue
            out.append(Regression(f, "PASS", ref.id if ref else "", name,
                                  ref.init_pid if ref else 0))
    return out


def rule_of(finding: Finding) -> RuleRef:
    c = finding.check
    return RuleRef(
        id=RULE_ID, name=f"Posture regression: CIS {c.id} {c.title}",
        phase=PHASE_OF.get(c.id, Phase.PRIVILEGE_ESCALATION), severity=Severity.WARNING,
        mitre=(),
        description="A CIS Docker Benchmark check that passed in roxd's previous posture scan "
                    "fails now (docs/posture.md). Benign when an operator changed the "
                    "configuration on purpose; the remediation says how to undo it.")


def regression_event(r: Regression, container: Container | None) -> EnrichedEvent:
    f = r.finding
    if container is None and r.container_id:
        container = Container(id=r.container_id, runtime="docker", name=r.container_name)
    now = time.time_ns()
    comm = "posture-scan"
    event = SyscallEvent(time_ns=now, pid=r.init_pid, uid=0, cgroup_id=0, comm=comm,
                         syscall="posture-scan", errno=0,
                         args={"cis_id": f.check.id, "was": r.was, "now": "WARN",
                               "reason": f.outcome.reason[:512],
                               "item": r.container_name or ",".join(f.outcome.items)[:512]},
                         source="posture-scan")
    # the CIS id in args: noise control folds alerts by (rule, container, exe, args), and the
    # regressions of different checks in one container are different alerts
    process = Process(pid=r.init_pid, ppid=0, uid=0, exe="", comm=comm,
                      args=(comm, f.check.id), cgroup_id=0)
    return EnrichedEvent(event, container, process)


RaiseAlert = Callable[[RuleRef, EnrichedEvent, Sequence[ActionResult]], object]
ContainerOf = Callable[[str], "Container | None"]


@dataclass
class PostureAlerts:
    """PostureService.on_regressions: one `roxd.posture-regression` alert per regression,
    through the alert fan-out (`raise_alert` runs it on the event loop)."""

    raise_alert: RaiseAlert
    container_of: ContainerOf = lambda _cid: None

    def __call__(self, found: Sequence[Regression]) -> None:
        for r in found:
            container = self.container_of(r.container_id) if r.container_id else None
            self.raise_alert(rule_of(r.finding), regression_event(r, container),
                             [ActionResult(ActionKind.ALERT, Outcome.DONE)])
