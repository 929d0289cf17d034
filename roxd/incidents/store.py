"""Incident store: SQLite (WAL) in <state_dir>/incidents/incidents.db, surviving restarts.

The patterns of roxd/alerts/store.py: writes on the store's own thread (incident_changed()
only queues), reads on the caller's thread through a second connection. Writes coalesce: an
incident that changed ten times before the writer woke up is written once, as it is now, so
an alert storm in one incident costs a few rows written, not one per alert.

    store.get(incident_id); store.query(IncidentQuery(state="open", container="web"))
    store.open_incidents()      # what the tracker carries on with after a restart
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from roxd.alerts.store import connect_wal
from roxd.alerts.worker import SinkCounters
from roxd.incidents.tracker import IncidentChange, IncidentQuery
from roxd.text import json_dumps

log = logging.getLogger("roxd.incidents.store")

MAX_LIMIT = 1000
PRUNE_INTERVAL_S = 3600.0
DAY_NS = 86_400 * 1_000_000_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS incidents (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    first_ns INTEGER NOT NULL,
    last_ns INTEGER NOT NULL,
    severity TEXT NOT NULL,
    phases INTEGER NOT NULL,
    alerts INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS incidents_last ON incidents (last_ns);
CREATE INDEX IF NOT EXISTS incidents_state ON incidents (state, last_ns);
CREATE TABLE IF NOT EXISTS incident_containers (
    incident_id TEXT NOT NULL,
    container_id TEXT NOT NULL,
    container_name TEXT,
    PRIMARY KEY (incident_id, container_id)
);
CREATE INDEX IF NOT EXISTS incident_containers_id ON incident_containers (container_id);
CREATE INDEX IF NOT EXISTS incident_containers_name ON incident_containers (container_name);
"""


class IncidentStore:
    def __init__(self, state_dir: Path | str, *, max_age_days: float = 90.0,
                 clock: Callable[[], int] = time.time_ns) -> None:
        self.path = Path(state_dir) / "incidents" / "incidents.db"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_age_days = max_age_days
        self._clock = clock
        self._writer = self._connect()
        self._writer.executescript(_SCHEMA)
        self._reader = self._connect()
        self._read_lock = threading.Lock()
        self._counters = SinkCounters("pruned")
        self._pending: dict[str, dict[str, Any]] = {}  # id -> latest snapshot
        self._busy = False
        self._cond = threading.Condition()
        self._stopping = False
        self._last_prune = time.monotonic()
        self._prune()
        self._thread = threading.Thread(target=self._run, name="roxd-incident-store",
                                        daemon=True)
        self._thread.start()

    def _connect(self) -> sqlite3.Connection:
        return connect_wal(self.path)

    # ------------------------------------------------------------------ sink

    def incident_changed(self, change: IncidentChange) -> None:
        with self._cond:
            if self._stopping:
                self._counters.add("dropped")
                return
            self._pending[change.incident["id"]] = change.incident
            self._counters.set("queued", len(self._pending))
            self._cond.notify()

    def flush(self, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def stats(self) -> dict[str, int]:
        return self._counters.snapshot()

    def close(self, timeout: float = 5.0) -> None:
        self.flush(timeout)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout)
        with self._read_lock:
            self._reader.close()

    # ------------------------------------------------------------------ queries

    def get(self, incident_id: str) -> dict[str, Any] | None:
        with self._read_lock:
            row = self._reader.execute("SELECT body FROM incidents WHERE id = ?",
                                       (incident_id,)).fetchone()
        return json.loads(row[0]) if row else None

    def query(self, q: IncidentQuery) -> list[dict[str, Any]]:
        where: list[str] = []
        args: list[Any] = []
        if q.state is not None:
            where.append("state = ?")
            args.append(q.state)
        if q.since_ns is not None:
            where.append("last_ns >= ?")
            args.append(q.since_ns)
        if q.container is not None:
            where.append("id IN (SELECT incident_id FROM incident_containers WHERE "
                         "container_id = ? OR container_name = ? OR "
                         "(length(?) >= 6 AND substr(container_id, 1, length(?)) = ?))")
            args += [q.container] * 5
        sql = ("SELECT body FROM incidents" + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY last_ns DESC, id DESC LIMIT ?")
        with self._read_lock:
            rows = self._reader.execute(sql, [*args, max(1, min(q.limit, MAX_LIMIT))]).fetchall()
        return [json.loads(r[0]) for r in rows]

    def open_incidents(self) -> list[dict[str, Any]]:
        with self._read_lock:
            rows = self._reader.execute("SELECT body FROM incidents WHERE state = 'open' "
                                        "ORDER BY first_ns").fetchall()
        return [json.loads(r[0]) for r in rows]

    # ------------------------------------------------------------------ writer thread

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._pending and not self._stopping:
                        self._cond.wait(60.0)
                    if self._stopping and not self._pending:
                        return
                    batch = list(self._pending.values())
                    self._pending.clear()
                    self._busy = True
                    self._counters.set("queued", 0)
                try:
                    self._write(batch)
                    self._counters.add("sent", len(batch))
                    if time.monotonic() - self._last_prune >= PRUNE_INTERVAL_S:
                        self._prune()
                except sqlite3.Error:
                    log.exception("incident store: cannot write %d incidents", len(batch))
                    self._counters.add("failed", len(batch))
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
        finally:
            self._writer.close()

    def _write(self, batch: list[dict[str, Any]]) -> None:
        db = self._writer
        db.execute("BEGIN IMMEDIATE")
        try:
            for d in batch:
                db.execute(
                    "INSERT OR REPLACE INTO incidents (id, state, first_ns, last_ns, severity,"
                    " phases, alerts, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (d["id"], d["state"], d["first_ns"], d["last_ns"], d["severity"],
                     len(d["phases"]), d["alerts"], json_dumps(d, separators=(",", ":"))))
                for c in d["containers"]:
                    db.execute("INSERT OR REPLACE INTO incident_containers (incident_id,"
                               " container_id, container_name) VALUES (?, ?, ?)",
                               (d["id"], c["id"], c.get("name")))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _prune(self) -> None:
        self._last_prune = time.monotonic()
        if not self.max_age_days:
            return
        horizon = self._clock() - int(self.max_age_days * DAY_NS)
        db = self._writer
        cur = db.execute("DELETE FROM incidents WHERE state = 'closed' AND last_ns < ?",
                         (horizon,))
        if cur.rowcount:
            db.execute("DELETE FROM incident_containers WHERE incident_id NOT IN "
                       "(SELECT id FROM incidents)")
            self._counters.add("pruned", cur.rowcount)
