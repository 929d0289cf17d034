"""roxd's lifecycle: build the stages once, start them, run the loop, stop them in order.

    sensor ──Decoded──► Pipeline.handle: containers ─► policy ─► rules ─► enforce ─► alerts
                                                       ▲
    rules (ActiveRules) ──new set──► KernelPolicy ─────┘ (the only writer of kernel maps)
    containers (resolver) ──changed──►

The daemon does no per-event work: `Pipeline` (roxd/pipeline.py) handles each event, and
`KernelPolicy` (roxd/policy/) owns every map userspace writes. Here: build (`_build`, every
part fully made before anything runs, "unavailable" parts said once in the log), start, the
loop (poll, API tasks, reload, housekeeping), and shutdown. One thread owns the sensor and
runs the loop; the Docker event stream, noise control and the API have threads of their own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

from roxd import __version__, features
from roxd.alerts.delivery import AlertDelivery
from roxd.alerts.dispatch import AlertDispatcher, LogSink, StreamSink, TopicSink
from roxd.api.metrics_http import MetricsListener, NoMetricsListener, start_metrics_listener
from roxd.api.port import Activity, CallTimeout, DaemonFacts, KernelStats, Programs
from roxd.api.server import ApiServer
from roxd.baselines.breakglass import (
    BreakglassChange,
    breakglass_actions,
    breakglass_event,
)
from roxd.baselines.drift import DriftDetector
from roxd.baselines.engine import BaselineEngine
from roxd.baselines.files import watch_set as baseline_file_watches
from roxd.config import Config
from roxd.containers.attribution import ContainerAttribution
from roxd.enforce.cgroups import ContainerCgroups
from roxd.enforce.quarantine import Quarantine
from roxd.enforce.response import Responder
from roxd.enforce.tamper import TamperAlerts
from roxd.errors import CgroupError, RoxdError, RuleError
from roxd.holdguard import HoldGuard, release_exec_stops
from roxd.incidents import IncidentTracker, start_incidents
from roxd.incidents.risk import ContainerRisk
from roxd.incidents.risk_workload import make_risk_view
from roxd.inventory import ContainerRecord, ImageRecord, container_inventory, image_inventory
from roxd.jsonlines import JsonLines
from roxd.model import ConnectEvent, Container, SeccompEvent, rfc3339
from roxd.netmap.addresses import container_addresses, first_pid
from roxd.netmap.flows import FlowMap, peer_name
from roxd.netmap.inbound import InboundObserver
from roxd.netmap.listeners import ListenerTable, from_proc
from roxd.pipeline import Counters, EventTaps, Pipeline, SlowActions
from roxd.policy.capacity import capacity_problems, map_capacities
from roxd.policy.kernel import KernelPolicy
from roxd.policy.netenf_kernel import NetworkHook, Probe
from roxd.posture.alerts import PostureAlerts
from roxd.posture.facts import ListeningSource
from roxd.posture.model import Report
from roxd.posture.service import PostureService
from roxd.pubsub import Topic
from roxd.rules.active import ActiveRules
from roxd.rules.ruleset import RuleSet
from roxd.rules.watch import RuleFilesWatch
from roxd.runtime import (
    ContainerRuntime,
    EngineInventory,
    NoRuntime,
    connect_attribution_runtimes,
    connect_runtime,
)
from roxd.sensor.inbound import INBOUND_TYPES
from roxd.sensor.program import Sensor, SensorConfig, SensorStats, discard_prewarmed
from roxd.sensor.program import prewarm as prewarm_sensor
from roxd.sensor.records import Decoded
from roxd.sensor_config import sensor_config
from roxd.startup_line import ReadyFacts, ready_line
from roxd.startup_timing import StartupClock
from roxd.systemd_notify import Notifier
from roxd.ui.server import make_dashboard

if TYPE_CHECKING:  # imported when seccomp is set up: libseccomp may be missing
    from roxd.seccomp.service import SeccompService

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class RunOptions:
    print_events: bool = False
    print_alerts: bool = False
    rule_paths: tuple[Path, ...] = ()  # overrides the config when given
    events_out: IO[str] = field(default=sys.stdout)
    # roxd.main's clock, with its stages (config, the daemon's import); a Daemon made
    # elsewhere (tests) times from its own construction
    clock: StartupClock | None = None


class LoopCalls:
    """Calls handed to the event-loop thread by other threads (the API), run between polls."""

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[Callable[[], Any], Future[Any]]] = queue.Queue()

    def call(self, fn: Callable[[], T], timeout: float) -> T:
        """Queue fn for the loop and wait for its result (or its error). On a timeout, a call
        not yet started is withdrawn and never runs (CallTimeout, started=False: nothing
        changed); one already running is reported as such (started=True: it may still
        apply). It used to surface as "408 request body not received in time" while the
        queued change ran later."""
        future: Future[T] = Future()
        self._queue.put((fn, future))
        try:
            return future.result(timeout)
        except FutureTimeout:
            withdrawn = future.cancel()  # only succeeds while it is still queued
            if not withdrawn and future.done():  # it finished just now
                return future.result()
            name = getattr(fn, "__name__", "")
            what = f"{name}()" if name and not name.startswith("<") else "the request"
            raise CallTimeout(what, timeout, started=not withdrawn) from None

    def run_pending(self) -> None:
        """On the loop thread: run what is queued (withdrawn calls are skipped)."""
        while True:
            try:
                fn, future = self._queue.get_nowait()
            except queue.Empty:
                return
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed back to the caller's thread
                future.set_exception(exc)


@dataclass
class Housekeeping:
    """Periodic work of the loop: one named job, its period, when it runs next."""

    name: str
    every_s: float
    run: Callable[[], None]
    due: float = 0.0


@dataclass
class Parts:
    """Everything a running roxd is made of, built once, in order, before the loop starts."""

    attribution: ContainerAttribution
    sensor: Sensor
    policy: KernelPolicy
    pipeline: Pipeline
    delivery: AlertDelivery
    seccomp: SeccompService | None  # None where unavailable (the start-up log says why)
    baselines: BaselineEngine | None  # None with [baselines] enabled = false
    api: ApiServer | None = None
    posture: PostureService | None = None  # None: posture.enabled = false
    incidents: IncidentTracker | None = None  # a raw tap of the dispatcher: every alert
    # the alert fan-out without the incident tracker, for posture regressions
    posture_alerts: AlertDispatcher | None = None
    netmap: FlowMap | None = None  # None: netmap.enabled = false
    # accepted connections and listening sockets (bpf/inbound.bpf.c, roxd/netmap/inbound.py)
    inbound: InboundObserver | None = None
    metrics: MetricsListener | NoMetricsListener = field(default_factory=NoMetricsListener)
    # the worker for isolate, container kills, seccomp and quarantine checks: off the loop
    slow: SlowActions | None = None


class Daemon:
    def __init__(self, config: Config, options: RunOptions) -> None:
        self.config = config
        self.options = options
        # seconds per start-up stage: the READY line, status `startup` (issue 22)
        self.clock = options.clock or StartupClock()
        clock = self.clock
        self.counters = Counters()
        self.rules = ActiveRules(list(options.rule_paths) or config.rule_paths())
        # the one client of the container runtime: DockerRuntime, or NoRuntime with its reason
        with clock.stage("runtime connect"):
            self.runtime: ContainerRuntime = connect_runtime(config.containers)
        with clock.stage("feature probes"):
            self.features = features.probe(runtime=self.runtime)
        self.lines = (JsonLines(options.events_out)
                      if options.print_events or options.print_alerts else None)
        self.events_topic = Topic("events")
        self.alerts_topic = Topic("alerts")
        # containers' processes and namespaces from their cgroups: enforcement of any runtime
        with clock.stage("cgroups"):
            self.cgroups = ContainerCgroups.from_host()
        with clock.stage("quarantine set-up"):
            self.quarantine = self._make_quarantine()
        self.started_at = time.time()
        self.parts: Parts | None = None  # set by run(), complete or not at all
        self._stop = threading.Event()
        self._stop_signalled = False  # set by signal handlers, which must not take locks
        self._reload_signalled = False
        self._netmap_version, self._netmap_refreshed = -1, 0.0
        self._reload = threading.Event()
        self._notifier = Notifier()
        # Work handed to the event-loop thread by other threads (the API): rule reloads,
        # enable/disable, seccomp calls. Run between two polls, so no stage needs locks.
        self._loop_tasks = LoopCalls()
        self._reconciling = False  # a quarantine check is on the slow-actions worker
        self._holdguard = HoldGuard()

    # ------------------------------------------------------------------ lifecycle

    def run(self) -> int:
        log.info("roxd %s starting (config: %s)", __version__, self.config.source)
        log.info("host features: %s", self.features.summary())
        clock = self.clock
        # the eBPF compile (most of the time to READY) overlaps what follows (issue 22);
        # roxd.main started it before importing this module: then it is kept as it is
        prewarm_sensor(self._sensor_config())
        # a rule set whose fixed kernel entries cannot fit is refused like a broken file
        capacities = map_capacities(self._sensor_config().bpf_dir)
        self.rules.add_validator(lambda rule_set: capacity_problems(rule_set, capacities))
        try:
            with clock.stage("rules"):
                rules = self.rules.load()
        except RuleError as exc:
            discard_prewarmed()
            raise RoxdError(f"rules not loaded: {exc}") from exc
        with clock.stage("alert delivery"):
            delivery = self._make_delivery()
        try:
            try:
                with clock.stage("container runtimes"):
                    attribution = ContainerAttribution.from_host(
                        runtime=self.runtime,
                        others=connect_attribution_runtimes(self.config.containers))
            except CgroupError as exc:
                log.error("%s", exc)
                return 1
            with clock.stage("build"):
                self.parts = self._build(attribution, delivery)
            self._start(self.parts)
            containers = len(attribution.resolver.containers())
            clock.add(*self.parts.sensor.stages)
            sensor = self.parts.sensor
            clock.bpf_object = {"origin": sensor.bpf_origin, "note": sensor.bpf_cache_note}
            clock.ready()
            log.info("%s", ready_line(ReadyFacts(
                tuple(self.parts.sensor.attached), rules,
                kills_in_kernel=self.features.send_signal.available,
                monitor=self.config.rules.monitor, runtime=self.runtime.name,
                containers=containers, api_socket=self.config.daemon.socket,
                startup=clock.summary())))
            log.info("start-up stages: %s", clock.to_json())
            self._notifier.ready(f"watching {containers} containers, {len(rules.rules)} rules")
            self._loop(self.parts)
        finally:
            self._notifier.stopping()
            self._shutdown(delivery)
            discard_prewarmed()  # compiled but never started (start-up failed): detach
        return 0

    def _build(self, attribution: ContainerAttribution, delivery: AlertDelivery) -> Parts:
        responder = Responder(monitor=self.config.rules.monitor, quarantine=self.quarantine,
                              runtime=self.runtime,
                              isolate_fallback=self.config.enforce.isolate_fallback,
                              container_kill=self.config.enforce.container_kill,
                              cgroup2_root=attribution.index.root, cgroups=self.cgroups)
        raw_taps = ([StreamSink(self.lines, kind="alert")]
                    if self.options.print_alerts and self.lines is not None else [])
        # incidents see every alert as raised: folding never hides one from correlation
        incidents = start_incidents(
            self.config.incidents, Path(self.config.daemon.state_dir),
            journald=self.config.alerts.journald.enabled,
            isolate=self.quarantine.isolate if self.quarantine is not None else None,
            monitor=self.config.rules.monitor, cgroup_root=attribution.index.root)
        # NATS, OTLP, syslog and webhooks carry incident changes too
        for feed in delivery.incident_feeds():
            incidents.add_sink(feed)
        # posture regressions go to every sink but not to incidents (docs/posture.md)
        posture_alerts = AlertDispatcher(delivery, list(raw_taps))
        raw_taps.append(incidents)
        alerts = AlertDispatcher(delivery, raw_taps)
        if self.quarantine is not None:  # a table changed from inside: re-applied, alerted
            self.quarantine.on_tamper = TamperAlerts(
                alerts.raise_alert,
                lambda cid: next((c for _, c in attribution.resolver.containers()
                                  if c.id == cid), None))
        pipeline: Pipeline | None = None
        # inbound events (accepts, listeners) have no process of their own: not for the rules
        sensor = Sensor(self._sensor_config(), lambda decoded: (
            inbound.observe(decoded.event)  # type: ignore[arg-type]
            if type(decoded.event) in INBOUND_TYPES  # one set lookup per event
            else pipeline_of().handle(decoded)))

        def pipeline_of() -> Pipeline:
            assert pipeline is not None  # the sensor delivers nothing before start()
            return pipeline

        # one guard for every kill: the kernel tables (no host entries unless host_kills) and
        # the responder's userspace kills (protected processes, host kills)
        netmap = FlowMap(self.config.netmap) if self.config.netmap.enabled else None
        baselines = (BaselineEngine(
            self.config.baselines, Path(self.config.daemon.state_dir),
            peer_of=(lambda addr: peer_name(netmap.classify(addr))) if netmap else None)
            if self.config.baselines.enabled else None)
        policy = KernelPolicy(
            sensor,
            enforce_in_kernel=not self.config.rules.monitor
            and self.features.send_signal.available,
            monitor=self.config.rules.monitor,
            fold_window_ns=int(self.config.sensor.fold_window_s * 1e9),
            containers=attribution.resolver.containers,
            known_cgroups=attribution.index.known_ids,
            host_kills=self.config.enforce.host_kills,
            protected_comms=self.config.enforce.protected_comms,
            protected_exes=self.config.enforce.protected_exes,
            baselines=baselines,
            file_watches=(baseline_file_watches(self.config.baselines.file_trees)
                          if baselines is not None and self.config.baselines.files else None),
            peer_owners=(lambda: {a: peer_name(ep) for a, ep in
                                  netmap.addresses.owners().items()}) if netmap else dict)
        if baselines is not None:  # a lock, unlock or mode change rewrites the allow-lists
            baselines.add_listener(policy.containers_changed)
            engine = baselines

            def audit_breakglass(change: BreakglassChange) -> None:
                container = next((c for _, c in attribution.resolver.containers()
                                  if engine.workload_of(c) == change.workload), None)
                alerts.raise_alert(change.rule, breakglass_event(change, container),
                                   breakglass_actions(change))

            baselines.add_audit(audit_breakglass)
        inbound = InboundObserver(
            attribution.resolver.resolve, netmap, ListenerTable(), baselines, alerts.raise_alert,
            lambda cid: next((c for _, c in attribution.resolver.containers() if c.id == cid),
                             None))
        responder.guard = policy.kill_guard
        slow = SlowActions()
        pipeline = Pipeline(
            enricher=attribution.enricher, rules=lambda: self.rules.current, policy=policy,
            responder=responder, alerts=alerts,
            taps=EventTaps(self.events_topic,
                           self.lines if self.options.print_events else None),
            counters=self.counters, baselines=baselines,
            drift=(DriftDetector(cgroup_root=attribution.index.root)
                   if self.config.baselines.drift else None), netmap=netmap,
            slow=slow)
        seccomp = self._make_seccomp(attribution)
        responder.seccomp = seccomp
        return Parts(attribution, sensor, policy, pipeline, delivery, seccomp, baselines,
                     incidents=incidents, netmap=netmap, slow=slow,
                     posture_alerts=posture_alerts, inbound=inbound)

    def _start(self, parts: Parts) -> None:
        clock = self.clock
        with clock.stage("container scan"):
            parts.attribution.start()
        with clock.stage("quarantine reconcile"):
            self._reconcile_quarantine()
        # execs a dead roxd's hold left stopped (its guardian was killed too), then a guardian
        # for this roxd's own holds should it die (roxd/holdguard.py)
        with clock.stage("exec-hold guard"):
            release_exec_stops()
            self._holdguard.start()
        parts.sensor.start()  # its stages (compile, load, wait, attach) are added at READY
        with clock.stage("network hook"):
            self._attach_network_hook(parts)
        # from here on the policy alone writes the kernel's maps: rules now, then every new
        # rule set and every container change
        with clock.stage("rules to kernel"):
            parts.policy.apply_rules(self.rules.current)
        self.rules.add_listener(parts.policy.apply_rules)
        parts.attribution.resolver.add_change_listener(parts.policy.containers_changed)
        if parts.netmap is not None:
            with clock.stage("netmap"):
                parts.netmap.inbound = parts.sensor.inbound.status.to_dict()
                try:
                    self._refresh_netmap(parts, force=True)
                except Exception:  # the map is visibility: never a reason not to start
                    log.exception("netmap: reading container addresses failed")
        self._install_signal_handlers()
        with clock.stage("posture"):
            parts.posture = self._make_posture(parts)
        with clock.stage("api"):
            parts.api = ApiServer(DaemonPort(self, parts), self.config.daemon.socket,
                                  dashboard=make_dashboard(self.config.dashboard,
                                                           Path(self.config.daemon.state_dir)))
            parts.api.start()
        # [metrics] listen: the same text as /v1/metrics, on TCP for a Prometheus server
        parts.metrics = start_metrics_listener(self.config.metrics.listen,
                                               parts.api.metrics_text)

    def _attach_network_hook(self, parts: Parts) -> None:
        """Load and link the cgroup connect hook (network baselines refused in the kernel),
        or say why not: features.cgroup_connect and status policy.network_enforcement."""
        cfg = self.config
        if self.config.rules.monitor:
            probe = Probe(False, "not loaded: roxd runs in monitor mode")
        elif not (cfg.baselines.enabled and cfg.baselines.network and parts.netmap):
            probe = Probe(False, "not loaded: network baselines are off")
        else:
            hook, probe = NetworkHook.attach(parts.sensor.bcc, parts.attribution.index.root)
            if hook is not None:
                parts.policy.set_network_hook(hook, probe)
        if probe.available:
            log.info("network baselines in enforce mode are refused in the kernel: %s",
                     probe.detail)
        else:
            log.warning("network baselines in enforce mode are alerted only: %s", probe.detail)
            parts.policy.set_network_hook(None, probe)
        self.features = dataclasses.replace(
            self.features, cgroup_connect=features.Feature(probe.available, probe.detail))

    def stop(self) -> None:
        self._stop.set()

    def request_reload(self) -> None:
        self._reload.set()

    def _shutdown(self, delivery: AlertDelivery) -> None:
        parts = self.parts
        if parts is not None:
            parts.metrics.close()
        if parts is not None and parts.api is not None:
            parts.api.close()
        if parts is not None:  # connects are no longer refused once roxd stops watching
            parts.policy.close_network_hook()
        if parts is not None and parts.sensor.started:
            # detach, then drain, then count: the final counters match what was delivered
            parts.sensor.detach()
            parts.sensor.drain()
            self._flush_output()
            stats = parts.sensor.stats()
            if self.options.print_events and self.lines is not None:
                self.lines.write(self.stats_record(stats, final=True))
                self._flush_output()
            parts.sensor.close()
            log.info("roxd stopped; kernel counters: %s", _fmt_counters(stats.counters))
        self._holdguard.close()  # programs detached: it releases any hold now and exits
        if parts is not None and parts.slow is not None:  # their alerts, before delivery closes
            parts.slow.close(10.0)
        if parts is not None and parts.seccomp is not None:
            parts.seccomp.close()
        if parts is not None and parts.baselines is not None:
            parts.baselines.save_if_changed()
        if parts is not None and parts.posture is not None:
            parts.posture.close()
        if parts is not None and parts.incidents is not None:
            parts.incidents.close(5.0)  # after the last alert: the store has open incidents
        delivery.close(5.0)  # after the last alert: flushes folds and queues to disk
        if parts is not None:
            parts.attribution.stop()
        self.runtime.close()

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        # Handlers only set plain flags: a handler that takes a lock (threading.Event.set)
        # deadlocks when a second signal arrives while the first handler holds it (measured:
        # two SIGTERMs in a row wedged the loop). The loop looks at the flags every poll.
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGHUP, self._on_reload_signal)

    def _on_stop_signal(self, _signum: int, _frame: object) -> None:
        self._stop_signalled = True

    def _on_reload_signal(self, _signum: int, _frame: object) -> None:
        self._reload_signalled = True

    @property
    def stopping(self) -> bool:
        return self._stop.is_set() or self._stop_signalled

    # ------------------------------------------------------------------ loop

    def _housekeeping(self, parts: Parts) -> list[Housekeeping]:
        now = time.monotonic()
        jobs = [
            # container changes reach the kernel at the next event; this is the safety net
            # for a quiet host (a container started, no event yet)
            Housekeeping("policy refresh", 1.0, parts.policy.refresh),
            # the exec hold is a lease: a stalled loop stops holding new cgroups' execs
            Housekeeping("hold lease", 1.0, parts.policy.renew_hold),
            # running containers are pinned in the resolver; one whose runtime never said it
            # is gone (CRI-O, a lost event) leaves when its cgroup directory is gone
            Housekeeping("container sweep", 10.0, parts.attribution.resolver.sweep_vanished),
            Housekeeping("seccomp poll", self.config.seccomp.poll_interval_s,
                         lambda: self._poll_seccomp(parts)),
            # Docker and nft calls (seconds with dockerd hung): on the slow-actions worker
            Housekeeping("quarantine reconcile", self.config.enforce.reconcile_interval_s,
                         lambda: self._reconcile_off_loop(parts)),
            Housekeeping("stats", self.config.daemon.stats_interval_s,
                         lambda: self._log_stats(parts)),
            Housekeeping("event counts", 60.0, lambda: self.counters.forget_containers(
                {c.id for _, c in parts.attribution.resolver.containers()})),
        ]
        if self.config.rules.watch_interval_s > 0:  # rule files changed on disk: reload
            watch = RuleFilesWatch(self.rules.paths)
            watch.mark()

            def reload_if_changed() -> None:
                if watch.changed():
                    log.info("rule files changed on disk: reloading")
                    self.reload_rules()

            jobs.append(Housekeeping("rule files watch", self.config.rules.watch_interval_s,
                                     reload_if_changed))
        if parts.baselines is not None:  # lock baselines whose window ended, persist changes
            jobs.append(Housekeeping("baselines", 1.0, parts.baselines.tick))
            # UDP sends the cgroup connect hook refused: no tracepoint saw them; as events
            jobs.append(Housekeeping("refused sends", 1.0,
                                     lambda: self._report_refused_sends(parts)))
        if parts.netmap is not None:  # who owns which address: at once when containers change
            jobs.append(Housekeeping("netmap addresses", 1.0,
                                     lambda: self._refresh_netmap(parts)))
        for job in jobs:
            job.due = now + job.every_s
        return jobs

    def _report_refused_sends(self, parts: Parts) -> None:
        offset = time.time_ns() - time.monotonic_ns()  # CLOCK_MONOTONIC -> wall, as sensor
        for decoded in parts.policy.refused_sends(offset):
            assert isinstance(decoded.event, ConnectEvent)
            try:
                parts.pipeline.handle(decoded)
            except Exception:  # one bad event must not stop housekeeping
                log.exception("reporting a refused UDP send failed")
            parts.policy.forget_refusal(decoded.event.tid)

    def _refresh_netmap(self, parts: Parts, force: bool = False) -> None:
        """Re-read container and host addresses for the communication map when the containers
        or their names changed, and every netmap.refresh_s (an address can change)."""
        assert parts.netmap is not None
        known: dict[str, Container] = {}
        cgroups: dict[str, list[str]] = {}
        for _cgroup_id, container in parts.attribution.resolver.containers():
            if container.id not in known or (container.name and not known[container.id].name):
                known[container.id] = container
            cgroups.setdefault(container.id, []).append(container.cgroup_path)
        signature = hash(frozenset((c.id, c.name) for c in known.values()))
        now = time.monotonic()
        since = now - self._netmap_refreshed
        unknown = parts.netmap.unknown_private_seen and since >= 2.0  # at most every 2 s
        if not force and not unknown and signature == self._netmap_version and (
                since < self.config.netmap.refresh_s):
            return
        parts.netmap.unknown_private_seen = False
        self._netmap_version, self._netmap_refreshed = signature, now
        root = parts.attribution.index.root
        live = []
        for cid, container in known.items():
            pid = next((p for p in (first_pid(f"{root}/{path.strip('/')}")
                                    for path in cgroups[cid]) if p is not None), None)
            live.append((container, pid))
        before = parts.netmap.addresses.owners()
        parts.netmap.refresh(live, container_addresses)
        if parts.netmap.addresses.owners() != before:  # learned peers moved: new allow-lists
            parts.policy.containers_changed()
        self._sync_listeners(parts, live, force)

    @staticmethod
    def _sync_listeners(parts: Parts, live: list[tuple[Container, int | None]],
                        force: bool) -> None:
        """Listening sockets: forget gone containers; read /proc for those that predate roxd
        (at start) and, where the kernel programs are not attached, at every refresh."""
        if parts.inbound is None:
            return
        table = parts.inbound.listeners
        table.forget({c.id for c, _ in live})
        if not force and parts.sensor.inbound.status.state == "kernel":
            return
        now = time.time_ns()
        host_netns = _netns(1)
        for container, pid in live:
            # a host-network container's sockets are the host's: not its own to list
            if pid is not None and _netns(pid) not in (None, host_netns):
                table.seed(container.id, from_proc(pid), now)

    def _loop(self, parts: Parts) -> None:
        poll_ms = self.config.sensor.poll_timeout_ms
        jobs = self._housekeeping(parts)
        while not self.stopping:
            parts.sensor.poll(poll_ms)
            if parts.slow is not None:  # alerts of isolates etc. that finished meanwhile
                parts.slow.finish_pending()
            self._run_loop_tasks()
            self._flush_output()
            self._notifier.watchdog()
            if self._reload.is_set() or self._reload_signalled:
                self._reload.clear()
                self._reload_signalled = False
                self.reload_rules()
            now = time.monotonic()
            for job in jobs:
                if now >= job.due:
                    job.run()
                    job.due = now + job.every_s
        parts.sensor.drain()
        self._flush_output()

    def call_in_loop(self, fn: Callable[[], T], timeout: float = 30.0) -> T:
        """Run fn on the event-loop thread and return its result (or raise its error);
        LoopCalls.call says what a timeout means."""
        if threading.current_thread() is threading.main_thread() and not self._stop.is_set():
            return fn()
        return self._loop_tasks.call(fn, timeout)

    def _run_loop_tasks(self) -> None:
        self._loop_tasks.run_pending()

    def _flush_output(self) -> None:
        if self.lines is not None:
            self.lines.flush()
            if self.lines.broken:
                self.stop()

    # ------------------------------------------------------------------ rules

    def reload_rules(self) -> bool:
        """Swap the whole rule set atomically; a bad file keeps the previous set running.
        The kernel policy hears of the new set (ActiveRules' listener)."""
        try:
            new_rules = self.rules.reload()
        except RuleError as exc:
            log.error("rule reload failed, keeping the previous rule set: %s", exc)
            self._notifier.status(f"rule reload failed: {exc}")
            return False
        log.info("rules reloaded: %d rules (%s)", len(new_rules.rules), new_rules.version[:12])
        self._notifier.status(f"rules reloaded: {len(new_rules.rules)} rules")
        return True

    # ------------------------------------------------------------------ parts

    def _sensor_config(self) -> SensorConfig:
        return sensor_config(self.config)

    def _make_delivery(self) -> AlertDelivery:
        # noise control, then every consumer of alerts: the log line, the API's live stream
        # and ring, journald, syslog forwarding, the SQLite store, webhooks
        return AlertDelivery.from_settings(self.config.alerts, Path(self.config.daemon.state_dir),
                                           log_sink=LogSink(),
                                           taps={"api": TopicSink(self.alerts_topic)})

    def _make_quarantine(self) -> Quarantine | None:
        # no runtime needed: namespaces are found from the containers' cgroups
        if self.cgroups is None and not self.runtime.configured:
            log.warning("no cgroup2 hierarchy and no container runtime: isolate actions "
                        "cannot be enforced")
            return None
        if not self.features.nftables.available:
            log.warning("nftables unavailable (%s): isolate actions cannot be enforced",
                        self.features.nftables.detail)
            return None
        return Quarantine.for_runtime(Path(self.config.daemon.state_dir), self.runtime,
                                      allow=self.config.enforce.isolate_allow,
                                      cgroups=self.cgroups)

    def _reconcile_off_loop(self, parts: Parts) -> None:
        if self.quarantine is None or self._reconciling:
            return  # the last check is still running (dockerd slow): never pile them up
        self._reconciling = True

        def done(_: object) -> None:
            self._reconciling = False

        if parts.slow is None or not parts.slow.submit(self._reconcile_quarantine, done):
            self._reconcile_quarantine()
            self._reconciling = False

    def _reconcile_quarantine(self) -> None:
        if self.quarantine is None:
            return
        try:
            self.quarantine.reconcile()
        except Exception:  # a runtime hiccup must not stop the loop; next round retries
            log.exception("quarantine reconciliation failed")

    def _make_seccomp(self, attribution: ContainerAttribution) -> SeccompService | None:
        if not self.runtime.configured:
            log.warning("no container runtime configured: seccomp learning is unavailable")
            return None
        try:
            from roxd.seccomp.service import SeccompService

            self.runtime.ping()  # the engine down at start: unavailable, and say so
            return SeccompService(Path(self.config.daemon.state_dir), self.runtime,
                                  honor_label=self.config.seccomp.honor_label,
                                  index=attribution.index)
        except Exception as exc:  # Docker down at start, libseccomp missing, ...: say so
            log.warning("seccomp learning/enforcement unavailable: %s", exc)
            return None

    def engine_inventory(self) -> EngineInventory:
        """The runtime's read-only inventory port (NoRuntime's raises with its reason)."""
        if isinstance(self.runtime, EngineInventory):
            return self.runtime
        return NoRuntime(f"the runtime {self.runtime.label} offers no inventory")

    def _make_posture(self, parts: Parts) -> PostureService | None:
        if not self.config.posture.enabled:
            log.info("posture scans are off (posture.enabled = false)")
            return None
        service = PostureService(self.engine_inventory(), self.config.posture.interval_s)
        service.listening = self._posture_listening(parts)  # CIS 5.9, from observation
        # a container started or stopped: rescan soon (the listener only takes note)
        parts.attribution.resolver.add_change_listener(service.containers_changed)
        if parts.posture_alerts is not None:  # PASS -> WARN: an alert, raised on the loop
            resolver = parts.attribution.resolver
            raise_regressions = PostureAlerts(parts.posture_alerts.raise_alert, lambda cid: next(
                (c for _, c in resolver.containers() if c.id == cid), None))
            service.on_regressions = lambda found: self.call_in_loop(
                lambda: raise_regressions(found))
        service.start()  # the first scan runs on its own thread, never on the loop
        return service

    def _posture_listening(self, parts: Parts) -> ListeningSource:
        """The listener table for the posture scan, or why there is none."""
        if parts.inbound is None:
            why = ("[netmap] enabled = false" if not self.config.netmap.enabled
                   else "[netmap] inbound = false")
            return ListeningSource(None, f"listening sockets are not observed: inbound "
                                         f"tracing is off ({why})")
        status = parts.sensor.inbound.status  # known by now: the sensor attached first
        how = ("kernel: listen() and UDP bind() as they happen" if status.state == "kernel"
               else f"/proc every netmap refresh, TCP only ({status.reason or status.state})")
        return ListeningSource(parts.inbound.listeners.of, how)

    def _poll_seccomp(self, parts: Parts) -> None:
        if parts.seccomp is None:
            return
        try:
            events = parts.seccomp.poll()
        except Exception:
            log.exception("seccomp poll failed")
            return
        resolver = parts.attribution.resolver
        for ev in events:  # the seccomp sensor's violations, through the one pipeline
            cgroup_id = next(iter(resolver.cgroup_ids_of(ev.container_id)), 0)
            parts.pipeline.handle(Decoded(SeccompEvent(
                time_ns=time.time_ns(), pid=ev.pid, uid=0, cgroup_id=cgroup_id, comm="",
                syscall=ev.syscall, verdict=ev.kind, count=ev.count)))

    # ------------------------------------------------------------------ status

    def _log_stats(self, parts: Parts) -> None:
        stats = parts.sensor.stats()
        if self.options.print_events and self.lines is not None:
            self.lines.write(self.stats_record(stats))
        dropped = stats.dropped
        level = logging.WARNING if dropped else logging.INFO
        log.log(level, "events %d alerts %d; kernel: %s", self.counters.events,
                self.counters.alerts, _fmt_counters(stats.counters))
        self._notifier.status(f"events {self.counters.events}, alerts {self.counters.alerts}, "
                              f"dropped {dropped}")
        parts.sensor.resync_clock()

    def stats_record(self, stats: SensorStats, final: bool = False) -> dict[str, Any]:
        assert self.parts is not None
        return {
            "type": "stats",
            "final": final,
            "time": rfc3339(time.time_ns()),
            "events": self.counters.events,
            "alerts": self.counters.alerts,
            "quiet_marks": self.counters.quiet_marks,
            "kernel": dict(stats.counters),
            "drops_by_cgroup": {str(k): v for k, v in stats.drops_by_cgroup.items()},
            "alert_sinks": self.parts.delivery.stats(),
            "policy": dict(self.parts.policy.snapshot()),
            "decode_errors": stats.decode_errors,
            "handler_errors": stats.callback_errors,
        }


class DaemonPort:
    """The daemon as the control API sees it (roxd.api.port.DaemonPort): snapshots and
    commands, nothing else of the daemon's insides."""

    def __init__(self, daemon: Daemon, parts: Parts) -> None:
        self._daemon = daemon
        self._parts = parts
        config = daemon.config
        self.facts = DaemonFacts(started_at=daemon.started_at, monitor=config.rules.monitor,
                                 config_source=str(config.source),
                                 features=daemon.features.to_dict(), api=config.api,
                                 startup=daemon.clock.to_dict)
        self.events_topic = daemon.events_topic
        self.alerts_topic = daemon.alerts_topic
        # risk per container: incidents, and configuration facts where the runtime inspects
        self._risk = ContainerRisk(parts.incidents, getattr(daemon.runtime, "inspect_raw", None),
                                   listening_of=(parts.inbound.listeners.of
                                                 if parts.inbound is not None else None))
        # ... plus image facts (cached per image) and per workload (incidents/risk_workload.py)
        self._risk_view = make_risk_view(
            self._risk, daemon.runtime, lambda: [c for _, c in self.containers()],
            daemon.config.baselines.key_label,
            posture_of=parts.posture.regressed_checks if parts.posture is not None else None)

    def activity(self) -> Activity:
        c = self._daemon.counters
        return Activity(c.events, c.alerts, c.quiet_marks,
                        self._parts.attribution.resolver.unattributed)

    def container_events(self) -> Mapping[str, int]:
        # a copy: dict() of a str-keyed dict is one C call under the GIL, safe against the
        # loop thread's increments
        return dict(self._daemon.counters.by_container)

    def stopping(self) -> bool:
        return self._daemon.stopping

    def programs(self) -> Programs:
        sensor = self._parts.sensor
        return Programs(tuple(sensor.attached), sensor.load_seconds)

    def kernel_stats(self) -> KernelStats:
        raw = self._daemon.call_in_loop(self._parts.sensor.stats, timeout=5.0)
        return KernelStats(dict(raw.counters), dict(raw.drops_by_cgroup), raw.decode_errors,
                           raw.callback_errors)

    def rules(self) -> RuleSet | None:
        with contextlib.suppress(RuntimeError):
            return self._daemon.rules.current
        return None

    def rule_paths(self) -> Sequence[Path]:
        return self._daemon.rules.paths

    def rule_overrides(self) -> Mapping[str, bool]:
        return dict(self._daemon.rules.overrides)

    def containers(self) -> list[tuple[int, Container]]:
        return self._parts.attribution.resolver.containers()

    def quarantine(self) -> Quarantine | None:
        return self._daemon.quarantine

    def seccomp(self) -> SeccompService | None:
        return self._parts.seccomp

    def alert_store(self) -> Any:
        return self._parts.delivery.store

    def alert_sink_stats(self) -> Mapping[str, int]:
        return self._parts.delivery.stats()

    def alert_sink_problems(self) -> Sequence[str]:
        incidents = self._parts.incidents  # the incident store fails like an alert sink
        return [*self._parts.delivery.problems(),
                *(incidents.problems() if incidents is not None else [])]
    def rule_counts(self, since_ns: int) -> Sequence[Mapping[str, Any]]:
        return self._parts.delivery.noise.rule_counts(since_ns)

    def policy(self) -> Mapping[str, object]:
        return self._parts.policy.snapshot()

    def baselines(self) -> BaselineEngine | None:
        return self._parts.baselines

    def posture(self, refresh: bool = False) -> Report | None:
        service = self._parts.posture
        return service.report(refresh) if service is not None else None

    def inventory_containers(self, all_states: bool = False) -> Sequence[ContainerRecord]:
        inbound = self._parts.inbound
        if inbound is None:
            return container_inventory(self._daemon.engine_inventory(), all_states)
        status = self._parts.sensor.inbound.status
        observed = ("kernel: listen() and UDP bind() as they happen" if status.state == "kernel"
                    else f"/proc every netmap refresh ({status.reason or status.state})")
        return container_inventory(self._daemon.engine_inventory(), all_states,
                                   inbound.listeners.of, observed)

    def inventory_images(self) -> Sequence[ImageRecord]:
        return image_inventory(self._daemon.engine_inventory())

    def incidents(self) -> IncidentTracker | None:
        return self._parts.incidents

    def netmap(self) -> FlowMap | None:
        return self._parts.netmap

    def risk(self, container_id: str) -> Mapping[str, Any]:
        return self._risk_view.of(container_id)

    def workload_risk(self, key: str | None = None) -> Any:
        return self._risk_view.workloads() if key is None else self._risk_view.workload(key)

    def call_in_loop(self, fn: Callable[[], T], timeout: float = 30.0) -> T:
        return self._daemon.call_in_loop(fn, timeout)

    def reload_rules(self) -> bool:
        return self._daemon.reload_rules()

    def set_rules_enabled(self, rule_ids: Sequence[str], enabled: bool) -> RuleSet:
        """On the loop thread; kept across reloads until roxd restarts."""
        return self._daemon.rules.set_enabled(rule_ids, enabled)


def _fmt_counters(counters: Mapping[str, int]) -> str:
    return " ".join(f"{k}={v}" for k, v in counters.items() if v)


def _netns(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None
