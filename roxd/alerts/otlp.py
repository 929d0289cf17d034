"""OpenTelemetry exporter: alerts and incident changes as OTLP log records, POSTed as protobuf
to a collector's OTLP/HTTP endpoint (`/v1/logs`), queued on disk, in order.

    sink = OtlpSink(OtlpSettings(endpoint="http://collector:4318/v1/logs"), state_dir, node)
    sink.emit(alert) / sink.incident_changed(change) / sink.stats() / sink.close(timeout)

The messages are the OpenTelemetry project's own definitions (the `opentelemetry-proto`
package: ExportLogsServiceRequest, LogRecord), not a copy. Mapping, after the semantic
conventions (resource, log record and attribute names as a collector's processors and
backends expect them):

    resource     service.name=roxd, service.version, host.name, host.id (the machine id),
                 k8s.node.name (when known)
    scope        name "roxd", version
    log record   time_unix_nano = the event's time, observed_time_unix_nano = when queued,
                 severity_number/severity_text from the rule's severity (emergency FATAL4,
                 alert FATAL, critical ERROR4, error ERROR, warning WARN, notice INFO2,
                 info INFO, debug DEBUG), body = the alert's one-line summary,
                 event_name = roxd.alert | roxd.incident
    attributes   log.record.uid (alert id: a backend can de-duplicate on it), roxd.alert.kind,
                 roxd.rule.id, roxd.rule.name, roxd.phase, roxd.mitre.technique_ids,
                 roxd.actions, roxd.count, container.id/.name/.image.name/.runtime,
                 process.pid/.parent_pid/.executable.path/.executable.name/.command_args/
                 .user.id, process.parent.executable.path, destination.address/.port
                 (connects), file.path (file events), roxd.node.name
    incidents    body = "incident <id> <change>", attributes roxd.incident.id/.change/.state/
                 .severity/.phases/.alerts/.containers, roxd.phase (a phase_added),
                 container.id (the container added, or the incident's only one), and
                 roxd.incident.json (the whole incident as the API shows it)

Delivery is QueuedExporter's (queued.py): the disk queue, the order, the backoff. One request
carries up to `batch_max` records from the queue's head; they are forgotten only after a 2xx.
429, 502, 503 and 504 are retried after the Retry-After the collector sent (seconds or an
HTTP date), else after the backoff; 401, 403, 404 and 407 are configuration problems, retried
the same way (the records stay queued until an operator fixes the token or the URL); any
other 4xx says the request itself is bad: its records are counted as `rejected` and
dropped with an error line, as the OTLP specification asks (never retried). A 2xx with
`partial_success.rejected_log_records` counts those as `rejected` too.

At start, one empty export request checks the endpoint, the token and the certificate: a
problem is one warning line then, even on a quiet node.

Delivery is at-least-once: a collector that stored a batch and died before answering gets it
again (log.record.uid tells the copies apart). What the collector does next (its own queue,
exporters) is its business.
"""

from __future__ import annotations

import asyncio
import email.utils
import gzip
import http.client
import json
import logging
import ssl
import threading
import time
import urllib.parse
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from roxd import __version__
from roxd.alerts.dispatch import summary
from roxd.alerts.kinds import alert_kind
from roxd.alerts.node import NodeIdentity
from roxd.alerts.queued import QueuedExporter
from roxd.alerts.settings import OtlpSettings
from roxd.model import Alert, Severity
from roxd.text import without_surrogates

log = logging.getLogger("roxd.alerts.otlp")

CONTENT_TYPE = "application/x-protobuf"
RETRY_STATUSES = frozenset({429, 502, 503, 504})
# the request is fine but the target is not (token, URL, proxy): keep the records, retry
CONFIG_STATUSES = frozenset({401, 403, 404, 407})


class OtlpUnavailable(RuntimeError):
    """opentelemetry-proto is not installed: the sink cannot start (logged by AlertDelivery)."""


def _proto() -> Any:
    try:
        from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
        from opentelemetry.proto.common.v1 import common_pb2
        from opentelemetry.proto.logs.v1 import logs_pb2
        from opentelemetry.proto.resource.v1 import resource_pb2
    except ImportError as exc:
        raise OtlpUnavailable(
            "the OpenTelemetry protobuf definitions (Python package opentelemetry-proto) are "
            "not installed; pip install opentelemetry-proto") from exc

    class Proto:
        service = logs_service_pb2
        common = common_pb2
        logs = logs_pb2
        resource = resource_pb2
    return Proto


SEVERITY_NUMBERS = {
    Severity.EMERGENCY: "SEVERITY_NUMBER_FATAL4", Severity.ALERT: "SEVERITY_NUMBER_FATAL",
    Severity.CRITICAL: "SEVERITY_NUMBER_ERROR4", Severity.ERROR: "SEVERITY_NUMBER_ERROR",
    Severity.WARNING: "SEVERITY_NUMBER_WARN", Severity.NOTICE: "SEVERITY_NUMBER_INFO2",
    Severity.INFO: "SEVERITY_NUMBER_INFO", Severity.DEBUG: "SEVERITY_NUMBER_DEBUG",
}


class OtlpSink(QueuedExporter):
    kind = "otlp"

    def __init__(self, settings: OtlpSettings, state_dir: Path | str, node: NodeIdentity, *,
                 inbox_max: int = 10_000) -> None:
        self._pb = _proto()
        self.settings = settings
        self.node = node
        url = urllib.parse.urlsplit(settings.endpoint)
        self._https = url.scheme == "https"
        self._host = url.hostname or "127.0.0.1"
        self._port = url.port or (443 if self._https else 80)
        self._path = (url.path or "/v1/logs") + (f"?{url.query}" if url.query else "")
        self._headers = {"Content-Type": CONTENT_TYPE, "User-Agent": f"roxd/{__version__}"}
        for h in settings.headers:
            name, _, value = h.partition(":")
            self._headers[name.strip()] = value.strip()
        if settings.compression == "gzip":
            self._headers["Content-Encoding"] = "gzip"
        self._ssl = self._tls_context() if self._https else None
        self._conn: http.client.HTTPConnection | None = None
        # one request on the connection at a time, also when close() gave up waiting on one
        # (its executor thread still holds the connection) and the final drain sends again
        self._post_lock = threading.Lock()
        self._resource = self._make_resource()
        self._rejection_logged = False
        self._probed = False
        super().__init__(
            queue_path=Path(state_dir) / "alerts" / f"otlp-{settings.queue_name}.db",
            queue_max=settings.queue_max, queue_max_bytes=settings.queue_max_bytes,
            backoff_max_s=settings.backoff_max_s, log=log,
            thread_name=f"roxd-otlp-{settings.queue_name}", inbox_max=inbox_max,
            extra_counters=("rejected", "requests"))
        self._start_thread()

    @property
    def target(self) -> str:
        return self.settings.endpoint

    def incident_changed(self, change: Any) -> None:
        if self.settings.incidents:
            self.emit(change)

    # ------------------------------------------------------------------ records

    def _encode(self, item: Any) -> bytes | None:
        if isinstance(item, Alert):
            return self.alert_record(item).SerializeToString()
        return self.incident_record(item).SerializeToString()

    def _make_resource(self) -> Any:
        n = self.node
        attrs: dict[str, Any] = {"service.name": "roxd", "service.version": __version__,
                                 "host.name": n.hostname}
        if n.machine_id:
            attrs["host.id"] = n.machine_id
        if n.kubernetes_node:
            attrs["k8s.node.name"] = n.kubernetes_node
        return self._pb.resource.Resource(attributes=self._attributes(attrs))

    def alert_record(self, alert: Alert) -> Any:
        ev = alert.event
        proc = ev.process
        rule = alert.rule
        attrs: dict[str, Any] = {
            "log.record.uid": alert.id, "roxd.alert.kind": alert_kind(alert),
            "roxd.rule.id": rule.id, "roxd.rule.name": rule.name,
            "roxd.phase": rule.phase.value, "roxd.mitre.technique_ids": list(rule.mitre),
            "roxd.actions": [f"{a.action.value}:{a.outcome.value}" for a in alert.actions],
            "roxd.count": alert.count, "roxd.node.name": self.node.name,
            "process.pid": proc.pid, "process.parent_pid": proc.ppid,
            "process.executable.path": proc.exe,
            "process.executable.name": proc.exe.rsplit("/", 1)[-1] or proc.comm,
            "process.command_args": list(proc.args), "process.user.id": proc.uid,
        }
        if proc.parent_exe:
            attrs["process.parent.executable.path"] = proc.parent_exe
        c = ev.container
        if c is not None:
            attrs.update({"container.id": c.id, "container.name": c.name,
                          "container.image.name": c.image, "container.runtime": c.runtime})
        event = ev.event
        if hasattr(event, "daddr"):
            attrs.update({"destination.address": event.daddr,
                          "destination.port": event.dport})
        if hasattr(event, "operation") and hasattr(event, "path"):
            attrs.update({"file.path": event.resolved or event.path,
                          "roxd.file.operation": event.operation})
        return self._record(alert.time_ns, rule.severity, summary(alert), "roxd.alert", attrs)

    def incident_record(self, change: Any) -> Any:
        inc = change.incident
        attrs: dict[str, Any] = {
            "log.record.uid": f"{inc['id']}-{change.kind}-{change.time_ns}",
            "roxd.incident.id": inc["id"], "roxd.incident.change": change.kind,
            "roxd.incident.state": inc.get("state", ""),
            "roxd.incident.severity": inc.get("severity", ""),
            "roxd.incident.phases": [p["phase"] for p in inc.get("phases", [])],
            "roxd.incident.alerts": int(inc.get("alerts", 0)),
            "roxd.node.name": self.node.name,
            "roxd.incident.json": json.dumps(inc, separators=(",", ":"), default=str),
        }
        if change.phase:
            attrs["roxd.phase"] = change.phase
        containers = [c.get("id") for c in inc.get("containers", []) if c.get("id")]
        attrs["roxd.incident.containers"] = containers
        if change.container or len(containers) == 1:  # the one the change is about
            attrs["container.id"] = change.container or containers[0]
        if change.alert_id:
            attrs["roxd.alert.id"] = change.alert_id
        try:
            severity = Severity(inc.get("severity", "warning"))
        except ValueError:
            severity = Severity.WARNING
        phases = ",".join(attrs["roxd.incident.phases"]) or "-"
        body = f"incident {inc['id']} {change.kind} ({severity.value}, phases {phases})"
        return self._record(change.time_ns, severity, body, "roxd.incident", attrs)

    def _record(self, time_ns: int, severity: Severity, body: str, event_name: str,
                attrs: dict[str, Any]) -> Any:
        pb = self._pb
        return pb.logs.LogRecord(
            time_unix_nano=time_ns, observed_time_unix_nano=time.time_ns(),
            severity_number=pb.logs.SeverityNumber.Value(SEVERITY_NUMBERS[severity]),
            severity_text=severity.value.upper(), event_name=event_name,
            body=pb.common.AnyValue(string_value=_text(body)),
            attributes=self._attributes(attrs))

    def _attributes(self, attrs: dict[str, Any]) -> list[Any]:
        return [self._pb.common.KeyValue(key=k, value=self._value(v))
                for k, v in attrs.items() if v is not None and v != ""]

    def _value(self, v: Any) -> Any:
        common = self._pb.common
        if isinstance(v, bool):
            return common.AnyValue(bool_value=v)
        if isinstance(v, int):
            return common.AnyValue(int_value=v)
        if isinstance(v, list | tuple):
            return common.AnyValue(array_value=common.ArrayValue(
                values=[self._value(x) for x in v]))
        return common.AnyValue(string_value=_text(str(v)))

    def request(self, records: Iterable[bytes]) -> bytes:
        """One ExportLogsServiceRequest body: this node's resource, roxd's scope, the records
        (each as queued: a serialized LogRecord)."""
        pb = self._pb
        scope_logs = pb.logs.ScopeLogs(scope=pb.common.InstrumentationScope(
            name="roxd", version=__version__))
        for blob in records:
            scope_logs.log_records.add().ParseFromString(blob)
        req = pb.service.ExportLogsServiceRequest(resource_logs=[pb.logs.ResourceLogs(
            resource=self._resource, scope_logs=[scope_logs])])
        return req.SerializeToString()

    # ------------------------------------------------------------------ HTTP

    async def _idle(self) -> None:
        """Once, at start: an empty export request (valid OTLP, answered 200 by a collector),
        so a wrong URL, token or certificate is one line at start, not at the first alert."""
        if self._probed:
            return
        self._probed = True
        if self._backlog():
            return  # the backlog's first request says it
        try:
            status, _, answer = await self._post_off_loop(self._body(()))
        except (OSError, http.client.HTTPException, ssl.SSLError) as exc:
            self._close_conn()
            self._failed(exc)
            return
        if not 200 <= status < 300:
            self._failed(f"HTTP {status} {_first_line(answer)}".strip())

    async def _send_window(self) -> bool:
        rows = self._peek(self.settings.batch_max)
        if not rows:
            return True
        body = self._body(blob for _, blob in rows)
        try:
            status, headers, answer = await self._post_off_loop(body)
        except (OSError, http.client.HTTPException, ssl.SSLError) as exc:
            self._close_conn()
            self._failed(exc)
            return False
        self._counters.add("requests")
        last = rows[-1][0]
        if 200 <= status < 300:
            self._accepted(len(rows), answer)
            self._forget(last)
            self._delivered()
            return True
        reason = f"HTTP {status} {_first_line(answer)}".strip()
        if status in RETRY_STATUSES or status in CONFIG_STATUSES or status >= 500:
            retry_after = _retry_after(headers.get("Retry-After"))
            if retry_after is not None:
                self._retry_after = retry_after
            self._failed(reason)
            return False
        # the collector refuses this request as such: retrying sends the same bytes again
        self._counters.add("rejected", len(rows))
        log.error("otlp %s: the collector refused %d records (%s); they are dropped",
                  self.target, len(rows), reason)
        self._forget(last)
        return True

    def _body(self, records: Iterable[bytes]) -> bytes:
        body = self.request(records)
        if self.settings.compression == "gzip":
            body = gzip.compress(body, compresslevel=6)
        return body

    def _accepted(self, count: int, answer: bytes) -> None:
        self._counters.add("sent", count)
        try:
            resp = self._pb.service.ExportLogsServiceResponse.FromString(answer)
        except Exception:  # an empty or JSON body from a proxy: the 2xx is what counts
            return
        rejected = resp.partial_success.rejected_log_records
        if rejected:
            self._counters.add("rejected", rejected)
            level = logging.DEBUG if self._rejection_logged else logging.WARNING
            self._rejection_logged = True
            log.log(level, "otlp %s: the collector rejected %d of %d records: %s", self.target,
                    rejected, count, resp.partial_success.error_message or "no reason given")

    async def _post_off_loop(self, body: bytes) -> tuple[int, http.client.HTTPMessage, bytes]:
        """The blocking request on an executor thread: meanwhile the loop keeps moving the
        inbox to disk. One request at a time (the sender awaits it)."""
        return await asyncio.get_running_loop().run_in_executor(None, self._post, body)

    def _post(self, body: bytes) -> tuple[int, http.client.HTTPMessage, bytes]:
        with self._post_lock:
            return self._post_locked(body)

    def _post_locked(self, body: bytes) -> tuple[int, http.client.HTTPMessage, bytes]:
        for attempt in (1, 2):
            conn = self._connection()
            try:
                conn.request("POST", self._path, body=body, headers=self._headers)
                resp = conn.getresponse()
                answer = resp.read()
            except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected):
                # a kept-alive connection the collector closed meanwhile: once more, fresh
                self._drop_conn()
                if attempt == 2:
                    raise
                continue
            except BaseException:
                self._drop_conn()
                raise
            if resp.getheader("Connection", "").lower() == "close":
                self._drop_conn()
            return resp.status, resp.headers, answer
        raise AssertionError("unreachable")

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            timeout = self.settings.timeout_s
            if self._ssl is not None:
                self._conn = _NamedHTTPSConnection(
                    self._host, self._port, timeout=timeout, context=self._ssl,
                    server_name=self.settings.server_name or self._host)
            else:
                self._conn = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
        return self._conn

    def _drop_conn(self) -> None:
        """With _post_lock held."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _close_conn(self) -> None:
        if not self._post_lock.acquire(timeout=self.settings.timeout_s):
            return  # a request still runs on it: it closes the connection on failure itself
        try:
            conn, self._conn = self._conn, None
        finally:
            self._post_lock.release()
        if conn is not None:
            conn.close()

    async def _disconnect(self) -> None:
        self._close_conn()

    def _tls_context(self) -> ssl.SSLContext:
        s = self.settings
        ctx = ssl.create_default_context(cafile=s.ca or None)
        if s.cert:
            ctx.load_cert_chain(s.cert, s.key)
        return ctx


class _NamedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS that checks the certificate against `server_name` instead of the URL's host
    (a collector reached by IP address, its certificate issued for a name)."""

    def __init__(self, host: str, port: int, *, timeout: float, context: ssl.SSLContext,
                 server_name: str) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._server_name = server_name
        self._tls = context

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self.sock = self._tls.wrap_socket(self.sock, server_hostname=self._server_name)


def _text(value: str) -> str:
    """Protobuf strings must be valid UTF-8: lone surrogates (non-UTF-8 bytes of a command
    line) become \\xNN text, as in every other roxd output."""
    return without_surrogates(value)


def _first_line(answer: bytes) -> str:
    text = answer[:200].decode("utf-8", "replace").strip()
    return text.splitlines()[0] if text and text.isprintable() else ""


def _retry_after(value: str | None) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
