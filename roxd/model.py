"""Typed records that flow between roxd's stages.

The data flow is one-directional:

    sensor  -> ExecEvent / ExitEvent / ConnectEvent      (kernel facts, cgroup id only)
    containers -> EnrichedEvent                          (+ Container, + Process with ancestry)
    rules   -> RuleMatch                                 (which rule, which phase)
    enforce -> ActionResult                              (what was done, honestly)
    alerts  -> Alert                                     (what operators see)

Every record is a frozen dataclass so a stage can never mutate what an earlier stage produced
(those built per event get a cheaper `__init__` from roxd.fastinit: same signature, still frozen).
`to_dict()` gives the JSON shape that `--print-events`, the API and the alert sinks share.
"""

from __future__ import annotations

import datetime as _dt
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from roxd import vocabulary
from roxd.fastinit import fast_init

# --------------------------------------------------------------------------- sensor events


@fast_init
@dataclass(frozen=True, slots=True)
class ExecEvent:
    """A successful exec (sched:sched_process_exec), with argv read from the new program's
    stack (or joined from sys_enter_execve on kernels without BTF)."""

    time_ns: int  # wall clock, nanoseconds since the epoch
    pid: int  # thread-group id of the process that exec'd
    # parent tgid: task->real_parent at the exec (BTF kernels: a re-parented process names its
    # new parent, as getppid() does), else as the kernel saw it at fork; 0 = unknown
    ppid: int
    uid: int
    gid: int
    cgroup_id: int
    comm: str
    filename: str  # path handed to execve, as the process gave it (inside its mount ns)
    args: tuple[str, ...]
    args_truncated: bool
    # How many identical execs (same cgroup, parent, filename and argv) the kernel folded into
    # this one since the last report: 0 for a first sighting.
    folded: int = 0
    # Run through a file descriptor (/dev/fd/N from execveat(fd, "", AT_EMPTY_PATH), or
    # /proc/<pid>/fd/N): no path on disk names the program (memfd_create, a deleted file).
    fileless: bool = False
    # The kernel could not read part of argv (a page the caller never touched): args is
    # incomplete, and the enricher reads /proc/<pid>/cmdline while the process lives.
    args_unreadable: bool = False
    # The pid in the process's own pid namespace, read by the kernel at exec (BTF kernels);
    # None: not read, the enricher asks /proc.
    vpid: int | None = None


@fast_init
@dataclass(frozen=True, slots=True)
class ExitEvent:
    time_ns: int
    pid: int
    cgroup_id: int
    comm: str
    exit_code: int | None  # from exit_group(); None when the process died by a signal


class ConnectResult(str, Enum):
    OK = "ok"
    IN_PROGRESS = "in_progress"  # non-blocking connect, EINPROGRESS
    REFUSED = "refused"  # ECONNREFUSED
    UNREACHABLE = "unreachable"  # ENETUNREACH / EHOSTUNREACH
    TIMED_OUT = "timed_out"
    DENIED = "denied"  # EACCES / EPERM (e.g. a firewall or LSM said no)
    ERROR = "error"  # any other errno


@fast_init
@dataclass(frozen=True, slots=True)
class ConnectEvent:
    """An outbound connect() on an AF_INET/AF_INET6 socket, with its result."""

    time_ns: int
    pid: int
    tid: int
    uid: int
    cgroup_id: int
    comm: str
    family: str  # "ipv4" | "ipv6"
    daddr: str
    dport: int
    errno: int  # 0 on success, positive errno otherwise
    folded: int = 0  # identical connects folded in the kernel since the last report
    protocol: str = ""  # "tcp" | "udp" (the socket's type); "" when it could not be read
    # "connect": connect(2); "sendmsg": a UDP datagram sent to an address without connect
    # (sendto/sendmsg), seen by a cgroup hook before routing: errno is 0, `folded` counts the
    # datagrams to the same peer and port since the previous report
    via: str = "connect"

    @property
    def result(self) -> ConnectResult:
        return connect_result_of(self.errno)


def connect_result_of(errno_value: int) -> ConnectResult:
    import errno as e

    return {
        0: ConnectResult.OK,
        e.EINPROGRESS: ConnectResult.IN_PROGRESS,
        e.ECONNREFUSED: ConnectResult.REFUSED,
        e.ENETUNREACH: ConnectResult.UNREACHABLE,
        e.EHOSTUNREACH: ConnectResult.UNREACHABLE,
        e.ETIMEDOUT: ConnectResult.TIMED_OUT,
        e.EACCES: ConnectResult.DENIED,
        e.EPERM: ConnectResult.DENIED,
    }.get(errno_value, ConnectResult.ERROR)


def syscall_result_of(errno_value: int) -> str:
    """ok, denied (EPERM/EACCES: a privilege or policy said no), or error (any other errno)."""
    import errno as e

    if errno_value == 0:
        return "ok"
    return "denied" if errno_value in (e.EPERM, e.EACCES) else "error"


@dataclass(frozen=True, slots=True)
class SyscallEvent:
    """A sensitive or policy-relevant system call: its name, decoded arguments and result."""

    time_ns: int
    pid: int
    uid: int
    cgroup_id: int
    comm: str
    syscall: str
    errno: int = 0  # 0 on success; the positive errno of a failed (or denied) attempt
    args: Mapping[str, int | str] = field(default_factory=dict)
    count: int = 1  # occurrences this event stands for (aggregated in the kernel)
    source: str = "sensor"  # which program saw it: "sensor", "seccomp-enforce", "seccomp-deny"


SECCOMP_VERDICTS: tuple[str, ...] = ("killed", "denied")


@dataclass(frozen=True, slots=True)
class SeccompEvent:
    """A system call outside a container's seccomp policy, from the seccomp sensor
    (roxd/seccomp): `killed` by roxd's eBPF program at syscall entry (the container is in
    enforce mode), or `denied` with EPERM by the seccomp profile applied to it. The kernel
    acted before userspace heard of it; `count` attempts since the last report."""

    time_ns: int
    pid: int
    uid: int
    cgroup_id: int
    comm: str
    syscall: str
    verdict: str  # one of SECCOMP_VERDICTS
    count: int = 1


FILE_ACCESS_KINDS: tuple[str, ...] = vocabulary.FILE_ACCESS_KINDS


@fast_init
@dataclass(frozen=True, slots=True)
class FileEvent:
    """An access to a watched path (open, creat, truncate, unlink, rename, link, symlink).

    `path` is what the process gave (maybe relative, maybe through symlinks); `resolved` is the
    absolute, lexically normalized path roxd worked out in userspace (relative paths against
    /proc/<pid>/cwd or the dirfd's /proc/<pid>/fd link while the process lives), None when it
    could not. Neither resolves symlinks, and both are inside the process's own mount namespace
    and root (a container's /etc/shadow is its own)."""

    time_ns: int
    pid: int
    uid: int
    cgroup_id: int
    comm: str
    operation: str  # open | creat | truncate | unlink | rename | link | symlink
    path: str  # the watched name as given: for rename/link the new one, unless only the old one
    access: tuple[str, ...]  # FILE_ACCESS_KINDS that apply to `path`
    flags: tuple[str, ...] = ()  # O_WRONLY, O_CREAT, ... / RENAME_* / AT_REMOVEDIR
    mode: int = 0  # creation mode for open/creat
    errno: int = 0  # 0 on success
    other_path: str | None = None  # rename/link/symlink: the other name
    dfd: int = -100  # directory fd a relative path is relative to (AT_FDCWD = -100)
    other_dfd: int | None = None
    resolved: str | None = None
    folded: int = 0  # identical accesses folded in the kernel since the last report


@dataclass(frozen=True)
class FileWatchSet:
    """What the kernel must let through to userspace for file rules: access kinds per exact
    path, per path prefix and per basename; `everything` applies to every path (a rule whose
    paths cannot be derived). Built by the rule engine, pushed into BPF maps by the sensor."""

    exact: Mapping[str, frozenset[str]] = field(default_factory=dict)
    prefixes: Mapping[str, frozenset[str]] = field(default_factory=dict)
    basenames: Mapping[str, frozenset[str]] = field(default_factory=dict)
    everything: frozenset[str] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.exact or self.prefixes or self.basenames or self.everything)


SensorEvent = ExecEvent | ExitEvent | ConnectEvent | SyscallEvent | FileEvent | SeccompEvent

# --------------------------------------------------------------------------- enrichment


@dataclass(frozen=True, slots=True)
class Container:
    id: str  # full runtime id (64 hex for docker/containerd/cri-o/podman)
    runtime: str  # "docker" | "containerd" | "cri-o" | "podman"
    name: str | None = None
    image: str | None = None  # as the runtime reports it, e.g. "nginx:1.25" or "sha256:..."
    image_id: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    cgroup_path: str = ""
    # Kubernetes (from the CRI labels and annotations) or a podman pod; None outside pods.
    pod: str | None = None  # pod name
    pod_uid: str | None = None  # from the runtime, else from the kubelet's cgroup path
    namespace: str | None = None  # the pod's Kubernetes namespace
    pod_labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    # containerd's own namespace ("k8s.io", "default"); None for other runtimes
    runtime_namespace: str | None = None
    # the argv its runtime runs as the health check (Docker HEALTHCHECK); () = none
    healthcheck: tuple[str, ...] = ()
    # made by an image builder for one build step (Docker's classic builder: RUN)
    build_step: bool = False

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "image": self.image,
            "runtime": self.runtime,
            "labels": dict(self.labels),
            "pod": self.pod,
            "namespace": self.namespace,
        }
        # the rest only where a runtime said it, so host-only and docker records stay short
        if self.pod_uid:
            out["pod_uid"] = self.pod_uid
        if self.pod_labels:
            out["pod_labels"] = dict(self.pod_labels)
        if self.runtime_namespace:
            out["runtime_namespace"] = self.runtime_namespace
        return out


@fast_init
@dataclass(frozen=True, slots=True)
class Ancestor:
    pid: int
    exe: str
    args: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"pid": self.pid, "exe": self.exe, "args": list(self.args)}


@fast_init
@dataclass(frozen=True, slots=True)
class Process:
    pid: int
    ppid: int
    uid: int
    exe: str
    comm: str
    args: tuple[str, ...]
    cgroup_id: int
    args_truncated: bool = False
    # Nearest first: ancestors[0] is the parent. At most 8.
    ancestors: tuple[Ancestor, ...] = ()
    # pid inside the process's own pid namespace, read for container processes at exec
    # (1 = the container's init/entrypoint); None when unknown or on the host.
    vpid: int | None = None
    # container processes: entrypoint | healthcheck | interactive | exec | unknown
    # (roxd.vocabulary.SESSION_KINDS); None on the host
    session: str | None = None

    @property
    def parent_exe(self) -> str | None:
        return self.ancestors[0].exe if self.ancestors else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "ppid": self.ppid,
            "uid": self.uid,
            "exe": self.exe,
            "comm": self.comm,
            "args": list(self.args),
            "args_truncated": self.args_truncated,
            "cgroup_id": self.cgroup_id,
            "ancestors": [a.to_dict() for a in self.ancestors],
            "vpid": self.vpid,
            "session": self.session,
        }


@fast_init
@dataclass(frozen=True, slots=True)
class BaselineFacts:
    """What the workload's process baseline says of one exec (roxd/baselines): `learning`
    (added to it), `learned` (in it), or `anomaly` (not in the locked baseline), with the
    evidence an alert needs."""

    workload: str
    mode: str  # learn | monitor | enforce: what happens to anomalies once locked
    verdict: str  # learning | learned | anomaly
    locked_at_ns: int | None  # None while learning
    learned: int  # paths in the baseline
    first_seen_ns: int  # the workload's first exec
    element: str | None = None  # connects: the network element judged (`outbound tcp/5432 ...`)
    # file writes, an anomaly: the learned directories of the same tree (the evidence)
    nearby: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out = {"workload": self.workload, "mode": self.mode, "verdict": self.verdict,
               "locked_at": rfc3339(self.locked_at_ns) if self.locked_at_ns else None,
               "learned": self.learned, "learning_since": rfc3339(self.first_seen_ns)}
        if self.element is not None:
            out["element"] = self.element
        if self.nearby:
            out["learned_nearby"] = list(self.nearby)
        return out


@fast_init
@dataclass(frozen=True, slots=True)
class EnrichedEvent:
    """A sensor event with its container (None on the host) and its process with ancestry."""

    event: SensorEvent
    container: Container | None
    process: Process
    baseline: BaselineFacts | None = None  # execs in containers with baselines on
    drift: str | None = None  # execs in containers: new | modified | none (roxd/baselines/drift)
    # interpreter execs in containers: the same verdict for the script file they run
    script_drift: str | None = None

    @property
    def kind(self) -> str:
        return event_kind(self.event)

    @property
    def time_ns(self) -> int:
        return self.event.time_ns

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": self.kind,
            "time": rfc3339(self.event.time_ns),
            "container": self.container.to_dict() if self.container else None,
            "process": self.process.to_dict(),
        }
        ev = self.event
        if isinstance(ev, ConnectEvent):
            out["connect"] = {
                "family": ev.family,
                "daddr": ev.daddr,
                "dport": ev.dport,
                "protocol": ev.protocol or None,
                "via": ev.via,
                "result": ev.result.value,
                "errno": ev.errno,
            }
            out["folded"] = ev.folded
        elif isinstance(ev, ExecEvent):
            out["exec"] = {"filename": ev.filename, "fileless": ev.fileless}
            out["folded"] = ev.folded
        elif isinstance(ev, ExitEvent):
            out["exit"] = {"code": ev.exit_code}
        elif isinstance(ev, SyscallEvent):
            out["syscall"] = {"name": ev.syscall, "errno": ev.errno,
                              "result": syscall_result_of(ev.errno), "args": dict(ev.args),
                              "count": ev.count, "source": ev.source}
        elif isinstance(ev, FileEvent):
            out["file"] = {"operation": ev.operation, "path": ev.path, "resolved": ev.resolved,
                           "access": list(ev.access), "flags": list(ev.flags),
                           "other_path": ev.other_path, "errno": ev.errno,
                           "result": syscall_result_of(ev.errno)}
            out["folded"] = ev.folded
        elif isinstance(ev, SeccompEvent):
            out["seccomp"] = {"syscall": ev.syscall, "verdict": ev.verdict, "count": ev.count}
        if self.baseline is not None:
            out["baseline"] = self.baseline.to_dict()
        if self.drift is not None:
            out["drift"] = self.drift
        if self.script_drift is not None:
            out["script_drift"] = self.script_drift
        return out


def event_kind(event: SensorEvent) -> str:
    if isinstance(event, ExecEvent):
        return "exec"
    if isinstance(event, ConnectEvent):
        return "connect"
    if isinstance(event, ExitEvent):
        return "exit"
    if isinstance(event, SyscallEvent):
        return "syscall"
    if isinstance(event, FileEvent):
        return "file"
    if isinstance(event, SeccompEvent):
        return "seccomp"
    raise TypeError(f"not a sensor event: {event!r}")


# --------------------------------------------------------------------------- rules & response


class Phase(str, Enum):
    """StackRox's Adversarial Intent Model: the five phases of an attack (the words and their
    order are roxd.vocabulary.PHASES)."""

    FOOTHOLD = "foothold"
    PRIVILEGE_ESCALATION = "privilege_escalation"
    PERSISTENCE = "persistence"
    LATERAL_MOVEMENT = "lateral_movement"
    OBJECTIVES = "objectives"


class Severity(str, Enum):
    """syslog severities (RFC 5424), most severe first; `code` is the syslog code (the words
    and their order are roxd.vocabulary.SEVERITIES)."""

    EMERGENCY = "emergency"
    ALERT = "alert"
    CRITICAL = "critical"
    ERROR = "error"
    WARNING = "warning"
    NOTICE = "notice"
    INFO = "info"
    DEBUG = "debug"

    @property
    def code(self) -> int:
        return vocabulary.SEVERITIES.index(self.value)


def _check_vocabulary(enum: type[Enum], words: tuple[str, ...]) -> None:
    """The enums spell out their members for readers and type checkers; roxd.vocabulary is
    the one definition: a member added, renamed or moved on one side only fails at import."""
    values = tuple(member.value for member in enum)
    if values != words:
        raise ImportError(f"roxd.model.{enum.__name__} {values} differs from roxd.vocabulary "
                          f"{words}")


_check_vocabulary(Phase, vocabulary.PHASES)
_check_vocabulary(Severity, vocabulary.SEVERITIES)


class ActionKind(str, Enum):
    ALERT = "alert"
    KILL = "kill"
    ISOLATE = "isolate"
    SECCOMP = "seccomp"
    # reported, never listed by a rule: the kernel refused the operation itself (a connect
    # outside an enforced network baseline, refused by the cgroup connect hook)
    BLOCK = "block"


class Outcome(str, Enum):
    DONE = "done"
    WOULD = "would"  # monitor / dry-run mode: the action was not taken
    NOT_SUPPORTED = "not_supported"
    FAILED = "failed"


@fast_init
@dataclass(frozen=True, slots=True)
class ActionResult:
    action: ActionKind
    outcome: Outcome
    reason: str = ""
    in_kernel: bool = False  # done by the BPF program itself, before userspace saw the event

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action.value,
            "outcome": self.outcome.value,
            "reason": self.reason,
            "in_kernel": self.in_kernel,
        }


@dataclass(frozen=True, slots=True)
class RuleRef:
    """What an alert needs to know about the rule that raised it."""

    id: str
    name: str
    phase: Phase
    severity: Severity
    mitre: tuple[str, ...]
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "phase": self.phase.value,
            "severity": self.severity.value,
            "mitre": list(self.mitre),
        }


@fast_init
@dataclass(frozen=True, slots=True)
class RuleMatch:
    """The rule engine's verdict for one event: the rule and the actions it asks for."""

    rule: RuleRef
    actions: tuple[ActionKind, ...]
    monitor: bool = False  # dry-run: report what would be done, do nothing
    # What a kill action kills: "process", "process-tree" (it and its descendants), or
    # "container" (through the runtime: docker kill or stop, per enforce.container_kill).
    kill_target: str = "process"


@fast_init
@dataclass(frozen=True, slots=True)
class Alert:
    id: str
    time_ns: int
    rule: RuleRef
    event: EnrichedEvent
    actions: tuple[ActionResult, ...]
    count: int = 1  # identical alerts folded into this one
    first_ns: int = 0
    last_ns: int = 0

    def to_dict(self) -> dict[str, Any]:
        ev = self.event.to_dict()
        return {
            "id": self.id,
            "time": rfc3339(self.time_ns),
            "rule": self.rule.to_dict(),
            "container": ev["container"],
            "process": ev["process"],
            "event": ev,
            "actions": [a.to_dict() for a in self.actions],
            "count": self.count,
            "first_time": rfc3339(self.first_ns or self.time_ns),
            "last_time": rfc3339(self.last_ns or self.time_ns),
        }


def rfc3339(time_ns: int) -> str:
    """RFC 3339 UTC timestamp with microseconds, e.g. 2026-11-22T16:04:31.123456Z."""
    seconds, nanos = divmod(time_ns, 1_000_000_000)
    return f"{_utc_seconds(seconds)}.{nanos // 1000:06d}Z"


@functools.lru_cache(maxsize=256)
def _utc_seconds(seconds: int) -> str:
    # strftime was a twentieth of the CPU per alert in an alert storm; events of one second
    # share it
    return _dt.datetime.fromtimestamp(seconds, tz=_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
