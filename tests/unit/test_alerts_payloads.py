"""Webhook payload shapes and journald fields, without any service."""

from __future__ import annotations

import json

import pytest

from roxd.alerts.dispatch import summary
from roxd.alerts.journald import journal_fields
from roxd.alerts.kinds import MESSAGE_IDS
from roxd.alerts.rfc5424 import format_message
from roxd.alerts.settings import WebhookSettings
from roxd.alerts.webhooks import WebhookSink, generic_payload, pagerduty_payload, slack_payload
from roxd.model import Alert, Container, Severity
from tests.system.alerts_factory import make_alert, rule
from tests.system.rfc5424_parse import parse_5424

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


POD_CONTAINER = Container(
    id="c" * 64, runtime="containerd", name="nginx", image="nginx:1.25",
    labels={"io.kubernetes.container.name": "nginx", "team": "blue"}, pod="web-7d9f",
    pod_uid="0d5f2b4e-7c1a-4f8e-9b3d-2a6c8e1f4b7d", namespace="shop",
    pod_labels={"app": "web"}, runtime_namespace="k8s.io")


def test_every_sink_carries_the_pod_and_its_namespace() -> None:
    """Issue 18: journald, syslog, webhooks (generic JSON and Slack) name the pod."""
    a = make_alert(container=POD_CONTAINER)
    journal = dict(f.split("=", 1) for f in journal_fields(a) if not f.startswith("ROXD_MITRE"))
    assert (journal["ROXD_NAMESPACE"], journal["ROXD_POD"], journal["ROXD_POD_UID"]) == (
        "shop", "web-7d9f", POD_CONTAINER.pod_uid)
    assert journal["ROXD_CONTAINER_LABELS"] == "io.kubernetes.container.name=nginx,team=blue"
    m = parse_5424(format_message(a, hostname="h"))
    assert (m.param("container@32473", "namespace"), m.param("container@32473", "pod")) == (
        "shop", "web-7d9f")
    generic = json.loads(json.dumps(generic_payload(a)))
    c = generic["event"]["container"] if "event" in generic else generic["container"]
    assert (c["namespace"], c["pod"], c["pod_labels"], c["runtime_namespace"]) == (
        "shop", "web-7d9f", {"app": "web"}, "k8s.io")
    assert "shop/web-7d9f nginx" in json.dumps(slack_payload(a))
    assert "container nginx (nginx:1.25) of pod shop/web-7d9f" in summary(a)  # log, MESSAGE
    # outside pods: no pod fields anywhere but the JSON's explicit nulls
    docker = make_alert()
    assert not any(f.startswith(("ROXD_POD", "ROXD_NAMESPACE")) for f in journal_fields(docker))
    assert "namespace" not in dict(parse_5424(format_message(docker, hostname="h")).sd[
        "container@32473"])
