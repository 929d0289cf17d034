"""Issue 19's multi-node test: two booted machines, one nats-server, nothing lost.

Two Debian 12 roots (test_packages' cached debootstrap root, each under its own overlay) are
booted with systemd in systemd-nspawn. The roxd .deb is installed in each with dpkg; roxd runs
as the systemd service (monitor mode: both machines share this host's kernel, so enforce
nothing). Each machine has its own host name (its node identity, detected, not configured)
and its own transient machine id, and its /etc/roxd/roxd.toml carries an [[alerts.nats]]
table pointing at ONE nats-server this test starts on the host's 127.0.0.1: the Machine class
boots without --private-network, so the machines share the host's network namespace (checked
below, not assumed).

Both roxd see every exec on this kernel, so an alert must be attributable to one node by
construction: each machine gets a rule file in its own /etc/roxd/rules.d matching a marker
unique to that node, and the marker commands run inside that machine. Node b's roxd sees node
a's markers too and has no rule for them; its stream subject must never carry them.

The run: 5 markers per node, the server stopped, 5 more per node (the exporters fail and queue
on disk), node a's roxd.service restarted during the outage (its queue waits on disk for the
new process), the server started again, 5 more. Then `roxctl fleet alerts` (on the host, against
the server) holds every marker alert of each node exactly once, in the order the node's own
alert store has them, and `roxctl fleet nodes` lists both nodes up and still heartbeating
while idle.

The .deb does not depend on nats-py (Debian 12 has no python3-nats): the test copies the
pure-Python `nats` package of the dev venv into the machine's /usr/local/lib/python3.11/
dist-packages, where Debian's python3 finds it (what docs/fleet.md tells an operator to do with
`pip install nats-py`).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, wait_until
from tests.system.natsd import NATS_TABLE, NatsServer, running_nats_server
from tests.system.packaging_root import Machine, base_root, depends_of, overlay_root

pytestmark = pytest.mark.system

RULE_ID = "test.fleet-node-marker"
RULE = """
[[rule]]
id = "{rule_id}"
name = "Fleet node marker"
description = "Test rule: this node's marker command (sh -c ': <marker> <n>')."
phase = "foothold"
severity = "warning"
mitre = ["T1059"]
event = "exec"
actions = ["alert"]
[rule.when]
cmdline = {{ prefix = "sh -c : {marker} " }}
"""

SINK = "nats.roxd-ROXD_ALERTS"
PER_PHASE = 5


@dataclass
class Node:
    hostname: str
    marker: str
    machine: Machine


def _require_host() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (overlay mounts, systemd-nspawn)")
    missing = [t for t in ("systemd-nspawn", "debootstrap", "dpkg-buildpackage", "nsenter")
               if shutil.which(t) is None]
    if missing:
        pytest.skip(f"missing tools: {', '.join(missing)} (scripts/setup.sh installs them)")


def _build_deb(dist: Path) -> Path:
    """Only the .deb (scripts/build-packages.sh takes ~10 s for it; nothing to cache)."""
    proc = subprocess.run([str(REPO / "scripts/build-packages.sh"), str(dist)],
                          env={**os.environ, "ROXD_PACKAGES": "deb"},
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"build-packages.sh failed:\n{proc.stdout}\n{proc.stderr}"
    debs = sorted(dist.glob("roxd_*_all.deb"))
    assert len(debs) == 1, sorted(p.name for p in dist.iterdir())
    return debs[0]


def _shipped_config(deb: Path) -> str:
    """/etc/roxd/roxd.toml exactly as the .deb ships it."""
    data = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], check=True,
                          capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        member = tar.extractfile("./etc/roxd/roxd.toml")
        assert member is not None
        return member.read().decode()


def _nats_package() -> Path:
    import nats  # the dev venv's nats-py (requirements-dev.txt)
    return Path(nats.__file__).parent


def _prepare(root: Path, deb: Path, hostname: str, marker: str, config: str) -> None:
    """What an operator's provisioning puts on a node before `dpkg -i` (the package keeps a
    pre-seeded conffile with --force-confold)."""
    (root / "etc/hostname").write_text(hostname + "\n")
    # the cached root carries the D-Bus machine id that dbus' postinst wrote during
    # debootstrap, and systemd fills an empty /etc/machine-id from it at boot: every machine
    # of that root would be the same machine. Cleared, as one prepares a golden image, so
    # each boot gets an id of its own.
    (root / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    shutil.copy(deb, root / "root" / deb.name)
    # shared kernel: this roxd's eBPF programs see every process of the host, other test
    # sessions included; monitor mode, as in test_packages
    dropin = root / "etc/systemd/system/roxd.service.d"
    dropin.mkdir(parents=True)
    (dropin / "50-test-monitor.conf").write_text(
        "[Service]\nExecStart=\nExecStart=/usr/bin/roxd --monitor\n")
    etc = root / "etc/roxd"
    (etc / "rules.d").mkdir(parents=True)
    (etc / "roxd.toml").write_text(config)
    (etc / "rules.d/50-fleet-test.toml").write_text(RULE.format(rule_id=RULE_ID, marker=marker))
    # nats-py is not a Debian package: its pure-Python sources go where Debian's python3
    # looks for locally installed modules (as `pip install nats-py` as root would put them)
    site = root / "usr/local/lib/python3.11/dist-packages"
    site.mkdir(parents=True, exist_ok=True)
    shutil.copytree(_nats_package(), site / "nats",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def _ready(node: Node) -> bool:
    """roxd.service active with roxd's status line (Type=notify: READY=1 received)."""
    props = node.machine.show("roxd", "ActiveState", "StatusText")
    if props["ActiveState"] == "failed":
        raise AssertionError(f"roxd failed on {node.hostname}:\n"
                             f"{node.machine.journal('roxd')[-4000:]}")
    return props["ActiveState"] == "active" and bool(props["StatusText"])


def _install(node: Node, deb: Path) -> None:
    m = node.machine
    m.run("dpkg", "--force-confold", "-i", f"/root/{deb.name}", timeout=300)
    try:
        wait_until(lambda: _ready(node), 180, interval=0.5,
                   message=f"roxd READY on {node.hostname}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{m.journal('roxd')[-4000:]}") from None


def _fleet(url: str, *args: str, as_json: bool = True) -> Any:
    """`roxctl fleet ...` on the host, against the one nats-server."""
    cmd = [sys.executable, "-m", "roxd.ctl", *(["--json"] if as_json else []), "fleet", *args,
           "--server", url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=REPO,
                         check=False)
    assert out.returncode == 0, f"{' '.join(cmd)}: {out.returncode}\n{out.stderr}"
    return json.loads(out.stdout) if as_json else out.stdout


def _local_alerts(node: Node) -> list[dict[str, Any]]:
    """The node's own alert store (roxctl inside the machine, over roxd's API socket),
    oldest first."""
    out = node.machine.run("roxctl", "--json", "alerts", "list", "--rule", RULE_ID,
                           "--limit", "1000").stdout
    return list(reversed(json.loads(out)))


def _sink_counter(node: Node, counter: str) -> int:
    status = json.loads(node.machine.run("roxctl", "--json", "status").stdout)
    return int(status.get("alert_sinks", {}).get(f"{SINK}.{counter}", 0))


def _node_stream(url: str, node: Node) -> list[dict[str, Any]]:
    """The node's marker alerts in the stream, in stream order: read per node and without a
    limit, so alerts of other rules (both roxd see every exec of this busy host) can never
    push a marker out of what is read."""
    return [a for a in _fleet(url, "alerts", "--node", node.hostname, "--limit", "0")
            if a["rule"]["id"] == RULE_ID]


def _diagnosis(nodes: list[Node], nats: NatsServer | None = None) -> str:
    """What a failed wait needs, decisively: per node, which of its markers the stream holds
    and which of its stored alerts it lacks, the exporter's counters and health, and roxd's
    log; what the stream holds per subject; the server's log."""
    out = []
    for n in nodes:
        status = json.loads(n.machine.run("roxctl", "--json", "status").stdout)
        sinks = {k: v for k, v in status.get("alert_sinks", {}).items() if k.startswith("nats")}
        out.append(f"== {n.hostname}: {json.dumps(sinks)}\ndegraded: {status.get('degraded')}")
        if nats is not None and nats.proc is not None and nats.proc.poll() is None:
            try:
                mine = _node_stream(nats.url, n)
                local = _local_alerts(n)
                held = {a["id"] for a in mine}
                out.append(f"markers in the stream: "
                           f"{[a['process']['args'][-1].split()[-1] for a in mine]}; "
                           f"stored here but not in the stream: "
                           f"{[(a['id'], a['time']) for a in local if a['id'] not in held]}")
            except (AssertionError, OSError, ValueError, KeyError) as exc:
                out.append(f"the stream could not be read: {exc}")
        out.append(n.machine.journal("roxd")[-6000:])
    if nats is not None:
        if nats.proc is not None and nats.proc.poll() is None:
            try:
                counts: dict[str, int] = {}
                for m in nats.messages():
                    counts[m.subject] = counts.get(m.subject, 0) + 1
                out.append(f"== the stream per subject: {counts}")
            except Exception as exc:  # a diagnosis never hides the failure it explains
                out.append(f"== the stream could not be read: {exc!r}")
        out.append("== nats-server log\n" + nats.log()[-3000:])
    return "\n".join(out)


@pytest.fixture
def nats(tmp_path: Path) -> Iterator[NatsServer]:
    _require_host()
    with running_nats_server(tmp_path / "nats") as server:
        yield server


@pytest.fixture
def nodes(tmp_path: Path, nats: NatsServer) -> Iterator[list[Node]]:
    deb = _build_deb(tmp_path / "dist")
    base = base_root(depends_of(deb))  # test_packages' cached root
    # the shipped /etc/roxd/roxd.toml has no [[alerts.nats]] table: the test's is appended
    config = _shipped_config(deb) + NATS_TABLE.format(url=nats.url)
    tag = uuid.uuid4().hex[:6]
    with contextlib.ExitStack() as stack:
        out: list[Node] = []
        for letter in ("a", "b"):
            root = stack.enter_context(overlay_root(base))
            hostname = f"fleet-{letter}-{tag}"
            marker = f"fleet-marker-{letter}-{uuid.uuid4().hex[:12]}"
            _prepare(root, deb, hostname, marker, config)
            log = tmp_path / f"console-{letter}.log"
            machine = Machine(root, log)
            stack.callback(machine.shutdown)  # before its overlay is unmounted (LIFO)
            machine.boot()
            out.append(Node(hostname, marker, machine))
        # both installs (bcc compiles in each) at once
        with ThreadPoolExecutor(2) as pool:
            for f in [pool.submit(_install, n, deb) for n in out]:
                f.result()
        yield out


def test_two_machines_one_server_a_server_restart_nothing_lost(
        nodes: list[Node], nats: NatsServer) -> None:
    # the premise of 127.0.0.1: no private network, the host's network namespace
    for n in nodes:
        assert os.readlink(f"/proc/{n.machine.leader}/ns/net") == os.readlink(
            "/proc/self/ns/net"), f"{n.hostname} has a network namespace of its own"
        assert n.machine.run("hostname").stdout.strip() == n.hostname
        where = n.machine.run("python3", "-c", "import nats; print(nats.__file__)").stdout
        assert where.startswith("/usr/local/lib/python3.11/dist-packages/nats/"), where

    def markers(first: int) -> None:
        for n in nodes:
            for i in range(first, first + PER_PHASE):
                n.machine.run("sh", "-c", f": {n.marker} {i}")
        for n in nodes:
            try:
                wait_until(lambda n=n: len(_local_alerts(n)) >= first + PER_PHASE, 60,
                           interval=0.5,
                           message=f"{first + PER_PHASE} marker alerts in {n.hostname}'s "
                                   "store")
            except AssertionError as exc:  # the sensor side: roxd's log says why
                raise AssertionError(f"{exc}\n{_diagnosis(nodes, nats)}") from None

    markers(0)
    names = {n.hostname for n in nodes}
    wait_until(lambda: {x["name"] for x in _fleet(nats.url, "nodes")
                        if x["state"] == "up"} >= names, 60, interval=0.5,
               message="both nodes' heartbeats")

    nats.stop()  # the server goes away while both nodes keep raising alerts
    markers(PER_PHASE)
    for n in nodes:
        wait_until(lambda n=n: _sink_counter(n, "failed") >= 1, 60, interval=0.5,
                   message=f"a failed publish on {n.hostname} while the server is down")
    # node a's service restarts during the outage: its queued alerts wait in the disk queue
    # under /var/lib/roxd (the unit's StateDirectory) for the new process to send
    a = nodes[0]
    wait_until(lambda: _sink_counter(a, "queued") >= PER_PHASE, 30, interval=0.5,
               message=f"the outage's alerts queued on {a.hostname}")
    pid = a.machine.show("roxd", "MainPID")["MainPID"]
    a.machine.run("systemctl", "restart", "roxd", timeout=180)
    wait_until(lambda: _ready(a), 180, interval=0.5, message=f"roxd READY again on {a.hostname}")
    assert a.machine.show("roxd", "MainPID")["MainPID"] != pid
    # the new process found them on disk (the server is still down: nothing was sent)
    assert _sink_counter(a, "queued") >= PER_PHASE
    nats.start()
    markers(2 * PER_PHASE)

    total = 3 * PER_PHASE

    def stream() -> list[dict[str, Any]]:
        return [a for n in nodes for a in _node_stream(nats.url, n)]

    try:
        wait_until(lambda: len(stream()) >= 2 * total, 90, interval=0.5,
                   message=f"{2 * total} marker alerts in the stream")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{_diagnosis(nodes, nats)}") from None
    stored = stream()
    # the whole stream (every node, no --node) has them too, as an operator reads it
    everything = [a for a in _fleet(nats.url, "alerts", "--limit", "0")
                  if a["rule"]["id"] == RULE_ID]
    assert sorted(a["id"] for a in everything) == sorted(a["id"] for a in stored)
    machine_ids = set()
    for n in nodes:
        local = _local_alerts(n)
        assert len(local) == total, (n.hostname, len(local))  # one alert per marker command
        mine = [a for a in stored if a["node"]["hostname"] == n.hostname]
        # every alert of the node exactly once, in the node's own order
        assert [a["id"] for a in mine] == [a["id"] for a in local], n.hostname
        # ... and they are this node's markers, each number once
        numbers = [int(a["process"]["args"][-1].split()[-1]) for a in mine]  # ": <marker> <n>"
        assert sorted(numbers) == list(range(total)), numbers
        assert all(n.marker in " ".join(a["process"]["args"]) for a in mine)
        ids = {a["node"]["machine_id"] for a in mine}
        assert ids == {n.machine.run("cat", "/etc/machine-id").stdout.strip()}, ids
        machine_ids |= ids
    assert len(stored) == 2 * total, "an alert without its node, or a third node"
    # attribution: an alert under a node's name is that node's marker, never the other's
    # (both roxd saw every marker exec on the shared kernel)
    marker_of = {n.hostname: n.marker for n in nodes}
    assert all(marker_of[a["node"]["hostname"]] in a["process"]["args"][-1] for a in stored)
    assert len(machine_ids) == 2, "both machines reported the same machine id"

    one = _fleet(nats.url, "alerts", "--node", nodes[1].hostname, "--limit", "0")
    assert {a["node"]["hostname"] for a in one} == {nodes[1].hostname}

    table = _fleet(nats.url, "alerts", "--limit", "0", as_json=False)
    for n in nodes:
        assert table.count(f" {n.hostname} ") >= total, table[-3000:]

    # both nodes up, and still heartbeating while idle: node a's roxd, restarted during the
    # outage, used to stop (issue 19; docs/fleet.md "Heartbeats")
    def up() -> dict[str, Any]:
        return {x["name"]: x for x in _fleet(nats.url, "nodes") if x["state"] == "up"}

    try:
        wait_until(lambda: set(up()) >= names, 30, interval=0.5, message="both nodes up")
        beats = {n.hostname: _sink_counter(n, "heartbeats") for n in nodes}
        wait_until(lambda: all(_sink_counter(n, "heartbeats") >= beats[n.hostname] + 3
                               for n in nodes), 30, interval=0.5,
                   message="heartbeats going on on both idle nodes")
        wait_until(lambda: set(up()) >= names, 30, interval=0.5,
                   message="both nodes still up")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{_diagnosis(nodes, nats)}") from None
    fleet_nodes = {x["name"]: x for x in _fleet(nats.url, "nodes")}
    for n in nodes:
        info = fleet_nodes[n.hostname]
        assert info["node"]["hostname"] == n.hostname
        assert info["version"]
        assert _sink_counter(n, "dropped") == 0
    nodes_table = _fleet(nats.url, "nodes", as_json=False)
    assert all(n.hostname in nodes_table for n in nodes), nodes_table
    # each node's marker rule opened an incident there; the changes went the same way
    incidents = _fleet(nats.url, "incidents")
    assert {i["node"] for i in incidents} >= {n.hostname for n in nodes}, incidents
    # nothing in either exporter crashed or failed its queue file (health would name it)
    for n in nodes:
        health = json.loads(n.machine.run("roxctl", "--json", "status").stdout)
        assert not [p for p in health.get("degraded", []) if "nats" in p], _diagnosis(nodes,
                                                                                  nats)
