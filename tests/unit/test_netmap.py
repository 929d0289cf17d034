"""The communication map (issue 17): classification of destinations, aggregation into flows
with counts and results, eviction, the DOT and table renderings, and the API through the
FakePort."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from roxd.ctl_netmap import table_rows, to_dot
from roxd.model import ConnectEvent, Container, EnrichedEvent, Process
from roxd.netmap.addresses import first_pid
from roxd.netmap.flows import Endpoint, FlowMap, NetmapSettings, container_endpoint

pytestmark = pytest.mark.unit
S = 1_000_000_000
WEB = Container("a1" * 32, "docker", "web", "nginx:1")
DB = Container("b2" * 32, "docker", "db", "postgres:16")


def connect_of(container: Container | None, daddr: str, dport: int, *, t: int = 1,
               errno: int = 0, protocol: str = "tcp", folded: int = 0) -> EnrichedEvent:
    ev = ConnectEvent(time_ns=t * S, pid=10, tid=10, uid=0, cgroup_id=5, comm="app",
                      family="ipv6" if ":" in daddr else "ipv4", daddr=daddr, dport=dport,
                      errno=errno, folded=folded, protocol=protocol)
    return EnrichedEvent(ev, container, Process(pid=10, ppid=1, uid=0, exe="/app", comm="app",
                                                args=("app",), cgroup_id=5))


def flow_map(owners: dict[str, Container | str], **settings: int) -> FlowMap:
    fm = FlowMap(NetmapSettings(**settings))
    fm.addresses.replace({a: (container_endpoint(c, fm._workload) if isinstance(c, Container)
                              else Endpoint(c, c)) for a, c in owners.items()})
    return fm


def test_destinations_are_classified() -> None:
    fm = flow_map({"172.17.0.3": DB, "10.0.0.5": "host"})
    assert fm.classify("172.17.0.3").name == "db"
    assert fm.classify("::ffff:172.17.0.3").id == DB.id  # v4-mapped is the same address
    assert fm.classify("10.0.0.5").kind == "host"
    assert fm.classify("127.0.0.53").kind == "loopback"
    assert fm.classify("::1").kind == "loopback"
    assert fm.classify("203.0.113.77") == Endpoint("external", "203.0.113.0/24")
    assert fm.classify("2001:db8:1:2:3::9").id == "2001:db8:1:2::/64"
    wide = flow_map({}, external_prefix_v4=16)
    assert wide.classify("203.0.113.77").id == "203.0.0.0/16"


def test_connects_aggregate_into_flows_with_results() -> None:
    fm = flow_map({"172.17.0.3": DB})
    fm.observe(connect_of(WEB, "172.17.0.3", 5432, t=1))
    fm.observe(connect_of(WEB, "172.17.0.3", 5432, t=2, folded=3))  # + 3 the kernel folded
    fm.observe(connect_of(WEB, "172.17.0.3", 5433, t=3, errno=111))  # refused
    fm.observe(connect_of(WEB, "172.17.0.3", 5432, t=4, errno=115))  # EINPROGRESS: pending
    fm.observe(connect_of(None, "203.0.113.9", 53, t=5, protocol="udp"))
    flows = fm.flows()
    assert [(f["source"]["id"], f["destination"]["id"], f["port"]) for f in flows] == [
        ("host", "203.0.113.0/24", 53), (WEB.id, DB.id, 5432), (WEB.id, DB.id, 5433)]
    pg = flows[1]
    assert (pg["count"], pg["succeeded"], pg["pending"], pg["failed"]) == (6, 5, 1, 0)
    assert pg["first_ns"] == 1 * S and pg["last_ns"] == 4 * S
    assert pg["source"]["workload"] and pg["destination"]["name"] == "db"
    assert flows[2]["failed"] == 1 and flows[0]["protocol"] == "udp"
    assert fm.stats()["connects"] == 8
    # filters: since (on last seen) and a container by name, id prefix or host
    assert [f["port"] for f in fm.flows(since_ns=4 * S)] == [53, 5432]
    assert {f["port"] for f in fm.flows(container="db")} == {5432, 5433}
    assert [f["port"] for f in fm.flows(container="host")] == [53]
    assert len(fm.flows(container=WEB.id[:8], limit=1)) == 1


def test_memory_is_bounded_and_evictions_counted() -> None:
    fm = flow_map({}, max_flows=3)
    for port in range(10):
        fm.observe(connect_of(WEB, "198.51.100.1", 1000 + port, t=port + 1))
    assert [f["port"] for f in fm.flows()] == [1009, 1008, 1007]
    assert fm.stats()["flows_evicted"] == 7 and fm.stats()["flows"] == 3


def test_bad_settings_are_named() -> None:
    problems = NetmapSettings(max_flows=0, external_prefix_v4=40, external_prefix_v6=8,
                              refresh_s=0).check()
    assert len(problems) == 4


def test_refresh_reads_addresses_through_a_pid_per_container() -> None:
    fm = FlowMap()
    seen: list[list[int]] = []

    def addresses_of(pids: list[int]) -> frozenset[str]:
        seen.append(pids)
        return {100: frozenset({"172.17.0.3"}), 1: frozenset({"10.0.0.5"})}.get(
            pids[0], frozenset())

    fm.refresh([(DB, 100), (WEB, None)], addresses_of)
    assert seen == [[100], [1]]  # no pid: skipped
    assert fm.classify("172.17.0.3").name == "db" and fm.classify("10.0.0.5").kind == "host"


def test_first_pid_of_a_cgroup(tmp_path: Path) -> None:
    (tmp_path / "cgroup.procs").write_text("4242\n4243\n")
    assert first_pid(str(tmp_path)) == 4242
    assert first_pid(str(tmp_path / "gone")) is None


def test_dot_escapes_hostile_names_and_renders_with_graphviz() -> None:
    evil = Container("c3" * 32, "docker", 'x"];\n evil [label="pwn', "img")
    fm = flow_map({"172.17.0.3": DB})
    fm.observe(connect_of(evil, "172.17.0.3", 5432))
    fm.observe(connect_of(evil, "172.17.0.3", 6379, errno=111))
    fm.observe(connect_of(evil, "127.0.0.1", 8080))
    dot = to_dot(fm.flows())
    assert 'x\\"];\\\\x0a evil [label=\\"pwn' in dot  # one quoted string
    assert 'style="dashed" color="red"' in dot  # only failures on that edge
    rows = table_rows(fm.flows())
    assert {r[4] for r in rows} == {"tcp/5432", "tcp/6379", "tcp/8080"}
    assert shutil.which("dot"), "graphviz (dot) is installed by scripts/setup.sh"
    svg = subprocess.run(["dot", "-Tsvg"], input=dot, capture_output=True, text=True,
                         check=True).stdout
    assert "<svg" in svg and ">db</text>" in svg
