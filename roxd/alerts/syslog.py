"""Syslog forwarding: RFC 5424 alerts to one collector, queued on disk, sent by its own thread.

emit() appends the alert to an in-memory inbox and returns. The collector's sender thread moves
the inbox into an SQLite queue in the state dir, then sends from the queue's head in order and
deletes a message only after its send succeeded. While the collector is unreachable, messages
stay on disk (the oldest are dropped, and counted, beyond `queue_max`) and the thread retries
with exponential backoff. A new forwarder on the same state dir (a roxd restart) carries on
where the last one stopped.

Delivery is at-least-once and in order for TCP and TLS: a send() that the kernel accepted can
still be lost if the collector dies before reading it, and a crash between a send and the
queue update re-sends that message after restart. The connection is checked before every
message, so a collector that closed its side is never written to. UDP is best-effort: a
datagram to a collector that is down is lost (the next send fails and is queued).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import socket
import sqlite3
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from roxd.alerts.diskqueue import DiskQueue, is_corrupt
from roxd.alerts.queued import StoreAndForward
from roxd.alerts.rfc5424 import format_incident_message, format_message
from roxd.alerts.settings import SyslogCollector
from roxd.alerts.transport import SyslogConnection
from roxd.alerts.worker import SinkCounters
from roxd.model import Alert

log = logging.getLogger("roxd.alerts.syslog")

BATCH = 256
BACKOFF_START_S = 0.25
# a failing queue file (disk full, I/O error) is tried again after this, doubling up to the max
FAULT_BACKOFF_START_S = 0.5
FAULT_BACKOFF_MAX_S = 5.0


INCIDENT_CHANGES = ("opened", "phase_added", "container_added", "action", "closed")


@dataclass(frozen=True, slots=True)
class Preformatted:
    """A message formatted before it is queued (an incident change): the inbox's other
    kind of item beside Alert; `id` names it in logs."""

    time_ns: int
    id: str
    msg: bytes


class SyslogForwarder(StoreAndForward):
    def __init__(self, collector: SyslogCollector, state_dir: Path, *,
                 inbox_max: int = 10_000,
                 formatter: Callable[[Alert], bytes] | None = None) -> None:
        self.collector = collector
        self.queue_path = Path(state_dir) / "alerts" / f"syslog-{collector.queue_name}.db"
        self._disk = DiskQueue(self.queue_path, collector.queue_max,  # corrupt: moved aside
                               collector.queue_max_bytes)
        hostname = collector.hostname or socket.gethostname()
        format_alert = formatter or (lambda a: format_message(
            a, hostname=hostname, app_name=collector.app_name, facility=collector.facility))
        # the inbox carries alerts and incident changes already formatted (Preformatted)
        self._format = lambda a: a.msg if isinstance(a, Preformatted) else format_alert(a)
        self._hostname = hostname
        self._conn = SyslogConnection(collector)
        self._inbox: collections.deque[Alert] = collections.deque()
        self._inbox_max = inbox_max
        self._moving = 0  # taken from the inbox, not yet on disk
        self._cond = threading.Condition()
        self._stop_deadline: float | None = None
        self._counters = SinkCounters("reconnects", "errors", "quarantined")
        self._problem: str | None = None  # why delivery is impaired, for /v1/health
        self._storage_retry_at: float | None = None  # set while the queue file fails
        self._storage_backoff = FAULT_BACKOFF_START_S
        self._counters.set("queued", len(self._disk))
        self._counters.set("quarantined", self._disk.quarantined)
        self._down_since: float | None = None
        self._thread = threading.Thread(target=self._run, name=f"roxd-syslog-{self.target}",
                                        daemon=True)
        self._thread.start()

    @property
    def target(self) -> str:
        c = self.collector
        return f"{c.protocol}://{c.address}:{c.port}"

    # ------------------------------------------------------------------ event-loop side

    def emit(self, alert: Alert) -> None:
        with self._cond:
            if self._stop_deadline is not None or len(self._inbox) >= self._inbox_max:
                self._counters.add("dropped")
                return
            self._inbox.append(alert)
            self._cond.notify()

    def incident_changed(self, change: Any) -> None:
        """An incident change (roxd/incidents) as one RFC 5424 message, MSGID `incident`,
        through the same inbox, disk queue and connection as the alerts; plain `updated`
        changes (one more alert in a phase already reached) send nothing."""
        if change.kind not in INCIDENT_CHANGES:
            return
        c = self.collector
        try:
            msg = format_incident_message(change, hostname=self._hostname,
                                          app_name=c.app_name, facility=c.facility)
        except Exception:
            log.exception("syslog %s: cannot format incident change", self.target)
            self._counters.add("failed")
            return
        self.emit(Preformatted(change.time_ns, f"incident-{change.incident['id']}", msg))  # type: ignore[arg-type]

    def _poke(self) -> None:
        with self._cond:
            self._cond.notify()

    def close(self, timeout: float = 5.0) -> None:
        """Persist what is in memory, try to send the backlog until `timeout`, stop."""
        with self._cond:
            self._stop_deadline = time.monotonic() + timeout
            self._cond.notify_all()
        self._thread.join(timeout + 1.0)
        if self._thread.is_alive():
            log.warning("syslog %s: sender did not stop within %.1fs", self.target, timeout)

    def problems(self) -> list[str]:
        """Why this forwarder is not delivering as it should (empty when it is): the health
        endpoint reports each one."""
        out = []
        with self._cond:
            problem = self._problem
        if problem is not None:
            out.append(problem)
        if not self._thread.is_alive() and self._stop_deadline is None:
            out.append("its sender thread has stopped (see roxd's log)")
        return out

    # ------------------------------------------------------------------ sender thread

    def _run(self) -> None:
        try:
            self._serve()
        finally:
            self._conn.close()
            with contextlib.suppress(Exception):
                self._disk.close()

    def _serve(self) -> None:
        """The sender's loop. Nothing ends it but close(): a failing queue file is retried
        with backoff (alerts wait in memory, and are sent from memory while the collector
        answers), a corrupt one is replaced, and an unexpected error is logged and retried."""
        backoff = BACKOFF_START_S
        next_try = 0.0
        while True:
            try:
                with self._cond:
                    batch = list(self._inbox)
                    self._inbox.clear()
                    self._moving = len(batch)
                    stop_deadline = self._stop_deadline
                if self._storage_retry_at is not None and self._storage_due():
                    try:  # nothing to write, or not: is the file writable again?
                        self._disk.probe()
                        self._storage_ok()
                    except Exception as exc:
                        self._storage_failed(exc)
                if batch and self._storage_due():
                    try:
                        self._persist(batch)
                        batch = []
                        self._storage_ok()
                    except Exception as exc:
                        self._storage_failed(exc)
                if batch:  # the queue file cannot take them: forward from memory
                    if time.monotonic() >= next_try or stop_deadline is not None:
                        batch = self._send_direct(batch)
                        if batch:
                            next_try = time.monotonic() + backoff
                            backoff = min(backoff * 2, max(self.collector.backoff_max_s, 0.1))
                    self._requeue(batch)
                with self._cond:
                    self._moving = 0
                if stop_deadline is not None:
                    self._drain_until(stop_deadline)
                    return
                if len(self._disk) and time.monotonic() >= next_try:
                    try:
                        sent = self._send_batch()
                    except sqlite3.Error as exc:  # peek or delete failed: the file's fault
                        self._storage_failed(exc)
                        sent = False
                    if sent:
                        backoff = BACKOFF_START_S
                        continue
                    next_try = time.monotonic() + backoff
                    backoff = min(backoff * 2, max(self.collector.backoff_max_s, 0.1))
                with self._cond:
                    if self._stop_deadline is not None:
                        continue
                    waits = []
                    if self._storage_retry_at is not None:  # probe the file again then
                        waits.append(self._storage_retry_at - time.monotonic())
                    if len(self._disk):
                        waits.append(next_try - time.monotonic())
                    if self._inbox:
                        if self._storage_retry_at is None and time.monotonic() >= next_try:
                            continue
                        waits.append(min(next_try, self._storage_retry_at or next_try)
                                     - time.monotonic())
                    self._cond.wait(max(0.0, min(waits)) if waits else None)
            except Exception:  # a bug must not end forwarding: log, wait, go on
                log.exception("syslog %s: sender error; retrying in %.0fs", self.target,
                              FAULT_BACKOFF_MAX_S)
                self._counters.add("errors")
                with self._cond:
                    self._moving = 0
                    if self._stop_deadline is not None:
                        return
                    self._cond.wait(FAULT_BACKOFF_MAX_S)

    def _storage_due(self) -> bool:
        return self._storage_retry_at is None or time.monotonic() >= self._storage_retry_at

    def _storage_ok(self) -> None:
        if self._storage_retry_at is None:
            return
        log.info("syslog %s: the queue file %s works again", self.target, self.queue_path)
        with self._cond:
            self._storage_retry_at = None
            self._storage_backoff = FAULT_BACKOFF_START_S
            self._problem = None

    def _storage_failed(self, exc: BaseException) -> None:
        """The queue file refused a read or write: replace it when it is corrupt, else retry
        it later (disk full, I/O error), saying so in health until it works again."""
        self._counters.add("errors")
        if is_corrupt(exc):
            try:
                self._disk.reopen_fresh(str(exc))
                self._counters.set("quarantined", self._disk.quarantined)
                self._counters.set("queued", len(self._disk))
                return
            except Exception as again:
                exc = again
        first = self._storage_retry_at is None
        with self._cond:
            self._storage_retry_at = time.monotonic() + self._storage_backoff
            self._storage_backoff = min(self._storage_backoff * 2, FAULT_BACKOFF_MAX_S)
            self._problem = (f"syslog {self.target}: its queue file {self.queue_path} fails "
                             f"({type(exc).__name__}: {exc}); alerts are held in memory and "
                             "sent from there while the collector answers")
        if first:
            log.error("%s; retrying", self._problem)

    def _requeue(self, alerts: list[Alert]) -> None:
        """Alerts not yet on disk nor sent go back to the head of the inbox, in order."""
        if not alerts:
            return
        with self._cond:
            self._inbox.extendleft(reversed(alerts))
            over = len(self._inbox) - self._inbox_max
            for _ in range(max(0, over)):
                self._inbox.pop()  # the newest, as emit() does when full
        if over > 0:
            self._counters.add("dropped", over)

    def _send_direct(self, alerts: list[Alert]) -> list[Alert]:
        """Send alerts straight from memory (the queue file is failing); the unsent rest."""
        if len(self._disk):
            try:  # what is on disk is older: it goes first
                if not self._send_batch() or len(self._disk):
                    return alerts
            except sqlite3.Error:
                pass  # cannot read the file: memory must not wait for it
        for i, alert in enumerate(alerts):
            try:
                msg = self._format(alert)
            except Exception:
                log.exception("syslog %s: cannot format alert %s", self.target, alert.id)
                self._counters.add("failed")
                continue
            try:
                if not self._conn.connected or self._conn.peer_closed():
                    self._conn.connect()
                    self._counters.add("reconnects")
                self._conn.send(msg)
            except (OSError, ssl.SSLError) as exc:
                self._conn.close()
                self._counters.add("failed")
                self._collector_down(exc)
                return alerts[i:]
            self._counters.add("sent")
        self._collector_up()
        return []

    def _persist(self, alerts: list[Alert]) -> None:
        if not alerts:
            return
        items = []
        for alert in alerts:
            try:
                items.append((alert.time_ns, self._format(alert)))
            except Exception:
                log.exception("syslog %s: cannot format alert %s", self.target, alert.id)
                self._counters.add("failed")
        dropped = self._disk.push(items)
        if dropped:
            self._counters.add("dropped", dropped)
            log.warning("syslog %s: disk queue full (%d), dropped the %d oldest alerts",
                        self.target, self.collector.queue_max, dropped)
        self._counters.set("queued", len(self._disk))

    def _drain_until(self, deadline: float) -> None:
        with self._cond:  # what the queue file could not take is sent from memory, or lost
            held = list(self._inbox)
            self._inbox.clear()
        if held:
            left = self._send_direct(held)
            if left:
                self._counters.add("dropped", len(left))
                log.warning("syslog %s: %d alerts held in memory (queue file failing) were "
                            "not delivered before shutdown", self.target, len(left))
        while len(self._disk) and time.monotonic() < deadline:
            try:
                if not self._send_batch():
                    break
            except sqlite3.Error as exc:
                log.error("syslog %s: queue file fails at shutdown: %s", self.target, exc)
                break
        if len(self._disk):
            log.info("syslog %s: %d alerts stay queued on disk for the next start",
                     self.target, len(self._disk))

    def _send_batch(self) -> bool:
        rows = self._disk.peek(BATCH)
        last_sent: int | None = None
        try:
            if not self._conn.connected or self._conn.peer_closed():
                self._conn.connect()
                self._counters.add("reconnects")
            for seq, msg in rows:
                if self._conn.peer_closed():
                    raise ConnectionResetError("collector closed the connection")
                self._conn.send(msg)
                last_sent = seq
                self._counters.add("sent")
        except (OSError, ssl.SSLError) as exc:
            self._conn.close()
            self._counters.add("failed")
            self._collector_down(exc)
            self._forget(last_sent)
            return False
        self._collector_up()
        self._forget(last_sent)
        return True

    def _collector_down(self, exc: BaseException) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.warning("syslog %s: cannot deliver (%s); alerts queue on disk at %s",
                        self.target, exc, self.queue_path)

    def _collector_up(self) -> None:
        if self._down_since is not None:
            log.info("syslog %s: collector is back after %.0fs, delivering %d queued alerts",
                     self.target, time.monotonic() - self._down_since, len(self._disk))
            self._down_since = None

    def _forget(self, last_sent: int | None) -> None:
        if last_sent is not None:
            self._disk.remove_through(last_sent)
        self._counters.set("queued", len(self._disk))
