"""The part every store-and-forward exporter shares: an inbox, a disk queue, a sender thread
with its own asyncio loop, backoff, and the counters. NATS JetStream (jetstream.py) and
OTLP over HTTP (otlp.py) are subclasses; each says only how a record is encoded and how a
window of queued records is sent.

    class MyExporter(QueuedExporter):
        def _encode(self, item) -> bytes: ...             # on the sender thread
        async def _send_window(self) -> bool: ...         # send from the queue's head
        async def _disconnect(self) -> None: ...

    sink.emit(alert)              # alerts (AlertDelivery's fan-out)
    sink.incident_changed(change) # incident changes (the incident tracker), same queue
    sink.stats()                  # sent, failed, queued, queued_bytes, dropped, + extras
    sink.close(timeout)           # persist the inbox, try to send the backlog, stop

emit() and incident_changed() never wait on the network nor on the disk: they append to an
in-memory inbox and return (a full inbox drops and counts). The sender thread moves the inbox
into an SQLite queue in the state dir (`DiskQueue`, bounded in messages and bytes; the oldest
beyond either bound are dropped, counted and logged), sends from the queue's head in order, and
deletes a message only after the receiver acknowledged it. A failure is one warning line until
delivery works again (then one info line), a `failed` count, and a retry after an exponential
backoff, or after the receiver's Retry-After when it gave one. A roxd restart carries on from
the queue on disk.

A queue file the disk refuses (full, I/O error) never stops the exporter: what it already
holds stays there and is sent, new records are held in memory behind it (at most `inbox_max`,
beyond that the newest are dropped and counted), the failures are counted
(`storage_errors`), health names the file and the error (`problems()`), and the file is
tried again with backoff; once it takes writes, what memory held moves to it, in order.
Records held in memory are sent from there too once the file's records are gone (SIGKILL loses
them: they were never on disk).

Both tasks of the sender thread are supervised: an exception out of one (a bug, or a library
future cancelled under it) is logged once with its traceback, counted (`restarts`), shown in
health for ten minutes, and the task is started again after a backoff. Nothing but close()
ends sending, and a sender thread that is gone anyway is a health problem too.

The syslog forwarder (syslog.py) has the same shape on a plain thread; it predates this class
and shares with it only StoreAndForward (the backlog count and flush()).
"""

from __future__ import annotations

import abc
import asyncio
import collections
import contextlib
import itertools
import logging
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from roxd.alerts.diskqueue import DiskQueue
from roxd.alerts.worker import SinkCounters

BACKOFF_START_S = 0.25
RETRY_AFTER_MAX_S = 600.0
INBOX_WARN_EVERY_S = 10.0  # a receiver asking for more is still retried after 10 minutes
# Records the queue file refused are held in memory with sequence numbers from here on (the
# file's own AUTOINCREMENT numbers stay far below), so one `_forget(seq)` covers both.
HELD_SEQ_BASE = 1 << 62
STORAGE_RETRY_START_S = 0.5
STORAGE_RETRY_MAX_S = 30.0
TASK_RESTART_START_S = 0.5
TASK_RESTART_MAX_S = 30.0
CRASH_SHOWN_S = 600.0  # a task crash stays in health this long after the last one


class StoreAndForward:
    """What every inbox -> disk queue -> sender forwarder answers alike (QueuedExporter and the
    syslog forwarder): its counters, with "queued" covering what still waits in memory too,
    and flush(). The forwarder sets the fields below and says how to wake its sender."""

    _counters: SinkCounters  # "queued" in it: what the disk queue holds
    _cond: threading.Condition  # guards _inbox and _moving
    _inbox: collections.deque[Any]
    _moving: int  # taken from the inbox, not yet on disk

    def stats(self) -> dict[str, int]:
        out = self._counters.snapshot()
        with self._cond:
            out["queued"] += len(self._inbox) + self._moving
        return out

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until nothing is left to send (for tests and orderly shutdown)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.stats()["queued"] == 0:
                return True
            self._poke()
            time.sleep(0.02)
        return False

    def _poke(self) -> None:
        """Wake the sender (it may be waiting out a backoff)."""
        raise NotImplementedError


class QueuedExporter(StoreAndForward, abc.ABC):
    """Subclasses set `kind` ("nats", "otlp": the log prefix) and implement the abstract
    methods; `_retry_after` may be set by `_send_window` to delay the next attempt."""

    kind = "exporter"

    def __init__(self, *, queue_path: Path, queue_max: int, queue_max_bytes: int,
                 backoff_max_s: float, log: logging.Logger, thread_name: str,
                 extra_counters: tuple[str, ...] = (), inbox_max: int = 10_000) -> None:
        self.queue_path = queue_path
        self._queue_max = queue_max
        self._queue_max_bytes = queue_max_bytes
        self._backoff_max_s = backoff_max_s
        self._log = log
        self._inbox: collections.deque[Any] = collections.deque()
        self._inbox_max = inbox_max
        self._inbox_drops = 0  # since the last warning (the sender thread logs them)
        self._inbox_warned = 0.0
        self._moving = 0  # taken from the inbox, not yet on disk
        self._cond = threading.Condition()
        self._stop_deadline: float | None = None
        self._counters = SinkCounters("queued_bytes", "storage_errors", "restarts",
                                      *extra_counters)
        # records the queue file refused: (seq from HELD_SEQ_BASE, created_ns, blob), in order,
        # all of them after the file's records; only the sender thread touches them
        self._held: collections.deque[tuple[int, int, bytes]] = collections.deque()
        self._held_seq = itertools.count(HELD_SEQ_BASE)
        self._held_bytes = 0
        self._held_drops = 0
        self._storage_error: str | None = None  # why the queue file fails, while it does
        self._storage_retry_at = 0.0
        self._storage_backoff = STORAGE_RETRY_START_S
        self._problem_lock = threading.Lock()
        self._crashes: dict[str, tuple[int, float, str]] = {}  # task: count, when, why
        self._tasks: dict[str, asyncio.Task[Any]] = {}  # _extra_tasks and their watchdog
        self._unstick: set[str] = set()  # tasks the watchdog cancelled (restart, not stop)
        self._sender_task: asyncio.Task[Any] | None = None
        self._window_started: float | None = None  # when the running send attempt began
        self._disk: DiskQueue | UnopenedQueue
        try:
            self._disk = DiskQueue(queue_path, queue_max, queue_max_bytes)
        except (sqlite3.Error, OSError) as exc:  # a full disk at start: memory until it opens
            self._disk = UnopenedQueue(queue_path)
            self._storage_failed(exc)
        self._sync_queued()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._send_wake = asyncio.Event()  # replaced on the sender thread's loop
        self._down_since: float | None = None
        self._retry_after: float | None = None
        self._next_try = 0.0  # the sender's next attempt (monotonic), after a failure
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)

    def _start_thread(self) -> None:
        """Called by the subclass at the end of its __init__ (its fields are set by then)."""
        self._thread.start()
        self._ready.wait(5.0)

    @property
    @abc.abstractmethod
    def target(self) -> str:
        """Where records go, for log lines."""

    @abc.abstractmethod
    def _encode(self, item: Any) -> bytes | None:
        """An alert or an IncidentChange as the bytes the queue keeps; None to skip it."""

    @abc.abstractmethod
    async def _send_window(self) -> bool:
        """Send from the queue's head, forget what was acknowledged (`_forget`). False when
        nothing could be sent: the caller backs off."""

    @abc.abstractmethod
    async def _disconnect(self) -> None: ...

    async def _idle(self) -> None:
        """Called on every pass of the sender loop (heartbeats): must not block for long.
        Nothing to do by default."""
        return

    def _idle_every_s(self) -> float | None:
        """How often the loop wakes up for _idle() when nothing else happens (None: never)."""
        return None

    def _extra_tasks(self) -> dict[str, Callable[[], Awaitable[None]]]:
        """More tasks of their own on the sender thread's loop (NATS: heartbeats), supervised
        like the sender, cancelled at close()."""
        return {}

    def _stalled(self) -> dict[str, float]:
        """Tasks that should have made progress and did not: name -> seconds since they last
        did (checked every second on the loop; a stalled task is cancelled and restarted).
        The sender is stalled when one send attempt has run longer than `_window_bound_s`."""
        bound, started = self._window_bound_s(), self._window_started
        if bound is None or started is None:
            return {}
        since = time.monotonic() - started
        return {"sender": since} if since > bound else {}

    def _window_bound_s(self) -> float | None:
        """The longest one send attempt (connecting included) may take; None: not watched."""
        return None

    # ------------------------------------------------------------------ caller side

    def emit(self, item: Any) -> None:
        with self._cond:
            if self._stop_deadline is not None or len(self._inbox) >= self._inbox_max:
                self._inbox_drops += 1
                self._counters.add("dropped")
                return
            self._inbox.append(item)
        self._poke()

    def incident_changed(self, change: Any) -> None:
        """An incident opened, grew or closed (IncidentTracker's sinks): queued like alerts."""
        self.emit(change)

    def problems(self) -> list[str]:
        """Why this exporter is not working as it should (empty when it is): /v1/health."""
        out = []
        with self._problem_lock:
            storage = self._storage_error
            crashes = dict(self._crashes)
        if storage is not None:
            out.append(f"its queue file {self.queue_path} fails ({storage}); new records are "
                       f"held in memory (at most {self._inbox_max}) and the file is retried")
        now = time.monotonic()
        for task, (count, when, why) in sorted(crashes.items()):
            if now - when < CRASH_SHOWN_S:
                out.append(f"its {task} task crashed {count} time{'s' if count > 1 else ''}, "
                           f"last {now - when:.0f}s ago ({why}); restarted")
        if not self._thread.is_alive() and self._stop_deadline is None:
            out.append("its sender thread has stopped (see roxd's log)")
        return out

    def close(self, timeout: float = 5.0) -> None:
        """Persist what is in memory, try to send the backlog until `timeout`, stop."""
        with self._cond:
            if self._stop_deadline is None:
                self._stop_deadline = time.monotonic() + timeout
        self._poke()
        self._thread.join(timeout + 2.0)
        if self._thread.is_alive():
            self._log.warning("%s %s: sender did not stop within %.1fs", self.kind, self.target,
                              timeout)

    def _poke(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is None or wake is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: the thread is gone
            loop.call_soon_threadsafe(wake.set)

    # ------------------------------------------------------------------ sender thread

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._main())
        except (Exception, asyncio.CancelledError):
            self._log.exception("%s %s: sender thread failed", self.kind, self.target)
        finally:
            self._loop = None
            loop.close()
            self._disk.close()
            self._ready.set()

    async def _main(self) -> None:
        """Two tasks on this thread's loop: this one moves the inbox to disk whenever emit()
        wakes it, the sender sends from the disk queue. While the sender waits on the network
        the inbox keeps moving to disk, so a burst is bounded by the disk queue, not by the
        in-memory inbox. Both are supervised (`_supervise`)."""
        self._wake = asyncio.Event()
        self._send_wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._ready.set()
        sender = asyncio.create_task(self._supervise("sender", self._sender))
        self._sender_task = sender
        self._tasks = {name: asyncio.create_task(self._supervise(name, body))
                       for name, body in self._extra_tasks().items()}
        if self._tasks or self._window_bound_s() is not None:
            self._tasks["watchdog"] = asyncio.create_task(
                self._supervise("watchdog", self._watchdog))
        try:
            stop_deadline = await self._supervise("inbox", self._mover)
            if stop_deadline is None:  # crashed while stopping
                stop_deadline = self._stop_deadline or time.monotonic()
            await self._cancel_extra_tasks()
            self._send_wake.set()
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(sender),
                                       max(0.05, stop_deadline - time.monotonic()))
            if not sender.done():
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sender
            self._persist_inbox()
            await self._drain_until(stop_deadline)
        finally:
            if not sender.done():
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await sender
            await self._cancel_extra_tasks()
            await self._disconnect()
            with contextlib.suppress(Exception):
                await asyncio.get_running_loop().shutdown_default_executor()

    async def _mover(self) -> float:
        """Move the inbox to disk whenever emit() wakes us; the stop deadline at close()."""
        assert self._wake is not None
        while True:
            self._wake.clear()
            stop_deadline = self._persist_inbox()
            if stop_deadline is not None:
                return stop_deadline
            self._send_wake.set()
            await self._wake.wait()

    async def _cancel_extra_tasks(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        for task in self._tasks.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _watchdog(self) -> None:
        """A task that stopped making progress (an await that never returns) is cancelled:
        its supervisor counts it as a crash and starts it again."""
        while True:
            await asyncio.sleep(1.0)
            for name, since in self._stalled().items():
                task = self._sender_task if name == "sender" else self._tasks.get(name)
                if task is None or task.done() or name in self._unstick:
                    continue
                self._unstick.add(name)
                self._log.debug("%s %s: the %s task made no progress for %.0fs: restarting it",
                                self.kind, self.target, name, since)
                task.cancel()

    async def _supervise(self, task: str, body: Callable[[], Awaitable[Any]]) -> Any:
        """Run `body` until it returns (only close() makes it return); an exception out of it
        is logged once, counted, shown in health, and the body started again after a backoff.
        A CancelledError nobody asked for (a library cancelled a future we were awaiting)
        counts as a crash too: only cancelling this task itself stops it."""
        delay = TASK_RESTART_START_S
        while True:
            began = time.monotonic()
            try:
                return await body()
            except asyncio.CancelledError as exc:
                me = asyncio.current_task()
                if task in self._unstick and me is not None and self._stop_deadline is None:
                    self._unstick.discard(task)  # the watchdog's: stalled, start it again
                    me.uncancel()
                    self._crashed(task, TimeoutError(f"the {task} task made no progress"))
                elif me is None or me.cancelling() or self._stop_deadline is not None:
                    raise
                else:
                    self._crashed(task, exc)
            except Exception as exc:
                self._crashed(task, exc)
            if time.monotonic() - began > TASK_RESTART_MAX_S:
                # it ran well for a while: a crash now is not one of a series, so the restart
                # is not delayed by the backoff of crashes long past (up to 30 s, during which
                # a sender sends nothing)
                delay = TASK_RESTART_START_S
            end = time.monotonic() + delay
            while self._stop_deadline is None and time.monotonic() < end:
                await asyncio.sleep(min(0.2, end - time.monotonic()))  # close() cuts it short
            if self._stop_deadline is not None:
                return None
            delay = min(delay * 2, TASK_RESTART_MAX_S)

    def _crashed(self, task: str, exc: BaseException) -> None:
        self._counters.add("restarts")
        reason = describe(exc)
        with self._problem_lock:
            count = self._crashes.get(task, (0, 0.0, ""))[0] + 1
            self._crashes[task] = (count, time.monotonic(), reason)
        if count == 1:  # once with its traceback; the counter and health say the rest
            self._log.error("%s %s: the %s task crashed (%s); restarting it, further crashes "
                            "are counted (restarts) and shown in health", self.kind,
                            self.target, task, reason, exc_info=exc)
        else:
            self._log.debug("%s %s: the %s task crashed again (%s)", self.kind, self.target,
                            task, reason)

    def _persist_inbox(self) -> float | None:
        """Move the inbox to disk; the stop deadline when close() was called."""
        with self._cond:
            batch = list(self._inbox)
            self._inbox.clear()
            self._moving = len(batch)
            stop_deadline = self._stop_deadline
            drops = self._inbox_drops
            if drops and time.monotonic() - self._inbox_warned >= INBOX_WARN_EVERY_S:
                self._inbox_drops = 0
                self._inbox_warned = time.monotonic()
            else:
                drops = 0
        if drops:  # emit() cannot log (it runs on roxd's event loop): said here, at most
            # once per INBOX_WARN_EVERY_S
            self._log.warning("%s %s: %d records dropped: more arrived than the disk queue "
                              "took (in-memory inbox of %d full)", self.kind, self.target,
                              drops, self._inbox_max)
        try:
            self._persist(batch)
        except BaseException:
            with self._cond:  # a bug: nothing taken is lost, it is tried again
                self._inbox.extendleft(reversed(batch))
            raise
        finally:
            with self._cond:
                self._moving = 0
        return stop_deadline

    def _reachable_again(self) -> None:
        """Another task of this loop (NATS: the heartbeat) reached the receiver: the sender
        tries now instead of sleeping out its backoff (up to backoff_max_s, 30 s by default,
        after an outage). Its backoff itself is kept: when sending fails again it waits as
        long as it would have, so a receiver that takes connections but refuses the records
        is not hammered."""
        if self._next_try > time.monotonic():
            self._next_try = 0.0
            self._send_wake.set()

    async def _sender(self) -> None:
        backoff = BACKOFF_START_S
        self._next_try = 0.0
        while self._stop_deadline is None:
            self._send_wake.clear()
            self._retry_storage()
            if self._backlog() and time.monotonic() >= self._next_try:
                self._retry_after = None
                if await self._send_window_or_storage_error():
                    backoff = BACKOFF_START_S
                    # a steady stream keeps the queue busy: the heartbeat (when due) must not
                    # wait for a quiet moment, or a busy node looks dead to the fleet
                    await self._idle()
                    continue
                delay = backoff
                if self._retry_after is not None:  # the receiver said when
                    delay = min(max(self._retry_after, 0.0), RETRY_AFTER_MAX_S)
                self._next_try = time.monotonic() + delay
                backoff = min(backoff * 2, max(self._backoff_max_s, 0.1))
            await self._idle()
            if self._stop_deadline is not None:
                return
            waits = []
            if self._backlog():
                waits.append(self._next_try - time.monotonic())
            if self._storage_error is not None:
                waits.append(self._storage_retry_at - time.monotonic())
            idle = self._idle_every_s()
            if idle is not None:
                waits.append(idle)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._send_wake.wait(),
                                       max(0.0, min(waits)) if waits else None)

    async def _send_window_or_storage_error(self) -> bool:
        """_send_window; a queue file that cannot be read is a failed attempt (backoff), not
        a crash."""
        self._window_started = time.monotonic()
        try:
            return await self._send_window()
        except sqlite3.Error as exc:
            self._storage_failed(exc)
            return False
        finally:
            self._window_started = None

    def _persist(self, items: list[Any]) -> None:
        if not items:
            return
        rows = []
        for item in items:
            try:
                blob = self._encode(item)
            except Exception:
                self._log.exception("%s %s: cannot encode %s", self.kind, self.target,
                                    type(item).__name__)
                self._counters.add("failed")
                continue
            if blob is not None:
                rows.append((int(getattr(item, "time_ns", 0)), blob))
        self._store(rows)

    def _store(self, rows: list[tuple[int, bytes]]) -> None:
        """Rows to the queue file; to memory while the file fails or memory still holds some
        (the order stays: the file's, then memory's, then these)."""
        if not rows:
            return
        if self._held or self._storage_error is not None:
            self._hold(rows)
            return
        try:
            dropped = self._disk.push(rows)
        except (sqlite3.Error, OSError) as exc:  # full, I/O error (a corrupt file is replaced)
            self._storage_failed(exc)
            self._hold(rows)
            return
        if dropped:
            self._counters.add("dropped", dropped)
            self._log.warning("%s %s: disk queue full (%d messages or %d bytes), dropped the "
                              "%d oldest", self.kind, self.target, self._queue_max,
                              self._queue_max_bytes, dropped)
        self._sync_queued()

    def _hold(self, rows: list[tuple[int, bytes]]) -> None:
        room = max(0, self._inbox_max - len(self._held))
        for created_ns, blob in rows[:room]:
            self._held.append((next(self._held_seq), created_ns, blob))
            self._held_bytes += len(blob)
        over = len(rows) - room
        if over > 0:
            self._counters.add("dropped", over)
            if not self._held_drops:
                self._log.warning("%s %s: %d records held in memory while the queue file "
                                  "fails (at most %d): newer ones are dropped and counted",
                                  self.kind, self.target, len(self._held), self._inbox_max)
            self._held_drops += over
        self._sync_queued()

    def _retry_storage(self) -> None:
        """While the queue file fails: try it again when due (the owed DELETE, then what
        memory holds, or a probe write); it works again when that succeeds."""
        if self._storage_error is None or time.monotonic() < self._storage_retry_at:
            return
        try:
            if isinstance(self._disk, UnopenedQueue):  # could not be opened at start
                self._disk = DiskQueue(self.queue_path, self._queue_max, self._queue_max_bytes)
            self._disk.retry_delete()
            if self._held:
                dropped = self._disk.push([(c, b) for _, c, b in self._held])
                if dropped:
                    self._counters.add("dropped", dropped)
                self._held.clear()
                self._held_bytes = 0
            else:
                self._disk.probe()
        except (sqlite3.Error, OSError) as exc:
            self._storage_failed(exc)
            return
        self._log.info("%s %s: the queue file %s works again", self.kind, self.target,
                       self.queue_path)
        with self._problem_lock:
            self._storage_error = None
        self._storage_backoff = STORAGE_RETRY_START_S
        self._held_drops = 0
        self._sync_queued()

    def _storage_failed(self, exc: BaseException) -> None:
        """The queue file refused a write or read: count, say so once (and in health), and
        retry it with backoff."""
        self._counters.add("storage_errors")
        first = self._storage_error is None
        with self._problem_lock:
            self._storage_error = describe(exc)
        self._storage_retry_at = time.monotonic() + self._storage_backoff
        self._storage_backoff = min(self._storage_backoff * 2, STORAGE_RETRY_MAX_S)
        if first:
            self._log.error("%s %s: the queue file %s fails (%s); records queued there stay, "
                            "new ones are held in memory until it works again", self.kind,
                            self.target, self.queue_path, describe(exc))

    def _backlog(self) -> int:
        """Records waiting to be sent: the queue file's and what memory holds."""
        return len(self._disk) + len(self._held)

    def _peek(self, limit: int) -> list[tuple[int, bytes]]:
        """Up to `limit` (seq, blob) from the head: the file's records first, then the ones
        memory holds (their seqs are from HELD_SEQ_BASE). May raise sqlite3.Error."""
        rows = self._disk.peek(limit) if len(self._disk) else []
        if len(rows) < limit and len(rows) == len(self._disk):
            rows += [(seq, blob) for seq, _, blob in
                     itertools.islice(self._held, limit - len(rows))]
        return rows

    async def _drain_until(self, deadline: float) -> None:
        while self._backlog() and time.monotonic() < deadline:
            self._storage_retry_at = 0.0
            self._retry_storage()
            try:
                ok = await asyncio.wait_for(self._send_window_or_storage_error(),
                                            max(0.05, deadline - time.monotonic()))
            except TimeoutError:
                ok = False
            if not ok:
                break
        self._storage_retry_at = 0.0
        self._retry_storage()  # what memory still holds: to the file, for the next start
        if self._held:
            self._counters.add("dropped", len(self._held))
            self._log.warning("%s %s: %d records held in memory (the queue file fails) are "
                              "lost at shutdown", self.kind, self.target, len(self._held))
            self._held.clear()
            self._held_bytes = 0
            self._sync_queued()
        if len(self._disk):
            self._log.info("%s %s: %d records stay queued on disk for the next start",
                           self.kind, self.target, len(self._disk))

    # ------------------------------------------------------------------ for subclasses

    def _failed(self, exc: BaseException | str, what: str = "") -> None:
        """One warning when delivery stops working, a count every time."""
        self._counters.add("failed")
        if self._down_since is None:
            self._down_since = time.monotonic()
            reason = exc if isinstance(exc, str) else describe(exc)
            self._log.warning("%s %s: cannot deliver%s (%s); records queue on disk at %s",
                              self.kind, self.target, f" to {what}" if what else "", reason,
                              self.queue_path)

    def _delivered(self) -> None:
        if self._down_since is not None:
            self._log.info("%s %s: delivering again after %.0fs, %d records queued", self.kind,
                           self.target, time.monotonic() - self._down_since, len(self._disk))
            self._down_since = None

    def _forget(self, last: int | None) -> None:
        """Everything up to seq `last` was delivered (the file's and memory's records). A
        DELETE the disk refuses is owed, not repeated sending (DiskQueue.remove_through)."""
        if last is not None:
            try:
                if last < HELD_SEQ_BASE:
                    self._disk.remove_through(last)
                elif len(self._disk):  # the window took every record of the file first
                    self._disk.remove_through(HELD_SEQ_BASE - 1)
            except (sqlite3.Error, OSError) as exc:
                self._storage_failed(exc)
            while self._held and self._held[0][0] <= last:
                self._held_bytes -= len(self._held.popleft()[2])
        self._sync_queued()

    def _sync_queued(self) -> None:
        self._counters.set("queued", len(self._disk) + len(self._held))
        self._counters.set("queued_bytes", self._disk.size_bytes + self._held_bytes)


class UnopenedQueue:
    """Stands for a queue file that could not be opened at start (full disk, I/O error): it
    holds nothing, and every write fails, so records are held in memory until
    `_retry_storage` opens the real one."""

    size_bytes = 0
    delete_owed = False

    def __init__(self, path: Path) -> None:
        self.path = path

    def __len__(self) -> int:
        return 0

    def peek(self, limit: int) -> list[tuple[int, bytes]]:
        return []

    def push(self, items: Any) -> int:
        raise sqlite3.OperationalError(f"{self.path} could not be opened")

    def probe(self) -> None:
        self.push(())

    def remove_through(self, seq: int) -> None:
        return

    def retry_delete(self) -> None:
        return

    def close(self) -> None:
        return


def describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
