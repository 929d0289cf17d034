"""journald sink: one journal entry per alert, with ROXD_* fields to filter on.

    journalctl SYSLOG_IDENTIFIER=roxd
    journalctl ROXD_PHASE=persistence ROXD_CONTAINER_NAME=web
    journalctl MESSAGE_ID=4e06e42e5d764ad493df524c45b3ab33 -o json

Entries go through python-systemd (`systemd.journal.sendv`, Debian's python3-systemd) from the
sink's own thread, so a slow or stalled journald never holds up event processing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Generic, TypeVar

from roxd.alerts.dispatch import summary
from roxd.alerts.kinds import MESSAGE_IDS, alert_kind
from roxd.alerts.settings import JournaldSettings
from roxd.alerts.worker import QueueWorker, SinkCounters
from roxd.model import Alert, ConnectEvent, ExecEvent
from roxd.text import clip, printable

log = logging.getLogger("roxd.alerts.journald")
T = TypeVar("T")

# journald takes more; long argv is cut so one alert stays one small entry, and under 4096
# bytes with its name, or `journalctl -o json` shows the field as null (without --all)
MAX_FIELD = 4000  # bytes of UTF-8


def journal_fields(alert: Alert) -> list[str]:
    """The entry as KEY=value strings. ROXD_MITRE repeats, once per technique id."""
    rule = alert.rule
    ev = alert.event
    proc = ev.process
    fields: dict[str, object] = {
        "MESSAGE": summary(alert),
        "MESSAGE_ID": MESSAGE_IDS[alert_kind(alert)],
        "PRIORITY": rule.severity.code,
        "SYSLOG_IDENTIFIER": "roxd",
        "ROXD_KIND": alert_kind(alert),
        "ROXD_ALERT_ID": alert.id,
        "ROXD_RULE_ID": rule.id,
        "ROXD_RULE_NAME": rule.name,
        "ROXD_PHASE": rule.phase.value,
        "ROXD_SEVERITY": rule.severity.value,
        "ROXD_EVENT": ev.kind,
        "ROXD_COUNT": alert.count,
        "ROXD_FIRST_NS": alert.first_ns or alert.time_ns,
        "ROXD_LAST_NS": alert.last_ns or alert.time_ns,
        "ROXD_PID": proc.pid,
        "ROXD_PPID": proc.ppid,
        "ROXD_UID": proc.uid,
        "ROXD_EXE": proc.exe,
        "ROXD_COMM": proc.comm,
        "ROXD_ARGS": " ".join(proc.args),
        "ROXD_ACTIONS": ",".join(f"{a.action.value}:{a.outcome.value}" for a in alert.actions),
    }
    if proc.parent_exe:
        fields["ROXD_PARENT_EXE"] = proc.parent_exe
    if ev.container is not None:
        c = ev.container
        fields.update(ROXD_CONTAINER_ID=c.id, ROXD_CONTAINER_RUNTIME=c.runtime)
        if c.name:
            fields["ROXD_CONTAINER_NAME"] = c.name
        if c.image:
            fields["ROXD_CONTAINER_IMAGE"] = c.image
        if c.namespace:
            fields["ROXD_NAMESPACE"] = c.namespace
        if c.pod:
            fields["ROXD_POD"] = c.pod
        if c.pod_uid:
            fields["ROXD_POD_UID"] = c.pod_uid
        if c.labels:  # label keys are not journal field names: one field, key=value pairs
            fields["ROXD_CONTAINER_LABELS"] = ",".join(
                f"{k}={v}" for k, v in sorted(c.labels.items()))
    else:
        fields["ROXD_CONTAINER_ID"] = "host"
    for a in alert.actions:
        fields[f"ROXD_ACTION_{a.action.value.upper()}"] = a.outcome.value
    if isinstance(ev.event, ConnectEvent):
        fields.update(ROXD_DADDR=ev.event.daddr, ROXD_DPORT=ev.event.dport,
                      ROXD_CONNECT_RESULT=ev.event.result.value)
    elif isinstance(ev.event, ExecEvent):
        fields["ROXD_FILENAME"] = ev.event.filename
    out = [f"{k}={journal_value(v)}" for k, v in fields.items()]
    out.extend(f"ROXD_MITRE={journal_value(m)}" for m in rule.mitre)
    return out


def journal_value(value: object) -> str:
    """journald stores any bytes, but `journalctl` prints fields to terminals and log
    shippers split lines: control characters as \\xNN, one line (roxd/text.py)."""
    text = printable(str(value), MAX_FIELD)
    while (excess := len(text.encode()) - MAX_FIELD) > 0:  # multi-byte characters
        text = clip(text, len(text) - excess // 4 - 1)
    return text


def _default_sendv() -> Callable[..., object]:
    from systemd import journal  # Debian python3-systemd

    return journal.sendv


class JournalQueue(Generic[T]):
    """Journal entries sent from a thread of their own (QueueWorker): `put(item)` only queues;
    the thread sends `fields(item)` with sendv. A refusal (no journald socket, a datagram
    refused) is counted as failed, with one warning until journald takes entries again. The
    alert sink and the incident journal (roxd/incidents/journald.py) are this, with their
    own fields."""

    def __init__(self, name: str, fields: Callable[[T], list[str]], what: str,
                 queue_max: int, sendv: Callable[..., object] | None = None) -> None:
        self._sendv = sendv or _default_sendv()
        self._fields = fields
        self._what = what  # "alerts", "incidents": for the warning
        self._counters = SinkCounters()
        # QueueWorker is written for alerts; it only queues and hands items back
        self._worker = QueueWorker(name, self._deliver, queue_max,  # type: ignore[arg-type]
                                   self._counters)
        self._warned = False

    def put(self, item: T) -> None:
        self._worker.put(item)  # type: ignore[arg-type]

    def _deliver(self, item: T) -> bool:
        try:
            self._sendv(*self._fields(item))
        except OSError as exc:  # no journald socket, or it refused the datagram
            if not self._warned:
                log.warning("journald: cannot write %s: %s (counted as failed)", self._what,
                            exc)
                self._warned = True
            return False
        self._warned = False
        return True

    def flush(self, timeout: float = 5.0) -> bool:
        return self._worker.wait_idle(timeout)

    def stats(self) -> dict[str, int]:
        return self._counters.snapshot()

    def close(self, timeout: float = 5.0) -> None:
        self._worker.close(timeout)


class JournaldSink(JournalQueue[Alert]):
    def __init__(self, settings: JournaldSettings | None = None,
                 sendv: Callable[..., object] | None = None) -> None:
        settings = settings or JournaldSettings()
        super().__init__("roxd-journald", journal_fields, "alerts", settings.queue_max, sendv)

    def emit(self, alert: Alert) -> None:
        self.put(alert)
