"""NATS JetStream exporter: every alert to `<subject_prefix>.<node>.alerts`, acknowledged,
de-duplicated, queued on disk, in order.

    sink = JetStreamSink(NatsSettings(servers=("nats://10.0.0.5:4222",)), state_dir, node)
    sink.emit(alert)        # appends to an in-memory inbox and returns
    sink.stats()            # sent, failed, queued, dropped, reconnects, duplicates
    sink.close(timeout)     # persists the inbox, tries to publish the backlog, stops

emit() never waits on the network. The sink's own thread runs its own asyncio loop for nats-py
(roxd's event loop never sees it). That thread moves the inbox into an SQLite queue in the
state dir (`DiskQueue`, the syslog forwarders' queue), publishes from the queue's head with
the header `Nats-Msg-Id: <alert id>`, and deletes a message only after JetStream acknowledged
it (a PubAck: the message is stored, in memory or on disk as the stream's storage says).
Up to `max_inflight` publishes are awaiting their acknowledgement at once; the queue moves
forward only over an unbroken run of acknowledgements, so what follows a failure is sent
again, and the stream's de-duplication drops the copies it already has.

After every (re)connection the sink reads the last message the stream holds on its subject:
when its Nats-Msg-Id is still in the queue (stored, but the acknowledgement was lost with the
connection or with the previous roxd), everything up to it is forgotten without resending.
That keeps the stream free of duplicates even when the outage outlasted the stream's
duplicate window, as long as this node is the only publisher on its subject.

Delivery is at-least-once from the queue's point of view and exactly-once in the stream.
Order per node is kept: one thread, one connection, one subject, the queue's order.
A server that cannot be reached, refuses the credentials or has no stream for the subject is
one warning line (then one line when delivery works again) and counters, never an exception
out of emit() or a blocked caller.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import ssl
import threading
import time
from pathlib import Path
from typing import Any

from roxd.alerts.diskqueue import DiskQueue
from roxd.alerts.node import NodeIdentity
from roxd.alerts.record import encode_record, export_record
from roxd.alerts.settings import NatsSettings
from roxd.alerts.worker import SinkCounters
from roxd.model import Alert

log = logging.getLogger("roxd.alerts.nats")

BACKOFF_START_S = 0.25
MSG_ID = "Nats-Msg-Id"
# How far into the queue the post-connect check looks for the stream's last message id.
RECONCILE_ROWS_MIN = 1024


class JetStreamUnavailable(RuntimeError):
    """nats-py is not installed: the sink cannot start (logged by AlertDelivery)."""


def _nats() -> Any:
    try:
        import nats  # optional dependency: imported only when configured
    except ImportError as exc:
        raise JetStreamUnavailable(
            "the NATS client (Python package nats-py) is not installed; "
            "pip install nats-py") from exc
    return nats


class JetStreamSink:
    def __init__(self, settings: NatsSettings, state_dir: Path | str, node: NodeIdentity, *,
                 inbox_max: int = 10_000) -> None:
        self._nats = _nats()
        self.settings = settings
        self.node = node
        self.subject = f"{settings.subject_prefix}.{node.token}.alerts"
        self.queue_path = Path(state_dir) / "alerts" / f"nats-{settings.queue_name}.db"
        self._disk = DiskQueue(self.queue_path, settings.queue_max)
        self._inbox: collections.deque[Alert] = collections.deque()
        self._inbox_max = inbox_max
        self._moving = 0  # taken from the inbox, not yet on disk
        self._cond = threading.Condition()
        self._stop_deadline: float | None = None
        self._counters = SinkCounters("reconnects", "duplicates")
        self._counters.set("queued", len(self._disk))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._nc: Any = None
        self._js: Any = None
        self._connections = 0
        self._down_since: float | None = None
        self._stream_checked = False
        self._last_error: BaseException | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"roxd-nats-{settings.stream}",
                                        daemon=True)
        self._thread.start()
        self._ready.wait(5.0)

    @property
    def target(self) -> str:
        return ",".join(self.settings.servers)

    # ------------------------------------------------------------------ caller side

    def emit(self, alert: Alert) -> None:
        with self._cond:
            if self._stop_deadline is not None or len(self._inbox) >= self._inbox_max:
                self._counters.add("dropped")
                return
            self._inbox.append(alert)
        self._poke()

    def stats(self) -> dict[str, int]:
        out = self._counters.snapshot()
        with self._cond:
            out["queued"] += len(self._inbox) + self._moving
        return out

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until nothing is left to publish (for tests and orderly shutdown)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.stats()["queued"] == 0:
                return True
            self._poke()
            time.sleep(0.02)
        return False

    def close(self, timeout: float = 5.0) -> None:
        """Persist what is in memory, try to publish the backlog until `timeout`, stop."""
        with self._cond:
            self._stop_deadline = time.monotonic() + timeout
        self._poke()
        self._thread.join(timeout + 2.0)
        if self._thread.is_alive():
            log.warning("nats %s: sender did not stop within %.1fs", self.target, timeout)

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
            log.exception("nats %s: sender thread failed", self.target)
        finally:
            self._loop = None
            loop.close()
            self._disk.close()
            self._ready.set()

    async def _main(self) -> None:
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._ready.set()
        backoff = BACKOFF_START_S
        next_try = 0.0
        try:
            while True:
                self._wake.clear()
                with self._cond:
                    batch = list(self._inbox)
                    self._inbox.clear()
                    self._moving = len(batch)
                    stop_deadline = self._stop_deadline
                self._persist(batch)
                with self._cond:
                    self._moving = 0
                if stop_deadline is not None:
                    await self._drain_until(stop_deadline)
                    return
                if len(self._disk) and time.monotonic() >= next_try:
                    if await self._publish_window():
                        backoff = BACKOFF_START_S
                        continue
                    next_try = time.monotonic() + backoff
                    backoff = min(backoff * 2, max(self.settings.backoff_max_s, 0.1))
                with self._cond:
                    if self._inbox or self._stop_deadline is not None:
                        continue
                wait = max(0.0, next_try - time.monotonic()) if len(self._disk) else None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
        finally:
            await self._disconnect()

    def _persist(self, alerts: list[Alert]) -> None:
        if not alerts:
            return
        items = []
        for alert in alerts:
            try:
                payload = encode_record(export_record(alert, self.node))
            except Exception:
                log.exception("nats %s: cannot encode alert %s", self.target, alert.id)
                self._counters.add("failed")
                continue
            # alert ids are hex or "folded-<hex>": never a newline, so one blob holds both
            items.append((alert.time_ns, alert.id.encode("ascii", "replace") + b"\n" + payload))
        dropped = self._disk.push(items)
        if dropped:
            self._counters.add("dropped", dropped)
            log.warning("nats %s: disk queue full (%d), dropped the %d oldest alerts",
                        self.target, self.settings.queue_max, dropped)
        self._counters.set("queued", len(self._disk))

    async def _drain_until(self, deadline: float) -> None:
        while len(self._disk) and time.monotonic() < deadline:
            try:
                ok = await asyncio.wait_for(self._publish_window(),
                                            max(0.05, deadline - time.monotonic()))
            except TimeoutError:
                ok = False
            if not ok:
                break
        if len(self._disk):
            log.info("nats %s: %d alerts stay queued on disk for the next start",
                     self.target, len(self._disk))

    # ------------------------------------------------------------------ NATS

    async def _publish_window(self) -> bool:
        """Publish up to max_inflight queued messages; forget the acknowledged run. False when
        nothing could be published (then the caller backs off)."""
        try:
            await self._ensure_connected()
        except Exception as exc:
            self._failed(exc)
            return False
        rows = self._disk.peek(self.settings.max_inflight)
        if not rows:
            return True
        pending: list[tuple[int, asyncio.Future[Any]]] = []
        last_acked: int | None = None
        try:
            for seq, blob in rows:
                msg_id, _, payload = blob.partition(b"\n")
                fut = await self._js.publish_async(
                    self.subject, payload, stream=self.settings.stream,
                    headers={MSG_ID: msg_id.decode("ascii", "replace")})
                pending.append((seq, fut))
            deadline = time.monotonic() + self.settings.ack_timeout_s
            for seq, fut in pending:
                ack = await asyncio.wait_for(fut, max(0.01, deadline - time.monotonic()))
                last_acked = seq
                self._counters.add("sent")
                if ack.duplicate:
                    self._counters.add("duplicates")
        except Exception as exc:
            for _, fut in pending:
                fut.cancel()
            self._forget(last_acked)
            self._failed(exc)
            # start over on a fresh connection: the stream is checked again (a server that lost
            # its store gets it re-created) and the last-message check runs before resending
            self._stream_checked = False
            await self._disconnect()
            return last_acked is not None
        self._forget(last_acked)
        if self._down_since is not None:
            log.info("nats %s: delivering again after %.0fs, %d alerts queued", self.target,
                     time.monotonic() - self._down_since, len(self._disk))
            self._down_since = None
        return True

    async def _ensure_connected(self) -> None:
        if self._nc is not None and self._nc.is_connected:
            return
        await self._disconnect()
        s = self.settings
        opts: dict[str, Any] = {
            "servers": list(s.servers), "name": f"roxd {self.node.name}",
            "allow_reconnect": False, "connect_timeout": s.connect_timeout_s,
            # each server is tried twice, 0.1 s apart, then connect() gives up: the backoff
            # between attempts is this sink's own
            "error_cb": self._on_error, "max_reconnect_attempts": 1, "reconnect_time_wait": 0.1,
        }
        if s.user:
            opts.update(user=s.user, password=s.password)
        if s.token:
            opts["token"] = s.token
        tls = self._tls_context()
        if tls is not None:
            opts["tls"] = tls
            if s.server_name:
                opts["tls_hostname"] = s.server_name
        self._last_error = None
        try:
            nc = await asyncio.wait_for(self._nats.connect(**opts),
                                        2 * len(s.servers) * (s.connect_timeout_s + 0.2) + 1)
        except Exception as exc:
            # "no servers available" hides why: the error callback saw the real reason
            cause = self._last_error
            if cause is not None and cause is not exc:
                raise ConnectionError(f"{_describe(exc)}; last error: {_describe(cause)}") \
                    from exc
            raise
        self._nc = nc
        self._js = nc.jetstream(timeout=s.ack_timeout_s,
                                publish_async_max_pending=max(s.max_inflight, 1))
        self._connections += 1
        if self._connections > 1:
            self._counters.add("reconnects")
        try:
            if not self._stream_checked:
                await self._ensure_stream()
                self._stream_checked = True
            await self._reconcile()
        except BaseException:
            await self._disconnect()  # the next attempt starts with both checks again
            raise

    def _tls_context(self) -> ssl.SSLContext | None:
        s = self.settings
        if not (s.ca or s.cert or s.server_name
                or any(u.startswith("tls://") for u in s.servers)):
            return None
        ctx = ssl.create_default_context(cafile=s.ca or None)
        if s.cert:
            ctx.load_cert_chain(s.cert, s.key)
        return ctx

    async def _ensure_stream(self) -> None:
        from nats.js.api import StorageType, StreamConfig
        from nats.js.errors import NotFoundError

        s = self.settings
        try:
            await self._js.stream_info(s.stream)
            return
        except NotFoundError:
            if not s.create_stream:
                raise RuntimeError(f"stream {s.stream} does not exist and create_stream is "
                                   "false") from None
        config = StreamConfig(
            name=s.stream, subjects=[f"{s.subject_prefix}.*.alerts"],
            storage=StorageType.FILE, num_replicas=s.stream_replicas,
            duplicate_window=s.duplicate_window_s,
            max_age=s.stream_max_age_days * 86400.0 if s.stream_max_age_days else None)
        await self._js.add_stream(config)
        log.info("nats %s: created stream %s for %s.*.alerts", self.target, s.stream,
                 s.subject_prefix)

    async def _reconcile(self) -> None:
        """Forget queued messages the stream already holds (acknowledgement lost)."""
        from nats.js.errors import NotFoundError

        if not len(self._disk):
            return
        try:
            last = await self._js.get_last_msg(self.settings.stream, self.subject)
        except NotFoundError:
            return
        last_id = (last.headers or {}).get(MSG_ID, "").encode("ascii", "replace")
        if not last_id:
            return
        rows = self._disk.peek(max(RECONCILE_ROWS_MIN, 2 * self.settings.max_inflight))
        for i, (seq, blob) in enumerate(rows):
            if blob.partition(b"\n")[0] == last_id:
                self._forget(seq)
                self._counters.add("sent", i + 1)
                log.info("nats %s: the stream already held %d queued alerts (acknowledgement "
                         "lost); not sending them again", self.target, i + 1)
                return

    async def _disconnect(self) -> None:
        nc, self._nc, self._js = self._nc, None, None
        if nc is None:
            return
        try:
            await asyncio.wait_for(nc.close(), 2.0)
        except Exception:
            log.debug("nats %s: close failed", self.target, exc_info=True)

    async def _on_error(self, exc: Exception) -> None:
        self._last_error = exc
        log.debug("nats %s: %s", self.target, exc)

    def _failed(self, exc: BaseException) -> None:
        self._counters.add("failed")
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.warning("nats %s: cannot publish to %s (%s); alerts queue on disk at %s",
                        self.target, self.subject, _describe(exc), self.queue_path)

    def _forget(self, last: int | None) -> None:
        if last is not None:
            self._disk.remove_through(last)
        self._counters.set("queued", len(self._disk))


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
