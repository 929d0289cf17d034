"""Incident store: SQLite (WAL) in <state_dir>/incidents/incidents.db, surviving restarts.

The alert store's mechanism (roxd/alerts/storewriter.py, shared): writes on the store's own
thread (incident_changed() only queues), reads on the caller's thread through a second
connection. Writes coalesce: an incident that changed ten times before the writer woke up is
written once, as it is now, so an alert storm in one incident costs a few rows written, not
one per alert. A batch the file refuses (disk full, I/O error) is kept and retried (a newer
state of an incident replaces the one that failed), counted in `errors`, and `problems()`
says why until a write works again (/v1/health); a file found corrupt is moved aside.

    store.get(incident_id); store.query(IncidentQuery(state="open", container="web"))
    store.open_incidents()      # what the tracker carries on with after a restart
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from roxd.alerts.storewriter import LatestPending, StoreFile, StoreWriter
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


class IncidentStore(StoreFile):
    def __init__(self, state_dir: Path | str, *, max_age_days: float = 90.0,
                 clock: Callable[[], int] = time.time_ns) -> None:
        self.path = Path(state_dir) / "incidents" / "incidents.db"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_age_days = max_age_days
        self._clock = clock
        self._counters = SinkCounters("pruned", "errors", "quarantined")
        self._read_lock = threading.Lock()
        self._open()
        self._last_prune = time.monotonic()
        self._prune()
        self._writer_thread: StoreWriter[dict[str, Any], None] = StoreWriter(
            label="incident store", path=self.path,
            pending=LatestPending(lambda d: d["id"]),
            write=lambda batch: self._write(batch),  # looked up per call: tests wrap it
            maintain=self._prune_due, reopen=self._reopen_fresh,
            close_db=lambda: self._writer.close(), counters=self._counters,
            idle_s=PRUNE_INTERVAL_S, logger=log, thread_name="roxd-incident-store",
            items="incident changes")

    def _setup(self, db: sqlite3.Connection) -> None:
        db.executescript(_SCHEMA)

    # ------------------------------------------------------------------ sink

    def incident_changed(self, change: IncidentChange) -> None:
        self._writer_thread.add(change.incident)

    def stats(self) -> dict[str, int]:
        out = self._counters.snapshot()
        out["queued"] = self._writer_thread.queued()
        return out

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
            with contextlib.suppress(sqlite3.Error):  # a full disk may have ended it already
                db.execute("ROLLBACK")
            raise
        self._counters.add("sent", len(batch))

    def _prune_due(self) -> None:
        if time.monotonic() - self._last_prune >= PRUNE_INTERVAL_S:
            self._prune()

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
