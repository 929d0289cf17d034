"""Where GET /v1/alerts reads from: the SQLite alert store when the daemon has one
(`DaemonPort.alert_store()`), else a bounded ring of recent alerts fed by the daemon's alerts
topic. The topic is fed by the alert fan-out after noise control, like the store, so the
live stream, the ring and the store hold the same alerts. Both sit behind `AlertSource`
(query / get / counts).
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from roxd.pubsub import Topic
from roxd.vocabulary import SEVERITIES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AlertFilter:
    container: str | None = None  # full id, id prefix (6+), name, or "host"
    rule: str | None = None
    phase: str | None = None
    severity: str | None = None  # this severity or more severe
    since_ns: int | None = None
    until_ns: int | None = None
    limit: int = 100
    cursor: int | None = None

    def accepts(self, alert: dict[str, Any], time_ns: int | None = None) -> bool:
        rule = alert.get("rule") or {}
        if self.rule is not None and rule.get("id") != self.rule:
            return False
        if self.phase is not None and rule.get("phase") != self.phase:
            return False
        if self.severity is not None and _rank(rule.get("severity")) > _rank(self.severity):
            return False
        if self.container is not None and not container_matches(alert.get("container"),
                                                                self.container):
            return False
        if time_ns is not None:
            if self.since_ns is not None and time_ns < self.since_ns:
                return False
            if self.until_ns is not None and time_ns >= self.until_ns:
                return False
        return True


def _rank(severity: Any) -> int:
    return SEVERITIES.index(severity) if severity in SEVERITIES else len(SEVERITIES)


def container_matches(container: dict[str, Any] | None, ref: str) -> bool:
    if container is None:
        return ref == "host"
    cid = container.get("id") or ""
    return (ref in (cid, container.get("name"))
            or (len(ref) >= 6 and cid.startswith(ref)))


@dataclass(frozen=True)
class AlertPage:
    items: list[dict[str, Any]]
    next_cursor: int | None
    source: str


class AlertSource(Protocol):
    name: str

    def query(self, f: AlertFilter) -> AlertPage: ...

    def get(self, alert_id: str) -> dict[str, Any] | None: ...


class RecentAlerts:
    """The last `capacity` alerts in memory, plus running counts that never forget."""

    name = "memory"

    def __init__(self, capacity: int) -> None:
        self._items: collections.deque[tuple[int, int, dict[str, Any]]] = collections.deque(
            maxlen=capacity)
        self._lock = threading.Lock()
        self._seq = 0
        self.by_container: collections.Counter[str] = collections.Counter()
        self.by_rule: collections.Counter[tuple[str, str, str]] = collections.Counter()

    def add(self, alert: dict[str, Any]) -> None:
        from roxd.api.timeparse import parse_rfc3339_ns

        time_ns = parse_rfc3339_ns(alert.get("time", "")) or 0
        container = alert.get("container")
        rule = alert.get("rule") or {}
        with self._lock:
            self._seq += 1
            self._items.append((self._seq, time_ns, alert))
            self.by_container[container["id"] if container else "host"] += 1
            self.by_rule[(rule.get("id", ""), rule.get("phase", ""),
                          rule.get("severity", ""))] += 1

    def query(self, f: AlertFilter) -> AlertPage:
        with self._lock:
            items = list(self._items)
        out: list[dict[str, Any]] = []
        next_cursor = None
        out_seq = 0
        for seq, time_ns, alert in reversed(items):
            if f.cursor is not None and seq >= f.cursor:
                continue
            if not f.accepts(alert, time_ns):
                continue
            if len(out) == f.limit:
                next_cursor = out_seq
                break
            out.append(alert)
            out_seq = seq
        return AlertPage(out, next_cursor, self.name)

    def get(self, alert_id: str) -> dict[str, Any] | None:
        with self._lock:
            for _seq, _t, alert in self._items:
                if alert.get("id") == alert_id:
                    return alert
        return None

    def counts(self) -> tuple[dict[str, int], dict[tuple[str, str, str], int]]:
        with self._lock:
            return dict(self.by_container), dict(self.by_rule)


class StoreAlerts:
    """roxd.alerts.store.AlertStore behind AlertSource."""

    name = "store"

    def __init__(self, store: Any) -> None:
        self._store = store

    def query(self, f: AlertFilter) -> AlertPage:
        from roxd.alerts.store import AlertQuery
        from roxd.model import Phase, Severity

        page = self._store.query(AlertQuery(
            container=f.container, rule_id=f.rule,
            phase=Phase(f.phase) if f.phase else None,
            min_severity=Severity(f.severity) if f.severity else None,
            since_ns=f.since_ns, until_ns=f.until_ns, limit=f.limit, cursor=f.cursor))
        items = [{k: v for k, v in a.data.items() if k != "kind"} for a in page.items]
        return AlertPage(items, page.next_cursor, self.name)

    def get(self, alert_id: str) -> dict[str, Any] | None:
        stored = self._store.get(alert_id)
        return None if stored is None else dict(stored.data)


class AlertFeed:
    """Drains the daemon's alerts topic into the in-memory ring on its own thread."""

    def __init__(self, topic: Topic, recent: RecentAlerts, maxsize: int,
                 stopping: threading.Event) -> None:
        self._topic = topic
        self._recent = recent
        self._sub = topic.subscribe(None, maxsize)
        self._stopping = stopping
        self._thread = threading.Thread(target=self._run, name="roxd-api-alerts", daemon=True)

    @property
    def dropped(self) -> int:
        return int(self._sub.dropped)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        get: Callable[[float], dict[str, Any] | None] = self._sub.get
        while not self._stopping.is_set():
            item = get(0.5)
            if item is not None:
                try:
                    self._recent.add(item)
                except Exception:
                    log.exception("could not keep alert %r", item.get("id"))
        self._topic.unsubscribe(self._sub)
