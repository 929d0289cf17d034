"""Incident changes to journald: one entry per incident opened, phase added, container added
(the attack moved) and closed — not one per alert (the alerts have their own entries).

    journalctl MESSAGE_ID=7c1f3b0e9d4a4f6b8a52e61d0c9b7a44
    journalctl ROXD_INCIDENT_ID=<id> -o json
    journalctl ROXD_INCIDENT_CHANGE=phase_added ROXD_INCIDENT_PHASE=persistence

Sent with python-systemd from the sink's own thread by roxd/alerts/journald.py's JournalQueue,
the mechanism that sends alerts; values are escaped and cut the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from roxd.alerts.journald import JournalQueue, journal_value
from roxd.incidents.tracker import IncidentChange
from roxd.text import printable
from roxd.vocabulary import SEVERITIES

log = logging.getLogger("roxd.incidents.journald")

MESSAGE_ID = "7c1f3b0e9d4a4f6b8a52e61d0c9b7a44"
JOURNALED = ("opened", "phase_added", "container_added", "action", "closed")


def incident_summary(change: IncidentChange) -> str:
    d = change.incident
    where = ", ".join(c.get("name") or c["id"][:12] for c in d["containers"]) or "-"
    phases = " > ".join(p["phase"] for p in d["phases"])
    what = {"opened": "opened", "phase_added": f"reached {change.phase}",
            "container_added": f"spread to {change.container and change.container[:12]}",
            "closed": "closed (quiet)",
            "action": _action_text(change.action)}.get(change.kind, change.kind)
    return printable(f"incident {d['id'][:12]} {what} in {where}: {d['severity']}, phases "
                     f"{phases}, {d['alerts']} alerts")


def _action_text(action: dict[str, Any] | None) -> str:
    if not action:
        return "action"
    target = action.get("container_name") or str(action.get("container") or "")[:12]
    return f"{action.get('action')} {target}: {action.get('outcome')}"


def incident_fields(change: IncidentChange) -> list[str]:
    d = change.incident
    fields: dict[str, Any] = {
        "MESSAGE": incident_summary(change),
        "MESSAGE_ID": MESSAGE_ID,
        "PRIORITY": SEVERITIES.index(d["severity"]),
        "SYSLOG_IDENTIFIER": "roxd",
        "ROXD_KIND": "incident",
        "ROXD_INCIDENT_ID": d["id"],
        "ROXD_INCIDENT_CHANGE": change.kind,
        "ROXD_INCIDENT_STATE": d["state"],
        "ROXD_INCIDENT_SEVERITY": d["severity"],
        "ROXD_INCIDENT_PHASES": ",".join(p["phase"] for p in d["phases"]),
        "ROXD_INCIDENT_ALERTS": d["alerts"],
        "ROXD_INCIDENT_FIRST_NS": d["first_ns"],
        "ROXD_INCIDENT_LAST_NS": d["last_ns"],
    }
    if change.phase:
        fields["ROXD_INCIDENT_PHASE"] = change.phase
    if change.alert_id:
        fields["ROXD_INCIDENT_ALERT_ID"] = change.alert_id
    if change.action:
        fields["ROXD_INCIDENT_ACTION"] = change.action.get("action")
        fields["ROXD_INCIDENT_ACTION_OUTCOME"] = change.action.get("outcome")
    out = [f"{k}={journal_value(v)}" for k, v in fields.items()]
    for c in d["containers"]:  # repeated, once per container
        out.append(f"ROXD_INCIDENT_CONTAINER_ID={journal_value(c['id'])}")
        if c.get("name"):
            out.append(f"ROXD_INCIDENT_CONTAINER_NAME={journal_value(c['name'])}")
    return out


class IncidentJournal(JournalQueue[IncidentChange]):
    """Incident changes worth an entry (JOURNALED), sent like the alert entries."""

    def __init__(self, sendv: Callable[..., object] | None = None,
                 queue_max: int = 10000) -> None:
        super().__init__("roxd-incident-journald", incident_fields, "incidents", queue_max,
                         sendv)

    def incident_changed(self, change: IncidentChange) -> None:
        if change.kind in JOURNALED:
            self.put(change)
