"""Noise control between the dispatcher and the delivery sinks: folding and rate limiting.

Folding: identical alerts (same rule, container, exe and argv) within `fold_window_s` of the
first one are held back. The first is emitted at once; when the window closes and more came, one
*fold summary* is emitted: a copy of the last held alert with a new id (`folded-<hex>`),
`count` = how many were held, `first_ns`/`last_ns` = when the first and last of them happened.

Rate limit: each container (the host counts as one) may emit `per_container_per_minute` alerts
per 60-second window, counted from its first alert. Beyond that, alerts are counted, not
emitted; when the window closes one *throttled marker* is emitted: rule id `roxd.throttled`,
the phase, severity and event of the most severe suppressed alert, MITRE ids of all of them,
`count` = how many were suppressed, `first_ns`/`last_ns` their time span. Fold summaries count
against the limit; throttled markers do not.

Nothing is lost from the arithmetic: the counts of everything emitted add up to the number of
alerts raised (once close() has flushed the open windows).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from roxd.alerts.dispatch import AlertSink
from roxd.alerts.kinds import FOLDED_MARK, THROTTLED_RULE_ID
from roxd.alerts.settings import NoiseSettings
from roxd.model import Alert, RuleRef

log = logging.getLogger("roxd.alerts.noise")

RATE_WINDOW_NS = 60 * 1_000_000_000
FoldKey = tuple[str, str, str, tuple[str, ...]]


@dataclass(slots=True)
class _Fold:
    start_ns: int
    held: int = 0
    first_ns: int = 0
    last_ns: int = 0
    last: Alert | None = None


@dataclass(slots=True)
class _Rate:
    start_ns: int
    emitted: int = 0
    suppressed: int = 0
    first_ns: int = 0
    last_ns: int = 0
    worst: Alert | None = None
    mitre: set[str] = dataclasses.field(default_factory=set)


def fold_key(alert: Alert) -> FoldKey:
    ev = alert.event
    return (alert.rule.id, ev.container.id if ev.container else "host", ev.process.exe,
            ev.process.args)


def _span(alert: Alert) -> tuple[int, int]:
    return alert.first_ns or alert.time_ns, alert.last_ns or alert.time_ns


class NoiseControl:
    """An AlertSink that folds and rate-limits, then hands alerts to `sinks`.

    Thread-safe: emit() (event loop) and tick() (its timer thread, or the daemon's loop) share
    one lock; downstream sinks are called under it, so they must not block (roxd's don't).
    """

    def __init__(self, sinks: Sequence[AlertSink], settings: NoiseSettings | None = None, *,
                 clock: Callable[[], int] = time.time_ns, timer: bool = True) -> None:
        self.settings = settings or NoiseSettings()
        self._sinks = list(sinks)
        self._clock = clock
        self._window_ns = int(self.settings.fold_window_s * 1e9)
        self._limit = self.settings.per_container_per_minute
        self._folds: dict[FoldKey, _Fold] = {}  # insertion order = window start order
        self._rates: dict[str, _Rate] = {}
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(
            ("received", "emitted", "folded", "throttled", "fold_summaries",
             "throttle_markers"), 0)
        self._stop = threading.Event()
        self._timer: threading.Thread | None = None
        if timer and (self._window_ns or self._limit):
            self._timer = threading.Thread(target=self._tick_loop, name="roxd-alert-noise",
                                           daemon=True)
            self._timer.start()

    def emit(self, alert: Alert) -> None:
        now = self._clock()
        with self._lock:
            self._counts["received"] += alert.count
            self._close_windows(now)
            if self._window_ns and self._fold(alert, now):
                return
            self._limit_and_send(alert, now)

    def tick(self) -> None:
        """Close the windows that are due (emitting their summaries)."""
        now = self._clock()
        with self._lock:
            self._close_windows(now)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def close(self, timeout: float = 1.0) -> None:
        """Stop the timer and emit every open window's summary now."""
        self._stop.set()
        if self._timer is not None:
            self._timer.join(timeout)
        with self._lock:
            self._close_windows(None)

    # ------------------------------------------------------------------ internals

    def _fold(self, alert: Alert, now: int) -> bool:
        key = fold_key(alert)
        st = self._folds.get(key)
        if st is None:
            self._folds[key] = _Fold(start_ns=now)
            return False
        first, last = _span(alert)
        st.first_ns = min(st.first_ns, first) if st.held else first
        st.last_ns = max(st.last_ns, last)
        st.held += alert.count
        st.last = alert
        self._counts["folded"] += alert.count
        return True

    def _limit_and_send(self, alert: Alert, now: int) -> None:
        if not self._limit:
            self._send(alert)
            return
        cid = alert.event.container.id if alert.event.container else "host"
        st = self._rates.get(cid)
        if st is None:
            st = self._rates[cid] = _Rate(start_ns=now)
        if st.emitted < self._limit:
            st.emitted += 1
            self._send(alert)
            return
        first, last = _span(alert)
        st.first_ns = min(st.first_ns, first) if st.suppressed else first
        st.last_ns = max(st.last_ns, last)
        st.suppressed += alert.count
        st.mitre.update(alert.rule.mitre)
        if st.worst is None or alert.rule.severity.code < st.worst.rule.severity.code:
            st.worst = alert
        self._counts["throttled"] += alert.count

    def _close_windows(self, now: int | None) -> None:
        """Emit summaries of windows that ended by `now` (all of them when now is None)."""
        at = now if now is not None else self._clock()
        while self._folds:
            key, st = next(iter(self._folds.items()))
            if now is not None and now < st.start_ns + self._window_ns:
                break
            del self._folds[key]
            if st.held and st.last is not None:
                summary = dataclasses.replace(
                    st.last, id=FOLDED_MARK + uuid.uuid4().hex,
                    time_ns=at,
                    count=st.held, first_ns=st.first_ns, last_ns=st.last_ns)
                self._counts["fold_summaries"] += 1
                self._limit_and_send(summary, at)
        while self._rates:
            cid, rate = next(iter(self._rates.items()))
            if now is not None and now < rate.start_ns + RATE_WINDOW_NS:
                break
            del self._rates[cid]
            if rate.suppressed and rate.worst is not None:
                self._counts["throttle_markers"] += 1
                self._send(self._throttled_marker(rate, at))

    def _throttled_marker(self, rate: _Rate, now: int) -> Alert:
        worst = rate.worst
        assert worst is not None
        ev = worst.event
        where = (f"container {ev.container.name or ev.container.id[:12]}" if ev.container
                 else "the host")
        rule = RuleRef(
            id=THROTTLED_RULE_ID, name=f"{rate.suppressed} alerts throttled",
            phase=worst.rule.phase, severity=worst.rule.severity,
            mitre=tuple(sorted(rate.mitre)),
            description=(f"{rate.suppressed} alerts from {where} went over the limit of "
                         f"{self._limit} per minute; the most severe was {worst.rule.id}"))
        return Alert(id=uuid.uuid4().hex, time_ns=now, rule=rule, event=ev, actions=(),
                     count=rate.suppressed, first_ns=rate.first_ns, last_ns=rate.last_ns)

    def _send(self, alert: Alert) -> None:
        self._counts["emitted"] += 1
        for sink in self._sinks:
            try:
                sink.emit(alert)
            except Exception:
                log.exception("alert sink %s failed", type(sink).__name__)

    def _tick_loop(self) -> None:
        period = min(1.0, max(0.05, self.settings.fold_window_s / 4 or 1.0))
        while not self._stop.wait(period):
            try:
                self.tick()
            except Exception:
                log.exception("noise control tick failed")
