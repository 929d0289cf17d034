"""The API's typed port into the daemon: every query and command the control API may make.

The daemon implements it (roxd.daemon.DaemonPort); the API never sees `Daemon`, and unit
tests give the API a small fake port instead. Queries are snapshots that never block the
event loop, except `kernel_stats` (the sensor's maps belong to the loop thread, so it is read
there); commands that change what the loop owns go through `call_in_loop`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from roxd.api.settings import ApiSettings
from roxd.inventory import ContainerRecord, ImageRecord
from roxd.model import Container
from roxd.posture.model import Report
from roxd.pubsub import Topic
from roxd.rules.ruleset import RuleSet

T = TypeVar("T")


class CallTimeout(TimeoutError):
    """call_in_loop gave up waiting. `started`: the loop had begun the call, so its change may
    still apply (504); otherwise it was withdrawn before it ran and nothing changed (503)."""

    def __init__(self, what: str, timeout: float, started: bool) -> None:
        self.started = started
        if started:
            text = (f"{what} did not finish within {timeout:g}s: the change was queued and "
                    "may still apply; check the state before retrying")
        else:
            text = (f"{what} was not started within {timeout:g}s (roxd's event loop is busy): "
                    "it was withdrawn, nothing changed; try again")
        super().__init__(text)


@dataclass(frozen=True)
class KernelStats:
    counters: Mapping[str, int]  # the sensor's STAT_NAMES -> total over CPUs
    drops_by_cgroup: Mapping[int, int]
    decode_errors: int
    handler_errors: int


@dataclass(frozen=True)
class Programs:
    attached: tuple[str, ...]
    load_seconds: float


@dataclass(frozen=True)
class DaemonFacts:
    """Fixed at start."""

    started_at: float  # time.time()
    monitor: bool
    config_source: str
    features: Mapping[str, object]  # features.HostFeatures.to_dict()
    api: ApiSettings
    # seconds per start-up stage (roxd/startup_timing.py StartupClock.to_dict), asked when
    # the status is: the port is made before READY is marked
    startup: Callable[[], Mapping[str, object]] | None = None


@dataclass(frozen=True)
class Activity:
    events: int
    alerts: int
    quiet_marks: int
    # events from cgroups that look like containers but no runtime could attribute
    unattributed: int = 0


class QuarantineRecordView(Protocol):
    container_id: str
    name: str | None
    since: str
    reason: str
    allow: Sequence[str]
    shared_with: Sequence[str]  # containers in the same network namespace, quarantined with it


class QuarantineControl(Protocol):
    """roxd.enforce.quarantine.Quarantine: thread-safe, slow (nft in the container's netns)."""

    def records(self) -> Sequence[QuarantineRecordView]: ...
    def isolate(self, container_id: str, name: str | None,
                reason: str) -> QuarantineRecordView: ...
    def release(self, container_id: str) -> bool: ...


class SeccompApi(Protocol):
    """roxd.seccomp.service.SeccompService: thread-safe; the API runs each request through
    `call`, on the service's own worker (never the event loop), with a timeout."""

    def call(self, fn: Callable[[Any], T], timeout: float = 30.0) -> T: ...

    def status(self) -> Any: ...
    def profile(self, target: str, *, kill: bool = False) -> Any: ...
    def learn(self, target: str) -> Any: ...
    def stop_learning(self, target: str) -> None: ...
    def apply(self, target: str, profile: Any) -> Any: ...
    def enforce(self, target: str) -> Any: ...
    def release(self, target: str) -> None: ...


class BaselinesApi(Protocol):
    """roxd.baselines.BaselineEngine: not thread-safe, call it on the loop thread."""

    def list(self) -> list[dict[str, Any]]: ...
    def get(self, key: str) -> dict[str, Any]: ...
    def lock(self, key: str) -> dict[str, Any]: ...
    def unlock(self, key: str) -> dict[str, Any]: ...
    def set_mode(self, key: str, mode: str) -> dict[str, Any]: ...
    def accept(self, key: str, path: str) -> dict[str, Any]: ...
    def breakglass(self, key: str, duration_s: float, reason: str = "") -> dict[str, Any]: ...
    def export(self, key: str | None = None) -> dict[str, Any]: ...
    def import_(self, doc: Any) -> dict[str, Any]: ...
    def stats(self) -> dict[str, int]: ...
    def workload_of(self, container: Container) -> str: ...  # pure: any thread


class AlertStoreView(Protocol):
    """roxd.alerts.store.AlertStore, as the API reads it."""

    def query(self, **kwargs: Any) -> Any: ...
    def get(self, alert_id: str) -> Any: ...


class IncidentsView(Protocol):
    """roxd.incidents.IncidentTracker, as the API reads it (thread-safe)."""

    def query(self, q: Any) -> list[dict[str, Any]]: ...  # an IncidentQuery
    def get(self, incident_id: str) -> dict[str, Any] | None: ...


class NetmapView(Protocol):
    """roxd.netmap.FlowMap, as the API reads it (thread-safe)."""

    def flows(self, since_ns: int | None = None, container: str | None = None,
              limit: int | None = None) -> list[dict[str, Any]]: ...
    def stats(self) -> dict[str, Any]: ...


class DaemonPort(Protocol):
    facts: DaemonFacts
    events_topic: Topic  # enriched events, as `--print-events` shows them
    alerts_topic: Topic  # alerts after noise control: what the store and journald get

    # ---- queries
    def activity(self) -> Activity: ...
    def container_events(self) -> Mapping[str, int]: ...  # events per container id, since start
    def stopping(self) -> bool: ...
    def programs(self) -> Programs: ...
    def kernel_stats(self) -> KernelStats: ...  # read on the loop thread
    def rules(self) -> RuleSet | None: ...
    def rule_paths(self) -> Sequence[Path]: ...
    def rule_overrides(self) -> Mapping[str, bool]: ...
    def containers(self) -> list[tuple[int, Container]]: ...
    def quarantine(self) -> QuarantineControl | None: ...  # None: not on this host (reason in log)
    def seccomp(self) -> SeccompApi | None: ...
    def alert_store(self) -> Any: ...  # AlertStore or None (alerts.store disabled)
    def alert_sink_stats(self) -> Mapping[str, int]: ...
    def alert_sink_problems(self) -> Sequence[str]: ...  # configured sinks not delivering: why
    # per rule since since_ns: rule, raised, emitted, folded, throttled, last_minute_ns
    def rule_counts(self, since_ns: int) -> Sequence[Mapping[str, Any]]: ...
    def policy(self) -> Mapping[str, object]: ...  # what the kernel was told (KernelPolicy)
    def baselines(self) -> BaselinesApi | None: ...  # None: [baselines] enabled = false
    # slow I/O on the caller's thread (the API's), never the loop's; RuntimeControlError
    def posture(self, refresh: bool = False) -> Report | None: ...  # None: posture disabled
    def inventory_containers(self, all_states: bool = False) -> Sequence[ContainerRecord]: ...
    def inventory_images(self) -> Sequence[ImageRecord]: ...
    def incidents(self) -> IncidentsView | None: ...  # None: not tracked in this daemon
    def risk(self, container_id: str) -> Mapping[str, Any]: ...  # score, reasons (incidents/risk)
    # None: every workload (a list, most at risk first); a key: that one, None when unknown
    def workload_risk(self, key: str | None = None) -> Any: ...
    def netmap(self) -> NetmapView | None: ...  # None: [netmap] enabled = false

    # ---- commands
    def call_in_loop(self, fn: Callable[[], T], timeout: float = 30.0) -> T: ...
    def reload_rules(self) -> bool: ...  # on the loop thread: call through call_in_loop
    def set_rules_enabled(self, rule_ids: Sequence[str], enabled: bool) -> RuleSet: ...
