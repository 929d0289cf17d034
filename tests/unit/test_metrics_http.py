"""The Prometheus listener: a real scrape over TCP of what the control API renders, parsed by
prometheus_client's own parser; names and types by the conventions; label escaping; the
Grafana dashboard asks only for metrics a scrape has; [metrics] listen parsing."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from roxd.api.metrics_http import (
    ListenAddress,
    MetricsListener,
    NoMetricsListener,
    parse_listen,
    start_metrics_listener,
)
from roxd.api.server import ApiServer
from roxd.api.settings import ApiSettings
from roxd.config import parse_config
from roxd.errors import ConfigError
from tests.unit.test_api_unit import FakePort

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "roxd-dashboard.json"
HOSTILE_SINK = 'nats.we"ird\\name\nx'


class SinkPort(FakePort):
    def alert_sink_stats(self) -> dict[str, int]:
        return {"noise.received": 5, "syslog.tcp-10.0.0.1-514.sent": 3,
                "syslog.tcp-10.0.0.1-514.queued": 2, "otlp.otel.example.org-4318.sent": 7,
                "otlp.otel.example.org-4318.queued_bytes": 1234,
                "otlp.otel.example.org-4318.rejected": 1, "store.stored": 9,
                "store.failed": 0, f"{HOSTILE_SINK}.sent": 1}


@pytest.fixture(scope="module")
def scrape_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = ApiServer(SinkPort(), str(tmp_path_factory.mktemp("api") / "roxd.sock"),
                       ApiSettings())
    server.start()
    listener = MetricsListener.start(ListenAddress("127.0.0.1", 0), server.metrics_text)
    host, port = listener.address
    try:
        yield f"http://{host}:{port}/metrics"
    finally:
        listener.close()
        server.close()


def scrape(url: str) -> tuple[str, str]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.headers["Content-Type"], resp.read().decode()


def families(url: str) -> dict[str, Any]:
    content_type, text = scrape(url)
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_a_scrape_parses_with_the_reference_parser_and_follows_the_conventions(
        scrape_url: str) -> None:
    fams = families(scrape_url)
    assert len(fams) >= 15
    for fam in fams.values():
        assert re.fullmatch(r"roxd_[a-z0-9_]+", fam.name), fam.name
        assert fam.documentation, f"{fam.name} has no HELP"
        if fam.type == "counter":  # the parser strips _total: every sample has it
            assert all(s.name == fam.name + "_total" for s in fam.samples), fam.name
        else:
            assert not fam.name.endswith("_total"), f"{fam.name} is a {fam.type}"
    assert fams["roxd_uptime_seconds"].type == "gauge"
    assert fams["roxd_start_time_seconds"].samples[0].value > 1.7e9
    assert fams["roxd_kernel_events"].type == "counter"
    assert {s.labels["outcome"] for s in fams["roxd_kernel_events"].samples} >= {"seen"}


def test_sink_counters_and_levels_are_split_and_labels_survive_escaping(
        scrape_url: str) -> None:
    fams = families(scrape_url)
    counters = {(s.labels["sink"], s.labels["counter"]): s.value
                for s in fams["roxd_alert_sink"].samples}
    assert counters[("syslog.tcp-10.0.0.1-514", "sent")] == 3  # dots in the queue name kept
    assert counters[("otlp.otel.example.org-4318", "rejected")] == 1
    assert counters[(HOSTILE_SINK, "sent")] == 1  # quote, backslash, newline round-trip
    assert not any(c in ("queued", "queued_bytes", "stored") for _, c in counters)
    assert fams["roxd_alert_sink_queued"].type == "gauge"
    assert {s.labels["sink"]: s.value for s in fams["roxd_alert_sink_queued"].samples} == {
        "syslog.tcp-10.0.0.1-514": 2}
    assert fams["roxd_alert_sink_queued_bytes"].samples[0].value == 1234
    assert fams["roxd_alert_sink_stored"].samples[0].value == 9


def test_only_get_metrics(scrape_url: str) -> None:
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(scrape_url.replace("/metrics", "/v1/status"), timeout=10)
    assert missing.value.code == 404
    with pytest.raises(urllib.error.HTTPError) as post:
        urllib.request.urlopen(urllib.request.Request(scrape_url, data=b"x"), timeout=10)
    assert post.value.code == 405


def _dashboard_metrics() -> set[str]:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in dash["templating"]["list"] if "definition" in v]
    assert exprs
    return set(re.findall(r"\broxd_[a-z0-9_]+", " ".join(exprs)))


def test_every_metric_the_grafana_dashboard_queries_exists_in_a_scrape(
        scrape_url: str) -> None:
    _, text = scrape(scrape_url)
    fams = list(text_string_to_metric_families(text))
    # a family is declared (HELP, TYPE) even before its first sample (no alert yet)
    declared = {f.name + ("_total" if f.type == "counter" else "") for f in fams}
    wanted = _dashboard_metrics()
    assert len(wanted) >= 10
    assert wanted <= declared, wanted - declared
    with_samples = {s.name for f in fams for s in f.samples}
    assert len(wanted & with_samples) >= len(wanted) - 2, wanted - with_samples


def test_dashboard_panels_use_the_datasource_variable_and_unique_ids() -> None:
    dash = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in dash["panels"]:
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert all('instance=~"$instance"' in t["expr"] for t in p["targets"]), p["title"]


@pytest.mark.parametrize(("value", "expected"), [
    ("", None),
    ("9560", ListenAddress("127.0.0.1", 9560)),
    (":9560", ListenAddress("127.0.0.1", 9560)),
    ("0.0.0.0:9100", ListenAddress("0.0.0.0", 9100)),
    ("[::1]:9560", ListenAddress("::1", 9560)),
])
def test_parse_listen(value: str, expected: ListenAddress | None) -> None:
    assert parse_listen(value) == expected


@pytest.mark.parametrize("value", ["99999", "host:", "::1:9560", "[::1]9560", "abc"])
def test_bad_listen_is_a_config_error(value: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"metrics": {"listen": value}}, "t.toml")
    assert "metrics.listen" in str(err.value)


def test_an_address_in_use_is_one_error_and_no_listener(
        caplog: pytest.LogCaptureFixture) -> None:
    first = MetricsListener.start(ListenAddress("127.0.0.1", 0), lambda: "")
    try:
        port = first.address[1]
        second = start_metrics_listener(f"127.0.0.1:{port}", lambda: "")
        assert isinstance(second, NoMetricsListener)
        errors = [r.getMessage() for r in caplog.records if r.name == "roxd.metrics"]
        assert len(errors) == 1 and "not started" in errors[0], errors
    finally:
        first.close()
