"""Every operation of the OpenAPI document, by operation id, bound to one daemon."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from roxd.api import metrics, schemas, streams
from roxd.api.actions import ActionEndpoints
from roxd.api.alerts import AlertFeed, AlertFilter, AlertSource, RecentAlerts, StoreAlerts
from roxd.api.baselines import BaselineEndpoints
from roxd.api.containers import ContainerDirectory
from roxd.api.http import ConnectionStats, Request, Response
from roxd.api.port import DaemonPort
from roxd.api.posture import PostureEndpoints
from roxd.api.rules import RuleEndpoints
from roxd.api.seccomp import SeccompEndpoints
from roxd.api.settings import ApiSettings
from roxd.api.status import StatusReporter
from roxd.api.timeparse import parse_time_ns
from roxd.errors import ApiError
from roxd.ui.off import DashboardOff, DashboardPart

Handler = Callable[[Request, dict[str, Any], Any], Any]


class Endpoints:
    def __init__(self, daemon: DaemonPort, settings: ApiSettings, closing: threading.Event,
                 socket_path: str) -> None:
        self.daemon = daemon
        self.settings = settings
        self.closing = closing
        self.socket_path = socket_path
        self.connections: ConnectionStats | None = None  # set by the server
        self.recent = RecentAlerts(settings.recent_alerts)
        self.feed = AlertFeed(daemon.alerts_topic, self.recent, settings.stream_queue, closing)
        # the SQLite store when alert delivery runs one (config alerts.store), else memory
        store = daemon.alert_store()
        self.alerts: AlertSource = StoreAlerts(store) if store is not None else self.recent
        self.status = StatusReporter(daemon)
        self.directory = ContainerDirectory(daemon, lambda: self.recent.counts()[0])
        self.rules = RuleEndpoints(daemon)
        self.actions = ActionEndpoints(daemon, self.directory)
        self.seccomp = SeccompEndpoints(daemon)
        self.baselines = BaselineEndpoints(daemon)
        self.stream_drops: dict[str, int] = {"events": 0, "alerts": 0}
        self.dashboard: DashboardPart = DashboardOff()  # set by the server when it runs one

    def handlers(self) -> dict[str, Handler]:
        return {
            "getStatus": self.get_status,
            "getHealth": self.get_health,
            "getOpenApi": lambda _r, _p, _b: Response(200, schemas.document_bytes()),
            "getMetrics": self.get_metrics,
            "listContainers": lambda _r, _p, _b: self.directory.describe_all(
                self.directory.snapshot()),
            "getContainer": lambda _r, p, _b: self.directory.describe(
                self.directory.resolve(p["ref"])),
            "isolateContainer": self.actions.isolate,
            "releaseContainer": self.actions.release,
            "killProcess": self.actions.kill,
            "streamEvents": self.stream_events,
            "listAlerts": self.list_alerts,
            "getAlert": self.get_alert,
            "streamAlerts": self.stream_alerts,
            "listIncidents": self.list_incidents,
            "getIncident": self.get_incident,
            "listFlows": self.list_flows,
            "getContainerRisk": lambda _r, p, _b: dict(self.daemon.risk(
                self.directory.resolve(p["ref"]).id)),
            "listWorkloadRisk": lambda _r, _p, _b: list(self.daemon.workload_risk(None)),
            "getWorkloadRisk": self.get_workload_risk,
            "listRules": self.rules.list,
            "getRule": self.rules.get,
            "topRules": self.rules.top,
            "validateRules": self.rules.validate,
            "reloadRules": self.rules.reload,
            "enableRules": self.rules.toggle(True),
            "disableRules": self.rules.toggle(False),
            **self.seccomp.handlers(),
            **self.baselines.handlers(),
            **PostureEndpoints(self.daemon).handlers(),
            "createDashboardLogin": lambda r, _p, _b: self.dashboard.login(r.peer),
        }

    # ------------------------------------------------------------------ status

    def api_info(self) -> dict[str, Any]:
        c = self.connections
        return {
            "socket": self.socket_path,
            "alert_source": self.alerts.name,
            "connections": {"open": c.open, "accepted": c.accepted, "refused": c.refused,
                            "limit": self.settings.max_connections} if c else {},
            "requests": c.requests if c else 0,
        }

    def _status(self) -> dict[str, Any]:
        containers = self.directory.snapshot()
        quarantine = self.daemon.quarantine()
        quarantined = len(quarantine.records()) if quarantine is not None else 0
        status = self.status.status(self.api_info(), sum(c.running for c in containers),
                                    quarantined)
        status["drops"]["stream_overflow"] = self._stream_drops()
        status["alert_sinks"] = dict(self.daemon.alert_sink_stats())
        status["degraded"] = list(self.daemon.alert_sink_problems())
        status["policy"] = dict(self.daemon.policy())
        # what the cgroup connect hook adds to the network baseline rule on this host
        enforcement = status["policy"].get("network_enforcement") or {}
        effective = status["rules"].get("effective_actions") or {}
        rule = "baseline.new-network-peer"
        if rule in effective and enforcement.get("effective", "").startswith("refuse"):
            effective[rule] += "; block: in-kernel (enforce-mode workloads, cgroup connect hook)"
        baselines = self.daemon.baselines()
        # learned workloads by state and the engine's counters (None: baselines are off)
        # (the engine belongs to the event loop: read it there, as roxd/api/baselines.py does)
        # (a status must answer while the loop is busy: after 2 s the block says so instead)
        status["baselines"] = None
        if baselines is not None:
            try:
                status["baselines"] = dict(self.daemon.call_in_loop(baselines.stats, 2.0))
            except Exception:  # CallTimeout: the loop did not get to it
                status["baselines"] = {"unavailable": 1}
        status["dashboard"] = self.dashboard.describe()
        return status

    def _stream_drops(self) -> dict[str, int]:
        return {**self.stream_drops, "alert_history": self.feed.dropped}

    def get_status(self, _req: Request, _params: dict[str, Any], _body: Any) -> Any:
        return self._status()

    def get_health(self, _req: Request, _params: dict[str, Any], _body: Any) -> Any:
        ok, problems, degraded = self.status.health()
        state = "failing" if not ok else "degraded" if degraded else "ok"
        return Response.json({"ok": ok, "status": state, "problems": problems,
                              "degraded": degraded}, 200 if ok else 503)

    def get_metrics(self, _req: Request, _params: dict[str, Any], _body: Any) -> Any:
        status = self._status()
        text = metrics.render(status, self.recent.counts()[1],
                              dict(self.connections.by_status) if self.connections else {},
                              status["drops"]["stream_overflow"])
        return Response(200, text.encode(), metrics.CONTENT_TYPE)

    # ------------------------------------------------------------------ alerts and events

    def get_workload_risk(self, _req: Request, p: dict[str, Any], _body: Any) -> Any:
        risk = self.daemon.workload_risk(p["workload"])
        if risk is None:
            raise ApiError(404, f"no running container has the workload key {p['workload']!r} "
                                "(GET /v1/risk/workloads lists them)")
        return risk

    def list_alerts(self, _req: Request, p: dict[str, Any], _body: Any) -> Any:
        f = AlertFilter(
            container=p.get("container"), rule=p.get("rule"), phase=p.get("phase"),
            severity=p.get("severity"),
            since_ns=parse_time_ns(p["since"], "query.since") if "since" in p else None,
            until_ns=parse_time_ns(p["until"], "query.until") if "until" in p else None,
            limit=p.get("limit", 100), cursor=p.get("cursor"))
        page = self.alerts.query(f)
        return {"items": page.items, "next_cursor": page.next_cursor, "source": page.source}

    def get_alert(self, _req: Request, p: dict[str, Any], _body: Any) -> Any:
        alert = self.alerts.get(p["id"])
        if alert is None:
            raise ApiError(404, f"no alert {p['id']!r} (kept: the last "
                                f"{self.settings.recent_alerts} in memory)"
                           if self.alerts.name == "memory" else f"no alert {p['id']!r}")
        return alert

    def stream_alerts(self, req: Request, p: dict[str, Any], _body: Any) -> Any:
        f = AlertFilter(container=p.get("container"), rule=p.get("rule"),
                        phase=p.get("phase"), severity=p.get("severity"))
        return streams.stream(self.daemon.alerts_topic, f.accepts, p,
                              streams.wants_sse(req, p), self.closing,
                              self.settings.stream_queue, "alert")

    def stream_events(self, req: Request, p: dict[str, Any], _body: Any) -> Any:
        return streams.stream(self.daemon.events_topic, streams.event_filter(p), p,
                              streams.wants_sse(req, p), self.closing,
                              self.settings.stream_queue, "event")

    # ------------------------------------------------------------------ incidents

    def _incidents(self) -> Any:
        view = self.daemon.incidents()
        if view is None:
            raise ApiError(501, "incidents are not tracked by this daemon")
        return view

    def list_incidents(self, _req: Request, p: dict[str, Any], _body: Any) -> Any:
        from roxd.incidents.tracker import IncidentQuery

        q = IncidentQuery(
            state=p.get("state"), container=p.get("container"),
            since_ns=parse_time_ns(p["since"], "query.since") if "since" in p else None,
            limit=p.get("limit", 100))
        return {"items": self._incidents().query(q)}

    def list_flows(self, _req: Request, p: dict[str, Any], _body: Any) -> Any:
        view = self.daemon.netmap()
        if view is None:
            raise ApiError(501, "the communication map is off ([netmap] enabled = false)")
        since = parse_time_ns(p["since"], "query.since") if "since" in p else None
        return {"items": view.flows(since, p.get("container"), p.get("limit", 1000)),
                "stats": view.stats()}

    def get_incident(self, _req: Request, p: dict[str, Any], _body: Any) -> Any:
        incident = self._incidents().get(p["id"])
        if incident is None:
            raise ApiError(404, f"no incident {p['id']!r} (closed incidents are kept "
                                "incidents.max_age_days in the store)")
        return incident
