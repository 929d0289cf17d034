"""One event through roxd, from a decoded kernel record to what happened:

    decoded ─► containers (enrich) ─► policy (kernel verdicts, held execs) ─► event taps
            ─► rules (match) ─► quiet │ enforce (respond) ─► alerts (one fan-out)

A match's alert is always raised: whatever the responder raises becomes its actions'
"failed" with the reason, never a lost alert (the responder also fails one action at a time).

Both sensors feed it: the main one (exec, exit, connect, syscall, file records from the ring
buffer) and the seccomp one (its violations as SeccompEvent, matched by the built-in rules in
roxd/rules/builtin/ like any other event).

`Pipeline.handle` runs the stages in that order and returns a `Handled` record; it touches
the kernel only through roxd/policy/ (the sensor's maps are the policy's to write). Every
part is passed in, so the whole path runs in a unit test with fakes at the edges (the kernel
maps, the runtime); the daemon only assembles the parts and drives the loop.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from roxd.alerts.dispatch import AlertDispatcher
from roxd.containers.enricher import Enricher
from roxd.containers.process_table import ProcessInfo
from roxd.jsonlines import JsonLines
from roxd.model import (
    ActionKind,
    ActionResult,
    Alert,
    BaselineFacts,
    ConnectEvent,
    Container,
    EnrichedEvent,
    ExecEvent,
    ExitEvent,
    Outcome,
    RuleMatch,
    SeccompEvent,
)
from roxd.policy.kill_tables import BASELINE_VERDICT
from roxd.policy.netenf import NETWORK_VERDICT
from roxd.pubsub import Topic
from roxd.rules.ruleset import RuleSet
from roxd.sensor.records import Decoded

log = logging.getLogger(__name__)

class Policy(Protocol):
    """What the pipeline asks of roxd.policy.KernelPolicy."""

    def on_event(self, decoded: Decoded, container: object) -> str | None: ...
    def quiet(self, decoded: Decoded) -> bool: ...


class Baselines(Protocol):
    """What the pipeline asks of roxd.baselines.BaselineEngine."""

    def observe(self, event: EnrichedEvent) -> BaselineFacts | None: ...


class Drift(Protocol):
    """What the pipeline asks of roxd.baselines.drift.DriftDetector."""

    def check(self, enriched: EnrichedEvent) -> str | None: ...

    def check_script(self, enriched: EnrichedEvent) -> str | None: ...


class FlowObserver(Protocol):
    """What the pipeline asks of roxd.netmap.FlowMap: connects, aggregated."""

    def observe(self, enriched: EnrichedEvent) -> None: ...


class Responder(Protocol):
    def respond(self, match: RuleMatch, event: EnrichedEvent, *, killed_in_kernel: bool = False,
                held: bool = False) -> list[ActionResult]: ...


@dataclass
class Counters:
    events: int = 0
    alerts: int = 0
    quiet_marks: int = 0
    started_monotonic: float = field(default_factory=time.monotonic)
    # events per container id (roxctl top's events/s); ids of gone containers are pruned by
    # the daemon's housekeeping (forget_containers)
    by_container: dict[str, int] = field(default_factory=dict)

    def forget_containers(self, keep: set[str]) -> None:
        """Drop the counts of containers not in `keep` (on the loop thread, which counts)."""
        for cid in [c for c in self.by_container if c not in keep]:
            del self.by_container[cid]


class Handled:
    """What the pipeline did with one event (one per event: slots, not a frozen dataclass,
    because a frozen dataclass costs a setattr call per field on the hot path).

    `event` is the EnrichedEvent. For an exit nobody listened to it is built when first read
    (`Handled.exit`): exits meet no rule, the daemon never reads it, and its Process and
    EnrichedEvent were a third of an exit's cost (issue 22)."""

    __slots__ = ("_event", "_exit", "alerts", "deferred", "killed_by", "matches", "quiet")

    def __init__(self, event: EnrichedEvent | None, killed_by: str | None = None,
                 matches: tuple[RuleMatch, ...] = (), alerts: tuple[Alert, ...] = (),
                 quiet: bool = False, deferred: int = 0) -> None:
        self._event = event
        self._exit: tuple[Enricher, ExitEvent, Container | None, ProcessInfo | None] | None = None
        self.killed_by = killed_by  # the rule the kernel (or a held-exec release) killed for
        self.matches = matches
        self.alerts = alerts
        self.quiet = quiet  # folded in the kernel from now on: no rule cared
        # matches whose alert comes once their slow actions finish (SlowActions)
        self.deferred = deferred

    @classmethod
    def exit(cls, enricher: Enricher, event: ExitEvent, container: Container | None,
             info: ProcessInfo | None, killed_by: str | None) -> Handled:
        handled = cls(None, killed_by)
        handled._exit = (enricher, event, container, info)
        return handled

    @property
    def event(self) -> EnrichedEvent:
        event = self._event
        if event is None:
            assert self._exit is not None
            enricher, raw, container, info = self._exit
            event = self._event = enricher.exit_event(raw, container, info)
            self._exit = None
        return event

    def __repr__(self) -> str:
        return (f"Handled(event={self.event!r}, killed_by={self.killed_by!r}, "
                f"matches={self.matches!r}, alerts={self.alerts!r}, quiet={self.quiet!r}, "
                f"deferred={self.deferred!r})")


# Actions that wait on the container runtime or nftables (seconds when dockerd is slow or
# hung): run by SlowActions, off the event loop. A process kill (pidfd, microseconds) and a
# process-tree kill stay inline: they must land before the process does more.
SLOW_ACTIONS = frozenset({ActionKind.ISOLATE, ActionKind.SECCOMP})


def slow_part(match: RuleMatch) -> tuple[ActionKind, ...]:
    kill_container = ActionKind.KILL in match.actions and match.kill_target == "container"
    return tuple(a for a in match.actions
                 if a in SLOW_ACTIONS or (a is ActionKind.KILL and kill_container))


class SlowActions:
    """One worker thread for responses that wait on the container runtime or nftables
    (isolate, a container kill, seccomp), and for other slow housekeeping (quarantine
    reconciliation): the event loop hands them over and goes on polling the ring buffer.
    Results come back through `finish_pending()`, which the loop calls every iteration, so
    alerts are still raised on the loop thread. A full queue (max_pending) runs the work
    inline rather than lose it."""

    def __init__(self, max_pending: int = 256) -> None:
        self._todo: queue.Queue[tuple[Callable[[], Any], Callable[[Any], None]] | None] = (
            queue.Queue(max_pending))
        # finished work: the worker appends, the loop alone pops. A deque's append and
        # popleft are atomic, and the loop looks at it every pass: an empty deque is one
        # truth test, where an empty Queue was a lock and a raised queue.Empty per pass
        self._done: deque[tuple[Callable[[Any], None], Any]] = deque()
        self._busy = 0
        self._closed = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="roxd-actions", daemon=True)
        self._thread.start()

    def submit(self, work: Callable[[], Any], then: Callable[[Any], None]) -> bool:
        """Run work() on the worker, then then(result) on the loop; False: queue full or
        closed (the caller runs it inline)."""
        with self._lock:
            if self._closed:
                return False
            self._busy += 1
        try:
            self._todo.put_nowait((work, then))
        except queue.Full:
            with self._lock:
                self._busy -= 1
            return False
        return True

    @property
    def pending(self) -> int:
        with self._lock:
            return self._busy

    def finish_pending(self) -> int:
        """On the loop: the continuations of finished work, in order; how many ran."""
        ran = 0
        done = self._done
        while done:
            then, result = done.popleft()
            try:
                then(result)
            except Exception:
                log.exception("finishing a slow action failed")
            with self._lock:
                self._busy -= 1
            ran += 1
        return ran

    def close(self, timeout: float = 10.0) -> None:
        """Let queued work finish (up to timeout), then run its continuations."""
        deadline = time.monotonic() + timeout
        with self._lock:
            waiting = self._busy
            self._closed = True
        if waiting:
            log.info("waiting up to %.0fs for %d slow actions to finish", timeout, waiting)
        self._todo.put(None)
        self._thread.join(max(0.0, deadline - time.monotonic()))
        self.finish_pending()

    def _run(self) -> None:
        while True:
            item = self._todo.get()
            if item is None:
                return
            work, then = item
            try:
                result = work()
            except Exception:  # work wraps its own errors; this is a bug, logged
                log.exception("slow action failed")
                result = None
            self._done.append((then, result))


class EventTaps:
    """Where enriched events go: `--print-events` (JSON lines) and the API's event streams.
    The record is built only when someone listens."""

    def __init__(self, topic: Topic, lines: JsonLines | None = None) -> None:
        self.topic = topic
        self._lines = lines

    @property
    def active(self) -> bool:
        return self._lines is not None or self.topic.active

    def publish(self, event: EnrichedEvent) -> None:
        if not self.active:
            return
        record = event.to_dict()
        if self._lines is not None:
            self._lines.write(record)
        self.topic.publish(record)


class Pipeline:
    def __init__(self, *, enricher: Enricher, rules: Callable[[], RuleSet], policy: Policy,
                 responder: Responder, alerts: AlertDispatcher, taps: EventTaps,
                 counters: Counters | None = None, baselines: Baselines | None = None,
                 drift: Drift | None = None, netmap: FlowObserver | None = None,
                 slow: SlowActions | None = None) -> None:
        self._enricher = enricher
        self._netmap = netmap
        self._slow = slow
        self._baselines = baselines
        self._drift = drift
        self._rules = rules
        self._policy = policy
        self._responder = responder
        self._alerts = alerts
        self._taps = taps
        self.counters = counters or Counters()

    def handle(self, decoded: Decoded) -> Handled:
        event = decoded.event
        if type(event) is ExitEvent:
            return self._exit(decoded)
        enriched = self._enricher.enrich(event)
        self.counters.events += 1
        container = enriched.container
        if container is not None:
            by_container = self.counters.by_container
            by_container[container.id] = by_container.get(container.id, 0) + 1
        killed_by = self._policy.on_event(decoded, container)
        if container is not None and (self._baselines is not None or self._drift is not None):
            # the rules see them as the `baseline`, `drift` and `script_drift` fields; one new
            # event for all (not dataclasses.replace per fact: its field introspection costs
            # per event)
            facts = self._baselines.observe(enriched) if self._baselines is not None else None
            drifted = script = None
            if self._drift is not None and type(event) is ExecEvent:
                drifted = self._drift.check(enriched, exited=decoded.exited)
                script = self._drift.check_script(enriched)
            if facts is not None or drifted is not None or script is not None:
                # the enriched event, not the sensor's: a file path resolved there stays
                enriched = EnrichedEvent(enriched.event, container, enriched.process, facts,
                                         drifted, script)
        taps = self._taps
        if taps.active:
            taps.publish(enriched)
        if self._netmap is not None and type(event) is ConnectEvent:
            self._netmap.observe(enriched)
        matches = self._rules().match(enriched)
        if not matches:
            quiet = self._policy.quiet(decoded)
            self.counters.quiet_marks += quiet
            return Handled(enriched, killed_by, quiet=quiet)
        alerts = []
        deferred = 0
        for match in matches:
            slow = slow_part(match) if self._slow is not None else ()
            if not slow:
                results = self._respond(match, enriched, killed_by, decoded.held)
                alerts.append(self._raise(match, enriched, results, killed_by))
                continue
            # the fast actions now (a kill must land at once), the slow ones on the worker;
            # one alert with every outcome once they are done
            fast = self._respond(dataclasses.replace(
                match, actions=tuple(a for a in match.actions if a not in slow)),
                enriched, killed_by, decoded.held)
            slow_match = dataclasses.replace(match, actions=slow)

            def work(m: RuleMatch = slow_match) -> list[ActionResult]:
                return self._respond(m, enriched, killed_by, decoded.held)

            def then(later: list[ActionResult], m: RuleMatch = match,
                     now: list[ActionResult] = fast) -> None:
                self._raise(m, enriched, in_order(m, now + later), killed_by)

            assert self._slow is not None
            if self._slow.submit(work, then):
                deferred += 1
            else:  # the worker is swamped: inline, never a lost alert
                alerts.append(self._raise(match, enriched, in_order(match, fast + work()),
                                          killed_by))
        return Handled(enriched, killed_by, tuple(matches), tuple(alerts), deferred=deferred)

    def _exit(self, decoded: Decoded) -> Handled:
        """An exit meets no rule, no baseline and no drift check: the process table learns
        of it, the policy applies pending container changes, the taps see it. Without a tap
        that is all (its event is built only if the Handled is read); with one, the tap gets
        the exit with its ancestry and session (the walk and the Process cost several µs per
        exit, one exit per exec, so only then)."""
        event: ExitEvent = decoded.event  # type: ignore[assignment]  # handle() dispatched
        listened = self._taps.active
        if listened:
            enriched = self._enricher.enrich(event, exit_details=True)
            container = enriched.container
        else:
            container, info = self._enricher.exited(event)
        counters = self.counters
        counters.events += 1
        if container is not None:
            by_container = counters.by_container
            by_container[container.id] = by_container.get(container.id, 0) + 1
        killed_by = self._policy.on_event(decoded, container)
        if not listened:
            return Handled.exit(self._enricher, event, container, info, killed_by)
        self._taps.publish(enriched)
        return Handled(enriched, killed_by)

    def _respond(self, match: RuleMatch, enriched: EnrichedEvent, killed_by: str | None,
                 held: bool) -> list[ActionResult]:
        try:
            return self._responder.respond(match, enriched,
                                           killed_in_kernel=killed_by == match.rule.id,
                                           held=held)
        except Exception as exc:  # the alert is raised whatever enforcement did
            log.exception("responding to %s failed", match.rule.id)
            return responder_failed(match, exc)

    def _raise(self, match: RuleMatch, enriched: EnrichedEvent, results: list[ActionResult],
               killed_by: str | None) -> Alert:
        results = results + list(kernel_actions(enriched, results, killed_by, match))
        alert = self._alerts.raise_alert(match.rule, enriched, results)
        self.counters.alerts += 1
        return alert


def in_order(match: RuleMatch, results: list[ActionResult]) -> list[ActionResult]:
    """Results in the order the rule lists its actions (the split put the slow ones last)."""
    rank = {a: i for i, a in enumerate(match.actions)}
    return sorted(results, key=lambda r: rank.get(r.action, len(rank)))


def responder_failed(match: RuleMatch, exc: BaseException) -> list[ActionResult]:
    """The match's actions when the responder raised: the alert (raised right after), every
    other action failed with the error."""
    reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return [ActionResult(a, Outcome.DONE) if a is ActionKind.ALERT
            else ActionResult(a, Outcome.FAILED, reason) for a in match.actions]


def kernel_actions(event: EnrichedEvent, results: Sequence[ActionResult],
                   killed_by: str | None = None, match: RuleMatch | None = None
                   ) -> tuple[ActionResult, ...]:
    """What the kernel already did to the process before any rule was asked, when no rule's
    own action reports it: a seccomp kill at syscall entry; an exec outside its workload's
    enforced process baseline (for the `baseline.*` rules that name it)."""
    if any(r.action is ActionKind.KILL and r.outcome is Outcome.DONE for r in results):
        return ()
    ev = event.event
    if isinstance(ev, SeccompEvent) and ev.verdict == "killed":
        return (ActionResult(ActionKind.KILL, Outcome.DONE,
                             f"SIGKILL at sys_enter of {ev.syscall}: outside the enforced "
                             "seccomp profile", in_kernel=True),)
    if (killed_by == NETWORK_VERDICT and match is not None
            and match.rule.id.startswith("baseline.") and event.baseline is not None
            and isinstance(ev, ConnectEvent)):
        return (ActionResult(ActionKind.BLOCK, Outcome.DONE,
                             f"{'UDP send or connect' if ev.protocol == 'udp' else 'connect'}"
                             f" to {ev.daddr} port {ev.dport} refused (EPERM) by the "
                             "cgroup connect hook before any packet left: not in the locked "
                             f"network baseline of {event.baseline.workload}",
                             in_kernel=True),)
    if (killed_by == BASELINE_VERDICT and match is not None
            and match.rule.id.startswith("baseline.") and event.baseline is not None):
        workload = event.baseline.workload
        return (ActionResult(ActionKind.KILL, Outcome.DONE,
                             "SIGKILL by the eBPF program at exec, before its first "
                             f"instruction: not in the locked baseline of {workload}",
                             in_kernel=True),)
    return ()
