"""Local alert store: SQLite (WAL) in the state dir, with retention, queries and a live feed.

Writes happen on the store's own thread (emit() only queues; roxd/alerts/storewriter.py, shared
with the incident store: a batch the file refuses is kept and retried), reads on the caller's thread
through a separate connection, which WAL lets run beside the writer. This is the API's source
for `roxctl alerts` and its streaming endpoint:

    store.query(AlertQuery(container="web", min_severity=Severity.WARNING, limit=50))
    store.get(alert_id)
    sub = store.subscribe(); item = sub.get(timeout=1.0); sub.close()

Pages come newest first; `next_cursor` (a sequence number) asks for the page after it, and
stays correct while new alerts arrive (offsets shift, cursors do not).
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from roxd.alerts.kinds import alert_kind
from roxd.alerts.settings import StoreSettings
from roxd.alerts.storewriter import FifoPending, StoreFile, StoreWriter
from roxd.alerts.worker import SinkCounters
from roxd.model import Alert, Phase, Severity
from roxd.text import json_dumps

log = logging.getLogger("roxd.alerts.store")

MAX_LIMIT = 1000
PRUNE_INTERVAL_S = 60.0
DAY_NS = 86_400 * 1_000_000_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    time_ns INTEGER NOT NULL,
    kind TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    phase TEXT NOT NULL,
    severity INTEGER NOT NULL,
    container_id TEXT NOT NULL,
    container_name TEXT,
    count INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_time ON alerts (time_ns);
CREATE INDEX IF NOT EXISTS alerts_rule ON alerts (rule_id, seq);
CREATE INDEX IF NOT EXISTS alerts_container ON alerts (container_id, seq);
CREATE INDEX IF NOT EXISTS alerts_container_name ON alerts (container_name, seq);
"""


@dataclass(frozen=True, slots=True)
class StoredAlert:
    seq: int  # the store's sequence number: increases with every alert stored
    id: str
    time_ns: int
    data: dict[str, Any]  # Alert.to_dict() plus "kind"


@dataclass(frozen=True, slots=True)
class AlertQuery:
    container: str | None = None  # full id, id prefix, name, or "host"
    rule_id: str | None = None
    phase: Phase | None = None
    min_severity: Severity | None = None  # this severity or more severe
    since_ns: int | None = None  # alert time >= since
    until_ns: int | None = None  # alert time < until
    limit: int = 100
    offset: int = 0
    cursor: int | None = None  # only alerts with seq < cursor (the previous page's next_cursor)


@dataclass(frozen=True, slots=True)
class AlertPage:
    items: tuple[StoredAlert, ...]
    next_cursor: int | None  # None: no more


class AlertSubscription:
    """A bounded queue of newly stored alerts; when it is full, new ones are dropped and counted.
    """

    def __init__(self, owner: AlertStore, maxsize: int) -> None:
        self._owner = owner
        self._queue: queue.Queue[StoredAlert] = queue.Queue(maxsize)
        self.dropped = 0

    def get(self, timeout: float | None = None) -> StoredAlert | None:
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def _offer(self, item: StoredAlert) -> None:
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.dropped += 1

    def close(self) -> None:
        self._owner._unsubscribe(self)


class AlertStore(StoreFile):
    def __init__(self, state_dir: Path, settings: StoreSettings | None = None, *,
                 clock: Callable[[], int] = time.time_ns) -> None:
        self.settings = settings or StoreSettings()
        self.path = Path(state_dir) / "alerts" / "alerts.db"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._counters = SinkCounters("pruned", "evicted", "errors", "quarantined")
        self._read_lock = threading.Lock()
        self._count = 0
        self._bytes = 0
        self._open()
        self._subs: list[AlertSubscription] = []
        self._lock = threading.Lock()  # _subs, _count, _bytes
        self._last_prune = 0.0
        self._prune()
        # the writer thread: queue, write, retry a batch the file refuses (roxd/alerts/
        # storewriter.py, shared with the incident store)
        self._writer_thread: StoreWriter[Alert, list[StoredAlert]] = StoreWriter(
            label="alert store", path=self.path,
            pending=FifoPending(self.settings.queue_max),
            write=lambda batch: self._insert(batch),  # looked up per call: tests wrap it
            written=self._offer, maintain=lambda: self._prune(force=False),
            reopen=self._reopen_fresh, close_db=lambda: self._writer.close(),
            counters=self._counters, idle_s=PRUNE_INTERVAL_S, logger=log,
            thread_name="roxd-alert-store", items="alerts")

    def _setup(self, db: sqlite3.Connection) -> None:
        db.executescript(_SCHEMA)
        count, size = db.execute("SELECT COUNT(*), TOTAL(length(body)) FROM alerts").fetchone()
        self._count, self._bytes = int(count), int(size)

    # ------------------------------------------------------------------ sink

    def emit(self, alert: Alert) -> None:
        self._writer_thread.add(alert)

    def stats(self) -> dict[str, int]:
        out = self._counters.snapshot()
        out["queued"] = self._writer_thread.queued()
        with self._lock:
            out["stored"] = self._count
            out["stored_bytes"] = self._bytes
        return out

    # ------------------------------------------------------------------ queries

    def get(self, alert_id: str) -> StoredAlert | None:
        with self._read_lock:
            row = self._reader.execute(
                "SELECT seq, id, time_ns, kind, body FROM alerts WHERE id = ?",
                (alert_id,)).fetchone()
        return _stored(row) if row else None

    def query(self, q: AlertQuery = AlertQuery()) -> AlertPage:  # noqa: B008 (frozen)
        where: list[str] = []
        args: list[Any] = []
        if q.container is not None:
            where.append("(container_id = ? OR container_name = ? OR "
                         "(length(?) >= 6 AND substr(container_id, 1, length(?)) = ?))")
            args += [q.container] * 5
        if q.rule_id is not None:
            where.append("rule_id = ?")
            args.append(q.rule_id)
        if q.phase is not None:
            where.append("phase = ?")
            args.append(Phase(q.phase).value)
        if q.min_severity is not None:
            where.append("severity <= ?")
            args.append(Severity(q.min_severity).code)
        if q.since_ns is not None:
            where.append("time_ns >= ?")
            args.append(q.since_ns)
        if q.until_ns is not None:
            where.append("time_ns < ?")
            args.append(q.until_ns)
        if q.cursor is not None:
            where.append("seq < ?")
            args.append(q.cursor)
        limit = max(1, min(q.limit, MAX_LIMIT))
        sql = ("SELECT seq, id, time_ns, kind, body FROM alerts"
               + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY seq DESC LIMIT ? OFFSET ?")
        with self._read_lock:
            rows = self._reader.execute(sql, [*args, limit + 1, max(0, q.offset)]).fetchall()
        items = tuple(_stored(r) for r in rows[:limit])
        more = len(rows) > limit
        return AlertPage(items, items[-1].seq if more and items else None)

    def count(self) -> int:
        with self._read_lock:
            return int(self._reader.execute("SELECT COUNT(*) FROM alerts").fetchone()[0])

    def subscribe(self, maxsize: int = 1000) -> AlertSubscription:
        """Alerts stored from now on, in order, until close()."""
        sub = AlertSubscription(self, maxsize)
        with self._lock:
            self._subs.append(sub)
        return sub

    def _unsubscribe(self, sub: AlertSubscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)

    def _offer(self, stored: list[StoredAlert]) -> None:
        """On the writer thread, after a write: the live subscribers get the new alerts."""
        with self._lock:
            subs = list(self._subs)
        for item in stored:
            for sub in subs:
                sub._offer(item)

    # ------------------------------------------------------------------ writer thread

    def _insert(self, batch: list[Alert]) -> list[StoredAlert]:
        if not batch:
            return []
        rows = []
        for alert in batch:  # one alert that cannot be serialised fails alone
            try:
                data = {"kind": alert_kind(alert), **alert.to_dict()}
                body = json_dumps(data, separators=(",", ":"))
            except Exception:
                log.exception("alert store: cannot serialise alert %s", alert.id)
                self._counters.add("failed")
                continue
            rows.append((alert, data, body))
        out: list[StoredAlert] = []
        added = 0
        db = self._writer
        db.execute("BEGIN IMMEDIATE")
        try:
            for alert, data, body in rows:
                c = alert.event.container
                cur = db.execute(
                    "INSERT OR IGNORE INTO alerts (id, time_ns, kind, rule_id, phase, severity,"
                    " container_id, container_name, count, body)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (alert.id, alert.time_ns, data["kind"], alert.rule.id,
                     alert.rule.phase.value, alert.rule.severity.code,
                     c.id if c else "host", c.name if c else None, alert.count, body))
                if cur.rowcount:
                    out.append(StoredAlert(int(cur.lastrowid or 0), alert.id, alert.time_ns, data))
                    added += len(body)  # ASCII JSON: characters are bytes
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise
        with self._lock:
            self._count += len(out)
            self._bytes += added
        self._counters.add("sent", len(out))
        return out

    def _prune(self, force: bool = True) -> None:
        s = self.settings
        db = self._writer
        removed = evicted = freed = 0
        if s.max_count and self._count > s.max_count:
            n, size = db.execute("SELECT COUNT(*), TOTAL(length(body)) FROM (SELECT body FROM "
                                 "alerts ORDER BY seq LIMIT ?)",
                                 (self._count - s.max_count,)).fetchone()
            db.execute("DELETE FROM alerts WHERE seq IN (SELECT seq FROM alerts "
                       "ORDER BY seq LIMIT ?)", (self._count - s.max_count,))
            removed, freed = int(n), int(size)
        if s.max_bytes and self._bytes - freed > s.max_bytes:
            # the oldest go until the bodies fit: bounded in bytes, not only in rows
            excess, last, n = self._bytes - freed - s.max_bytes, None, 0
            got = 0
            for seq, size in db.execute("SELECT seq, length(body) FROM alerts ORDER BY seq"):
                if got >= excess:
                    break
                got, last, n = got + int(size), seq, n + 1
            if last is not None:
                db.execute("DELETE FROM alerts WHERE seq <= ?", (last,))
                evicted, freed = n, freed + got
        if s.max_age_days and (force or
                               time.monotonic() - self._last_prune >= PRUNE_INTERVAL_S):
            horizon = self._clock() - int(s.max_age_days * DAY_NS)
            n, size = db.execute("SELECT COUNT(*), TOTAL(length(body)) FROM alerts "
                                 "WHERE time_ns < ?", (horizon,)).fetchone()
            if n:
                db.execute("DELETE FROM alerts WHERE time_ns < ?", (horizon,))
            removed, freed = removed + int(n), freed + int(size)
            self._last_prune = time.monotonic()
        if removed or evicted:
            with self._lock:
                self._count -= removed + evicted
                self._bytes -= freed
            self._counters.add("pruned", removed)
            if evicted:
                self._counters.add("evicted", evicted)
                log.warning("alert store: over max_bytes (%d): evicted the %d oldest alerts",
                            s.max_bytes, evicted)


def _stored(row: tuple[Any, ...]) -> StoredAlert:
    seq, alert_id, time_ns, _kind, body = row
    return StoredAlert(int(seq), str(alert_id), int(time_ns), json.loads(body))
