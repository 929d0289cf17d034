"""`roxctl fleet` against a real nats-server with two exporters (two node identities): the
tables and JSON, a stale node, and the errors (no stream yet: exit 1; no server: exit 3)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from roxd.alerts.jetstream import JetStreamSink
from roxd.alerts.node import NodeIdentity
from roxd.alerts.settings import NatsSettings
from roxd.incidents.settings import IncidentsSettings
from roxd.incidents.tracker import IncidentTracker
from tests.conftest import REPO, wait_until
from tests.system.alerts_factory import hostile_alert, make_alert
from tests.system.natsd import NatsServer, nats_server, running_nats_server

pytestmark = pytest.mark.system
__all__ = ["nats_server"]


def roxctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "roxd.ctl", *args], capture_output=True,
                          text=True, timeout=60, cwd=REPO, check=False)


def test_nodes_alerts_and_incidents_of_two_nodes(nats_server: NatsServer,
                                                 tmp_path: Path) -> None:
    sinks = []
    for name in ("node-a", "node-b.example.org"):
        sink = JetStreamSink(NatsSettings(servers=(nats_server.url,), heartbeat_s=0.5),
                             tmp_path / name, NodeIdentity(name, f"{name}-machine-id"))
        tracker = IncidentTracker(IncidentsSettings(store=False, journald=False), [sink],
                                  timer=False)
        for a in (make_alert(), hostile_alert()):
            tracker.emit(a)
            sink.emit(a)
        assert sink.flush(20)
        sinks.append(sink)
    try:
        def nodes() -> list[tuple[str, str, int]]:
            out = roxctl("--json", "fleet", "nodes", "--server", nats_server.url).stdout
            return [(n["name"], n["state"], n["alerts"]["total"]) for n in json.loads(out)]

        # a heartbeat after the alerts counts them
        wait_until(lambda: nodes() == [("node-a", "up", 2), ("node-b.example.org", "up", 2)],
                   20, message="both nodes' heartbeats counting 2 alerts")
        alerts = roxctl("fleet", "alerts", "--server", nats_server.url)
        assert alerts.returncode == 0, alerts.stderr
        assert "4 alerts from 2 nodes" in alerts.stdout
        assert "\x1b" not in alerts.stdout and "\\x1b[2J" in alerts.stdout  # defused
        one = json.loads(roxctl("fleet", "alerts", "--node", "node-b_example_org", "--json",
                                "--server", nats_server.url).stdout)
        assert {a["node"]["hostname"] for a in one} == {"node-b.example.org"} and len(one) == 2
        # --limit N keeps the N newest; 0 is every alert in the window (it used to be none)
        def ids(*limit: str) -> list[str]:
            out = roxctl("--json", "fleet", "alerts", *limit, "--server", nats_server.url)
            assert out.returncode == 0, out.stderr
            return [a["id"] for a in json.loads(out.stdout)]

        every = ids("--limit", "0")
        assert len(every) == 4 and ids("--limit", "3") == every[1:]
        incidents = json.loads(roxctl("--json", "fleet", "incidents", "--state", "open",
                                      "--server", nats_server.url).stdout)
        assert sorted(i["node"] for i in incidents) == ["node-a", "node-a",
                                                        "node-b.example.org",
                                                        "node-b.example.org"]
    finally:
        sinks[0].close(2)

    def states() -> dict[str, str]:
        out = roxctl("--json", "fleet", "nodes", "--server", nats_server.url).stdout
        return {n["name"]: n["state"] for n in json.loads(out)}

    # node-a stopped: no heartbeat for more than three intervals; node-b goes on
    wait_until(lambda: states().get("node-a") == "stale", 20, message="node-a stale")
    assert states() == {"node-a": "stale", "node-b.example.org": "up"}
    table = roxctl("fleet", "nodes", "--server", nats_server.url).stdout
    assert "2 nodes, 1 up, 1 stale" in table
    sinks[1].close(2)


def test_no_stream_yet_and_no_server_are_clear_errors(tmp_path: Path) -> None:
    with running_nats_server(tmp_path / "nats") as server:
        empty = roxctl("fleet", "alerts", "--server", server.url)
        assert empty.returncode == 1 and "no stream ROXD_ALERTS" in empty.stderr
        nodes = roxctl("fleet", "nodes", "--server", server.url)
        assert nodes.returncode == 1 and "no key-value bucket ROXD_NODES" in nodes.stderr
    gone = roxctl("fleet", "nodes", "--server", server.url, "--timeout", "1")
    assert gone.returncode == 3 and "cannot reach NATS" in gone.stderr
    assert "Traceback" not in gone.stderr
