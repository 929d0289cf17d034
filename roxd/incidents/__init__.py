"""Incidents: alerts tied into the attack's story (docs/incidents.md).

`tracker.py` correlates (a raw tap on AlertDispatcher: every alert as raised, before noise
control folds any), `store.py` keeps incidents in SQLite across restarts, `journald.py` writes
one journal entry per incident change. `start_incidents` builds the three from the settings.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from roxd.incidents.settings import IncidentsSettings
from roxd.incidents.tracker import IncidentQuery, IncidentSink, IncidentTracker

log = logging.getLogger("roxd.incidents")

__all__ = ["IncidentQuery", "IncidentTracker", "IncidentsSettings", "start_incidents"]


def start_incidents(settings: IncidentsSettings, state_dir: Path | str, *,
                    journald: bool = True, timer: bool = True, isolate: Any = None,
                    monitor: bool = False, cgroup_root: str | None = None) -> IncidentTracker:
    """The tracker with its sinks. A sink that cannot start is logged and left out (an
    unwritable state dir: incidents live in memory only until restart). The exporters that
    carry incident changes (NATS, OTLP, syslog, webhooks) are the alert sinks themselves, added
    with `add_sink` (`AlertDelivery.incident_feeds()`). `isolate`:
    the quarantine's isolate(container id, name, reason) for the incident response policy,
    None where the host has no quarantine."""
    sinks: list[IncidentSink] = []
    store = None
    if settings.store:
        try:
            from roxd.incidents.store import IncidentStore

            store = IncidentStore(state_dir, max_age_days=settings.max_age_days)
            sinks.append(store)
        except Exception as exc:
            log.error("incident store disabled: %s", exc)
    if settings.journald and journald:
        try:
            from roxd.incidents.journald import IncidentJournal

            sinks.append(IncidentJournal())
        except Exception as exc:
            log.warning("incident journal entries disabled: %s", exc)
    responder = None
    if settings.response != "off":
        from roxd.incidents.response import IncidentResponder

        responder = IncidentResponder(settings, isolate, monitor=monitor)
        sinks.append(responder)
    tracker = IncidentTracker(settings, sinks, store=store, timer=timer,
                              cgroup_root=cgroup_root)
    if responder is not None:
        responder.bind(tracker.record_action)
    return tracker
