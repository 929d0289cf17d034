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
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path

from roxd.alerts.diskqueue import DiskQueue
from roxd.alerts.rfc5424 import format_message
from roxd.alerts.settings import SyslogCollector
from roxd.alerts.transport import SyslogConnection
from roxd.alerts.worker import SinkCounters
from roxd.model import Alert

log = logging.getLogger("roxd.alerts.syslog")

BATCH = 256
BACKOFF_START_S = 0.25


class SyslogForwarder:
    def __init__(self, collector: SyslogCollector, state_dir: Path, *,
                 inbox_max: int = 10_000,
                 formatter: Callable[[Alert], bytes] | None = None) -> None:
        self.collector = collector
        self.queue_path = Path(state_dir) / "alerts" / f"syslog-{collector.queue_name}.db"
        self._disk = DiskQueue(self.queue_path, collector.queue_max)
        hostname = collector.hostname or socket.gethostname()
        self._format = formatter or (lambda a: format_message(
            a, hostname=hostname, app_name=collector.app_name, facility=collector.facility))
        self._conn = SyslogConnection(collector)
        self._inbox: collections.deque[Alert] = collections.deque()
        self._inbox_max = inbox_max
        self._moving = 0  # taken from the inbox, not yet on disk
        self._cond = threading.Condition()
        self._stop_deadline: float | None = None
        self._counters = SinkCounters("reconnects")
        self._counters.set("queued", len(self._disk))
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
            with self._cond:
                self._cond.notify()
            time.sleep(0.02)
        return False

    def close(self, timeout: float = 5.0) -> None:
        """Persist what is in memory, try to send the backlog until `timeout`, stop."""
        with self._cond:
            self._stop_deadline = time.monotonic() + timeout
            self._cond.notify_all()
        self._thread.join(timeout + 1.0)
        if self._thread.is_alive():
            log.warning("syslog %s: sender did not stop within %.1fs", self.target, timeout)

    # ------------------------------------------------------------------ sender thread

    def _run(self) -> None:
        backoff = BACKOFF_START_S
        next_try = 0.0
        try:
            while True:
                with self._cond:
                    batch = list(self._inbox)
                    self._inbox.clear()
                    self._moving = len(batch)
                    stop_deadline = self._stop_deadline
                self._persist(batch)
                with self._cond:
                    self._moving = 0
                if stop_deadline is not None:
                    self._drain_until(stop_deadline)
                    return
                if len(self._disk) and time.monotonic() >= next_try:
                    if self._send_batch():
                        backoff = BACKOFF_START_S
                        continue
                    next_try = time.monotonic() + backoff
                    backoff = min(backoff * 2, max(self.collector.backoff_max_s, 0.1))
                with self._cond:
                    if self._inbox or self._stop_deadline is not None:
                        continue
                    wait = max(0.0, next_try - time.monotonic()) if len(self._disk) else None
                    self._cond.wait(wait)
        except Exception:
            log.exception("syslog %s: sender thread failed", self.target)
        finally:
            self._conn.close()
            self._disk.close()

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
        while len(self._disk) and time.monotonic() < deadline:
            if not self._send_batch():
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
            if self._down_since is None:
                self._down_since = time.monotonic()
                log.warning("syslog %s: cannot deliver (%s); alerts queue on disk at %s",
                            self.target, exc, self.queue_path)
            self._forget(last_sent)
            return False
        if self._down_since is not None:
            log.info("syslog %s: collector is back after %.0fs, delivering %d queued alerts",
                     self.target, time.monotonic() - self._down_since, len(self._disk))
            self._down_since = None
        self._forget(last_sent)
        return True

    def _forget(self, last_sent: int | None) -> None:
        if last_sent is not None:
            self._disk.remove_through(last_sent)
        self._counters.set("queued", len(self._disk))
