"""RFC 5424 syslog messages for alerts, with structured data.

    <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD-ELEMENT]... BOM MSG

SD-IDs use the private enterprise number 32473 (RFC 5612's documentation number):

    [roxd@32473 alert= kind= count= first= last= actions=]
    [rule@32473 id= name= phase= severity= mitre= (repeated, one per technique)]
    [container@32473 id= name= image= runtime= namespace= pod=]  (absent for host processes;
                                                         namespace and pod only in pods)
    [process@32473 pid= ppid= uid= exe= args= parent_exe=]
    [connect@32473 daddr= dport= result=]               (connect events only)

PARAM-VALUEs and MSG are printable() text (roxd/text.py: control characters and non-UTF-8
bytes as \\xNN, so one message is one line); PARAM-VALUEs are cut at MAX_VALUE characters
(never inside an escape), then escape '"', '\\' and ']' with a backslash (§6.3.3).
"""

from __future__ import annotations

import os
from typing import Any

from roxd.alerts.dispatch import summary
from roxd.alerts.kinds import MSGIDS, alert_kind
from roxd.alerts.settings import FACILITIES
from roxd.model import Alert, ConnectEvent, rfc3339
from roxd.text import printable
from roxd.vocabulary import SEVERITIES

PEN = 32473
MAX_VALUE = 1024
BOM = "\ufeff"

SdParams = list[tuple[str, object]]


def escape_param(value: object) -> str:
    # control characters as \xNN first (roxd/text.py): a collector that writes lines must
    # not see a forged line; then cut without splitting an escape; then §6.3.3
    text = printable(str(value), MAX_VALUE)
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _header_field(value: str, limit: int) -> str:
    """NILVALUE for empty; printable US-ASCII without spaces otherwise (§6.2)."""
    clean = "".join(c for c in value if 33 <= ord(c) <= 126)[:limit]
    return clean or "-"


def sd_element(sd_name: str, params: SdParams) -> str:
    body = "".join(f' {k}="{escape_param(v)}"' for k, v in params if v is not None and v != "")
    return f"[{sd_name}@{PEN}{body}]"


def structured_data(alert: Alert) -> str:
    ev = alert.event
    proc = ev.process
    rule = alert.rule
    parts = [
        sd_element("roxd", [
            ("alert", alert.id), ("kind", alert_kind(alert)), ("count", alert.count),
            ("first", rfc3339(alert.first_ns or alert.time_ns)),
            ("last", rfc3339(alert.last_ns or alert.time_ns)),
            ("actions", ",".join(f"{a.action.value}:{a.outcome.value}" for a in alert.actions)),
        ]),
        sd_element("rule", [("id", rule.id), ("name", rule.name), ("phase", rule.phase.value),
                            ("severity", rule.severity.value),
                            *(("mitre", m) for m in rule.mitre)]),
    ]
    if ev.container is not None:
        c = ev.container
        parts.append(sd_element("container", [("id", c.id), ("name", c.name),
                                              ("image", c.image), ("runtime", c.runtime),
                                              ("namespace", c.namespace), ("pod", c.pod)]))
    parts.append(sd_element("process", [
        ("pid", proc.pid), ("ppid", proc.ppid), ("uid", proc.uid), ("exe", proc.exe),
        ("args", " ".join(proc.args)), ("parent_exe", proc.parent_exe)]))
    if isinstance(ev.event, ConnectEvent):
        parts.append(sd_element("connect", [("daddr", ev.event.daddr),
                                            ("dport", ev.event.dport),
                                            ("result", ev.event.result.value)]))
    return "".join(parts)


def format_message(alert: Alert, *, hostname: str, app_name: str = "roxd",
                   facility: str = "auth", procid: int | None = None) -> bytes:
    pri = FACILITIES[facility] * 8 + alert.rule.severity.code
    header = " ".join([
        f"<{pri}>1",
        rfc3339(alert.time_ns),
        _header_field(hostname, 255),
        _header_field(app_name, 48),
        _header_field(str(procid if procid is not None else os.getpid()), 128),
        MSGIDS[alert_kind(alert)],
    ])
    msg = summary(alert)  # one line, control characters escaped
    # every part is printable() text already; backslashreplace only as a last defence
    return f"{header} {structured_data(alert)} {BOM}{msg}".encode("utf-8", "backslashreplace")


INCIDENT_MSGID = "incident"


def format_incident_message(change: Any, *, hostname: str, app_name: str = "roxd",
                            facility: str = "auth", procid: int | None = None) -> bytes:
    """One message per incident change (roxd/incidents: opened, phase_added,
    container_added, action, closed), MSGID `incident`, PRI from the incident's severity:

        [incident@32473 id= change= state= severity= phases= phase= alerts= first= last=
                        alert= action= outcome=]
        [container@32473 id= name= image=]  (repeated, one per container it touches)
    """
    from roxd.incidents.journald import incident_summary  # the same one-line summary

    d = change.incident
    pri = FACILITIES[facility] * 8 + SEVERITIES.index(d["severity"])
    header = " ".join([
        f"<{pri}>1", rfc3339(change.time_ns), _header_field(hostname, 255),
        _header_field(app_name, 48),
        _header_field(str(procid if procid is not None else os.getpid()), 128),
        INCIDENT_MSGID,
    ])
    action = change.action or {}
    sd = sd_element("incident", [
        ("id", d["id"]), ("change", change.kind), ("state", d["state"]),
        ("severity", d["severity"]), ("phases", ",".join(p["phase"] for p in d["phases"])),
        ("phase", change.phase), ("alerts", d["alerts"]), ("first", d["first_seen"]),
        ("last", d["last_seen"]), ("alert", change.alert_id),
        ("action", action.get("action")), ("outcome", action.get("outcome"))])
    sd += "".join(sd_element("container", [("id", c["id"]), ("name", c.get("name")),
                                           ("image", c.get("image"))])
                  for c in d["containers"])
    msg = incident_summary(change)
    return f"{header} {sd} {BOM}{msg}".encode("utf-8", "backslashreplace")
