"""Alerts: build them from a rule match and the actions' results, and send them out.

The one way out for alerts is AlertDispatcher.raise_alert: it hands every alert to the
delivery chain (noise control, then every consumer: the log line, the API's live stream and
in-memory ring, journald, syslog, the store, webhooks, any later exporter), so all of them see
the same alerts. Raw taps, named as such, see each alert as raised, before noise control
(`--print-alerts`, for machines that want every alert unfolded).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Protocol

from roxd.ids import new_id
from roxd.jsonlines import JsonLines
from roxd.model import ActionResult, Alert, EnrichedEvent, RuleRef, Severity
from roxd.pubsub import Topic
from roxd.text import printable

log = logging.getLogger("roxd.alert")

_LOG_LEVELS = {
    Severity.EMERGENCY: logging.CRITICAL,
    Severity.ALERT: logging.CRITICAL,
    Severity.CRITICAL: logging.CRITICAL,
    Severity.ERROR: logging.ERROR,
    Severity.WARNING: logging.WARNING,
    Severity.NOTICE: logging.WARNING,
    Severity.INFO: logging.INFO,
    Severity.DEBUG: logging.DEBUG,
}


class AlertSink(Protocol):
    def emit(self, alert: Alert) -> None: ...


def summary(alert: Alert) -> str:
    """One line a human reads first: what, where, who, and what was done."""
    ev = alert.event
    where = (f"container {ev.container.name or ev.container.id[:12]} "
             f"({ev.container.image or 'image unknown'})" if ev.container else "host")
    if ev.container is not None and ev.container.pod:  # Kubernetes (or podman) pods
        where += (f" of pod {ev.container.namespace}/{ev.container.pod}"
                  if ev.container.namespace else f" of pod {ev.container.pod}")
    proc = ev.process
    cmd = printable(" ".join(proc.args) if proc.args else proc.exe or proc.comm, 160)
    done = ", ".join(f"{a.action.value}:{a.outcome.value}" for a in alert.actions) or "none"
    times = f" (x{alert.count} since the first)" if alert.count > 1 else ""
    # one line, escaped (roxd/text.py): it is the log line, journald's MESSAGE, syslog's MSG
    return printable(f"[{alert.rule.phase.value}] {alert.rule.name} ({alert.rule.id}) in "
                     f"{where}: pid {proc.pid} '{cmd}'; actions {done}{times}")


class LogSink:
    """One log line per alert (stderr, hence the journal under systemd). The daemon puts it
    behind noise control with the other delivery sinks: a storm of identical alerts is one
    line and a fold summary, not thousands of lines (measured: the logging call was a fifth of
    roxd's CPU per alert in an alert storm)."""

    def __init__(self) -> None:
        self._sent = 0

    def emit(self, alert: Alert) -> None:
        log.log(_LOG_LEVELS[alert.rule.severity], "ALERT %s", summary(alert),
                extra={"roxd_alert": alert.id, "roxd_rule": alert.rule.id})
        self._sent += 1  # one thread at a time: noise control emits under its lock

    def stats(self) -> dict[str, int]:
        return {"sent": self._sent}

    def close(self, timeout: float = 0.0) -> None:
        pass


class StreamSink:
    """JSON lines on a shared stream, tagged with a type so they can share stdout with events."""

    def __init__(self, lines: JsonLines, kind: str = "alert") -> None:
        self._lines = lines
        self._kind = kind
        self._sent = 0

    def emit(self, alert: Alert) -> None:
        self._lines.write({"type": self._kind, **alert.to_dict()})
        self._sent += 1

    def stats(self) -> dict[str, int]:
        return {"sent": self._sent}

    def close(self, timeout: float = 0.0) -> None:
        self._lines.flush()


class TopicSink:
    """Alerts to a pubsub Topic: the API's live stream (`roxctl alerts follow`) and the
    in-memory ring behind `GET /v1/alerts` when there is no store."""

    def __init__(self, topic: Topic) -> None:
        self._topic = topic

    def emit(self, alert: Alert) -> None:
        if self._topic.active:
            self._topic.publish(alert.to_dict())

    def stats(self) -> dict[str, int]:
        return {"published": self._topic.published}

    def close(self, timeout: float = 0.0) -> None:
        pass


class AlertDispatcher:
    """Makes the Alert and sends it: raw taps first, then `delivery` (noise control and every
    consumer behind it)."""

    def __init__(self, delivery: AlertSink, raw_taps: Sequence[AlertSink] = ()) -> None:
        self._delivery = delivery
        self._raw_taps = list(raw_taps)
        self.raised = 0

    def raise_alert(
        self, rule: RuleRef, event: EnrichedEvent, actions: Sequence[ActionResult]
    ) -> Alert:
        now = time.time_ns()
        alert = Alert(id=new_id(), time_ns=now, rule=rule, event=event,
                      actions=tuple(actions), first_ns=event.time_ns, last_ns=event.time_ns)
        self.raised += 1
        for sink in (*self._raw_taps, self._delivery):
            try:
                sink.emit(alert)
            except Exception:  # one broken sink must not silence the others
                log.exception("alert sink %s failed", type(sink).__name__)
        return alert
