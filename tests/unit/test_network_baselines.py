"""Network baselines (issue 15): outbound connects learned per workload as (protocol, port,
peer) with peers named by the communication map's classification; an anomaly after the lock;
loopback never; accept; persistence; the built-in rule."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from roxd.baselines.engine import BaselineEngine, peer_element
from roxd.baselines.settings import BaselineSettings
from roxd.model import EnrichedEvent
from roxd.netmap.flows import Endpoint, FlowMap, peer_name
from roxd.rules.active import ActiveRules
from roxd.rules.fields import EventView
from tests.unit.test_baselines import ID2, Clock, exec_in, web
from tests.unit.test_netmap import DB, connect_of, flow_map

pytestmark = pytest.mark.unit


def network_engine(tmp_path: Path, clock: Clock, fm: FlowMap, **kw: object) -> BaselineEngine:
    settings = BaselineSettings(**{"window_s": 60.0, "startup_grace_s": 5.0, **kw})
    return BaselineEngine(settings, tmp_path, clock=clock.wall, monotonic=clock.monotonic,
                          peer_of=lambda a: peer_name(fm.classify(a)))


def connect(container: object, daddr: str, port: int, cgroup_id: int = 100,
            protocol: str = "tcp") -> EnrichedEvent:
    e = connect_of(container, daddr, port, protocol=protocol)  # type: ignore[arg-type]
    return dataclasses.replace(e, event=dataclasses.replace(e.event, cgroup_id=cgroup_id))


def test_peers_are_named_like_the_map_names_them() -> None:
    fm = flow_map({"172.17.0.3": DB, "10.0.0.5": "host"})
    assert peer_name(fm.classify("172.17.0.3")).startswith("workload:")
    assert peer_name(fm.classify("10.0.0.5")) == "host"
    assert peer_name(fm.classify("127.0.0.1")) == "loopback"
    assert peer_name(fm.classify("203.0.113.7")) == "203.0.113.0/24"
    assert peer_name(Endpoint("container", "c" * 64)) == "workload:" + "c" * 64


def test_learn_lock_then_judge_connects(tmp_path: Path) -> None:
    clock, fm = Clock(), flow_map({"172.17.0.3": DB})
    eng = network_engine(tmp_path, clock, fm)
    app = web()
    assert eng.observe(connect(app, "172.17.0.3", 5432)).verdict == "learning"
    clock.advance(10)
    assert eng.observe(connect(app, "198.51.100.20", 443)).verdict == "learning"
    clock.advance(60)
    eng.tick()  # locked
    assert eng.observe(connect(app, "172.17.0.3", 5432)).verdict == "learned"
    # another address of the same external /24 is the same peer
    assert eng.observe(connect(app, "198.51.100.99", 443)).verdict == "learned"
    odd = eng.observe(connect(app, "172.17.0.3", 22))  # a new port on a known peer
    assert odd.verdict == "anomaly" and odd.element == peer_element(
        "tcp", 22, peer_name(fm.classify("172.17.0.3")))
    assert eng.observe(connect(app, "203.0.113.5", 4444)).verdict == "anomaly"
    assert eng.observe(connect(app, "172.17.0.3", 5432, protocol="udp")).verdict == "anomaly"
    # loopback is the container itself: never an anomaly
    assert eng.observe(connect(app, "127.0.0.1", 6379)).verdict == "learning"
    # a replica after the lock shares the baseline, past its own startup grace
    replica = web("web-2", ID2)
    eng.observe(exec_in(replica, "/usr/sbin/nginx", cgroup_id=200))
    clock.advance(6)
    assert eng.observe(connect(replica, "172.17.0.3", 5432, cgroup_id=200)).verdict == "learned"
    assert eng.observe(connect(replica, "192.0.2.1", 25, cgroup_id=200)).verdict == "anomaly"
    shown = eng.get(eng.workload_of(app))
    assert "outbound tcp/5432 " + peer_name(fm.classify("172.17.0.3")) in shown["peers"]


def test_accept_persist_and_off_switches(tmp_path: Path) -> None:
    clock, fm = Clock(), flow_map({})
    eng = network_engine(tmp_path, clock, fm)
    app = web()
    eng.observe(connect(app, "198.51.100.20", 443))
    key = eng.workload_of(app)
    eng.lock(key)
    clock.advance(10)
    assert eng.observe(connect(app, "203.0.113.5", 8443)).verdict == "anomaly"
    eng.accept(key, "outbound tcp/8443 203.0.113.0/24")
    assert eng.observe(connect(app, "203.0.113.9", 8443)).verdict == "learned"
    eng.save_if_changed()
    again = network_engine(tmp_path, clock, fm)
    assert set(again.get(key)["peers"]) == {"outbound tcp/443 198.51.100.0/24",
                                            "outbound tcp/8443 203.0.113.0/24"}
    # network learning off, or no communication map to name peers: no verdict on connects
    off = network_engine(tmp_path / "off", clock, fm, network=False)
    assert off.observe(connect(app, "198.51.100.20", 443)) is None
    no_map = BaselineEngine(BaselineSettings(), tmp_path / "nomap")
    assert no_map.observe(connect(app, "198.51.100.20", 443)) is None


def test_the_built_in_rule_fires_on_a_network_anomaly_only(tmp_path: Path) -> None:
    clock, fm = Clock(), flow_map({})
    eng = network_engine(tmp_path, clock, fm)
    app = web()
    eng.observe(connect(app, "198.51.100.20", 443))
    eng.lock(eng.workload_of(app))
    clock.advance(10)
    rules = ActiveRules([]).load()  # the built-in rules only
    ids = [r.id for r in rules.rules]
    assert "baseline.new-network-peer" in ids

    def matched(event: EnrichedEvent) -> list[str]:
        facts = eng.observe(event)
        enriched = EnrichedEvent(event.event, event.container, event.process, facts)
        return [m.rule.id for m in rules.match(enriched)]

    assert matched(connect(app, "198.51.100.20", 443)) == []
    assert matched(connect(app, "192.0.2.80", 4444)) == ["baseline.new-network-peer"]
    assert EventView.of(EnrichedEvent(connect(app, "192.0.2.80", 4444).event, app,
                                      connect(app, "192.0.2.80", 1).process)).baseline is None
