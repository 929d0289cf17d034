"""Posture regressions become alerts: a check that goes from PASS to WARN between two scans,
one alert per container it names, raised through the real AlertDispatcher; a check already
WARN that names one more container raises nothing (noise); the containers a regression named
are remembered for the risk score while the check still names them; the scan runs on a
schedule."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import pytest

from roxd.alerts.dispatch import AlertDispatcher
from roxd.model import Alert, Phase, Severity
from roxd.posture.alerts import RULE_ID, PostureAlerts
from roxd.posture.service import PostureService
from tests.unit.test_posture_checks import container, facts

pytestmark = pytest.mark.unit


class Collect:
    def __init__(self) -> None:
        self.alerts: list[Alert] = []

    def emit(self, alert: Alert) -> None:
        self.alerts.append(alert)


def service_with(state: dict[str, Any], interval_s: float = 3600.0
                 ) -> tuple[PostureService, Collect]:
    sink = Collect()
    dispatcher = AlertDispatcher(sink)
    service = PostureService(engine=None, interval_s=interval_s,  # type: ignore[arg-type]
                             gather_facts=lambda _e: facts(*state["containers"]))
    service.on_regressions = PostureAlerts(dispatcher.raise_alert)
    return service, sink


def test_pass_to_warn_raises_one_alert_per_container_named() -> None:
    state: dict[str, Any] = {"containers": (container("plain"),)}
    service, sink = service_with(state)
    assert service.report().results()["5.32"] == "PASS"
    assert sink.alerts == []  # the first scan has nothing to compare with
    socket = container("socket")
    state["containers"] = (container("plain"), socket)
    service.report(refresh=True)
    hits = [a for a in sink.alerts if "5.32" in a.rule.name]
    assert len(hits) == 1
    a = hits[0]
    assert a.rule.id == RULE_ID and a.rule.severity is Severity.WARNING
    assert a.rule.phase is Phase.PRIVILEGE_ESCALATION
    assert a.event.container is not None and a.event.container.id == socket.inspect["Id"]
    assert a.event.event.args["cis_id"] == "5.32" and a.event.event.args["was"] == "PASS"
    assert a.event.event.source == "posture-scan"
    assert service.regressed_checks(socket.inspect["Id"]) == ["5.32"]
    # the same state again: no new alert
    before = len(sink.alerts)
    service.report(refresh=True)
    assert len(sink.alerts) == before
    # a second container with the socket while 5.32 is already WARN: no alert (noise)
    other = container("socket", processes=("sleep",))
    other.inspect["Name"] = "/posture-rec-socket-2"  # type: ignore[index]
    other.inspect["Id"] = "f" * 64  # type: ignore[index]
    state["containers"] = (container("plain"), socket, other)
    service.report(refresh=True)
    assert len(sink.alerts) == before
    # the socket container gone: its regression is forgotten
    state["containers"] = (container("plain"),)
    service.report(refresh=True)
    assert service.regressed_checks(socket.inspect["Id"]) == []


def test_sshd_observed_is_a_persistence_regression() -> None:
    state: dict[str, Any] = {"containers": (container("plain", processes=("sleep",)),)}
    service, sink = service_with(state)
    first = {f.check.id: f.outcome for f in service.report().findings}
    assert first["5.7"].result.value == "PASS"
    state["containers"] = (container("plain", processes=("sleep", "sshd")),)
    now = {f.check.id: f.outcome for f in service.report(refresh=True).findings}
    assert now["5.7"].result.value == "WARN" and "observed" in now["5.7"].reason
    hit = next(a for a in sink.alerts if "5.7" in a.rule.name)
    assert hit.rule.phase is Phase.PERSISTENCE


def test_no_containers_then_a_bad_one_is_not_a_regression() -> None:
    state: dict[str, Any] = {"containers": ()}
    service, sink = service_with(state)
    assert service.report().results()["5.32"] == "INFO"  # nothing to check: not a PASS
    state["containers"] = (container("socket"),)
    service.report(refresh=True)
    assert sink.alerts == []


def test_a_failing_alert_path_does_not_stop_the_scans() -> None:
    state: dict[str, Any] = {"containers": (container("plain"),)}
    service, _ = service_with(state)
    service.report()

    def broken(_found: Any) -> None:
        raise RuntimeError("loop gone")
    service.on_regressions = broken
    state["containers"] = (container("socket"),)
    assert service.report(refresh=True).results()["5.32"] == "WARN"
    assert service.regressions >= 1


def test_rescans_on_a_schedule() -> None:
    state: dict[str, Any] = {"containers": (container("plain"),)}
    service, sink = service_with(state, interval_s=0.2)
    # (5.32 PASS with the plain container, WARN once the socket one replaces it)
    service.start()
    try:
        deadline = time.monotonic() + 10
        while service.scans < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert service.scans >= 2  # the start scan and a scheduled one, no change needed
        state["containers"] = (container("socket"),)  # seen by the next scheduled scan
        while not sink.alerts and time.monotonic() < deadline:
            time.sleep(0.05)
        assert any("5.32" in a.rule.name for a in sink.alerts)
    finally:
        service.close()


def test_exec_sessions_observed_in_proc() -> None:
    """5.23 / 5.24 from sessions roxd observes in /proc, beside the engine's records."""
    from roxd.posture.checks import run_checks
    from roxd.posture.facts import ObservedSession

    def with_sessions(user: str, *sessions: ObservedSession) -> Any:
        c = container("plain")
        c.inspect["Config"]["User"] = user  # type: ignore[index]
        return facts(dataclasses.replace(c, sessions=sessions, execs=()))

    default_bnd = 0xA80425FB
    root_in_app = ObservedSession(4242, "sh", 0, default_bnd, default_bnd)
    r = {f.check.id: f.outcome for f in run_checks(with_sessions("1000", root_in_app)).findings}
    assert r["5.24"].result.value == "INFO" and "observed: session pid 4242" in r["5.24"].reason
    assert r["5.23"].result.value == "PASS"
    # a root container: every exec is root, not an exec "with user=root"
    r = {f.check.id: f.outcome for f in run_checks(with_sessions("", root_in_app)).findings}
    assert r["5.24"].result.value == "PASS"
    privileged = ObservedSession(4343, "sh", 0, 0x1FFFFFFFFFF, default_bnd)
    r = {f.check.id: f.outcome for f in run_checks(with_sessions("", privileged)).findings}
    assert r["5.23"].result.value == "WARN" and "beyond the container's bounding set" in \
        r["5.23"].reason


def test_a_manual_check_going_to_warn_raises_nothing() -> None:
    """5.9 (Manual): a container listening on an undeclared port turns it WARN in the report,
    and no alert is raised (the benign suite's web servers do this)."""
    from roxd.posture.facts import ListeningSource
    from tests.unit.test_posture_checks import listener

    state: dict[str, Any] = {"containers": (container("plain"),)}
    service, sink = service_with(state)
    table: dict[str, list[dict[str, Any]]] = {}
    service.listening = ListeningSource(lambda cid: table.get(cid, []), "kernel")
    assert service.report().results()["5.9"] == "PASS"
    table[container("plain").inspect["Id"]] = [listener(8081, process="httpd")]
    report = service.report(refresh=True)
    assert report.results()["5.9"] == "WARN"
    assert [a for a in sink.alerts if "5.9" in a.rule.name] == []



def test_a_new_container_alerts_only_for_a_way_out_of_it() -> None:
    """A container started without a health check turns 5.27 WARN (report, risk) and raises
    no alert: production containers often have none. One started with the Docker socket
    mounted raises one (5.32), as the first test shows."""
    healthy = container("plain", State__Health={"Status": "healthy"})
    state: dict[str, Any] = {"containers": (healthy,)}
    service, sink = service_with(state)
    assert service.report().results()["5.27"] == "PASS"
    bare = container("plain")
    bare.inspect["State"].pop("Health", None)  # type: ignore[union-attr]
    bare.inspect["Name"] = "/posture-rec-bare"  # type: ignore[index]
    bare.inspect["Id"] = "b" * 64  # type: ignore[index]
    state["containers"] = (healthy, bare)
    report = service.report(refresh=True)
    assert report.results()["5.27"] == "WARN"
    assert [a for a in sink.alerts if "5.27" in a.rule.name] == []
