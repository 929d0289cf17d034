"""Inbound connections and listening sockets without a kernel (issues 15, 16, 17): the record
mirror against bpf/inbound.bpf.c, decoding, the map's inbound edges and directions, the
listener table and its /proc fallback, inbound baseline elements and their alert, and the
risk score's listening_sockets factor. tests/kernel/test_inbound.py runs the real thing."""

from __future__ import annotations

import ctypes as ct
import re
import socket
from pathlib import Path
from typing import Any

import pytest

from roxd.baselines.engine import BaselineEngine
from roxd.baselines.settings import BaselineSettings
from roxd.incidents.risk import LISTENING_CAP, listening_reason, with_listening
from roxd.netmap.flows import FlowMap, peer_name
from roxd.netmap.inbound import NEW_INBOUND_PEER, InboundObserver
from roxd.netmap.listeners import ListenerTable, from_proc
from roxd.sensor import inbound, records
from roxd.sensor.inbound import (
    INBOUND_STAT_NAMES,
    AcceptEvent,
    InboundRecord,
    ListenEvent,
    decode_inbound,
)
from tests.unit.test_baselines import Clock, web
from tests.unit.test_netmap import DB, WEB, connect_of, flow_map

pytestmark = pytest.mark.unit
SOURCE = (Path(__file__).resolve().parents[2] / "bpf" / "inbound.bpf.c").read_text()
S = 1_000_000_000


# ---------------------------------------------------------------------------- the mirror


def test_counters_and_constants_are_the_c_ones() -> None:
    body = re.search(r"enum inbound_stat \{(.*?)\};", SOURCE, re.DOTALL).group(1)  # type: ignore[union-attr]
    names = [m.lower() for m in re.findall(r"IN_(\w+?)(?: = 0)?,", body)]
    assert tuple(n for n in names if n != "stat_max") == INBOUND_STAT_NAMES
    defines = dict(re.findall(r"#define (REC_\w+|LISTEN_\w+) (\d+)", SOURCE))
    for name, value in defines.items():
        assert getattr(inbound, name) == int(value), name


@pytest.mark.parametrize(("struct", "mirror"), [("accept_key", inbound.AcceptKey),
                                                 ("inbound_record", InboundRecord)])
def test_struct_fields_are_mirrored_in_order(struct: str, mirror: type[ct.Structure]) -> None:
    body = re.search(rf"struct {struct} \{{(.*?)\}};", SOURCE, re.DOTALL).group(1)  # type: ignore[union-attr]
    body = re.sub(r"/\*.*?\*/", "", body, flags=re.DOTALL)
    fields = re.findall(r"(\w+)(?:\[\d+\])?;", body)
    assert fields == [f[0] for f in mirror._fields_]


def _record(rtype: int, family: int, laddr: str, lport: int, raddr: str = "", rport: int = 0,
            op: int = 0, protocol: int = 6, cgroup: int = 77, folded: int = 0) -> bytes:
    rec = InboundRecord()
    rec.h.type, rec.h.pid, rec.h.uid, rec.h.cgroup_id = rtype, 4242, 0, cgroup
    rec.h.ktime_ns, rec.h.comm = 5 * S, b"httpd"
    rec.key.cgroup_id, rec.key.family, rec.key.lport = cgroup, family, lport
    for field, addr in (("laddr", laddr), ("raddr", raddr)):
        if not addr:
            continue
        raw = (bytes(10) + b"\xff\xff" + socket.inet_pton(socket.AF_INET, addr)
               if family == socket.AF_INET else socket.inet_pton(socket.AF_INET6, addr))
        ct.memmove(ct.addressof(getattr(rec.key, field)), raw, 16)
    rec.rport, rec.op, rec.protocol, rec.folded, rec.cookie = rport, op, protocol, folded, 9
    return bytes(rec)


def test_accept_and_listen_records_decode() -> None:
    d = records.decode(_record(inbound.REC_ACCEPT, socket.AF_INET, "172.18.0.2", 8080,
                               "172.18.0.3", 40000, folded=4), 1000)
    ev = d.event
    assert isinstance(ev, AcceptEvent) and d.fold_key is None
    assert (ev.saddr, ev.sport, ev.laddr, ev.lport) == ("172.18.0.3", 40000, "172.18.0.2", 8080)
    assert (ev.family, ev.protocol, ev.folded, ev.cgroup_id, ev.comm) == (
        "ipv4", "tcp", 4, 77, "httpd")
    assert ev.time_ns == 5 * S + 1000
    lst = decode_inbound(_record(inbound.REC_LISTEN, socket.AF_INET6, "::", 53, op=3,
                                 protocol=17), 0)
    assert isinstance(lst, ListenEvent)
    assert (lst.op, lst.protocol, lst.laddr, lst.lport, lst.cookie) == ("bind", "udp", "::", 53,
                                                                         9)


def test_a_bad_inbound_record_is_a_decode_error() -> None:
    with pytest.raises(records.DecodeError, match="family"):
        records.decode(_record(inbound.REC_ACCEPT, 1, "", 80), 0)
    with pytest.raises(records.DecodeError, match="operation"):
        records.decode(_record(inbound.REC_LISTEN, socket.AF_INET, "0.0.0.0", 80, op=9), 0)


# ---------------------------------------------------------------------------- the map


def accept(saddr: str, lport: int, *, laddr: str = "172.17.0.3", cgroup: int = 77, t: int = 2,
           folded: int = 0) -> AcceptEvent:
    return AcceptEvent(time_ns=t * S, pid=4242, uid=0, cgroup_id=cgroup, comm="postgres",
                       family="ipv6" if ":" in saddr else "ipv4", saddr=saddr, sport=40000,
                       laddr=laddr, lport=lport, folded=folded)


def test_a_connect_and_its_accept_are_one_edge_with_both_ends() -> None:
    fm = flow_map({"172.17.0.2": WEB, "172.17.0.3": DB})
    fm.observe(connect_of(WEB, "172.17.0.3", 5432, t=1))
    flow = fm.observe_accept(DB, accept("::ffff:172.17.0.2", 5432, folded=2))
    assert flow.observed == ["connect", "accept"] and (flow.count, flow.accepted) == (1, 3)
    [edge] = fm.flows()
    assert edge["source"]["name"] == "web" and edge["destination"]["name"] == "db"
    assert edge["peer_addresses"] == ["172.17.0.2"] and "direction" not in edge
    assert [f["direction"] for f in fm.flows(container="db")] == ["inbound"]
    assert [f["direction"] for f in fm.flows(container="web")] == ["outbound"]
    assert fm.stats()["accepts"] == 3 and fm.stats()["connects"] == 1


def test_inbound_sources_are_classified_like_destinations() -> None:
    fm = flow_map({"172.17.0.3": DB, "172.17.0.1": "host"})
    outside = fm.observe_accept(DB, accept("203.0.113.9", 5432))
    assert (outside.source.kind, outside.source.id) == ("external", "203.0.113.0/24")
    assert outside.observed == ["accept"]
    assert fm.observe_accept(DB, accept("172.17.0.1", 5432)).source.kind == "host"
    own = fm.observe_accept(DB, accept("127.0.0.1", 6379, laddr="127.0.0.1"))
    # itself: the same edge its own connect to loopback makes
    assert (own.source.name, own.destination.kind) == ("db", "loopback")
    fm.observe(connect_of(DB, "127.0.0.1", 6379))
    assert [f["direction"] for f in fm.flows(container="db") if f["port"] == 6379] == [
        "loopback"]
    assert len([f for f in fm.flows() if f["port"] == 6379]) == 1


def test_a_listener_older_than_roxd_is_attributed_by_its_local_address() -> None:
    fm = flow_map({"172.17.0.3": DB})
    flow = fm.observe_accept(None, accept("203.0.113.9", 5432, cgroup=0))
    assert flow.destination.name == "db"
    host = fm.observe_accept(None, accept("203.0.113.9", 22, laddr="10.9.9.9", cgroup=0))
    assert host.destination.kind == "host"  # not an address of a container: the host's


# ---------------------------------------------------------------------------- listeners


def listen(op: str, port: int, cookie: int = 1, protocol: str = "tcp") -> ListenEvent:
    return ListenEvent(time_ns=3 * S, pid=7, uid=0, cgroup_id=77, comm="httpd", op=op,
                       family="ipv6", laddr="::", lport=port, protocol=protocol, cookie=cookie)


def test_listeners_open_and_close_by_socket() -> None:
    table = ListenerTable()
    table.observe("c1", listen("listen", 8080, cookie=5))
    table.observe("c1", listen("bind", 53, cookie=6, protocol="udp"))
    assert [(s["protocol"], s["port"], s["process"], s["source"]) for s in table.of("c1")] == [
        ("tcp", 8080, "httpd", "kernel"), ("udp", 53, "httpd", "kernel")]
    table.observe("c1", listen("close", 8080, cookie=99))  # another socket: not this one
    assert len(table.of("c1")) == 2
    table.observe("c1", listen("close", 8080, cookie=5))
    assert [s["port"] for s in table.of("c1")] == [53]
    table.forget({"c2"})
    assert table.of("c1") == []


def test_proc_fallback_reads_listen_entries(tmp_path: Path) -> None:
    net = tmp_path / "42" / "net"
    net.mkdir(parents=True)
    header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt\n"
    (net / "tcp").write_text(header +
                             "   0: 0100007F:1F90 00000000:0000 0A 0 0\n"   # 127.0.0.1:8080
                             "   1: 030011AC:D431 020011AC:1F90 01 0 0\n")  # established
    (net / "tcp6").write_text(header +
                              "   0: 00000000000000000000000000000000:0050 "
                              "00000000000000000000000000000000:0000 0A 0 0\n")  # [::]:80
    found = from_proc(42, proc=str(tmp_path))
    assert found == [("tcp", "127.0.0.1", 8080), ("tcp", "::", 80)]
    table = ListenerTable()
    table.seed("c1", found, 1)
    table.observe("c1", listen("listen", 80))  # the kernel's word replaces /proc's
    assert {(s["port"], s["source"]) for s in table.of("c1")} == {(8080, "proc"), (80, "kernel")}
    table.seed("c1", [], 2)  # gone from /proc: the /proc entry goes, the kernel's stays
    assert [(s["port"], s["source"]) for s in table.of("c1")] == [(80, "kernel")]


# ---------------------------------------------------------------------------- baselines


def engine(tmp_path: Path, clock: Clock, fm: FlowMap) -> BaselineEngine:
    return BaselineEngine(BaselineSettings(window_s=60.0, startup_grace_s=5.0), tmp_path,
                          clock=clock.wall, monotonic=clock.monotonic,
                          peer_of=lambda a: peer_name(fm.classify(a)))


def test_inbound_peers_are_learned_then_judged(tmp_path: Path) -> None:
    clock, fm = Clock(), flow_map({"172.17.0.2": WEB})
    eng = engine(tmp_path, clock, fm)
    db = web("db-1", "d" * 64)
    key = eng.workload_of(db)
    client = peer_name(fm.classify("172.17.0.2"))
    facts = eng.observe_inbound(key, db, 100, client, 5432, "tcp")
    assert facts is not None and facts.verdict == "learning"
    assert facts.element == f"inbound tcp/5432 {client}"
    clock.advance(61)
    eng.tick()
    assert eng.observe_inbound(key, db, 100, client, 5432, "tcp").verdict == "learned"
    odd = eng.observe_inbound(key, db, 100, "203.0.113.0/24", 5432, "tcp")
    assert odd.verdict == "anomaly" and odd.element == "inbound tcp/5432 203.0.113.0/24"
    assert eng.observe_inbound(key, db, 100, "loopback", 9999, "tcp").verdict == "learning"
    # an outbound element of the same words is another element
    assert f"outbound tcp/5432 {client}" not in eng.get(key)["peers"]
    eng.accept(key, "inbound tcp/5432 203.0.113.0/24")
    assert eng.observe_inbound(key, db, 100, "203.0.113.0/24", 5432, "tcp").verdict == "learned"
    # a listener older than roxd (no container): only an existing baseline is judged
    assert eng.observe_inbound("image:x/none", None, 0, client, 1, "tcp") is None


def test_the_observer_alerts_a_new_inbound_peer_after_lock(tmp_path: Path) -> None:
    clock, fm = Clock(), flow_map({"172.17.0.2": WEB, "172.17.0.3": DB})
    eng = engine(tmp_path, clock, fm)
    raised: list[tuple[Any, ...]] = []
    containers = {77: DB}
    obs = InboundObserver(lambda cg, _pid: containers.get(cg), fm, ListenerTable(), eng,
                          lambda rule, event, actions: raised.append((rule, event, actions)))
    obs.observe(listen("listen", 5432))
    assert [s["port"] for s in obs.listeners.of(DB.id)] == [5432]
    obs.observe(accept("172.17.0.2", 5432))
    clock.advance(61)
    eng.tick()
    obs.observe(accept("172.17.0.2", 5432, t=80))
    assert raised == []
    obs.observe(accept("198.51.100.4", 5432, t=81))
    [(rule, event, actions)] = raised
    assert rule is NEW_INBOUND_PEER and rule.id.startswith("baseline.")
    assert event.container is DB and event.baseline.verdict == "anomaly"
    assert event.event.args["peer"] == "198.51.100.0/24" and event.event.args["port"] == 5432
    assert [a.action.value for a in actions] == ["alert"]
    payload = event.to_dict()
    assert payload["type"] == "syscall" and payload["baseline"]["element"].startswith("inbound")
    eng.set_mode(eng.workload_of(DB), "learn")  # learn mode: an anomaly is learned, no alert
    obs.observe(accept("192.0.2.1", 5432, t=82))
    assert len(raised) == 1


def test_host_accepts_count_in_the_map_but_not_in_baselines(tmp_path: Path) -> None:
    clock, fm = Clock(), flow_map({})
    eng = engine(tmp_path, clock, fm)
    obs = InboundObserver(lambda _cg, _pid: None, fm, ListenerTable(), eng, None)
    obs.observe(accept("203.0.113.9", 22, cgroup=1, laddr="10.0.0.1"))
    assert fm.flows()[0]["destination"]["kind"] == "host" and eng.list() == []


# ---------------------------------------------------------------------------- risk


def test_listening_sockets_factor_is_capped_and_ignores_loopback() -> None:
    def sock(port: int, address: str = "::", protocol: str = "tcp") -> dict[str, Any]:
        return {"protocol": protocol, "address": address, "port": port}

    assert listening_reason([sock(8080, "127.0.0.1"), sock(6379, "::1")]) is None
    one = listening_reason([sock(8080), sock(8080, "0.0.0.0")])  # v4 and v6: one port
    assert one is not None and one["points"] == 2 and "tcp/8080" in one["detail"]
    many = listening_reason([sock(p) for p in (22, 80, 443)] + [sock(53, protocol="udp")])
    assert many is not None and many["points"] == LISTENING_CAP == 4
    assert "(8 before the cap)" in many["detail"]
    base = {"container": "c", "score": 5, "config": "known",
            "reasons": [{"factor": "root_user", "points": 5, "cap": 5, "detail": "root"}]}
    risk = with_listening(base, [sock(8080)])
    assert risk["score"] == 7 == sum(r["points"] for r in risk["reasons"])
    assert [r["factor"] for r in risk["reasons"]] == ["root_user", "listening_sockets"]
    assert with_listening(base, []) is base



def test_the_table_shows_direction_and_which_ends_saw_an_edge() -> None:
    from roxd.ctl_netmap import TABLE_HEADERS, table_rows, to_dot

    fm = flow_map({"172.17.0.2": WEB, "172.17.0.3": DB})
    fm.observe(connect_of(WEB, "172.17.0.3", 5432))
    fm.observe_accept(DB, accept("172.17.0.2", 5432))
    fm.observe_accept(DB, accept("203.0.113.9", 5432))
    rows = [dict(zip(TABLE_HEADERS, r, strict=True)) for r in table_rows(fm.flows(container="db"))]
    by_source = {r["SOURCE"]: r for r in rows}
    assert by_source["web"]["DIR"] == "in" and by_source["web"]["SEEN"] == "connect+accept"
    assert (by_source["web"]["COUNT"], by_source["web"]["ACCEPTED"]) == (1, 1)
    assert by_source["203.0.113.0/24"]["SEEN"] == "accept"
    assert {r[1] for r in table_rows(fm.flows())} == {"->"}  # no container: no side
    assert "tcp/5432 x1 (accepts)" in to_dot(fm.flows())
