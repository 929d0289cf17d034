"""Webhooks: generic JSON, Slack and PagerDuty Events API v2 payloads, POSTed from a worker.

Each webhook has its own thread and bounded queue (overflow is dropped and counted), a minimum
severity, a timeout per request, and retries with exponential backoff on connection errors,
HTTP 5xx and 429. Other 4xx answers are not retried (the payload or the key is wrong).
Standard library only (urllib.request); proxies come from the usual *_proxy variables.

A webhook with `incidents = true` (the default) also takes incident changes
(`incident_changed`, fed by the incident tracker through `AlertDelivery.incident_feeds()`,
like the NATS, OTLP and syslog exporters): they wait in the same queue, behind the alerts
raised before them, and go out from the same thread with the same retries. Their payloads
(generic, Slack, PagerDuty) are built in roxd/incidents/webhooks.py.
"""

from __future__ import annotations

import logging
import re
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from roxd.alerts.dispatch import summary
from roxd.alerts.kinds import alert_kind
from roxd.alerts.node import NodeIdentity
from roxd.alerts.record import export_record
from roxd.alerts.settings import WebhookSettings
from roxd.alerts.worker import QueueWorker, SinkCounters
from roxd.model import Alert, Severity, rfc3339
from roxd.text import clip, json_dumps, json_safe, printable
from roxd.vocabulary import SEVERITIES

log = logging.getLogger("roxd.alerts.webhooks")

BACKOFF_MAX_S = 60.0

PAGERDUTY_SEVERITY = {
    Severity.EMERGENCY: "critical", Severity.ALERT: "critical", Severity.CRITICAL: "critical",
    Severity.ERROR: "error", Severity.WARNING: "warning", Severity.NOTICE: "warning",
    Severity.INFO: "info", Severity.DEBUG: "info",
}


def generic_payload(alert: Alert, node: NodeIdentity | None = None) -> dict[str, Any]:
    """The alert as JSON, with the node it came from when known (the record every exporter
    writes, roxd/alerts/record.py); its strings are roxd's text (roxd/text.py), control
    characters JSON-escaped, never a lone surrogate."""
    record = (export_record(alert, node) if node is not None else
              {"type": "alert", "kind": alert_kind(alert), "summary": summary(alert),
               **alert.to_dict()})
    return json_safe(record)


def slack_code(text: str, limit: int) -> str:
    """Untrusted text for the inside of a Slack code span or block: printable() (one line,
    \\xNN escapes), a backtick as \\x60 so it cannot close the code, then &, < and > as
    entities, as Slack requires (no <!channel>, no <url|label> links). Inside code, *, _ and ~
    format nothing. At most `limit` characters, never cutting an escape or an entity."""
    text = (printable(text).replace("`", "\\x60").replace("&", "&amp;")
            .replace("<", "&lt;").replace(">", "&gt;"))
    if len(text) > limit:
        text = _PARTIAL_ENTITY.sub("…", clip(text, limit, "…"))
    return text


_PARTIAL_ENTITY = re.compile(r"&[a-z]{0,3}…$")


def slack_payload(alert: Alert) -> dict[str, Any]:
    """mrkdwn where Slack formats; every string a process controls sits inside code (see
    slack_code), so an argv cannot mention a channel, link, or format the message."""
    ev = alert.event
    where = (f"{ev.container.name or ev.container.id[:12]} ({ev.container.image or '?'})"
             if ev.container else "host")
    if ev.container is not None and (ev.container.namespace or ev.container.pod):
        where = f"{ev.container.namespace or '-'}/{ev.container.pod or '-'} {where}"
    proc = ev.process
    cmd = " ".join(proc.args) or proc.exe
    actions = ", ".join(f"{a.action.value}: {a.outcome.value}" for a in alert.actions) or "none"
    count = f" (x{alert.count})" if alert.count > 1 else ""
    fields = [
        ("Phase", alert.rule.phase.value), ("Severity", alert.rule.severity.value),
        ("Container", f"`{slack_code(where, 300)}`"),
        ("Process", f"pid {proc.pid} `{slack_code(proc.exe, 1000)}`"),
        ("MITRE", slack_code(", ".join(alert.rule.mitre) or "-", 300)),
        ("Actions", slack_code(actions, 300)),
    ]
    return {
        "text": f"`{slack_code(summary(alert), 3000)}`",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "emoji": False,
                                        "text": printable(f"{alert.rule.name}{count}", 150)}},
            {"type": "section", "fields": [{"type": "mrkdwn", "text": f"*{k}*\n{v}"}
                                           for k, v in fields]},
            {"type": "section", "text": {"type": "mrkdwn",
                                         "text": f"```{slack_code(cmd, 2990)}```"}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": (
                f"rule `{slack_code(alert.rule.id, 200)}` · alert `{slack_code(alert.id, 100)}`"
                f" · {rfc3339(alert.time_ns)}")}]},
        ],
    }


def pagerduty_payload(alert: Alert, routing_key: str, source: str) -> dict[str, Any]:
    ev = alert.event
    container = ev.container.id if ev.container else "host"
    return {
        "routing_key": routing_key,
        "event_action": "trigger",
        # one PagerDuty alert per rule and container: repeats add to it instead of paging again
        "dedup_key": f"roxd:{source}:{alert.rule.id}:{container}"[:255],
        "payload": {
            "summary": clip(summary(alert), 1024),
            "source": source,
            "severity": PAGERDUTY_SEVERITY[alert.rule.severity],
            "timestamp": rfc3339(alert.time_ns),
            "component": printable((ev.container.name or ev.container.id[:12])
                                   if ev.container else "host", 255),
            "group": alert.rule.phase.value,
            "class": alert.rule.id,
            "custom_details": generic_payload(alert),
        },
    }


Poster = Callable[[str, bytes, float], int]


def urllib_post(url: str, body: bytes, timeout: float) -> int:
    """POST JSON; the HTTP status (an HTTPError's too). Raises OSError on transport errors."""
    req = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json", "User-Agent": "roxd"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            resp.read(65536)
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        exc.close()
        return int(exc.code)


def post_with_retries(s: WebhookSettings, body: bytes, post: Poster, stop: threading.Event,
                      counters: SinkCounters) -> bool:
    """POST `body` to the webhook: retried with exponential backoff on transport errors, 5xx
    and 429; other 4xx answers are final (the payload or the key is wrong). `stop` cuts a
    backoff short at shutdown. True when the endpoint took it."""
    delay = s.backoff_s
    for attempt in range(s.retries + 1):
        if attempt:
            counters.add("retried")
            if stop.wait(delay):
                return False
            delay = min(delay * 2, BACKOFF_MAX_S)
        try:
            status = post(s.url, body, s.timeout_s)
        except (OSError, ValueError) as exc:
            log.warning("webhook %s: %s (attempt %d of %d)", _host(s.url), exc,
                        attempt + 1, s.retries + 1)
            continue
        if 200 <= status < 300:
            return True
        log.warning("webhook %s: HTTP %d (attempt %d of %d)", _host(s.url), status,
                    attempt + 1, s.retries + 1)
        if status != 429 and 400 <= status < 500:
            return False
    return False


class WebhookSink:
    """Alerts and (with `incidents`) incident changes to one webhook, from one thread."""

    def __init__(self, settings: WebhookSettings, *, source: str | None = None,
                 post: Poster = urllib_post, node: NodeIdentity | None = None) -> None:
        self.settings = settings
        self._node = node
        self._source = source or (node.hostname if node is not None else socket.gethostname())
        self._post = post
        self._min_code = settings.min_severity_level.code
        self._counters = SinkCounters("retried", "filtered")
        self._stop = threading.Event()
        self._worker = QueueWorker(f"roxd-webhook-{settings.kind}", self._deliver,
                                   settings.queue_max, self._counters)

    def payload(self, item: Any) -> dict[str, Any]:
        """The body for an Alert or an incident change, by the webhook's kind."""
        kind = self.settings.kind
        if not isinstance(item, Alert):
            from roxd.incidents.webhooks import incident_payload  # incidents import alerts

            return incident_payload(kind, item, routing_key=self.settings.routing_key,
                                    source=self._source, node=self._node)
        if kind == "slack":
            return slack_payload(item)
        if kind == "pagerduty":
            return pagerduty_payload(item, self.settings.routing_key, self._source)
        return generic_payload(item, self._node)

    def emit(self, alert: Alert) -> None:
        if alert.rule.severity.code > self._min_code:
            self._counters.add("filtered")
            return
        self._worker.put(alert)

    def incident_changed(self, change: Any) -> None:
        """An incident change: opened, phase added, spread, an incident-policy action, closed
        (a plain `updated` sends nothing: its alert went out as an alert), when the
        incident's severity reaches min_severity. Queued behind the alerts; never blocks."""
        if not self.settings.incidents:
            return
        from roxd.incidents.webhooks import SENT_CHANGES  # incidents import alerts

        if change.kind not in SENT_CHANGES:
            return
        if SEVERITIES.index(change.incident["severity"]) > self._min_code:
            self._counters.add("filtered")
            return
        self._worker.put(change)

    def _deliver(self, item: Any) -> bool:
        body = json_dumps(self.payload(item), separators=(",", ":")).encode()
        return post_with_retries(self.settings, body, self._post, self._stop, self._counters)

    def flush(self, timeout: float = 10.0) -> bool:
        return self._worker.wait_idle(timeout)

    def stats(self) -> dict[str, int]:
        return self._counters.snapshot()

    def close(self, timeout: float = 5.0) -> None:
        self._worker.wait_idle(timeout)
        self._stop.set()  # cut a retry backoff short
        self._worker.close(0.5)


def _host(url: str) -> str:
    """The URL without path or query: Slack and PagerDuty URLs carry secrets there."""
    return urllib.parse.urlparse(url)._replace(path="", query="", params="").geturl()
