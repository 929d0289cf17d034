"""A bounded FIFO of messages in SQLite (WAL), one file per syslog collector or exporter.

Why SQLite and not an append-only segment file: deleting what was delivered, dropping the
oldest when full and surviving a crash mid-write are each one statement in a transaction,
with no compaction or offset file of our own; sqlite3 is in the standard library.

Bounded in messages (`max_items`) and, when `max_bytes` is given, in the bytes of the messages:
beyond either, the oldest are dropped and push() says how many.

Only one thread uses a DiskQueue (the collector's sender thread).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS queue (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    created_ns INTEGER NOT NULL,
    msg BLOB NOT NULL
);
"""


class DiskQueue:
    def __init__(self, path: Path, max_items: int, max_bytes: int = 0) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._max = max(1, max_items)
        self._max_bytes = max_bytes  # 0 = bounded in messages only
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        count, size = self._db.execute("SELECT COUNT(*), TOTAL(LENGTH(msg)) FROM queue").fetchone()
        self._count = int(count)
        self._bytes = int(size)

    def __len__(self) -> int:
        return self._count

    @property
    def size_bytes(self) -> int:
        """The bytes of the queued messages (what max_bytes bounds)."""
        return self._bytes

    def push(self, items: Sequence[tuple[int, bytes]]) -> int:
        """Append (created_ns, msg) items; returns how many of the oldest were dropped."""
        if not items:
            return 0
        with self._transaction():
            self._db.executemany("INSERT INTO queue (created_ns, msg) VALUES (?, ?)", items)
            self._count += len(items)
            self._bytes += sum(len(m) for _, m in items)
            over = max(0, self._count - self._max)
            if self._max_bytes and self._bytes > self._max_bytes:
                over = max(over, self._over_bytes())
            if over > 0:
                (freed,) = self._db.execute(
                    "SELECT TOTAL(LENGTH(msg)) FROM (SELECT msg FROM queue ORDER BY seq "
                    "LIMIT ?)", (over,)).fetchone()
                self._db.execute(
                    "DELETE FROM queue WHERE seq IN "
                    "(SELECT seq FROM queue ORDER BY seq LIMIT ?)", (over,))
                self._count -= over
                self._bytes -= int(freed)
        return over

    def _over_bytes(self) -> int:
        """How many of the oldest messages must go to fit max_bytes (always keeps the newest,
        even when it alone is larger)."""
        excess, n = self._bytes - self._max_bytes, 0
        for (size,) in self._db.execute("SELECT LENGTH(msg) FROM queue ORDER BY seq"):
            if excess <= 0 or n >= self._count - 1:
                break
            excess -= int(size)
            n += 1
        return n

    def peek(self, limit: int) -> list[tuple[int, bytes]]:
        rows = self._db.execute("SELECT seq, msg FROM queue ORDER BY seq LIMIT ?", (limit,))
        return [(int(seq), bytes(msg)) for seq, msg in rows]

    def remove_through(self, seq: int) -> None:
        """Forget every message up to and including seq (they were sent)."""
        with self._transaction():
            (freed,) = self._db.execute(
                "SELECT TOTAL(LENGTH(msg)) FROM queue WHERE seq <= ?", (seq,)).fetchone()
            cur = self._db.execute("DELETE FROM queue WHERE seq <= ?", (seq,))
            self._count -= cur.rowcount
            self._bytes -= int(freed)

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
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")
