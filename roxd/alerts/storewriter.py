"""The writer thread of a SQLite store (alerts, incidents): queue, write, retry, report.

One mechanism for both stores, so a fix to one is a fix to both (issue 23 items 7 and the
incident store's part of it). Callers only queue (`add`); the thread takes everything pending
as one batch and hands it to the store's `write`. A batch the file refuses (disk full, I/O
error, SQLITE_BUSY: any `sqlite3.Error`) is never dropped: it goes back in front of what
arrived meanwhile and is retried with backoff (0.5 s doubling to 5 s), counted in `errors`,
and `problems()` says why until a write works again. A file found corrupt while running is
replaced by the store's `reopen` (moved aside, counted `quarantined` there) and the batch is
retried at once. Any other error is the batch's own fault (it cannot be serialised): logged,
counted `failed`, dropped; the thread goes on. Nothing ends the thread but `close()`; on close
with a file still failing, what is left is counted `failed`.

What "pending" means differs per store, so it is a small class of its own:
`FifoPending` (alerts: every item, oldest first, at most `limit`; beyond it the newest are
dropped and counted) and `LatestPending` (incidents: one entry per key, the latest state wins,
also over a batch that failed and comes back).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from roxd.alerts.diskqueue import is_corrupt, open_wal, quarantine_file
from roxd.alerts.worker import SinkCounters

T = TypeVar("T")
R = TypeVar("R")

FAULT_BACKOFF_START_S = 0.5
FAULT_BACKOFF_MAX_S = 5.0


class Pending(Protocol[T]):
    def add(self, item: T) -> bool: ...  # False: refused (full), counted by the writer
    def take(self) -> list[T]: ...
    def put_back(self, batch: Sequence[T]) -> int: ...  # how many had to be dropped
    def __len__(self) -> int: ...


class FifoPending(Generic[T]):
    """Every item, oldest first, at most `limit` (0: unbounded)."""

    def __init__(self, limit: int = 0) -> None:
        self.limit = limit
        self._items: collections.deque[T] = collections.deque()

    def add(self, item: T) -> bool:
        if self.limit and len(self._items) >= self.limit:
            return False
        self._items.append(item)
        return True

    def take(self) -> list[T]:
        batch = list(self._items)
        self._items.clear()
        return batch

    def put_back(self, batch: Sequence[T]) -> int:
        """The failed batch goes first again; the newest beyond `limit` go."""
        self._items.extendleft(reversed(batch))
        over = len(self._items) - self.limit if self.limit else 0
        for _ in range(max(0, over)):
            self._items.pop()
        return max(0, over)

    def __len__(self) -> int:
        return len(self._items)


class LatestPending(Generic[T]):
    """One entry per key, the latest wins: ten changes of one incident are one row written."""

    def __init__(self, key: Callable[[T], Hashable]) -> None:
        self._key = key
        self._items: dict[Hashable, T] = {}

    def add(self, item: T) -> bool:
        self._items[self._key(item)] = item
        return True

    def take(self) -> list[T]:
        batch = list(self._items.values())
        self._items.clear()
        return batch

    def put_back(self, batch: Sequence[T]) -> int:
        """The failed batch goes first again, except where a newer state arrived meanwhile."""
        newer = self._items
        self._items = {self._key(i): i for i in batch}
        self._items.update(newer)
        return 0

    def __len__(self) -> int:
        return len(self._items)


def connect_wal(path: Path) -> sqlite3.Connection:
    """A connection to a WAL-mode SQLite file, autocommit, usable from the writer thread and
    the readers. A file that is not a database or is damaged is moved aside and a fresh one
    made (roxd/alerts/diskqueue.py)."""
    return open_wal(path, _read_schema)


def _read_schema(db: sqlite3.Connection) -> None:
    db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()  # NOTADB, CORRUPT show here


class StoreFile:
    """A store's SQLite file and its writer thread (`_writer_thread`, a StoreWriter): the
    writer's connection (its thread's) and the readers' (under `_read_lock`). A corrupt file
    is moved aside at open and, found while running, by `_reopen_fresh` (the writer's
    `reopen`); both counted `quarantined`. The subclass sets
    `path`, `_counters` (with "quarantined") and `_read_lock`, and says how a fresh or opened
    file is set up (`_setup`: its schema)."""

    path: Path
    _counters: SinkCounters
    _read_lock: threading.Lock
    _writer: sqlite3.Connection
    _reader: sqlite3.Connection
    _writer_thread: StoreWriter[Any, Any]

    def flush(self, timeout: float = 5.0) -> bool:
        return self._writer_thread.flush(timeout)

    def problems(self) -> list[str]:
        """Why items are not being stored right now (empty when they are): /v1/health."""
        return self._writer_thread.problems()

    def close(self, timeout: float = 5.0) -> None:
        self._writer_thread.close(timeout)
        with self._read_lock:
            self._reader.close()

    def _setup(self, db: sqlite3.Connection) -> None:
        raise NotImplementedError

    def _open(self) -> None:
        self._writer = open_wal(self.path, self._setup,
                                lambda _to: self._counters.add("quarantined"))
        self._reader = connect_wal(self.path)

    def _reopen_fresh(self, reason: str) -> None:
        """The file went bad while running: move it aside, start an empty one."""
        with self._read_lock:
            for db in (self._writer, self._reader):
                with contextlib.suppress(sqlite3.Error):
                    db.close()
            if self.path.exists():
                quarantine_file(self.path, reason)
                self._counters.add("quarantined")
            self._open()


class StoreWriter(Generic[T, R]):
    """Owns the pending items and the thread that writes them.

    `write(batch)` writes one batch in one transaction and returns what `written(result)`
    (called on the thread, outside the lock) hands on, e.g. to live subscribers.
    `maintain()` runs after each successful write and every `idle_s` when idle (pruning);
    its errors count like the write's. `reopen(reason)` replaces a corrupt file.
    """

    def __init__(self, *, label: str, path: Path, pending: Pending[T],
                 write: Callable[[list[T]], R], counters: SinkCounters,
                 written: Callable[[R], None] | None = None,
                 maintain: Callable[[], None] | None = None,
                 reopen: Callable[[str], None] | None = None,
                 close_db: Callable[[], None] | None = None,
                 idle_s: float = 60.0, logger: logging.Logger | None = None,
                 thread_name: str = "roxd-store", items: str = "items") -> None:
        self.label = label  # "alert store", "incident store": how problems and logs name it
        self.path = path
        self._pending = pending
        self._write = write
        self._written = written
        self._maintain = maintain
        self._reopen = reopen
        self._close_db = close_db
        self._counters = counters  # needs "errors" besides the usual sent/failed/dropped
        self._idle_s = idle_s
        self._log = logger or logging.getLogger("roxd.alerts.storewriter")
        self._items = items
        self._cond = threading.Condition()
        self._busy = 0
        self._stopping = False
        self.problem: str | None = None  # why items are not being written, for /v1/health
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ callers

    def add(self, item: T) -> None:
        with self._cond:
            if self._stopping or not self._pending.add(item):
                self._counters.add("dropped")
                return
            self._cond.notify()

    def queued(self) -> int:
        with self._cond:
            return len(self._pending) + self._busy

    def flush(self, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._pending) or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def problems(self) -> list[str]:
        """Why items are not being written right now (empty when they are)."""
        with self._cond:
            out = [self.problem] if self.problem else []
        if not self._thread.is_alive() and not self._stopping:
            out.append(f"{self.label}: its writer thread has stopped (see roxd's log)")
        return out

    def close(self, timeout: float = 5.0) -> None:
        self.flush(timeout)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout)

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        backoff = FAULT_BACKOFF_START_S
        idle_since = time.monotonic()
        try:
            while True:
                with self._cond:
                    while not len(self._pending) and not self._stopping:
                        self._cond.wait(self._idle_s)
                        if time.monotonic() - idle_since >= self._idle_s:
                            break  # idle long enough: maintenance only
                    if self._stopping and not len(self._pending):
                        return
                    batch = self._pending.take()
                    self._busy = len(batch)
                result = None
                retry = False
                try:
                    if batch:
                        result = self._write(batch)
                    if self._maintain is not None:
                        self._maintain()
                    idle_since = time.monotonic()
                except Exception as exc:
                    retry = self._failed(exc, batch)
                else:  # `write` counts what it sent (rows new to the store)
                    backoff = FAULT_BACKOFF_START_S
                    if self.problem is not None:
                        self._log.info("%s: %s works again", self.label, self.path)
                        with self._cond:
                            self.problem = None
                with self._cond:
                    self._busy = 0
                    if retry and batch:
                        dropped = self._pending.put_back(batch)
                        if dropped:
                            self._counters.add("dropped", dropped)
                    self._cond.notify_all()
                    if retry and not self._stopping:  # new items do not cut the wait short
                        retry_at = time.monotonic() + backoff
                        while not self._stopping and (left := retry_at - time.monotonic()) > 0:
                            self._cond.wait(left)
                        backoff = min(backoff * 2, FAULT_BACKOFF_MAX_S)
                    elif retry:  # stopping with a failing file: what is left is lost
                        self._counters.add("failed", len(self._pending))
                        self._pending.take()
                        return
                if result is not None and self._written is not None:
                    self._written(result)
        finally:
            if self._close_db is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._close_db()

    def _failed(self, exc: BaseException, batch: list[T]) -> bool:
        """Handle a failed write; True when the batch is to be retried."""
        self._counters.add("errors")
        if is_corrupt(exc) and self._reopen is not None:
            try:
                self._reopen(str(exc))
                return True
            except Exception as again:
                exc = again
        if not isinstance(exc, sqlite3.Error):  # not the file's fault: these items' own
            self._log.error("%s: cannot store %d %s", self.label, len(batch), self._items,
                            exc_info=(type(exc), exc, exc.__traceback__))
            self._counters.add("failed", len(batch))
            return False
        first = self.problem is None
        with self._cond:
            self.problem = (f"{self.label}: {self.path} cannot be written "
                            f"({type(exc).__name__}: {exc}); {self._items} wait in memory and "
                            "are retried")
        if first:
            self._log.error("%s", self.problem)
        return True
