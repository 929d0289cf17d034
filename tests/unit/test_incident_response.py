"""Issue 16: response by incident policy, and incident changes to webhooks (one message per
change, not per alert), posted to a real HTTP server on loopback."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from roxd.alerts.settings import WebhookSettings
from roxd.alerts.webhooks import WebhookSink
from roxd.errors import ConfigError
from roxd.incidents import start_incidents
from roxd.incidents.response import IncidentResponder, trigger_reason
from roxd.incidents.settings import IncidentsSettings
from roxd.incidents.tracker import IncidentTracker
from roxd.model import Container
from tests.unit.test_incidents import DB, SHIM, WEB, Clock, alert, attack, feed

pytestmark = pytest.mark.unit
S = 1_000_000_000


class Isolations:
    """The quarantine's isolate() as the responder calls it; `fail` injects a failure."""

    def __init__(self, fail: str | None = None) -> None:
        self.calls: list[tuple[str, str | None, str]] = []
        self.fail = fail

    def __call__(self, cid: str, name: str | None, reason: str) -> None:
        self.calls.append((cid, name, reason))
        if self.fail:
            raise RuntimeError(self.fail)


def respond(settings: IncidentsSettings, isolate: Any,
            monitor: bool = False) -> tuple[IncidentTracker, IncidentResponder, Clock]:
    clock = Clock()
    responder = IncidentResponder(settings, isolate, monitor=monitor)
    tracker = IncidentTracker(settings, [responder], clock=clock, timer=False)
    responder.bind(tracker.record_action)
    return tracker, responder, clock


def test_isolates_once_when_the_incident_reaches_the_phase_count() -> None:
    settings = IncidentsSettings(quiet_window_s=600, response="isolate", response_min_phases=3,
                                 response_on_phases=())
    isolate = Isolations()
    tracker, responder, clock = respond(settings, isolate)
    steps = attack()  # foothold, privilege escalation, persistence, objectives
    feed(tracker, clock, *steps[:2])
    assert responder.flush(5) and isolate.calls == []  # two phases: not yet
    feed(tracker, clock, *steps[2:])
    assert responder.flush(5)
    assert [(c, n) for c, n, _ in isolate.calls] == [(WEB.id, "web")]  # once, not per alert
    assert "3 phases" in isolate.calls[0][2]
    [inc] = tracker.query()
    [action] = inc["actions"]
    assert action["action"] == "isolate" and action["outcome"] == "done"
    assert action["by"] == "incident-policy" and action["container"] == WEB.id


def test_a_named_phase_triggers_alone_and_a_container_it_spreads_to_is_isolated_too() -> None:
    settings = IncidentsSettings(quiet_window_s=600, response="isolate", response_min_phases=0,
                                 response_on_phases=("lateral_movement",))
    isolate = Isolations()
    tracker, responder, clock = respond(settings, isolate)
    t0 = clock.now
    feed(tracker, clock, alert("foothold.shell-in-container", t0, 1000, (SHIM,)))
    assert responder.flush(5) and isolate.calls == []
    # web connects to db's address, then db alerts: one incident spanning both
    lateral = alert("lateral_movement.ssh-connect-from-container", t0 + S, 1001,
                    (SHIM,), connect="172.17.0.9")
    tracker._addresses = lambda pids: frozenset({"172.17.0.9"})  # db's address, as /proc says
    feed(tracker, clock, lateral)
    feed(tracker, clock, alert("foothold.shell-in-container", t0 + 2 * S, 2000, (SHIM,), DB))
    assert responder.flush(5)
    assert sorted(c for c, _, _ in isolate.calls) == sorted([WEB.id, DB.id])
    assert all("reached lateral_movement" in r for _, _, r in isolate.calls)


def test_outcomes_are_honest_monitor_failure_and_host() -> None:
    settings = IncidentsSettings(quiet_window_s=600, response="isolate", response_min_phases=1)
    # monitor mode: nothing is applied, the incident says it would have been
    isolate = Isolations()
    tracker, responder, clock = respond(settings, isolate, monitor=True)
    feed(tracker, clock, attack()[0])
    assert responder.flush(5) and isolate.calls == []
    assert tracker.query()[0]["actions"][0]["outcome"] == "would"
    # the quarantine fails: the outcome is failed, with the error
    tracker, responder, clock = respond(settings, Isolations(fail="container exited"))
    feed(tracker, clock, attack()[0])
    assert responder.flush(5)
    action = tracker.query()[0]["actions"][0]
    assert action["outcome"] == "failed" and "container exited" in action["reason"]
    # no quarantine on this host, and host processes: not supported, never "done"
    tracker, responder, clock = respond(settings, None)
    feed(tracker, clock, attack()[0], alert("foothold.shell-in-container", clock.now + S, 7,
                                            container=None))
    assert responder.flush(5)
    outcomes = sorted(a["outcome"] for i in tracker.query() for a in i["actions"])
    assert outcomes == ["not_supported", "not_supported"]
    assert responder.stats()["not_supported"] == 2


def test_off_by_default_and_bad_settings_are_named() -> None:
    assert IncidentsSettings().response == "off"
    assert trigger_reason(IncidentsSettings(), {"phases": [{"phase": "foothold"}]}) is None
    problems = IncidentsSettings(response="nuke", response_min_phases=9,
                                 response_on_phases=("exfil",)).check()
    assert any("response must be one of off, isolate" in p for p in problems)
    assert any("response_min_phases" in p for p in problems)
    assert any("unknown phase(s) exfil" in p for p in problems)


def test_a_bad_response_in_roxd_toml_is_a_config_error(tmp_path: Any) -> None:
    from roxd.config import load_config

    path = tmp_path / "roxd.toml"
    path.write_text('[incidents]\nresponse = "nuke"\n')
    with pytest.raises(ConfigError, match="incidents.response must be one of"):
        load_config(path)


class Receiver:
    """A webhook endpoint on loopback: keeps every JSON body it is sent."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def test_one_webhook_message_per_incident_change_not_per_alert(receiver: Receiver) -> None:
    hook = WebhookSink(WebhookSettings(url=receiver.url, min_severity="debug"))
    clock = Clock()
    tracker = IncidentTracker(IncidentsSettings(quiet_window_s=60), [hook], clock=clock,
                              timer=False)
    steps = attack()
    repeat = alert("privilege_escalation.read-shadow", steps[1].time_ns + S, 1001,
                   steps[1].event.process.ancestors)
    feed(tracker, clock, steps[0], steps[1], repeat, *steps[2:])  # 5 alerts
    clock.now += 120 * S
    tracker.tick()  # quiet: closed
    assert hook.flush(10)
    assert [(b["change"], b["phase"]) for b in receiver.bodies] == [
        ("opened", None), ("phase_added", "privilege_escalation"),
        ("phase_added", "persistence"), ("phase_added", "objectives"), ("closed", None)]
    last = receiver.bodies[-1]
    assert last["type"] == "incident" and last["incident"]["alerts"] == 5
    assert last["incident"]["state"] == "closed" and "timeline" not in last["incident"]
    hook.close()


def test_pagerduty_one_alert_per_incident_resolved_when_it_closes(receiver: Receiver) -> None:
    hook = WebhookSink(WebhookSettings(url=receiver.url, kind="pagerduty",
                                           routing_key="k" * 32, min_severity="debug"))
    clock = Clock()
    tracker = IncidentTracker(IncidentsSettings(quiet_window_s=60), [hook], clock=clock,
                              timer=False)
    feed(tracker, clock, *attack()[:2])
    clock.now += 120 * S
    tracker.tick()
    assert hook.flush(10)
    actions = [b["event_action"] for b in receiver.bodies]
    assert actions == ["trigger", "trigger", "resolve"]
    assert len({b["dedup_key"] for b in receiver.bodies}) == 1
    assert receiver.bodies[0]["payload"]["severity"] == "warning"
    hook.close()


def test_slack_incident_keeps_hostile_names_inside_code(receiver: Receiver) -> None:
    hook = WebhookSink(WebhookSettings(url=receiver.url, kind="slack",
                                           min_severity="debug"))
    evil = Container("c3" * 32, "docker", "x`<!channel>\n*bold*", "img")
    clock = Clock()
    tracker = IncidentTracker(IncidentsSettings(quiet_window_s=60), [hook], clock=clock,
                              timer=False)
    feed(tracker, clock, alert("foothold.shell-in-container", clock.now, 5, (SHIM,), evil))
    assert hook.flush(10)
    text = json.dumps(receiver.bodies[0])
    assert "<!channel>" not in text and "&lt;!channel&gt;" in text
    assert "\\n*bold*" not in text  # the newline is escaped, not a line break
    hook.close()


def test_min_severity_filters_incidents_and_the_alert_webhooks_carry_them(
        receiver: Receiver, tmp_path: Any) -> None:
    """One sink per webhook: the alert webhooks themselves take incident changes, through
    AlertDelivery.incident_feeds() like NATS, OTLP and syslog (no second sink per webhook)."""
    from roxd.alerts.delivery import AlertDelivery
    from roxd.alerts.settings import AlertsSettings, JournaldSettings, StoreSettings

    hooks = (WebhookSettings(url=receiver.url, min_severity="critical"),
             WebhookSettings(url=receiver.url, incidents=False))
    delivery = AlertDelivery.from_settings(
        AlertsSettings(journald=JournaldSettings(enabled=False),
                       store=StoreSettings(enabled=False), webhooks=hooks), tmp_path)
    tracker = start_incidents(IncidentsSettings(store=False, response="isolate"), tmp_path,
                              journald=False, timer=False, isolate=None)
    assert [type(s).__name__ for s in tracker._sinks] == ["IncidentResponder"]
    feeds = delivery.incident_feeds()
    assert [f._exporter for f in feeds] == [delivery.sinks["webhook0.generic"]]  # not webhook1
    for incident_feed in feeds:
        tracker.add_sink(incident_feed)
    feed(tracker, Clock(), attack()[0])  # a notice foothold: below critical
    hook = delivery.sinks["webhook0.generic"]
    assert hook.flush(5) and receiver.bodies == []  # type: ignore[attr-defined]
    assert hook.stats()["filtered"] == 1  # the incident's opening (the tracker alone is fed)
    tracker.close(2)
    delivery.close(2)
