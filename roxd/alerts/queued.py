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

The syslog forwarder (syslog.py) has the same shape on a plain thread; it predates this class.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import contextlib
import logging
import threading
import time
from pathlib import Path
from typing import Any

from roxd.alerts.diskqueue import DiskQueue
from roxd.alerts.worker import SinkCounters

BACKOFF_START_S = 0.25
RETRY_AFTER_MAX_S = 600.0
INBOX_WARN_EVERY_S = 10.0  # a receiver asking for more is still retried after 10 minutes


class QueuedExporter(abc.ABC):
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
        self._disk = DiskQueue(queue_path, queue_max, queue_max_bytes)
        self._inbox: collections.deque[Any] = collections.deque()
        self._inbox_max = inbox_max
        self._inbox_drops = 0  # since the last warning (the sender thread logs them)
        self._inbox_warned = 0.0
        self._moving = 0  # taken from the inbox, not yet on disk
        self._cond = threading.Condition()
        self._stop_deadline: float | None = None
        self._counters = SinkCounters("queued_bytes", *extra_counters)
        self._sync_queued()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._send_wake = asyncio.Event()  # replaced on the sender thread's loop
        self._down_since: float | None = None
        self._retry_after: float | None = None
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
        except Exception:
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
        in-memory inbox."""
        self._wake = asyncio.Event()
        self._send_wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._ready.set()
        sender = asyncio.create_task(self._sender())
        try:
            while True:
                self._wake.clear()
                stop_deadline = self._persist_inbox()
                if stop_deadline is not None:
                    break
                self._send_wake.set()
                if sender.done():  # a bug in the sender: re-raised, logged by _run
                    sender.result()
                await self._wake.wait()
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
            await self._disconnect()
            with contextlib.suppress(Exception):
                await asyncio.get_running_loop().shutdown_default_executor()

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
        finally:
            with self._cond:
                self._moving = 0
        return stop_deadline

    async def _sender(self) -> None:
        backoff = BACKOFF_START_S
        next_try = 0.0
        while self._stop_deadline is None:
            self._send_wake.clear()
            if len(self._disk) and time.monotonic() >= next_try:
                self._retry_after = None
                if await self._send_window():
                    backoff = BACKOFF_START_S
                    # a steady stream keeps the queue busy: the heartbeat (when due) must not
                    # wait for a quiet moment, or a busy node looks dead to the fleet
                    await self._idle()
                    continue
                delay = backoff
                if self._retry_after is not None:  # the receiver said when
                    delay = min(max(self._retry_after, 0.0), RETRY_AFTER_MAX_S)
                next_try = time.monotonic() + delay
                backoff = min(backoff * 2, max(self._backoff_max_s, 0.1))
            await self._idle()
            if self._stop_deadline is not None:
                return
            wait = max(0.0, next_try - time.monotonic()) if len(self._disk) else None
            idle = self._idle_every_s()
            if idle is not None:
                wait = idle if wait is None else min(wait, idle)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._send_wake.wait(), wait)

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
        dropped = self._disk.push(rows)
        if dropped:
            self._counters.add("dropped", dropped)
            self._log.warning("%s %s: disk queue full (%d messages or %d bytes), dropped the "
                              "%d oldest", self.kind, self.target, self._queue_max,
                              self._queue_max_bytes, dropped)
        self._sync_queued()

    async def _drain_until(self, deadline: float) -> None:
        while len(self._disk) and time.monotonic() < deadline:
            try:
                ok = await asyncio.wait_for(self._send_window(),
                                            max(0.05, deadline - time.monotonic()))
            except TimeoutError:
                ok = False
            if not ok:
                break
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
        if last is not None:
            self._disk.remove_through(last)
        self._sync_queued()

    def _sync_queued(self) -> None:
        self._counters.set("queued", len(self._disk))
        self._counters.set("queued_bytes", self._disk.size_bytes)


def describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
