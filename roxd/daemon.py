"""roxd's lifecycle: wire the stages together and run the event loop.

    sensor ──Decoded──► containers (enrich) ──EnrichedEvent──► rules ──RuleMatch──►
        response (actions) ──ActionResult──► alerts

Each stage knows only the record types of model.py; this module is the one place that knows
every stage. One thread owns the sensor and runs the loop; the Docker event stream has its
own thread inside the containers stage.
"""

from __future__ import annotations

import errno
import json
import logging
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

from roxd import __version__, features
from roxd.alerts.delivery import AlertDelivery
from roxd.alerts.dispatch import AlertDispatcher, LogSink, StreamSink
from roxd.api.server import ApiServer
from roxd.config import Config
from roxd.containers.attribution import ContainerAttribution
from roxd.enforce.kill import kill_pid
from roxd.enforce.quarantine import Quarantine
from roxd.enforce.response import Responder
from roxd.errors import CgroupError, RoxdError, RuleError
from roxd.model import (
    ActionKind,
    ActionResult,
    ConnectEvent,
    Container,
    ExecEvent,
    ExitEvent,
    Outcome,
    Phase,
    RuleRef,
    Severity,
    SyscallEvent,
    rfc3339,
)
from roxd.pubsub import Topic
from roxd.rules.loader import load_rule_set
from roxd.rules.ruleset import RuleSet
from roxd.runtime import connect_runtime
from roxd.sensor.kill_table import build_connect_kill_table, build_exec_kill_table
from roxd.sensor.program import Sensor, SensorConfig, SensorStats
from roxd.sensor.records import Decoded
from roxd.systemd_notify import Notifier

log = logging.getLogger(__name__)

# Alerts the seccomp stage raises without a TOML rule: a profile violation is always news.
SECCOMP_KILLED = RuleRef(
    id="seccomp.enforce-kill", name="Process killed for a syscall outside its learned profile",
    phase=Phase.PRIVILEGE_ESCALATION, severity=Severity.CRITICAL, mitre=("T1611", "T1068"),
    description="A container in seccomp enforce mode made a system call its image never made "
                "while learning; the kernel killed the process at syscall entry.")
SECCOMP_DENIED = RuleRef(
    id="seccomp.profile-denied", name="Syscall denied by the container's seccomp profile",
    phase=Phase.PRIVILEGE_ESCALATION, severity=Severity.WARNING, mitre=("T1611",),
    description="A syscall returned EPERM from the container's applied seccomp profile: an "
                "attack attempt, or a profile too tight for the workload.")


@dataclass(frozen=True)
class RunOptions:
    print_events: bool = False
    print_alerts: bool = False
    rule_paths: tuple[Path, ...] = ()  # overrides the config when given
    events_out: IO[str] = field(default=sys.stdout)


@dataclass
class Counters:
    events: int = 0
    alerts: int = 0
    quiet_marks: int = 0
    started_monotonic: float = field(default_factory=time.monotonic)


class Daemon:
    def __init__(self, config: Config, options: RunOptions) -> None:
        self.config = config
        self.options = options
        self.counters = Counters()
        self.rules: RuleSet | None = None
        self.rule_paths = list(options.rule_paths) or config.rule_paths()
        self.container_runtime = connect_runtime(config.containers)  # the one client
        self.features = features.probe(runtime=self.container_runtime)
        self.attribution: ContainerAttribution | None = None
        self.sensor: Sensor | None = None
        self.runtime = self.container_runtime if self.container_runtime.configured else None
        self.quarantine = self._make_quarantine()
        self.responder = Responder(monitor=config.rules.monitor, quarantine=self.quarantine,
                                   runtime=self.runtime,
                                   isolate_fallback=config.enforce.isolate_fallback,
                                   container_kill=config.enforce.container_kill)
        sinks: list[Any] = []
        if options.print_alerts:  # every alert, unfolded: a machine reads this stream
            sinks.append(StreamSink(options.events_out, kind="alert"))
        # the log line, journald, syslog forwarding, the SQLite store and webhooks, behind
        # noise control
        self.delivery = AlertDelivery.from_settings(config.alerts,
                                                    Path(config.daemon.state_dir),
                                                    log_sink=LogSink())
        sinks.append(self.delivery)
        self.alerts = AlertDispatcher(sinks)
        self._stop = threading.Event()
        self._stop_signalled = False  # set by signal handlers, which must not take locks
        self._reload_signalled = False
        self._reload = threading.Event()
        self._notifier = Notifier()
        self._fold_window_ns = int(config.sensor.fold_window_s * 1e9)
        self._kill_slots: dict[int, str] = {}
        self._connect_kill_slots: dict[int, str] = {}
        self._containers_version = -1
        # Work handed to the event-loop thread by other threads (the API): rule reloads,
        # enable/disable, actions. Run between two polls, so no stage needs locks.
        self._loop_tasks: queue.Queue[tuple[Callable[[], Any], Future[Any]]] = queue.Queue()
        self.events_topic = Topic("events")
        self.alerts_topic = Topic("alerts")
        self.started_at = time.time()
        self.api: ApiServer | None = None
        self.seccomp: Any = None  # roxd.seccomp.service.SeccompService once started
        self.rule_overrides: dict[str, bool] = {}  # rule id -> enabled, set at runtime

    # ------------------------------------------------------------------ lifecycle

    def run(self) -> int:
        log.info("roxd %s starting (config: %s)", __version__, self.config.source)
        log.info("host features: %s", self.features.summary())
        self.rules = self._load_rules_or_fail()
        try:
            self.attribution = ContainerAttribution.from_host(runtime=self.container_runtime)
        except CgroupError as exc:
            log.error("%s", exc)
            return 1
        self.attribution.start()
        self.responder.cgroup2_root = self.attribution.index.root
        self.seccomp = self._make_seccomp()
        self.responder.seccomp = self.seccomp
        self._reconcile_quarantine()
        sensor_cfg = SensorConfig(
            cache_dir=Path(self.config.daemon.cache_dir),
            ringbuf_pages=self.config.sensor.ringbuf_pages,
            max_args=self.config.sensor.max_args,
            **({"bpf_dir": Path(self.config.sensor.bpf_dir)} if self.config.sensor.bpf_dir
               else {}),
        )
        self.sensor = Sensor(sensor_cfg, self._on_decoded)
        try:
            self.sensor.start()
            self._push_kernel_policy(force=True)
            self._install_signal_handlers()
            self.api = ApiServer(self, self.config.daemon.socket)
            self.api.start()
            containers = len(self.attribution.resolver.containers())
            log.info(
                "roxd is watching: %d eBPF programs attached, %d rules (%s), %d containers",
                len(self.sensor.attached), len(self.rules.rules), self.rules.version[:12],
                containers,
            )
            self._notifier.ready(f"watching {containers} containers, "
                                 f"{len(self.rules.rules)} rules")
            self._loop()
        finally:
            self._notifier.stopping()
            self._shutdown()
        return 0

    def stop(self) -> None:
        self._stop.set()

    def request_reload(self) -> None:
        self._reload.set()

    def _shutdown(self) -> None:
        if self.api is not None:
            self.api.close()
        if self.sensor is not None and self.sensor.started:
            # detach, then drain, then count: the final counters match what was delivered
            self.sensor.detach()
            self.sensor.drain()
            self._flush_output()
            stats = self.sensor.stats()
            if self.options.print_events:
                self._write_line(self.stats_record(stats, final=True))
                self._flush_output()
            self.sensor.close()
            log.info("roxd stopped; kernel counters: %s", _fmt_counters(stats.counters))
        if self.seccomp is not None:
            self.seccomp.close()
        self.delivery.close(5.0)  # after the last alert: flushes folds and queues to disk
        if self.attribution is not None:
            self.attribution.stop()
        if self.runtime is not None:
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

    # ------------------------------------------------------------------ loop

    def _loop(self) -> None:
        assert self.sensor is not None
        poll_ms = self.config.sensor.poll_timeout_ms
        stats_every = self.config.daemon.stats_interval_s
        next_stats = time.monotonic() + stats_every
        next_policy = time.monotonic() + 1.0
        next_reconcile = time.monotonic() + self.config.enforce.reconcile_interval_s
        next_seccomp = time.monotonic() + self.config.seccomp.poll_interval_s
        while not self._stop.is_set() and not self._stop_signalled:
            self.sensor.poll(poll_ms)
            self._run_loop_tasks()
            self._flush_output()
            self._notifier.watchdog()
            if self._reload.is_set() or self._reload_signalled:
                self._reload.clear()
                self._reload_signalled = False
                self.reload_rules()
            now = time.monotonic()
            if now >= next_policy:
                # container set changes (start/stop) re-target container-scoped kill entries
                self._push_kernel_policy()
                next_policy = now + 1.0
            if now >= next_seccomp:
                self._poll_seccomp()
                next_seccomp = now + self.config.seccomp.poll_interval_s
            if now >= next_reconcile:
                self._reconcile_quarantine()
                next_reconcile = now + self.config.enforce.reconcile_interval_s
            if now >= next_stats:
                self._log_stats()
                self.sensor.resync_clock()
                next_stats = now + stats_every
        self.sensor.drain()
        self._flush_output()

    def call_in_loop(self, fn: Callable[[], Any], timeout: float = 30.0) -> Any:
        """Run fn on the event-loop thread and return its result (or raise its error)."""
        if threading.current_thread() is threading.main_thread() and not self._stop.is_set():
            return fn()
        future: Future[Any] = Future()
        self._loop_tasks.put((fn, future))
        return future.result(timeout)

    def _run_loop_tasks(self) -> None:
        while True:
            try:
                fn, future = self._loop_tasks.get_nowait()
            except queue.Empty:
                return
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed back to the caller's thread
                future.set_exception(exc)

    def _flush_output(self) -> None:
        if self.options.print_events or self.options.print_alerts:
            try:
                self.options.events_out.flush()
            except BrokenPipeError:
                self.stop()

    # ------------------------------------------------------------------ events

    def _on_decoded(self, decoded: Decoded) -> None:
        assert self.attribution is not None and self.rules is not None
        enriched = self.attribution.enricher.enrich(decoded.event)
        self.counters.events += 1
        if self.attribution.resolver.version != self._containers_version:
            # a container appeared or went: its kill entries must be in the kernel now, not
            # at the next housekeeping tick
            self._push_kernel_policy()
        held_kill: str | None = None
        if decoded.held and isinstance(decoded.event, ExecEvent):
            held_kill = self._release_held(decoded.event, enriched.container)
        if self.options.print_events or self.events_topic.active:
            record = enriched.to_dict()
            if self.options.print_events:
                self._write_line(record)
            self.events_topic.publish(record)
        if isinstance(decoded.event, ExitEvent):
            return
        matches = self.rules.match(enriched)
        if not matches:
            if decoded.fold_key is not None and self._fold_window_ns > 0 and self.sensor:
                self.sensor.mark_quiet(decoded, self._fold_window_ns)
                self.counters.quiet_marks += 1
            return
        slots = (self._connect_kill_slots if isinstance(decoded.event, ConnectEvent)
                 else self._kill_slots)
        killed_by = slots.get(decoded.kill_slot) if decoded.kill_slot else held_kill
        for match in matches:
            results = self.responder.respond(match, enriched,
                                             killed_in_kernel=killed_by == match.rule.id,
                                             held=decoded.held)
            alert = self.alerts.raise_alert(match.rule, enriched, results)
            if alert is not None:
                self.counters.alerts += 1
                if self.alerts_topic.active:
                    self.alerts_topic.publish(alert.to_dict())

    def _write_line(self, obj: dict[str, Any]) -> None:
        try:
            self.options.events_out.write(json.dumps(obj, separators=(",", ":")) + "\n")
        except BrokenPipeError:
            self.stop()

    # ------------------------------------------------------------------ rules

    def _load_rules_or_fail(self) -> RuleSet:
        try:
            rules = load_rule_set(self.rule_paths)
        except RuleError as exc:
            raise RoxdError(f"rules not loaded: {exc}") from exc
        log.info("loaded %d rules from %s", len(rules.rules),
                 ", ".join(str(p) for p in self.rule_paths))
        return rules

    def reload_rules(self) -> bool:
        """Swap the whole rule set atomically; a bad file keeps the previous set running."""
        try:
            new_rules = load_rule_set(self.rule_paths)
        except RuleError as exc:
            log.error("rule reload failed, keeping the previous rule set: %s", exc)
            self._notifier.status(f"rule reload failed: {exc}")
            return False
        new_rules = self._with_overrides(new_rules)  # runtime enable/disable survive reloads
        self.rules = new_rules
        if self.sensor is not None:
            self.sensor.clear_folds()  # old "no rule cares" verdicts may no longer hold
            self._push_kernel_policy(force=True)
        log.info("rules reloaded: %d rules (%s)", len(new_rules.rules), new_rules.version[:12])
        self._notifier.status(f"rules reloaded: {len(new_rules.rules)} rules")
        return True

    def set_rule_enabled(self, rule_ids: Iterable[str], enabled: bool) -> RuleSet:
        """Enable or disable rules at runtime (the API, on the loop thread); kept across
        reloads until roxd restarts."""
        assert self.rules is not None
        for rule_id in rule_ids:
            self.rule_overrides[rule_id] = enabled
        self.rules = self._with_overrides(self.rules)
        if self.sensor is not None:
            self.sensor.clear_folds()
            self._push_kernel_policy(force=True)
        return self.rules

    def _with_overrides(self, rules: RuleSet) -> RuleSet:
        if not self.rule_overrides:
            return rules
        return RuleSet([replace(r, enabled=self.rule_overrides.get(r.id, r.enabled))
                        if self.rule_overrides.get(r.id, r.enabled) != r.enabled else r
                        for r in rules.rules], rules.version, rules.files)

    def _release_held(self, event: ExecEvent, container: Container | None) -> str | None:
        """An exec the kernel stopped because its cgroup was new to roxd: now that the cgroup
        is classified (and its kill entries pushed), apply the exec kill rules to it as the
        kernel would have, then kill it or let it run. Returns the rule id when killed."""
        assert self.sensor is not None and self.rules is not None
        self.sensor.add_known_cgroup(event.cgroup_id)
        path = event.filename
        name = path.rpartition("/")[2]
        for spec in self.rules.exec_kill_specs():
            if (path in spec.exe_paths or name in spec.exe_basenames) and \
                    spec.scope.matches_container(container):
                outcome = kill_pid(event.pid)
                if outcome.killed:
                    return spec.rule_id
                log.warning("held exec of %s (pid %d) matched %s but could not be killed: %s",
                            path, event.pid, spec.rule_id, outcome.reason)
                return None
        outcome = kill_pid(event.pid, sig=signal.SIGCONT)
        if not outcome.killed and "exited" not in outcome.reason:
            log.warning("could not continue held pid %d: %s", event.pid, outcome.reason)
        return None

    def _push_kernel_policy(self, force: bool = False) -> None:
        """Keep the kernel's exec-kill and container maps in step with rules and containers."""
        assert self.sensor is not None and self.attribution is not None and self.rules is not None
        if force:  # the rules changed (start, reload, enable/disable): what the kernel lets by
            self.sensor.set_file_watches(self.rules.file_watch_set())
            self.sensor.set_syscall_watches(self.rules.syscall_watch_set())
        version = self.attribution.resolver.version
        if not force and version == self._containers_version:
            return
        self._containers_version = version
        containers = self.attribution.resolver.containers()
        self.sensor.set_container_cgroups(cg for cg, _ in containers)
        if self.config.rules.monitor or not self.features.send_signal.available:
            self.sensor.set_hold_unknown(False)
            self.sensor.set_exec_kills({})
            self.sensor.set_connect_kills({}, {})
            self._kill_slots, self._connect_kill_slots = {}, {}
            return
        specs = self.rules.exec_kill_specs()
        table = build_exec_kill_table(specs, containers)
        self.sensor.set_exec_kills(table.entries)
        self._kill_slots = table.slots
        # Rules that apply to some containers but not to the host cannot be decided for a
        # cgroup roxd has not classified yet: hold such execs (see process.bpf.c).
        hold = any(not (s.scope.matches_container(None) and s.scope.matches_any_container())
                   for s in specs)
        if hold:
            known = set(self.attribution.index.known_ids()) | {cg for cg, _ in containers}
            self.sensor.set_known_cgroups(known)
        self.sensor.set_hold_unknown(hold)
        ctable = build_connect_kill_table(self.rules.connect_kill_specs(), containers)
        self.sensor.set_connect_kills(ctable.by_port, ctable.any_port)
        self._connect_kill_slots = ctable.slots

    # ------------------------------------------------------------------ enforcement

    def _make_quarantine(self) -> Quarantine | None:
        if self.runtime is None:
            log.warning("no container runtime configured: isolate actions cannot be enforced")
            return None
        if not self.features.nftables.available:
            log.warning("nftables unavailable (%s): isolate actions cannot be enforced",
                        self.features.nftables.detail)
            return None
        return Quarantine(Path(self.config.daemon.state_dir), pid_of=self.runtime.pid_of,
                          exists=self.runtime.exists, allow=self.config.enforce.isolate_allow)

    def _reconcile_quarantine(self) -> None:
        if self.quarantine is None:
            return
        try:
            self.quarantine.reconcile()
        except Exception:  # a runtime hiccup must not stop the loop; next round retries
            log.exception("quarantine reconciliation failed")

    def _make_seccomp(self) -> Any:
        if not self.config.containers.docker_url:
            log.warning("no container runtime configured: seccomp learning is unavailable")
            return None
        try:
            from roxd.seccomp.service import SeccompService

            self.container_runtime.ping()  # Docker down at start: unavailable, as before
            return SeccompService(Path(self.config.daemon.state_dir), self.container_runtime,
                                  honor_label=self.config.seccomp.honor_label,
                                  index=self.attribution.index if self.attribution else None)
        except Exception as exc:  # Docker down at start, libseccomp missing, ...: say so
            log.warning("seccomp learning/enforcement unavailable: %s", exc)
            return None

    def _poll_seccomp(self) -> None:
        """Kills and denials from the seccomp stage become alerts like any other."""
        if self.seccomp is None or self.attribution is None:
            return
        try:
            events = self.seccomp.poll()
        except Exception:
            log.exception("seccomp poll failed")
            return
        for ev in events:
            cgroups = self.attribution.resolver.cgroup_ids_of(ev.container_id)
            syscall = SyscallEvent(
                time_ns=time.time_ns(), pid=ev.pid, uid=0,
                cgroup_id=next(iter(cgroups), 0), comm="", syscall=ev.syscall,
                errno=0 if ev.kind == "killed" else errno.EPERM, count=ev.count,
                source=f"seccomp-{'enforce' if ev.kind == 'killed' else 'deny'}")
            enriched = self.attribution.enricher.enrich(syscall)
            if ev.kind == "killed":
                rule, actions = SECCOMP_KILLED, (ActionResult(
                    ActionKind.KILL, Outcome.DONE,
                    f"SIGKILL at sys_enter of {ev.syscall}: outside the enforced profile",
                    in_kernel=True),)
            else:
                rule, actions = SECCOMP_DENIED, (ActionResult(
                    ActionKind.ALERT, Outcome.DONE,
                    f"{ev.syscall} denied by the container's seccomp profile (EPERM)"),)
            alert = self.alerts.raise_alert(rule, enriched, actions)
            self.counters.alerts += 1
            if self.alerts_topic.active:
                self.alerts_topic.publish(alert.to_dict())

    # ------------------------------------------------------------------ status

    def _log_stats(self) -> None:
        assert self.sensor is not None
        stats = self.sensor.stats()
        if self.options.print_events:
            self._write_line(self.stats_record(stats))
        dropped = stats.dropped
        level = logging.WARNING if dropped else logging.INFO
        log.log(level, "events %d alerts %d; kernel: %s", self.counters.events,
                self.counters.alerts, _fmt_counters(stats.counters))
        self._notifier.status(f"events {self.counters.events}, alerts {self.counters.alerts}, "
                              f"dropped {dropped}")


    def stats_record(self, stats: SensorStats, final: bool = False) -> dict[str, Any]:
        return {
            "type": "stats",
            "final": final,
            "time": rfc3339(time.time_ns()),
            "events": self.counters.events,
            "alerts": self.counters.alerts,
            "quiet_marks": self.counters.quiet_marks,
            "kernel": dict(stats.counters),
            "drops_by_cgroup": {str(k): v for k, v in stats.drops_by_cgroup.items()},
            "alert_sinks": self.delivery.stats(),
            "decode_errors": stats.decode_errors,
            "handler_errors": stats.callback_errors,
        }


def _fmt_counters(counters: dict[str, int] | Any) -> str:
    return " ".join(f"{k}={v}" for k, v in counters.items() if v)
