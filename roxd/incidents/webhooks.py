"""Incident changes to the alert webhooks: one message per change, not per alert.

The payloads only: the alert webhooks' own sink (roxd/alerts/webhooks.py's WebhookSink) takes
incident changes and posts them from its queue, beside its alerts.

Every `[[alerts.webhooks]]` with `incidents = true` (the default) also receives the changes
of incidents whose severity reaches its `min_severity`: opened, phase added, spread to another
container, an incident-policy action, closed. Plain `updated` changes (one more alert in the
same phase) send nothing: the alert itself went out as an alert.

Payloads by webhook kind: generic JSON (`type: incident`, the change, a summary of the
incident without its timeline, the node); Slack (strings a process controls inside code, as for
alerts); PagerDuty Events v2, one PagerDuty alert per incident (`dedup_key` the incident id):
`trigger` on each change, `resolve` when the incident closes.
"""

from __future__ import annotations

import logging
from typing import Any

from roxd.alerts.node import NodeIdentity
from roxd.alerts.webhooks import PAGERDUTY_SEVERITY, slack_code
from roxd.incidents.journald import incident_summary
from roxd.incidents.tracker import IncidentChange
from roxd.model import Severity, rfc3339
from roxd.text import clip, json_safe, printable

log = logging.getLogger("roxd.incidents.webhooks")

SENT_CHANGES = ("opened", "phase_added", "container_added", "action", "closed")
SUMMARY_FIELDS = ("id", "state", "severity", "worst_alert_severity", "first_seen", "last_seen",
                  "closed_at", "alerts", "containers", "phases", "actions")


def incident_record(change: IncidentChange, node: NodeIdentity | None) -> dict[str, Any]:
    d = change.incident
    record: dict[str, Any] = {
        "type": "incident", "change": change.kind, "time": rfc3339(change.time_ns),
        "summary": incident_summary(change),
        "incident": {k: d.get(k) for k in SUMMARY_FIELDS},
        "phase": change.phase, "container": change.container, "alert_id": change.alert_id,
        "action": change.action,
    }
    if node is not None:
        record["node"] = node.to_dict()
    return json_safe(record)


def slack_incident(change: IncidentChange) -> dict[str, Any]:
    d = change.incident
    phases = " > ".join(p["phase"] for p in d["phases"]) or "-"
    where = ", ".join(c.get("name") or c["id"][:12] for c in d["containers"]) or "-"
    return {
        "text": f"`{slack_code(incident_summary(change), 3000)}`",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "emoji": False, "text": printable(
                f"roxd incident {d['id'][:12]}: {change.kind.replace('_', ' ')}", 150)}},
            {"type": "section", "fields": [
                {"type": "mrkdwn", "text": f"*Severity*\n{d['severity']}"},
                {"type": "mrkdwn", "text": f"*Phases*\n{slack_code(phases, 300)}"},
                {"type": "mrkdwn", "text": f"*Containers*\n`{slack_code(where, 300)}`"},
                {"type": "mrkdwn", "text": f"*Alerts*\n{int(d['alerts'])}"},
            ]},
        ],
    }


def pagerduty_incident(change: IncidentChange, routing_key: str, source: str,
                       node: NodeIdentity | None) -> dict[str, Any]:
    d = change.incident
    payload: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": "resolve" if change.kind == "closed" else "trigger",
        "dedup_key": f"roxd:{source}:incident:{d['id']}"[:255],
    }
    if change.kind != "closed":
        payload["payload"] = {
            "summary": clip(incident_summary(change), 1024),
            "source": source,
            "severity": PAGERDUTY_SEVERITY[Severity(d["severity"])],
            "timestamp": rfc3339(change.time_ns),
            "component": printable(", ".join(c.get("name") or c["id"][:12]
                                             for c in d["containers"]), 255),
            "group": ",".join(p["phase"] for p in d["phases"]),
            "class": "roxd.incident",
            "custom_details": incident_record(change, node),
        }
    return payload


def incident_payload(kind: str, change: IncidentChange, *, routing_key: str, source: str,
                     node: NodeIdentity | None) -> dict[str, Any]:
    """The body for a webhook of this kind (generic, slack, pagerduty)."""
    if kind == "slack":
        return slack_incident(change)
    if kind == "pagerduty":
        return pagerduty_incident(change, routing_key, source, node)
    return incident_record(change, node)
