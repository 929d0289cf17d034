"""Exporter settings and helpers of the fleet exporters (OTLP, NATS): parsing, the shipped
config's commented examples, Retry-After, subject wildcards."""

from __future__ import annotations

import dataclasses
import email.utils
import time
import tomllib
from pathlib import Path

import pytest

from roxd.alerts.jetstream import subject_covers
from roxd.alerts.otlp import _retry_after
from roxd.alerts.settings import NatsSettings, OtlpSettings, parse_alerts_settings
from roxd.errors import ConfigError

pytestmark = pytest.mark.unit
SHIPPED = Path(__file__).resolve().parents[2] / "config" / "roxd.toml"


def test_otlp_settings_parse() -> None:
    s = parse_alerts_settings({"otlp": [{
        "endpoint": "https://otel.example.org:4318/v1/logs",
        "headers": ["Authorization: Bearer x"], "compression": "none"}]}, "t.toml")
    assert s.otlp[0].headers == ("Authorization: Bearer x",)
    assert s.otlp[0].queue_name == "otel.example.org-4318"


@pytest.mark.parametrize(("raw", "needle"), [
    ({"otlp": [{"endpoint": "grpc://x:4317"}]}, "alerts.otlp[0].endpoint must be an http"),
    ({"otlp": [{"headers": ["no colon"]}]}, "is not \"Name: value\""),
    ({"otlp": [{"headers": ["X: a\nInjected: b"]}]}, "is not \"Name: value\""),
    ({"otlp": [{"compression": "zstd"}]}, "compression must be gzip or none"),
    ({"otlp": [{"cert": "/c"}]}, "cert and key go together"),
    ({"otlp": [{"batch_max": 0}]}, "at least 1"),
    ({"otlp": [{}, {}]}, "share a queue"),
    ({"nats": [{"heartbeat_bucket": "a.b"}]}, "heartbeat_bucket"),
    ({"nats": [{"heartbeat_s": 0}]}, "heartbeat_s must be > 0"),
])
def test_bad_settings_are_one_clear_error(raw: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_alerts_settings(raw, "t.toml")
    assert needle in str(err.value)


@pytest.mark.parametrize(("table", "cls"), [("otlp", OtlpSettings), ("nats", NatsSettings)])
def test_the_shipped_example_shows_every_key_with_its_default(table: str, cls: type) -> None:
    lines = SHIPPED.read_text().splitlines()
    start = lines.index(next(x for x in lines if x.startswith(f"# [[alerts.{table}]]")))
    block = []
    for line in lines[start:]:
        if not line.startswith("#"):
            break
        block.append(line[2:])
    parsed = parse_alerts_settings(tomllib.loads("\n".join(block))["alerts"], "shipped")
    example = getattr(parsed, table)[0]
    assert example == cls()
    shown = set(tomllib.loads("\n".join(block))["alerts"][table][0])
    assert shown == {f.name for f in dataclasses.fields(cls)}


def test_retry_after_seconds_and_http_dates() -> None:
    assert _retry_after("7") == 7.0
    assert _retry_after(None) is None and _retry_after("soon") is None
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= (_retry_after(later) or 0) <= 31
    assert _retry_after(email.utils.formatdate(time.time() - 30, usegmt=True)) == 0.0


@pytest.mark.parametrize(("pattern", "subject", "covered"), [
    ("roxd.*.alerts", "roxd.*.alerts", True),
    ("roxd.>", "roxd.*.incidents", True),
    ("roxd.*.alerts", "roxd.*.incidents", False),
    ("roxd.node-1.alerts", "roxd.*.alerts", False),
    (">", "roxd.*.alerts", True),
    ("roxd.*", "roxd.*.alerts", False),
])
def test_subject_covers(pattern: str, subject: str, covered: bool) -> None:
    assert subject_covers(pattern, subject) is covered
