"""Response by incident policy: act on an attack as a whole, not on one alert (docs/incidents.md).

A rule's `isolate` action reacts to one event. An operator may rather say "quarantine a
container once its incident has reached three phases" or "... once it reaches objectives":
the incident is the evidence, and no single rule has to be trusted with isolating. The
policy is `[incidents] response` (off by default), `response_min_phases` and
`response_on_phases`.

The responder is an incident sink: it sees every change under the tracker's lock, so it only
decides and queues; a worker thread isolates (nftables and the runtime's API are blocking
I/O) and records the action and its outcome back into the incident, which publishes it as an
`action` change to the store, journald and webhooks. Each container of an incident is acted on
once, including containers the incident spreads to later. Outcomes are honest: `done` only
when the quarantine was applied; `would` in monitor mode; `not_supported` for the host (host
processes are not isolated) or a host with no quarantine; `failed` with the error otherwise.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from roxd.alerts.worker import QueueWorker, SinkCounters
from roxd.incidents.settings import IncidentsSettings
from roxd.incidents.tracker import HOST, IncidentChange

log = logging.getLogger("roxd.incidents.response")

Isolate = Callable[[str, "str | None", str], object]  # (container id, name, reason)
Record = Callable[[str, dict[str, Any]], bool]  # IncidentTracker.record_action
TRIGGERING = ("opened", "phase_added", "container_added")
MAX_REMEMBERED = 10_000  # (incident, container) pairs already acted on


def trigger_reason(settings: IncidentsSettings, incident: dict[str, Any]) -> str | None:
    """Why the policy acts on this incident now, or None when it does not."""
    phases = [p["phase"] for p in incident.get("phases", [])]
    hit = [p for p in phases if p in settings.response_on_phases]
    if hit:
        return f"incident reached {hit[0]}"
    if settings.response_min_phases and len(phases) >= settings.response_min_phases:
        return f"incident reached {len(phases)} phases ({', '.join(phases)})"
    return None


class IncidentResponder:
    def __init__(self, settings: IncidentsSettings, isolate: Isolate | None, *,
                 monitor: bool = False, queue_max: int = 1_000) -> None:
        self.settings = settings
        self._isolate = isolate
        self._monitor = monitor
        self._record: Record | None = None
        self._acted: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._counters = SinkCounters("done", "would", "not_supported")
        self._worker = QueueWorker("roxd-incident-response", self._act, queue_max,
                                   self._counters)

    def bind(self, record: Record) -> None:
        """The tracker's record_action (the tracker is built after its sinks)."""
        self._record = record

    def incident_changed(self, change: IncidentChange) -> None:
        if change.kind not in TRIGGERING or self.settings.response == "off":
            return
        incident = change.incident
        if incident.get("state") != "open":
            return
        reason = trigger_reason(self.settings, incident)
        if reason is None:
            return
        for container in incident.get("containers", []):
            key = (incident["id"], container["id"])
            if key in self._acted:
                continue
            self._acted[key] = None
            while len(self._acted) > MAX_REMEMBERED:
                self._acted.popitem(last=False)
            self._worker.put((incident["id"], dict(container), reason))  # type: ignore[arg-type]

    def _act(self, item: Any) -> bool:
        incident_id, container, reason = item
        cid, name = container["id"], container.get("name")
        action = {"action": self.settings.response, "container": cid, "container_name": name,
                  "trigger": reason}
        if cid == HOST:
            outcome, why = "not_supported", "host processes are not isolated"
        elif self._monitor:
            outcome, why = "would", "monitor mode: the quarantine was not applied"
        elif self._isolate is None:
            outcome, why = "not_supported", "network quarantine is not available on this host"
        else:
            try:
                self._isolate(cid, name, f"incident {incident_id[:12]}: {reason}")
                outcome, why = "done", ""
            except Exception as exc:  # the outcome says it; the incident must still record it
                outcome, why = "failed", f"{type(exc).__name__}: {exc}"
        if outcome != "failed":  # the worker counts failed (False) and sent (True) itself
            self._counters.add(outcome)
        log.warning("incident %s: %s %s: %s%s", incident_id[:12], self.settings.response,
                    name or cid[:12], outcome, f" ({why})" if why else "")
        if self._record is not None:
            self._record(incident_id, {**action, "outcome": outcome, "reason": why})
        return outcome != "failed"

    def flush(self, timeout: float = 5.0) -> bool:
        return self._worker.wait_idle(timeout)

    def stats(self) -> dict[str, int]:
        return self._counters.snapshot()

    def close(self, timeout: float = 5.0) -> None:
        self._worker.wait_idle(timeout)
        self._worker.close(0.5)
