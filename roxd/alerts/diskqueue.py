"""A bounded FIFO of messages in SQLite (WAL), one file per syslog collector or NATS stream,
and the SQLite file handling every roxd store shares (the alert and incident stores too).

Why SQLite and not an append-only segment file: deleting what was delivered, dropping the
oldest when full and surviving a crash mid-write are each one statement in a transaction,
with no compaction or offset file of our own; sqlite3 is in the standard library.

A file that is not a database, or whose pages are damaged (SQLITE_NOTADB, SQLITE_CORRUPT:
power loss on a filesystem that lied about fsync, a disk error, someone's editor), is never
fatal: `open_wal` moves it and its -wal/-shm files aside as `<name>.corrupt-<utc time>`, logs
one line naming both paths, counts it (`quarantined_files()`) and starts a fresh file. What
the bad file held is not delivered; the moved file is kept for whoever wants to look. Any
other SQLite error (disk full, I/O error, read-only) leaves the file alone: the caller retries.

Only one thread uses a DiskQueue (its sink's sender thread).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("roxd.alerts")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS queue (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    created_ns INTEGER NOT NULL,
    msg BLOB NOT NULL
);
"""

# sqlite3 error names that mean "this file is damaged", not "try again later"
_CORRUPT = {"SQLITE_CORRUPT", "SQLITE_NOTADB"}


@dataclass(frozen=True)
class Quarantined:
    path: str  # the file that was bad
    moved_to: str
    reason: str
    time_ns: int


_quarantined: list[Quarantined] = []
_quarantine_lock = threading.Lock()


def quarantined_files() -> list[Quarantined]:
    """Every store or queue file this process moved aside as corrupt."""
    with _quarantine_lock:
        return list(_quarantined)


def is_corrupt(exc: BaseException) -> bool:
    """A damaged file (move it aside), not a passing condition (disk full, locked: retry)."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    name = getattr(exc, "sqlite_errorname", None) or ""
    if any(name == c or name.startswith(c + "_") for c in _CORRUPT):  # SQLITE_CORRUPT_VTAB...
        return True
    text = str(exc)
    return "not a database" in text or "malformed" in text


def quarantine_file(path: Path, reason: str) -> Path:
    """Move a bad SQLite file (and its WAL and shared-memory files) aside; log, count."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    os.replace(path, target)
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            os.replace(side, target.with_name(target.name + suffix))
    log.error("%s is not a usable SQLite database (%s): moved to %s, starting a fresh one "
              "(what it held is not delivered)", path, reason, target)
    with _quarantine_lock:
        _quarantined.append(Quarantined(str(path), str(target), reason, time.time_ns()))
    return target


def connect_wal(path: Path) -> sqlite3.Connection:
    """A connection to a WAL-mode SQLite file, autocommit, usable from the writer thread and
    the readers. Raises sqlite3.Error as it comes (open_wal handles corrupt files)."""
    db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=10.0)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
    except BaseException:
        db.close()
        raise
    return db


def open_wal(path: Path, setup: Callable[[sqlite3.Connection], None],
             on_quarantine: Callable[[Path], None] | None = None) -> sqlite3.Connection:
    """connect_wal, then `setup` (schema, first reads); a corrupt file is quarantined and a
    fresh one made (once). Other errors (disk full, permissions) are raised to the caller."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for attempt in (1, 2):
        db: sqlite3.Connection | None = None
        try:
            db = connect_wal(path)
            setup(db)
            return db
        except sqlite3.DatabaseError as exc:
            if db is not None:
                db.close()
            if attempt == 2 or not is_corrupt(exc) or not path.exists():
                raise
            moved = quarantine_file(path, str(exc))
            if on_quarantine is not None:
                on_quarantine(moved)
    raise AssertionError("unreachable")


class DiskQueue:
    """Bounded by count and, when max_bytes > 0, by the bytes of its messages: an alert an
    attacker pads to the limit costs its bytes, not one row of a count."""

    def __init__(self, path: Path, max_items: int, max_bytes: int = 0) -> None:
        self.path = path
        self._max = max(1, max_items)
        self._max_bytes = max(0, max_bytes)
        self._count = 0
        self._bytes = 0
        # Rows up to this seq were delivered; a DELETE the disk refused (full) is owed and
        # retried (`retry_delete`, or the next remove_through): peek never returns them again
        # and they are not counted, so a full disk does not mean sending them again and again.
        self._gone_through = 0
        self._delete_owed = False
        self.quarantined = 0  # corrupt files this queue moved aside
        self._db = open_wal(path, self._setup, self._moved)

    def _moved(self, _to: Path) -> None:
        self.quarantined += 1

    def _setup(self, db: sqlite3.Connection) -> None:
        db.executescript(_SCHEMA)
        count, size = db.execute("SELECT COUNT(*), TOTAL(length(msg)) FROM queue").fetchone()
        self._count, self._bytes = int(count), int(size)
        self._gone_through, self._delete_owed = 0, False

    def __len__(self) -> int:
        return self._count

    @property
    def size_bytes(self) -> int:
        """The bytes of the queued messages (what max_bytes bounds)."""
        return self._bytes

    @property
    def bytes(self) -> int:
        return self._bytes

    def push(self, items: Sequence[tuple[int, bytes]]) -> int:
        """Append (created_ns, msg) items; returns how many of the oldest were dropped (over
        the count or the byte bound). All or nothing: on an error nothing was added. A file
        found corrupt is replaced and the push tried once more on the fresh one (every user
        of the queue gets this: the syslog forwarders and the NATS exporter)."""
        try:
            return self._push(items)
        except sqlite3.DatabaseError as exc:
            if not is_corrupt(exc):
                raise
            self.reopen_fresh(str(exc))
            return self._push(items)

    def _push(self, items: Sequence[tuple[int, bytes]]) -> int:
        if not items:
            return 0
        count = self._count + len(items)
        size = self._bytes + sum(len(m) for _, m in items)
        dropped = freed = 0
        last: int | None = None
        with self._transaction():
            self._db.executemany("INSERT INTO queue (created_ns, msg) VALUES (?, ?)", items)
            if count > self._max or (self._max_bytes and size > self._max_bytes):
                for seq, n in self._db.execute(
                        "SELECT seq, length(msg) FROM queue WHERE seq > ? ORDER BY seq",
                        (self._gone_through,)).fetchall():
                    if count - dropped <= self._max and (
                            not self._max_bytes or size - freed <= self._max_bytes):
                        break
                    if dropped == count - 1:  # the newest stays, even larger than the bound
                        break
                    dropped, freed, last = dropped + 1, freed + int(n), seq
                if last is not None:
                    self._db.execute("DELETE FROM queue WHERE seq <= ?", (last,))
        self._count, self._bytes = count - dropped, size - freed  # only once committed
        if last is not None:
            self._gone_through, self._delete_owed = max(self._gone_through, last), False
        return dropped

    def probe(self) -> None:
        """Write and delete one empty row: raises while the file cannot be written."""
        with self._transaction():
            cur = self._db.execute("INSERT INTO queue (created_ns, msg) VALUES (0, x'')")
            self._db.execute("DELETE FROM queue WHERE seq = ?", (cur.lastrowid,))

    def peek(self, limit: int) -> list[tuple[int, bytes]]:
        rows = self._db.execute("SELECT seq, msg FROM queue WHERE seq > ? ORDER BY seq LIMIT ?",
                                (self._gone_through, limit))
        return [(int(seq), bytes(msg)) for seq, msg in rows]

    def remove_through(self, seq: int) -> None:
        """Forget every message up to and including seq (they were sent). They are gone from
        peek() and len() even when the disk refuses the DELETE (full: SQLite needs room in its
        write-ahead log to delete); then this raises and the DELETE is owed (`retry_delete`)."""
        if seq > self._gone_through:
            removed, freed = self._db.execute(
                "SELECT COUNT(*), TOTAL(length(msg)) FROM queue WHERE seq > ? AND seq <= ?",
                (self._gone_through, seq)).fetchone()
            self._count -= int(removed)
            self._bytes -= int(freed)
            self._gone_through = seq
        elif not self._delete_owed:
            return
        self._delete_owed = True
        with self._transaction():
            self._db.execute("DELETE FROM queue WHERE seq <= ?", (self._gone_through,))
        self._delete_owed = False

    @property
    def delete_owed(self) -> bool:
        """Delivered messages are still in the file (a DELETE failed); retry_delete() retries."""
        return self._delete_owed

    def retry_delete(self) -> None:
        """The DELETE a full disk refused, again; raises while it still fails."""
        if self._delete_owed:
            self.remove_through(self._gone_through)

    def reopen_fresh(self, reason: str) -> Path:
        """The file went bad under us: move it aside and start an empty queue."""
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        moved = quarantine_file(self.path, reason) if self.path.exists() else self.path
        self.quarantined += 1
        self._count = self._bytes = 0
        self._gone_through, self._delete_owed = 0, False
        self._db = open_wal(self.path, self._setup, self._moved)
        return moved

    def close(self) -> None:
        self._db.close()

    def _transaction(self) -> _Tx:
        return _Tx(self._db)


class _Tx:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            try:
                self._db.execute("COMMIT")
                return
            except sqlite3.Error:  # e.g. disk full at commit: the transaction is still open
                self._rollback()
                raise
        self._rollback()

    def _rollback(self) -> None:
        # no transaction left to roll back: SQLite rolled it back itself
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("ROLLBACK")
