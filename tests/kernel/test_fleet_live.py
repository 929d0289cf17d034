"""Issue 19 on the real kernel: two roxd instances (two node names, two state dirs) publish to
one real nats-server; `roxctl fleet nodes|alerts|incidents` shows both; the server goes away
mid-run and comes back, and the stream then holds every alert of each node exactly once, in
order. One of the two also serves /metrics on TCP: a real scrape, parsed by prometheus_client.

Both roxd see the same kernel, so one marker exec on the host is an alert on each node.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import REPO, RoxdProcess, wait_until
from tests.system.conftest import free_port
from tests.system.natsd import NATS_TABLE, NatsServer, nats_server
from tests.system.otlp_receiver import OtlpReceiver, otlp_receiver

pytestmark = pytest.mark.kernel
__all__ = ["nats_server", "otlp_receiver"]  # the fixtures, imported for pytest

RULE = """
[[rule]]
id = "test.fleet-marker"
name = "Fleet test marker"
description = "Test rule: a command line carrying this test's marker, on the host."
phase = "foothold"
severity = "warning"
mitre = ["T1059"]
event = "exec"
actions = ["alert"]
[rule.when]
cmdline = {{ regex = "{marker}" }}
"""

CONFIG = """
[daemon]
stats_interval_s = 1.0
[incidents]
journald = false
[metrics]
listen = "{metrics}"
[alerts.journald]
enabled = false
[alerts.node]
hostname = "{node}"
""" + NATS_TABLE + "{otlp}"

OTLP = """
[[alerts.otlp]]
endpoint = "{url}"
backoff_max_s = 0.5
"""


def roxctl(url: str, *args: str) -> Any:
    out = subprocess.run([sys.executable, "-m", "roxd.ctl", "--json", "fleet", *args,
                          "--server", url], capture_output=True, text=True, timeout=60,
                         cwd=REPO, check=False)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def table(url: str, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "roxd.ctl", "fleet", *args, "--server", url],
                         capture_output=True, text=True, timeout=60, cwd=REPO, check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_two_nodes_one_stream_a_server_restart_and_nothing_lost(
        roxd_factory: Callable[..., RoxdProcess], nats_server: NatsServer,
        otlp_receiver: OtlpReceiver, tmp_path: Path) -> None:
    marker = f"fleet-marker-{uuid.uuid4().hex[:12]}"
    rules = tmp_path / "fleet.toml"
    rules.write_text(RULE.format(marker=marker))
    metrics_port = free_port()
    nodes = {"fleet-node-a": f"127.0.0.1:{metrics_port}", "fleet-node-b": ""}
    # node a also exports to an OTLP receiver
    otlp = {"fleet-node-a": OTLP.format(url=otlp_receiver.url), "fleet-node-b": ""}
    roxds = {name: roxd_factory(rules=[rules], config=CONFIG.format(
        node=name, url=nats_server.url, metrics=listen, otlp=otlp[name]))
        for name, listen in nodes.items()}

    def marker_alerts(rp: RoxdProcess) -> list[dict[str, Any]]:
        return rp.matching(lambda o: o.get("type") == "alert"
                           and o["rule"]["id"] == "test.fleet-marker")

    def run_markers(first: int, count: int) -> None:
        for i in range(first, first + count):
            subprocess.run(["/bin/sh", "-c", f": {marker} {i}"], check=True)
        for name, rp in roxds.items():
            wait_until(lambda rp=rp: len(marker_alerts(rp)) >= first + count, 30,
                       message=f"{first + count} marker alerts on {name}")

    run_markers(0, 5)
    wait_until(lambda: {n["name"] for n in roxctl(nats_server.url, "nodes")} >= set(nodes),
               30, message="both nodes' heartbeats")
    fleet_nodes = {n["name"]: n for n in roxctl(nats_server.url, "nodes")}
    for name in nodes:
        assert fleet_nodes[name]["state"] == "up"
        assert fleet_nodes[name]["node"]["hostname"] == name
        assert fleet_nodes[name]["version"]

    nats_server.stop()  # the server goes away while both nodes keep raising alerts
    run_markers(5, 5)
    for rp in roxds.values():
        rp.wait_for(lambda o: o.get("type") == "stats"
                    and o["alert_sinks"].get("nats.roxd-ROXD_ALERTS.failed", 0) >= 1,
                    timeout=30, message="a failed publish while the server is down")
    nats_server.start()
    run_markers(10, 5)

    def stream_alerts() -> list[dict[str, Any]]:
        return [a for a in roxctl(nats_server.url, "alerts", "--limit", "1000")
                if a["rule"]["id"] == "test.fleet-marker"]

    wait_until(lambda: len(stream_alerts()) >= 30, 60, message="30 alerts in the stream")
    stored = stream_alerts()
    for name, rp in roxds.items():
        mine = [a["id"] for a in stored if a["node"]["hostname"] == name]
        printed = [a["id"] for a in marker_alerts(rp)]
        assert len(mine) == len(set(mine)), f"a duplicate from {name}"
        assert mine == printed, (name, len(mine), len(printed))
    assert table(nats_server.url, "alerts").count("test.fleet-marker") == 30
    assert all(f" {n} " in table(nats_server.url, "alerts") for n in nodes)

    incidents = roxctl(nats_server.url, "incidents")
    assert {i["node"] for i in incidents} == set(nodes)
    assert all(i["incident"]["phases"][0]["phase"] == "foothold" for i in incidents)
    one = roxctl(nats_server.url, "alerts", "--node", "fleet-node-b", "--limit", "1000")
    assert {a["node"]["hostname"] for a in one} == {"fleet-node-b"}

    # node a's Prometheus listener: a real scrape over TCP
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
        fams = {f.name: f for f in text_string_to_metric_families(r.read().decode())}
    sent = {s.labels["counter"]: s.value for s in fams["roxd_alert_sink"].samples
            if s.labels["sink"] == "nats.roxd-ROXD_ALERTS"}
    assert sent["sent"] >= 15 and sent["failed"] >= 1 and sent["dropped"] == 0
    assert sent["heartbeats"] >= 1
    assert fams["roxd_alerts_by_rule"].samples

    # node a's OTLP export: the same alerts, once each, in order, and its incident changes
    printed = [a["id"] for a in marker_alerts(roxds["fleet-node-a"])]
    wait_until(lambda: len([u for u in otlp_receiver.uids() if u in printed]) >= 15, 30,
               message="node a's alerts at the OTLP receiver")
    alerts = [r for r in otlp_receiver.records if r.record.event_name == "roxd.alert"
              and r.attrs.get("roxd.rule.id") == "test.fleet-marker"]
    assert [r.uid for r in alerts] == printed
    assert alerts[0].resource["host.name"] == "fleet-node-a"
    assert alerts[0].resource["service.name"] == "roxd"
    assert any(r.record.event_name == "roxd.incident" for r in otlp_receiver.records)

