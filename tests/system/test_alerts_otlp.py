"""OTLP/HTTP log export against a receiver that decodes what an OpenTelemetry collector decodes
(tests/system/otlp_receiver.py: the opentelemetry-proto messages, gzip, protobuf): semantic
conventions, incident changes, an outage with a roxd restart in the middle under a steady alert
stream (every alert exactly once, in order), Retry-After, rejected requests, and bad
configuration that is one log line and counters."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from roxd.alerts.dispatch import summary
from roxd.alerts.node import NodeIdentity
from roxd.alerts.otlp import OtlpSink
from roxd.alerts.settings import OtlpSettings
from roxd.incidents.settings import IncidentsSettings
from roxd.incidents.tracker import IncidentTracker
from roxd.model import Severity
from tests.conftest import wait_until
from tests.system.alerts_factory import hostile_alert, make_alert, rule
from tests.system.conftest import TlsFiles
from tests.system.otlp_receiver import OtlpReceiver, otlp_receiver, server_tls, start_receiver
from tests.system.sink_scenarios import (
    deliver,
    outage_with_a_restart,
    refused,
    warning_messages,
)

pytestmark = pytest.mark.system
__all__ = ["otlp_receiver"]  # the fixture, imported for pytest

NODE = NodeIdentity(hostname="node-1.example.org", machine_id="0123456789abcdef0123456789abcdef",
                    kubernetes_node="k8s-node-1")


def settings(receiver: OtlpReceiver, **kw: object) -> OtlpSettings:
    base: dict[str, object] = {"backoff_max_s": 0.5, "timeout_s": 2.0}
    return OtlpSettings(endpoint=receiver.url, **{**base, **kw})  # type: ignore[arg-type]


def test_alerts_arrive_as_log_records_with_semantic_conventions(
        otlp_receiver: OtlpReceiver, tmp_path: Path) -> None:
    sink = OtlpSink(settings(otlp_receiver), tmp_path / "state", NODE)
    alerts = [make_alert(rule_ref=rule(severity=Severity.CRITICAL)),
              make_alert(connect=True), hostile_alert()]
    deliver(sink, alerts)
    stats = sink.stats()
    assert (stats["sent"], stats["queued"], stats["failed"], stats["dropped"]) == (3, 0, 0, 0)
    got = otlp_receiver.records
    assert [r.uid for r in got] == [a.id for a in alerts]
    assert got[0].resource == {"service.name": "roxd", "service.version": got[0].resource[
        "service.version"], "host.name": "node-1.example.org",
        "host.id": NODE.machine_id, "k8s.node.name": "k8s-node-1"}
    assert got[0].scope == "roxd"
    first, a = got[0].record, alerts[0]
    assert first.time_unix_nano == a.time_ns and first.observed_time_unix_nano >= a.time_ns
    assert (first.severity_number, first.severity_text) == (20, "CRITICAL")  # ERROR4
    assert first.body.string_value == summary(a) and first.event_name == "roxd.alert"
    attrs = got[0].attrs
    assert attrs["roxd.rule.id"] == "persistence.cron_write"
    assert attrs["roxd.phase"] == "persistence"
    assert attrs["roxd.mitre.technique_ids"] == ["T1053.003", "T1059"]
    assert attrs["container.id"] == "a" * 64 and attrs["container.name"] == "web"
    assert attrs["container.image.name"] == "nginx:1.25"
    assert attrs["process.executable.path"] == "/usr/bin/crontab"
    assert attrs["process.command_args"] == ["crontab", "-e"]
    assert attrs["process.pid"] == a.event.process.pid
    assert attrs["process.parent.executable.path"] == "/bin/sh"
    assert attrs["roxd.actions"] == ["alert:done", "kill:done"]
    assert attrs["roxd.node.name"] == "k8s-node-1"
    assert got[1].attrs["destination.address"] == "10.1.2.3"
    assert got[1].attrs["destination.port"] == 4444
    assert got[1].record.severity_number == 13  # WARN
    # hostile bytes: valid UTF-8 on the wire, \xNN text for what was not UTF-8
    hostile = got[2].attrs
    assert hostile["process.executable.path"] == "/tmp/\\xff\\xfe/sh"
    assert "line1\nline2" in hostile["process.command_args"][2]


def test_incident_changes_are_log_records_too(otlp_receiver: OtlpReceiver,
                                              tmp_path: Path) -> None:
    sink = OtlpSink(settings(otlp_receiver), tmp_path / "state", NODE)
    tracker = IncidentTracker(IncidentsSettings(store=False, journald=False), [sink],
                              timer=False)
    alert = make_alert()
    try:
        tracker.emit(alert)
        sink.emit(alert)
        assert sink.flush(20), sink.stats()
    finally:
        sink.close(5)
    incidents = [r for r in otlp_receiver.records if r.record.event_name == "roxd.incident"]
    assert len(incidents) == 1
    attrs = incidents[0].attrs
    assert attrs["roxd.incident.change"] == "opened"
    assert attrs["roxd.alert.id"] == alert.id and attrs["container.id"] == "a" * 64
    assert attrs["roxd.incident.phases"] == ["persistence"]
    assert incidents[0].record.body.string_value.startswith(
        f"incident {attrs['roxd.incident.id']} opened")


def test_outage_and_restart_under_a_steady_stream_lose_and_repeat_nothing(
        otlp_receiver: OtlpReceiver, tmp_path: Path) -> None:
    emitted, sink = outage_with_a_restart(
        lambda: OtlpSink(settings(otlp_receiver, batch_max=64), tmp_path / "state", NODE),
        otlp_receiver)
    uids = otlp_receiver.uids()
    assert len(uids) == len(set(uids)), "a record arrived twice"
    assert uids == [a.id for a in emitted], (len(uids), len(emitted))
    assert [r.attrs["process.command_args"][1] for r in otlp_receiver.records] == [
        str(i) for i in range(len(emitted))]
    assert sink.stats()["dropped"] == 0


def test_retry_after_is_honoured_and_nothing_is_lost(
        otlp_receiver: OtlpReceiver, tmp_path: Path) -> None:
    sink = OtlpSink(settings(otlp_receiver, backoff_max_s=0.1), tmp_path / "state", NODE)
    a = make_alert()
    try:
        wait_until(lambda: otlp_receiver.requests == 1, 20, message="the start-up check")
        otlp_receiver.failures = [(503, "3"), (429, "1")]
        sink.emit(a)
        wait_until(lambda: otlp_receiver.requests >= 2, 20, message="the first export")
        time.sleep(1.0)  # the backoff alone (0.25 s, at most 0.1 s) would have retried by now
        assert otlp_receiver.requests == 2
        assert sink.flush(20), sink.stats()
    finally:
        sink.close(5)
    assert otlp_receiver.uids() == [a.id]
    assert otlp_receiver.requests == 4 and sink.stats()["failed"] == 2


def test_a_refused_request_is_dropped_and_counted_and_partial_rejections_counted(
        otlp_receiver: OtlpReceiver, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="roxd.alerts.otlp")
    sink = OtlpSink(settings(otlp_receiver), tmp_path / "state", NODE)
    bad, good = make_alert(), make_alert()
    try:
        wait_until(lambda: otlp_receiver.requests == 1, 20, message="the start-up check")
        otlp_receiver.failures = [(400, "")]
        sink.emit(bad)
        wait_until(lambda: sink.stats()["rejected"] == 1, 20, message="the refused request")
        otlp_receiver.partial_reject = 1
        sink.emit(good)
        assert sink.flush(20), sink.stats()
    finally:
        sink.close(5)
    assert otlp_receiver.uids() == [good.id]
    assert sink.stats()["rejected"] == 2 and sink.stats()["queued"] == 0
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "HTTP 400" in errors[0], errors


def test_unreachable_collector_is_one_warning_and_counters(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    receiver = start_receiver()
    receiver.stop()  # a port where nothing listens
    caplog.set_level(logging.INFO, logger="roxd.alerts.otlp")
    sink = OtlpSink(settings(receiver, backoff_max_s=0.2), tmp_path / "state", NODE)
    try:
        t0 = time.monotonic()
        for _ in range(100):
            sink.emit(make_alert())
        assert time.monotonic() - t0 < 0.5  # emit never waits on the network
        wait_until(lambda: sink.stats()["failed"] >= 3, 20, message="three failed attempts")
    finally:
        sink.close(0.5)
    assert sink.stats()["queued"] == 100 and sink.stats()["sent"] == 0
    warnings = warning_messages(caplog)
    assert len(warnings) == 1 and "ConnectionRefusedError" in warnings[0], warnings


def test_a_bad_token_is_one_warning_then_delivery_when_fixed(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    receiver = start_receiver(token="right")
    try:
        caplog.set_level(logging.INFO, logger="roxd.alerts.otlp")
        state = tmp_path / "state"
        a = make_alert()
        sink = OtlpSink(settings(receiver, headers=("Authorization: Bearer wrong",)), state,
                        NODE)
        refused(sink, a, 2, "refused requests")
        warnings = warning_messages(caplog)
        assert len(warnings) == 1 and "HTTP 401" in warnings[0], warnings
        assert sink.stats()["queued"] == 1  # kept for when the token is fixed
        sink = OtlpSink(settings(receiver, headers=("Authorization: Bearer right",)), state,
                        NODE)
        deliver(sink)
        assert receiver.uids() == [a.id]
    finally:
        receiver.stop()


def test_tls_with_a_checked_server_name(tmp_path: Path, tls_files: TlsFiles,
                                        caplog: pytest.LogCaptureFixture) -> None:
    receiver = start_receiver(tls=server_tls(tls_files.server_cert, tls_files.server_key))
    try:
        caplog.set_level(logging.INFO, logger="roxd.alerts.otlp")
        tls = {"ca": str(tls_files.ca), "cert": str(tls_files.client_cert),
               "key": str(tls_files.client_key)}
        wrong = OtlpSink(settings(receiver, server_name="someone-else.roxd.test",
                                  backoff_max_s=0.2, name="wrong", **tls),
                         tmp_path / "state", NODE)
        refused(wrong, make_alert(), 2, "refused handshakes")
        warnings = warning_messages(caplog)
        assert len(warnings) == 1 and "certificate" in warnings[0].lower(), warnings

        a = make_alert()
        sink = OtlpSink(settings(receiver, server_name=tls_files.server_name, **tls),
                        tmp_path / "state", NODE)
        deliver(sink, [a])
        assert receiver.uids() == [a.id]
    finally:
        receiver.stop()


def test_a_bad_endpoint_is_one_warning_at_start_before_any_alert(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    receiver = start_receiver()
    caplog.set_level(logging.INFO, logger="roxd.alerts.otlp")
    bad = OtlpSettings(endpoint=receiver.url.replace("/v1/logs", "/v1/wrong"), name="bad")
    sink = OtlpSink(bad, tmp_path / "state", NODE)
    try:
        wait_until(lambda: sink.stats()["failed"] == 1, 20, message="the start-up check")
    finally:
        sink.close(0.5)
        receiver.stop()
    warnings = warning_messages(caplog)
    assert len(warnings) == 1 and "HTTP 404" in warnings[0], warnings
    assert receiver.records == [] and sink.stats()["queued"] == 0
