"""Inbound connections and listening sockets on real parts (issues 15, 16, 17): the sock_ops and
cgroup sock programs (bpf/inbound.bpf.c) attached to the cgroup v2 root, real containers on a
docker network this test makes.

Container B serves HTTP on 8080, container A fetches from it, container C sits there:
- the map has the edge A -> B once, seen by both ends (A's connect, B's accept), outbound for
  A and inbound for B; nothing touches C;
- B's listener is in the inventory (tcp 8080, the process `httpd`) and in its risk;
- a listener opened before roxd started is found in /proc (source `proc`);
- after B's baseline locks, a connection from a new client D raises
  `baseline.new-inbound-peer`; A's, learned, raises nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from roxd.api.client import ApiClient
from tests.conftest import start_roxd, wait_until

pytestmark = pytest.mark.kernel

SERVE = "mkdir -p /www && echo hello > /www/index.html && exec httpd -f -p 8080 -h /www"
# a UDP server of busybox's: udhcpd binds 0.0.0.0:67 (its range is never handed out here)
UDP_SERVE = ("printf 'interface eth0\\nstart 10.99.0.10\\nend 10.99.0.20\\n"
             "lease_file /tmp/leases\\n' > /tmp/u.conf && touch /tmp/leases && "
             "exec udhcpd -f /tmp/u.conf")
CONFIG = """
[daemon]
stats_interval_s = 1.0
[baselines]
window_s = 10.0
startup_grace_s = 1.0
"""


def _roxctl(sock: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "roxd.ctl", "--socket", sock, *args],
                          capture_output=True, text=True, timeout=60, cwd="/")


@pytest.fixture
def network(docker_engine: Any) -> Iterator[str]:
    """A bridge network of this test's own: its containers talk only to each other."""
    name = f"roxd-accept-{uuid.uuid4().hex[:8]}"
    net = docker_engine.networks.create(name, driver="bridge", labels={"roxd-test": "inbound"})
    try:
        yield name
    finally:
        for c in docker_engine.containers.list(all=True, filters={"network": name}):
            c.remove(force=True)
        net.remove()


def _attached() -> int:
    """roxd sock_ops programs attached to the cgroup v2 root now (bpftool)."""
    shown = subprocess.run(["bpftool", "cgroup", "show", "/sys/fs/cgroup/unified"],
                           capture_output=True, text=True, check=True)
    # program names are cut to 15 characters: roxd_inbound_op
    return sum(1 for line in shown.stdout.splitlines() if "roxd_inbound_op" in line)


def _name(role: str) -> str:
    # ends in a letter: a name ending in -<digits> loses it in the workload key (replicas)
    return f"roxd-test-{role}-{uuid.uuid4().hex[:8]}z"


def _ip(container: Any, network: str) -> str:
    container.reload()
    return container.attrs["NetworkSettings"]["Networks"][network]["IPAddress"]


def _fetch(client: Any, ip: str) -> bool:
    # busybox nc, not wget (the static test image's wget crashes)
    request = "printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n'"
    out = client.exec_run(["sh", "-c", f"{request} | nc -w 2 {ip} 8080"]).output
    return b"hello" in out


def _serving_pair(run_container: Any, network: str,
                  grace_s: float = 0.0) -> tuple[Any, Any, str]:
    """Server B (httpd on 8080) and client A on `network`, after `grace_s` (past B's startup
    grace, when its baseline must learn A) and A's first successful fetch from B: B, A and B's
    address."""
    server = run_container(SERVE, network=network, name=_name("server"))
    client = run_container("sleep 600", network=network, name=_name("client"))
    ip = _ip(server, network)
    if grace_s:
        time.sleep(grace_s)
    wait_until(lambda: _fetch(client, ip), 20, message="A fetches from B")
    return server, client, ip


def _flows(sock: str, container: str) -> list[dict[str, Any]]:
    shown = _roxctl(sock, "netmap", "--container", container, "--format", "json")
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)["items"]


def test_accepts_and_listeners_of_real_containers(run_container: Any, network: str) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="roxd-inbound-"))
    sock = str(workdir / "roxd.sock")
    # a listener that predates roxd: the kernel never saw its listen(); /proc has it
    early = run_container("mkdir -p /w && exec httpd -f -p 9090 -h /w", network=network,
                          name=_name("early"))
    before = _attached()
    rp = start_roxd(workdir, config="[daemon]\nstats_interval_s = 1.0\n")
    try:
        rp.wait_ready()
        server = run_container(SERVE, network=network, name=_name("server"))
        client = run_container("sleep 600", network=network, name=_name("client"))
        silent = run_container("sleep 600", network=network, name=_name("silent"))
        dhcp = run_container(UDP_SERVE, network=network, name=_name("dhcp"))
        ip = _ip(server, network)
        wait_until(lambda: _fetch(client, ip), 20, message="A fetches from B")

        def edge() -> dict[str, Any] | None:
            _fetch(client, ip)
            for f in _flows(sock, server.name):
                if (f["source"].get("name") == client.name and f["port"] == 8080
                        and f["observed"] == ["connect", "accept"]):
                    return f
            return None

        # roxd learns a new container's address within a second: until then A's side of the
        # edge is an external prefix; the next fetches land on the one edge A -> B
        flow = wait_until(edge, 90, interval=1.0, message="one edge A -> B seen by both ends")
        assert flow["direction"] == "inbound"  # seen from B
        assert flow["destination"]["id"] == server.id and flow["protocol"] == "tcp"
        assert flow["accepted"] >= 1 and flow["count"] >= 1 and flow["succeeded"] >= 1
        assert _ip(client, network) in flow["peer_addresses"]
        from_a = [f for f in _flows(sock, client.name) if f["port"] == 8080
                  and f["destination"]["id"] == server.id]
        assert len(from_a) == 1 and from_a[0]["direction"] == "outbound"
        assert _flows(sock, silent.name) == []  # C talked to nobody: no edge

        # the listener older than roxd has no owner in the kernel: its accepts are attributed
        # by the local address they reached (the early container's own)
        early_ip = _ip(early, network)

        def old_listener_edge() -> dict[str, Any] | None:
            client.exec_run(["sh", "-c", f"echo | nc -w 1 {early_ip} 9090"])
            return next((f for f in _flows(sock, early.name)
                         if f["port"] == 9090 and "accept" in f["observed"]
                         and f["source"].get("name") == client.name), None)

        old_edge = wait_until(old_listener_edge, 60, interval=1.0,
                              message="the accept on the older listener, by its address")
        assert old_edge["destination"]["id"] == early.id and old_edge["direction"] == "inbound"

        table = _roxctl(sock, "netmap", "--container", server.name)
        assert table.returncode == 0, table.stderr
        row = next(line for line in table.stdout.splitlines() if client.name in line)
        assert " in " in row and "connect+accept" in row and "tcp/8080" in row

        with ApiClient(sock) as api:
            stats = api.get("/v1/netmap")["stats"]
            assert stats["inbound"]["state"] == "kernel", stats["inbound"]
            assert stats["accepts"] >= 1

            def listening(container: Any) -> list[dict[str, Any]]:
                for c in api.get("/v1/inventory/containers"):
                    if c["id"] == container.id:
                        return c["listening"]
                return []

            served = wait_until(lambda: [s for s in listening(server) if s["port"] == 8080],
                                10, message="B's listener in the inventory")
            assert served[0]["protocol"] == "tcp" and served[0]["process"] == "httpd"
            assert served[0]["source"] == "kernel" and served[0]["address"] in ("::", "0.0.0.0")
            old = [s for s in listening(early) if s["port"] == 9090]
            assert old and old[0]["source"] == "proc" and old[0]["process"] is None
            assert listening(silent) == [] and listening(client) == []
            udp = wait_until(lambda: [s for s in listening(dhcp) if s["protocol"] == "udp"],
                             10, message="the UDP server's bound port")
            assert (udp[0]["port"], udp[0]["process"], udp[0]["source"]) == (
                67, "udhcpd", "kernel")
            risk = api.get(f"/v1/containers/{server.id}/risk")
            factors = {r["factor"]: r for r in risk["reasons"]}
            assert factors["listening_sockets"]["points"] == 2
            assert "tcp/8080" in factors["listening_sockets"]["detail"]
            assert risk["score"] == sum(r["points"] for r in risk["reasons"])
            assert "listening_sockets" not in {
                r["factor"] for r in api.get(f"/v1/containers/{silent.id}/risk")["reasons"]}

        # the kernel's counters ride the stats records like every family's (accept_no_owner:
        # the older listener's accepts)
        kernel = rp.wait_for(lambda o: o.get("type") == "stats"
                             and o["kernel"].get("accept_emitted", 0) >= 1
                             and o["kernel"].get("accept_no_owner", 0) >= 1, timeout=15,
                             message="accept counters in the stats")["kernel"]
        assert kernel["accept_seen"] >= kernel["accept_emitted"] >= 1
        assert kernel["listen_emitted"] >= 2 and kernel["accept_dropped"] == 0

        inventory = _roxctl(sock, "inventory")
        assert inventory.returncode == 0, inventory.stderr
        line = next(ln for ln in inventory.stdout.splitlines() if server.name in ln)
        assert "tcp/8080(httpd)" in line
        assert _attached() == before + 1  # this roxd's sock_ops program on the root
    finally:
        rp.stop()
    # roxd is gone: its bpf links went with it (another roxd of the session may hold its own)
    assert _attached() == before


def test_a_new_inbound_peer_after_lock_alerts(run_container: Any, network: str) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="roxd-inbound-base-"))
    sock = str(workdir / "roxd.sock")
    rp = start_roxd(workdir, "--print-alerts", config=CONFIG)
    try:
        rp.wait_ready()
        server, client, ip = _serving_pair(run_container, network, grace_s=1.5)

        def element() -> str | None:
            _fetch(client, ip)
            with ApiClient(sock) as api:
                for b in api.get("/v1/baselines")["baselines"]:
                    shown = api.get("/v1/baselines/show", {"workload": b["workload"]})
                    for peer in shown["peers"]:
                        if peer.startswith("inbound tcp/8080 workload:") and peer.endswith(
                                client.name):
                            return str(b["workload"])
            return None

        workload = wait_until(element, 30, message="B learns the inbound peer A on 8080")

        def locked() -> bool:
            with ApiClient(sock) as api:
                return api.get("/v1/baselines/show", {"workload": workload})["state"] == "locked"

        wait_until(locked, 30, message="B's baseline locked by its window")
        newcomer = run_container("sleep 600", network=network, name=_name("newcomer"))
        # A again (learned) and then D (new): only D's accept is an anomaly
        assert _fetch(client, ip)
        wait_until(lambda: _fetch(newcomer, ip), 20, message="D fetches from B")

        def inbound_alert(o: dict[str, Any]) -> bool:
            return (o.get("type") == "alert" and o["rule"]["id"] == "baseline.new-inbound-peer"
                    and (o.get("container") or {}).get("id") == server.id)

        def from_newcomer() -> dict[str, Any] | None:
            # D's first accepts may come before roxd read D's address (then D is its /24, an
            # anomaly too); the kernel folds D's accepts for 10 s: keep fetching until one
            # names D's workload
            _fetch(newcomer, ip)
            for o in rp.matching(inbound_alert):
                element = o["event"]["baseline"]["element"]
                if element.startswith("inbound tcp/8080 workload:") and element.endswith(
                        f"/{newcomer.name}"):
                    return o
            return None

        alert = wait_until(from_newcomer, 45, interval=1.0,
                           message="baseline.new-inbound-peer naming D's workload")
        element_judged = alert["event"]["baseline"]["element"]
        assert alert["event"]["baseline"]["verdict"] == "anomaly"
        assert alert["rule"]["phase"] == "lateral_movement"
        assert [a["action"] for a in alert["actions"]] == ["alert"]
        time.sleep(1.0)
        assert not [o for o in rp.lines if inbound_alert(o)
                    and o["event"]["baseline"]["element"].endswith(client.name)]
        accepted = _roxctl(sock, "baselines", "accept", workload, element_judged)
        assert accepted.returncode == 0, accepted.stderr
        assert element_judged in accepted.stdout
    finally:
        rp.stop()


def test_with_inbound_off_listeners_come_from_proc(run_container: Any, network: str) -> None:
    """The fallback, as a host whose kernel refuses the programs gets it: no inbound edges
    (the map says why) and listeners read from /proc at every refresh."""
    workdir = Path(tempfile.mkdtemp(prefix="roxd-inbound-off-"))
    sock = str(workdir / "roxd.sock")
    before = _attached()
    rp = start_roxd(workdir, config="[daemon]\nstats_interval_s = 1.0\n"
                                    "[netmap]\ninbound = false\nrefresh_s = 1.0\n")
    try:
        rp.wait_ready()
        assert _attached() == before
        server, client, ip = _serving_pair(run_container, network)
        with ApiClient(sock) as api:
            def listening() -> list[dict[str, Any]]:
                for c in api.get("/v1/inventory/containers"):
                    if c["id"] == server.id:
                        return [s for s in c["listening"] if s["port"] == 8080]
                return []

            [found] = wait_until(listening, 20, message="B's listener read from /proc")
            assert found["source"] == "proc" and found["process"] is None
            answer = api.get("/v1/netmap", {"container": server.name})
            assert answer["stats"]["inbound"]["state"] == "off"
            assert answer["stats"]["accepts"] == 0
            assert all(f["observed"] == ["connect"] for f in answer["items"])
        table = _roxctl(sock, "netmap")
        assert table.returncode == 0 and "inbound connections are not traced here" in table.stdout
    finally:
        rp.stop()
