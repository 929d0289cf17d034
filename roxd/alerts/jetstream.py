"""NATS JetStream exporter: every alert to `<subject_prefix>.<node>.alerts`, every incident
change to `<subject_prefix>.<node>.incidents`, acknowledged, de-duplicated, queued on disk, in
order; and a heartbeat of the node every `heartbeat_s` into a key-value bucket.

    sink = JetStreamSink(NatsSettings(servers=("nats://10.0.0.5:4222",)), state_dir, node)
    sink.emit(alert)                # appends to an in-memory inbox and returns
    sink.incident_changed(change)   # the same, for an incident opened, grown or closed
    sink.stats()            # sent, failed, queued, dropped, reconnects, duplicates, heartbeats
    sink.close(timeout)     # persists the inbox, tries to publish the backlog, stops

The inbox, the disk queue, the sender thread and its backoff are QueuedExporter's (queued.py).
The sender thread runs its own asyncio loop for nats-py (roxd's event loop never sees it),
publishes from the queue's head with the header `Nats-Msg-Id: <alert id>` (incident changes:
`<incident id>-<change>-<time ns>`), and deletes a message only after JetStream acknowledged
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
Order per node is kept: one thread, one connection, the queue's order.

Heartbeats (`roxctl fleet nodes` reads them): key = the node's subject token in the bucket
`heartbeat_bucket` (created with history 1 when absent), value = JSON with the node identity,
roxd's version, the start time, the alerts this exporter was given by severity and its
counters. The first is sent at start, so a bad server, credentials or certificate shows up at
start even on a quiet node. They are a task of their own on the sender thread's loop, sharing
the connection (one connects at a time): they used to ride on the sender's loop, where an
exception or a CancelledError escaping them, or an await that never returned, ended them
silently on an idle node (issue 19's stale node). Now the task is supervised like the others
(logged once, `restarts`, health) and watched: when it has not attempted a heartbeat for an
interval plus the longest one may take, it is cancelled and started again. The sender is
watched the same way (one send attempt longer than `_window_bound_s`), and a heartbeat that
reaches the server wakes a sender waiting out its backoff (docs/fleet.md, "The delivery
stall").
A server that cannot be reached, refuses the credentials or has no stream for the subject is
one warning line (then one line when delivery works again) and counters, never an exception
out of emit() or a blocked caller.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from roxd import __version__
from roxd.alerts.node import NodeIdentity
from roxd.alerts.queued import QueuedExporter, describe
from roxd.alerts.record import encode_record, export_record
from roxd.alerts.settings import NatsSettings
from roxd.model import Alert, rfc3339

log = logging.getLogger("roxd.alerts.nats")

HEARTBEAT_KEEP_S = 7 * 86400.0  # a node silent for a week leaves the bucket
MSG_ID = "Nats-Msg-Id"
# How far into the queue the post-connect check looks for the stream's last message id.
RECONCILE_ROWS_MIN = 1024
ACK_POLL_S = 0.25  # how often a wait for acknowledgements looks at the connection


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


class JetStreamSink(QueuedExporter):
    kind = "nats"

    def __init__(self, settings: NatsSettings, state_dir: Path | str, node: NodeIdentity, *,
                 inbox_max: int = 10_000, clock: Callable[[], int] = time.time_ns) -> None:
        self._nats = _nats()
        self.settings = settings
        self.node = node
        self.subject = f"{settings.subject_prefix}.{node.token}.alerts"
        self.incidents_subject = f"{settings.subject_prefix}.{node.token}.incidents"
        super().__init__(
            queue_path=Path(state_dir) / "alerts" / f"nats-{settings.queue_name}.db",
            queue_max=settings.queue_max, queue_max_bytes=settings.queue_max_bytes,
            backoff_max_s=settings.backoff_max_s, log=log,
            thread_name=f"roxd-nats-{settings.stream}", inbox_max=inbox_max,
            extra_counters=("reconnects", "duplicates", "heartbeats", "heartbeat_failed"))
        self._clock = clock
        self._started_ns = clock()
        self._nc: Any = None
        self._js: Any = None
        self._kv: Any = None
        self._connections = 0
        self._stream_checked = False
        self._last_error: BaseException | None = None
        self._conn_lock: asyncio.Lock | None = None  # made on the sender thread's loop
        self._kv_nc: Any = None  # the connection self._kv was made on
        self._beat_attempt = time.monotonic()  # when the heartbeat task last began one
        self._beat_timeouts = 0  # heartbeats in a row that timed out
        self._counts_lock = threading.Lock()
        self._alert_counts: collections.Counter[str] = collections.Counter()
        self._incident_changes = 0
        self._start_thread()

    @property
    def target(self) -> str:
        return ",".join(self.settings.servers)

    def incident_changed(self, change: Any) -> None:
        if self.settings.incidents:
            self.emit(change)

    # ------------------------------------------------------------------ records

    def _encode(self, item: Any) -> bytes | None:
        if isinstance(item, Alert):
            with self._counts_lock:
                self._alert_counts[item.rule.severity.value] += 1
            # alert ids are hex or "folded-<hex>": never a newline, so one blob holds both
            return (item.id.encode("ascii", "replace") + b"\n"
                    + encode_record(export_record(item, self.node)))
        with self._counts_lock:
            self._incident_changes += 1
        record = incident_record(item, self.node)
        msg_id = f"{item.incident['id']}-{item.kind}-{item.time_ns}"
        return b"incidents " + msg_id.encode("ascii", "replace") + b"\n" + encode_record(record)

    def _unpack(self, blob: bytes) -> tuple[str, str, bytes]:
        """(subject, msg id, payload) of a queued blob; a blob without a kind is an alert
        (what an older roxd queued)."""
        head, _, payload = blob.partition(b"\n")
        kind, sep, msg_id = head.partition(b" ")
        if not sep:
            return self.subject, head.decode("ascii", "replace"), payload
        return self.incidents_subject, msg_id.decode("ascii", "replace"), payload

    # ------------------------------------------------------------------ NATS

    async def _send_window(self) -> bool:
        """Publish up to max_inflight queued messages; forget the acknowledged run. False when
        nothing could be published (then the caller backs off)."""
        try:
            nc = await self._ensure_connected()
        except Exception as exc:
            self._failed(exc, self.subject)
            return False
        js = self._js
        rows = self._peek(self.settings.max_inflight)
        if not rows:
            return True
        pending: list[tuple[int, asyncio.Future[Any]]] = []
        last_acked: int | None = None
        try:
            for seq, blob in rows:
                subject, msg_id, payload = self._unpack(blob)
                # wait_stall: nats-py's own bound on publishes awaiting acknowledgement is a
                # semaphore that, without it, is waited on for ever
                fut = await js.publish_async(
                    subject, payload, stream=self.settings.stream, headers={MSG_ID: msg_id},
                    wait_stall=self.settings.ack_timeout_s)
                pending.append((seq, fut))
            deadline = time.monotonic() + self.settings.ack_timeout_s
            for seq, fut in pending:
                ack = await _acknowledgement(nc, fut, deadline)
                last_acked = seq
                self._counters.add("sent")
                if ack.duplicate:
                    self._counters.add("duplicates")
        except Exception as exc:
            self._failed(exc, self.subject)
            # start over on a fresh connection: the stream is checked again (a server that lost
            # its store gets it re-created) and the last-message check runs before resending
            self._stream_checked = False
            await self._disconnect(nc)
            return last_acked is not None
        finally:
            # Whatever ended the window (a failure, or a CancelledError nats-py let loose
            # under an await, which the supervisor restarts the sender after): a future left
            # pending keeps one of nats-py's max_inflight publish slots on this connection
            # for ever, and once all are taken the next publish waited for ever on a
            # connection that stays up (heartbeats and all): the sender stalled for good.
            for _, fut in pending:
                if not fut.done():
                    fut.cancel()
            self._forget(last_acked)
        self._delivered()
        return True

    async def _ensure_connected(self) -> Any:
        """The connection, made when there is none: the sender and the heartbeat task share
        it, so one of them connects (and checks the stream, and reconciles) at a time."""
        if self._conn_lock is None:
            self._conn_lock = asyncio.Lock()
        async with self._conn_lock:
            if self._nc is None or not self._nc.is_connected:
                await self._connect()
            return self._nc

    async def _connect(self) -> None:
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
                raise ConnectionError(f"{describe(exc)}; last error: {describe(cause)}") \
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
        wanted = [f"{s.subject_prefix}.*.alerts"]
        if s.incidents:
            wanted.append(f"{s.subject_prefix}.*.incidents")
        try:
            info = await self._js.stream_info(s.stream)
        except NotFoundError:
            if not s.create_stream:
                raise RuntimeError(f"stream {s.stream} does not exist and create_stream is "
                                   "false") from None
        else:
            held = list(info.config.subjects or [])
            missing = [w for w in wanted if not any(subject_covers(h, w) for h in held)]
            if not missing:
                return
            if not s.create_stream:
                raise RuntimeError(f"stream {s.stream} does not take {', '.join(missing)} "
                                   "and create_stream is false")
            info.config.subjects = held + missing
            await self._js.update_stream(info.config)
            log.info("nats %s: stream %s now also takes %s", self.target, s.stream,
                     ", ".join(missing))
            return
        config = StreamConfig(
            name=s.stream, subjects=wanted,
            storage=StorageType.FILE, num_replicas=s.stream_replicas,
            duplicate_window=s.duplicate_window_s,
            max_age=s.stream_max_age_days * 86400.0 if s.stream_max_age_days else None)
        await self._js.add_stream(config)
        log.info("nats %s: created stream %s for %s", self.target, s.stream, ", ".join(wanted))

    async def _reconcile(self) -> None:
        """Forget queued messages the stream already holds (acknowledgement lost): the last
        message of each of this node's subjects, found in the queue, marks what was stored."""
        from nats.js.errors import NotFoundError

        if not self._backlog():
            return
        last_ids: set[str] = set()
        subjects = [self.subject] + ([self.incidents_subject] if self.settings.incidents
                                     else [])
        for subject in subjects:
            try:
                last = await self._js.get_last_msg(self.settings.stream, subject)
            except NotFoundError:
                continue
            msg_id = (last.headers or {}).get(MSG_ID, "")
            if msg_id:
                last_ids.add(msg_id)
        if not last_ids:
            return
        rows = self._peek(max(RECONCILE_ROWS_MIN, 2 * self.settings.max_inflight))
        found: tuple[int, int] | None = None
        for i, (seq, blob) in enumerate(rows):
            if self._unpack(blob)[1] in last_ids:
                # the first one: an id queued twice (the same record given twice) must not
                # make what lies between its copies look stored (that was lost); the copy
                # sent again is dropped by the stream's de-duplication
                found = (i, seq)
                break
        if found is not None:
            self._forget(found[1])
            self._counters.add("sent", found[0] + 1)
            log.info("nats %s: the stream already held %d queued records (acknowledgement "
                     "lost); not sending them again", self.target, found[0] + 1)

    # ------------------------------------------------------------------ heartbeats

    def _extra_tasks(self) -> dict[str, Any]:
        """Heartbeats are a task of their own: a sender busy with a backlog, waiting out a
        backoff or stuck in an await never holds them back, and the watchdog restarts the
        heartbeat task when it stops attempting them."""
        return {"heartbeat": self._heartbeats} if self.settings.heartbeat_bucket else {}

    def _beat_bound_s(self) -> float:
        """The longest one heartbeat may take: connecting (each server twice) and two
        requests (the bucket lookup, the put)."""
        s = self.settings
        return 2 * len(s.servers) * (s.connect_timeout_s + 0.2) + 1 + 2 * s.ack_timeout_s

    def _window_bound_s(self) -> float:
        """The longest one send window may take: waiting for the heartbeat task's connection
        attempt (it holds the connection lock), connecting (each server twice), the stream
        and last-message checks (three requests), the publishes and their acknowledgements
        (two ack timeouts: nats-py's publish slots, then the PubAcks) and closing (2 s).
        Longer, and the sender is stuck in an await that never returns (a nats-py flush or
        future nobody completes): the watchdog restarts it, as it does the heartbeat task.
        Without that, a stuck sender held every record back while the heartbeats kept the
        node `up` in the fleet view."""
        s = self.settings
        return (self._beat_bound_s() + 2 * len(s.servers) * (s.connect_timeout_s + 0.2) + 1
                + 5 * s.ack_timeout_s + 5)

    def _stalled(self) -> dict[str, float]:
        out = super()._stalled()
        if self.settings.heartbeat_bucket:
            since = time.monotonic() - self._beat_attempt
            if since > self.settings.heartbeat_s + self._beat_bound_s() + 1.0:
                out["heartbeat"] = since
        return out

    def problems(self) -> list[str]:
        out = super().problems()
        if self._stop_deadline is not None:
            return out
        for name, since in self._stalled().items():
            if name == "heartbeat":
                out.append(f"its heartbeat task has not attempted a heartbeat for {since:.0f}s "
                           f"(every {self.settings.heartbeat_s:g}s expected)")
            else:
                out.append(f"its {name} task has been in one send attempt for {since:.0f}s "
                           f"(at most {self._window_bound_s():.0f}s expected)")
        return out

    async def _heartbeats(self) -> None:
        """One heartbeat every heartbeat_s, the first at start; each bounded in time."""
        s = self.settings
        while True:
            self._beat_attempt = time.monotonic()
            try:
                await asyncio.wait_for(self._beat(), self._beat_bound_s())
            except Exception as exc:
                self._counters.add("heartbeat_failed")
                self._failed(exc, f"heartbeats in {s.heartbeat_bucket}")
            else:
                self._counters.add("heartbeats")
                if not self._backlog():
                    self._delivered()
                else:  # the server takes writes again: the sender need not sleep out its
                    self._reachable_again()  # backoff (30 s by default) to find out
            await asyncio.sleep(max(0.0, self._beat_attempt + s.heartbeat_s - time.monotonic()))

    async def _beat(self) -> None:
        nc = await self._ensure_connected()
        try:
            if self._kv is None or self._kv_nc is not nc:  # a key-value handle per connection
                self._kv = await self._heartbeat_bucket(self._js)
                self._kv_nc = nc
            await asyncio.wait_for(self._kv.put(self.node.token, self.heartbeat()),
                                   self.settings.ack_timeout_s)
        except Exception as exc:
            # A heartbeat that only timed out on a connection still up (a loaded server or
            # host) leaves it be: closing it would take the sender's window in flight with it
            # (its acknowledgements lost, a reconnection, the stream and last-message checks
            # again), and on a loaded host a heartbeat every interval could keep the sender
            # from ever finishing a window. The second timeout in a row closes it (a
            # connection that went silent without a reset).
            timed_out = isinstance(exc, TimeoutError)
            self._beat_timeouts = self._beat_timeouts + 1 if timed_out else 0
            if not (timed_out and nc.is_connected and self._beat_timeouts < 2):
                await self._disconnect(nc)
            raise
        self._beat_timeouts = 0

    async def _heartbeat_bucket(self, js: Any) -> Any:
        from nats.js.api import KeyValueConfig, StorageType
        from nats.js.errors import BucketNotFoundError, NotFoundError

        s = self.settings
        try:
            return await js.key_value(s.heartbeat_bucket)
        except (BucketNotFoundError, NotFoundError):
            if not s.create_stream:
                raise RuntimeError(f"key-value bucket {s.heartbeat_bucket} does not exist and "
                                   "create_stream is false") from None
        kv = await js.create_key_value(KeyValueConfig(
            bucket=s.heartbeat_bucket, history=1, ttl=HEARTBEAT_KEEP_S,
            storage=StorageType.FILE, replicas=s.stream_replicas))
        log.info("nats %s: created key-value bucket %s for node heartbeats", self.target,
                 s.heartbeat_bucket)
        return kv

    def heartbeat(self) -> bytes:
        """This node's heartbeat: identity, version, what it exported, when it started."""
        now = self._clock()
        with self._counts_lock:
            by_severity = dict(self._alert_counts)
            incident_changes = self._incident_changes
        return encode_record({
            "type": "heartbeat", "name": self.node.name, "node": self.node.to_dict(),
            "version": __version__, "time": rfc3339(now), "time_ns": now,
            "started": rfc3339(self._started_ns), "interval_s": self.settings.heartbeat_s,
            "subjects": {"alerts": self.subject, "incidents": self.incidents_subject},
            "alerts": {"total": sum(by_severity.values()), "by_severity": by_severity},
            "incident_changes": incident_changes, "exporter": self.stats(),
            # what /v1/health says about this exporter (a full disk, a crashed task), so the
            # fleet view shows a node that is up but not well
            "problems": self.problems()})

    async def _disconnect(self, only: Any = None) -> None:
        """Close the connection (`only`: if it is still that one; the other task may have
        made a new one meanwhile)."""
        if only is not None and self._nc is not only:
            return
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


async def _acknowledgement(nc: Any, fut: asyncio.Future[Any], deadline: float) -> Any:
    """The PubAck of one publish, waited for until `deadline` (monotonic). A connection
    closed meanwhile (the heartbeat task found it broken, or the server went away) ends the
    wait at once: nats-py leaves the futures of a closed connection pending, so the sender
    used to sit out the whole ack timeout for acknowledgements that could no longer come."""
    while not fut.done():
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no acknowledgement within ack_timeout_s")
        if nc.is_closed:
            raise ConnectionError("the connection closed before the acknowledgement came")
        await asyncio.wait({fut}, timeout=min(ACK_POLL_S, left))
    return fut.result()


def incident_record(change: Any, node: NodeIdentity) -> dict[str, Any]:
    """The exported record of an IncidentChange (the incident as the API shows it)."""
    return {"type": "incident", "change": change.kind, "time": rfc3339(change.time_ns),
            "time_ns": change.time_ns, "phase": change.phase, "container": change.container,
            "alert_id": change.alert_id, "node": node.to_dict(), "incident": change.incident}


def subject_covers(pattern: str, subject: str) -> bool:
    """Whether a stream subject (with * and > wildcards) takes every subject `subject`
    (itself possibly with *) names."""
    p, t = pattern.split("."), subject.split(".")
    for i, tok in enumerate(p):
        if tok == ">":
            return len(t) > i
        if i >= len(t) or (tok != "*" and tok != t[i]):
            return False
    return len(p) == len(t)
