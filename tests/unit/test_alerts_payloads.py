"""Webhook payload shapes and journald fields, without any service."""

from __future__ import annotations

import json

import pytest

from roxd.alerts.journald import journal_fields
from roxd.alerts.kinds import MESSAGE_IDS
from roxd.alerts.settings import WebhookSettings
from roxd.alerts.webhooks import WebhookSink, pagerduty_payload, slack_payload
from roxd.model import Alert, Severity
from tests.system.alerts_factory import make_alert, rule

pytestmark = pytest.mark.unit


def test_slack_shape() -> None:
    p = slack_payload(make_alert())
    assert set(p) == {"text", "blocks"} and "crontab" in p["text"]
    assert [b["type"] for b in p["blocks"]] == ["header", "section", "section", "context"]
    json.dumps(p)


@pytest.mark.parametrize(("sev", "pd"), [(Severity.ALERT, "critical"), (Severity.ERROR, "error"),
                                         (Severity.NOTICE, "warning"), (Severity.DEBUG, "info")])
def test_pagerduty_shape(sev: Severity, pd: str) -> None:
    p = pagerduty_payload(make_alert(rule_ref=rule(severity=sev)), "key", "node1")
    assert p["routing_key"] == "key" and p["event_action"] == "trigger"
    assert p["dedup_key"].startswith("roxd:node1:persistence.cron_write:")
    assert p["payload"]["severity"] == pd
    assert set(p["payload"]) >= {"summary", "source", "severity", "component", "custom_details"}
    assert p["payload"]["component"] == "web"


def test_min_severity_filters_before_queueing() -> None:
    posted: list[bytes] = []

    def post(url: str, body: bytes, timeout: float) -> int:
        posted.append(body)
        return 200

    sink = WebhookSink(WebhookSettings(url="http://127.0.0.1:9/", min_severity="error"),
                       post=post)
    sink.emit(make_alert(rule_ref=rule(severity=Severity.WARNING)))
    sink.emit(make_alert(rule_ref=rule(severity=Severity.CRITICAL)))
    assert sink.flush(5)
    sink.close()
    assert len(posted) == 1
    assert sink.stats()["filtered"] == 1 and sink.stats()["sent"] == 1


def test_client_errors_are_not_retried_server_errors_are() -> None:
    answers = iter([400, 503, 503, 200])

    def post(url: str, body: bytes, timeout: float) -> int:
        return next(answers)

    sink = WebhookSink(WebhookSettings(url="http://127.0.0.1:9/", backoff_s=0.01, retries=3),
                       post=post)
    sink.emit(make_alert())
    sink.emit(make_alert())
    assert sink.flush(5)
    sink.close()
    s = sink.stats()
    assert (s["failed"], s["sent"], s["retried"]) == (1, 1, 2)


def test_journal_fields() -> None:
    a: Alert = make_alert(rule_ref=rule(severity=Severity.ERROR))
    fields = journal_fields(a)
    as_dict = dict(f.split("=", 1) for f in fields if not f.startswith("ROXD_MITRE="))
    assert as_dict["PRIORITY"] == "3"
    assert as_dict["MESSAGE_ID"] == MESSAGE_IDS["match"]
    assert as_dict["ROXD_CONTAINER_NAME"] == "web"
    assert [f for f in fields if f.startswith("ROXD_MITRE=")] == [
        "ROXD_MITRE=T1053.003", "ROXD_MITRE=T1059"]
    host = dict(f.split("=", 1) for f in journal_fields(make_alert(container=None)))
    assert host["ROXD_CONTAINER_ID"] == "host" and "ROXD_CONTAINER_NAME" not in host
