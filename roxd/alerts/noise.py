"""Noise control between the dispatcher and the delivery sinks: folding and rate limiting.

Folding: identical alerts (same rule, container, exe and argv) within `fold_window_s` of the
first one are held back. The first is emitted at once; when the window closes and more came, one
*fold summary* is emitted: a copy of the last held alert with a new id (`folded-<hex>`),
`count` = how many were held, `first_ns`/`last_ns` = when the first and last of them happened.

Rate limit: each container (the host counts as one) may emit `per_container_per_minute` alerts
per 60-second window, counted from its first alert, and at most `per_rule_per_minute` of one
rule (`rule_limits` sets it per rule). Two kinds of alert are never held back, whatever the
budget: the first alert of a rule in the container's window, and an alert more severe than
every alert emitted there in the window; so a flood of cheap alerts cannot hide a reverse shell
or a shadow read that follows it (issue 23). Beyond the limits, alerts are counted, not
emitted; when the window closes one *throttled marker* is emitted: rule id `roxd.throttled`,
the phase, severity and event of the most severe suppressed alert, MITRE ids of all of them,
`count` = how many were suppressed, `first_ns`/`last_ns` their time span. Fold summaries count
against the limits; throttled markers do not.

The windows' budgets (what each container emitted, per rule and at which severity) are saved in
`<state_dir>/noise/throttle.json` about once a second and at shutdown, and read back at start:
a restart does not hand a noisy container a fresh budget. Alerts throttled since the last save
of a roxd that was killed are lost from the counts (a clean stop emits their marker first).

Per-rule counts (raised, emitted, folded, throttled) are kept in one-minute buckets for a day,
saved with the budgets: `rule_counts(since_ns)` is what `roxctl rules top` shows.

Nothing is lost from the arithmetic: the counts of everything emitted add up to the number of
alerts raised (once close() has flushed the open windows).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from roxd.alerts.dispatch import AlertSink
from roxd.alerts.kinds import FOLDED_MARK, THROTTLED_RULE_ID
from roxd.alerts.settings import NoiseSettings
from roxd.ids import new_id
from roxd.model import Alert, RuleRef

log = logging.getLogger("roxd.alerts.noise")

RATE_WINDOW_NS = 60 * 1_000_000_000
BUCKET_NS = 60 * 1_000_000_000  # rule counts: one bucket a minute
KEEP_BUCKETS = 24 * 60  # a day of them per rule
SAVE_INTERVAL_NS = 1_000_000_000
STATE_FILE = "throttle.json"
_NO_SEVERITY = 99  # severity codes run 0 (emergency) .. 7 (debug)
# per rule and bucket: [raised, emitted, folded, throttled]
RAISED, EMITTED, FOLDED, THROTTLED = range(4)
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
    rule_emitted: dict[str, int] = dataclasses.field(default_factory=dict)
    best_code: int = _NO_SEVERITY  # the most severe emitted in the window (lowest code)

    def budget(self) -> dict[str, Any]:
        return {"start_ns": self.start_ns, "emitted": self.emitted,
                "rule_emitted": self.rule_emitted, "best_code": self.best_code}


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
                 clock: Callable[[], int] = time.time_ns, timer: bool = True,
                 state_dir: Path | str | None = None) -> None:
        self.settings = settings or NoiseSettings()
        self._sinks = list(sinks)
        self._clock = clock
        self._window_ns = int(self.settings.fold_window_s * 1e9)
        self._limit = self.settings.per_container_per_minute
        self._rule_limit = self.settings.per_rule_per_minute
        self._rule_limits = self.settings.rule_limit_map()
        self._limiting = bool(self._limit or self._rule_limit
                              or any(self._rule_limits.values()))
        self._folds: dict[FoldKey, _Fold] = {}  # insertion order = window start order
        self._rates: dict[str, _Rate] = {}
        self._rule_buckets: dict[str, dict[int, list[int]]] = {}
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(
            ("received", "emitted", "folded", "throttled", "fold_summaries",
             "throttle_markers", "state_saves", "state_save_errors"), 0)
        self._state_path = Path(state_dir) / "noise" / STATE_FILE if state_dir else None
        self._saved_at = 0
        self._dirty = False
        self._load()
        self._stop = threading.Event()
        self._timer: threading.Thread | None = None
        if timer and (self._window_ns or self._limiting or self._state_path):
            self._timer = threading.Thread(target=self._tick_loop, name="roxd-alert-noise",
                                           daemon=True)
            self._timer.start()

    def emit(self, alert: Alert) -> None:
        now = self._clock()
        with self._lock:
            self._counts["received"] += alert.count
            self._count_rule(alert.rule.id, RAISED, alert.count, now)
            self._close_windows(now)
            if self._window_ns and self._fold(alert, now):
                return
            self._limit_and_send(alert, now)

    def tick(self) -> None:
        """Close the windows that are due (emitting their summaries); save the budgets."""
        now = self._clock()
        with self._lock:
            self._close_windows(now)
            snapshot = self._snapshot(now) if self._save_due(now) else None
        if snapshot is not None:
            self._write(snapshot)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def rule_counts(self, since_ns: int = 0) -> list[dict[str, Any]]:
        """Per rule since `since_ns` (minute resolution): raised, emitted, folded, throttled,
        the most raised first."""
        first = since_ns // BUCKET_NS
        out = []
        with self._lock:
            for rule_id, buckets in self._rule_buckets.items():
                sums = [0, 0, 0, 0]
                last = None
                for minute, counts in buckets.items():
                    if minute >= first:
                        sums = [a + b for a, b in zip(sums, counts, strict=True)]
                        last = minute if last is None else max(last, minute)
                if last is None:
                    continue
                out.append({"rule": rule_id, "raised": sums[RAISED], "emitted": sums[EMITTED],
                            "folded": sums[FOLDED], "throttled": sums[THROTTLED],
                            "last_minute_ns": last * BUCKET_NS})
        out.sort(key=lambda r: (-r["raised"], r["rule"]))
        return out

    def close(self, timeout: float = 1.0) -> None:
        """Stop the timer, emit every open window's summary now and save the budgets."""
        self._stop.set()
        if self._timer is not None:
            self._timer.join(timeout)
        with self._lock:
            now = self._clock()
            self._flush_for_restart(now)
            snapshot = self._snapshot(now) if self._state_path else None
            self._close_windows(None)
        if snapshot is not None:
            self._write(snapshot)

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
        self._count_rule(alert.rule.id, FOLDED, alert.count, now)
        return True

    def _over(self, st: _Rate, rule_id: str) -> bool:
        if self._limit and st.emitted >= self._limit:
            return True
        cap = self._rule_limits.get(rule_id, self._rule_limit)
        return bool(cap) and st.rule_emitted.get(rule_id, 0) >= cap

    def _limit_and_send(self, alert: Alert, now: int) -> None:
        if not self._limiting:
            self._send(alert)
            return
        cid = alert.event.container.id if alert.event.container else "host"
        st = self._rates.get(cid)
        if st is None:
            st = self._rates[cid] = _Rate(start_ns=now)
        rule_id, code = alert.rule.id, alert.rule.severity.code
        # never held back: a rule's first alert in the window, or one more severe than any
        # emitted in it (what a flood of cheap alerts would otherwise hide)
        if rule_id not in st.rule_emitted or code < st.best_code or not self._over(st, rule_id):
            st.emitted += 1
            st.rule_emitted[rule_id] = st.rule_emitted.get(rule_id, 0) + 1
            st.best_code = min(st.best_code, code)
            self._dirty = True
            self._send(alert)
            return
        self._count_rule(rule_id, THROTTLED, alert.count, now)
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
        return Alert(id=new_id(), time_ns=now, rule=rule, event=ev, actions=(),
                     count=rate.suppressed, first_ns=rate.first_ns, last_ns=rate.last_ns)

    def _flush_for_restart(self, now: int) -> None:
        """Emit the throttled markers of open windows, keeping their budgets (to be saved)."""
        for rate in self._rates.values():
            if rate.suppressed and rate.worst is not None:
                self._counts["throttle_markers"] += 1
                self._send(self._throttled_marker(rate, now))
            rate.suppressed, rate.worst, rate.mitre = 0, None, set()

    def _count_rule(self, rule_id: str, kind: int, n: int, now: int) -> None:
        buckets = self._rule_buckets.setdefault(rule_id, {})
        minute = now // BUCKET_NS
        counts = buckets.get(minute)
        if counts is None:
            counts = buckets[minute] = [0, 0, 0, 0]
            oldest = minute - KEEP_BUCKETS
            for old in [m for m in buckets if m <= oldest]:
                del buckets[old]
        counts[kind] += n
        self._dirty = True

    # ------------------------------------------------------------------ persistence

    def _save_due(self, now: int) -> bool:
        return (self._state_path is not None and self._dirty
                and now - self._saved_at >= SAVE_INTERVAL_NS)

    def _snapshot(self, now: int) -> dict[str, Any]:
        """What a restarted roxd needs (lock held): budgets of open windows, rule counts."""
        self._saved_at, self._dirty = now, False
        return {
            "version": 1, "saved_ns": now,
            "windows": {cid: r.budget() for cid, r in self._rates.items()
                        if now < r.start_ns + RATE_WINDOW_NS},
            "rules": {rid: {str(m): c for m, c in b.items()}
                      for rid, b in self._rule_buckets.items()},
        }

    def _write(self, snapshot: dict[str, Any]) -> None:
        assert self._state_path is not None
        tmp = self._state_path.with_suffix(".tmp")
        try:
            self._state_path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(snapshot, separators=(",", ":")))
            os.replace(tmp, self._state_path)
            self._counts["state_saves"] += 1
        except OSError as exc:  # a full disk must not stop alerts
            self._counts["state_save_errors"] += 1
            log.warning("noise control could not save %s: %s", self._state_path, exc)

    def _load(self) -> None:
        path = self._state_path
        if path is None or not path.exists():
            return
        try:
            data = json.loads(path.read_text())
            now = self._clock()
            for cid, w in dict(data.get("windows", {})).items():
                start = int(w["start_ns"])
                if not start <= now < start + RATE_WINDOW_NS:
                    continue  # over, or from a clock we cannot trust
                self._rates[str(cid)] = _Rate(
                    start_ns=start, emitted=int(w["emitted"]),
                    rule_emitted={str(k): int(v) for k, v in dict(w["rule_emitted"]).items()},
                    best_code=int(w["best_code"]))
            oldest = now // BUCKET_NS - KEEP_BUCKETS
            for rid, buckets in dict(data.get("rules", {})).items():
                kept = {int(m): [int(x) for x in c][:4] for m, c in dict(buckets).items()
                        if int(m) > oldest and len(c) == 4}
                if kept:
                    self._rule_buckets[str(rid)] = kept
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
            log.warning("noise control state %s unreadable (%s); set aside as %s, starting "
                        "with fresh budgets", path, exc, aside.name)
            self._rates.clear()
            self._rule_buckets.clear()
            with contextlib.suppress(OSError):
                os.replace(path, aside)
            return
        # the windows in the file are in start order only if saved so; keep dict order sane
        self._rates = dict(sorted(self._rates.items(), key=lambda kv: kv[1].start_ns))

    def _send(self, alert: Alert) -> None:
        self._counts["emitted"] += 1
        if alert.rule.id != THROTTLED_RULE_ID:
            self._count_rule(alert.rule.id, EMITTED, 1, self._clock())
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

