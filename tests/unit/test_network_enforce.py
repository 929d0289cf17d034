"""Network baselines in the kernel (issue 15): learned elements -> the cgroup connect hook's
maps (bpf/netenf.bpf.c key layout), all or nothing per workload, capacity, the policy's use of
the hook's per-thread verdicts, and the alert's honest `block` action."""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
from pathlib import Path
from typing import Any

import pytest

from roxd.model import ActionKind, BaselineFacts, ConnectEvent, Outcome
from roxd.pipeline import kernel_actions
from roxd.policy.kernel import KernelPolicy
from roxd.policy.netenf import (
    KEY_HEAD_BITS,
    NETWORK_VERDICT,
    allow_key,
    build_network_table,
    parse_element,
    peer_networks,
)
from roxd.policy.netenf_kernel import Probe, Refusal
from roxd.rules.active import ActiveRules
from roxd.rules.schema import Invalid, _actions
from roxd.sensor.records import Decoded
from tests.unit.test_baselines import web
from tests.unit.test_netmap import connect_of
from tests.unit.test_pipeline import FakeMaps

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]

OWNERS = {"172.17.0.3": "workload:image:postgres/db", "172.17.0.4": "workload:image:postgres/db",
          "10.0.0.5": "host", "fd00::5": "host", "172.17.0.9": "workload:image:other/x"}


def test_elements_parse_as_show_lists_them() -> None:
    e = parse_element("outbound tcp/5432 workload:image:postgres/db")
    assert e is not None and (e.protocol, e.port, e.peer) == (
        socket.IPPROTO_TCP, 5432, "workload:image:postgres/db")
    assert parse_element("outbound udp/53 host").protocol == socket.IPPROTO_UDP  # type: ignore
    assert parse_element("outbound ip/80 203.0.113.0/24").protocol == 0  # type: ignore
    assert parse_element("/usr/bin/curl") is None
    assert parse_element("outbound tcp/70000 host") is None
    assert parse_element("outbound sctp/1 host") is None


def test_peers_resolve_to_the_addresses_they_name_now() -> None:
    db = peer_networks("workload:image:postgres/db", OWNERS)
    assert sorted(map(str, db)) == ["172.17.0.3/32", "172.17.0.4/32"]
    assert sorted(map(str, peer_networks("host", OWNERS))) == ["10.0.0.5/32", "fd00::5/128"]
    assert peer_networks("loopback", OWNERS) == []  # the hook always passes loopback
    assert list(map(str, peer_networks("203.0.113.0/24", OWNERS))) == ["203.0.113.0/24"]
    assert list(map(str, peer_networks("2001:db8::/64", OWNERS))) == ["2001:db8::/64"]
    assert peer_networks("workload:gone", OWNERS) == []


def test_the_key_is_the_one_the_hook_builds() -> None:
    bits, data = allow_key(7, socket.IPPROTO_TCP, 5432,
                           ipaddress.ip_network("203.0.113.0/24"))
    # workload (host order u32), protocol, port (network order), ::ffff:a.b.c.d
    assert data[:7] == (7).to_bytes(4, "little") + bytes([6]) + (5432).to_bytes(2, "big")
    assert data[7:] == b"\0" * 10 + b"\xff\xff" + bytes([203, 0, 113, 0])
    assert bits == KEY_HEAD_BITS + 96 + 24
    bits6, data6 = allow_key(7, 0, 53, ipaddress.ip_network("fd00::5/128"))
    assert bits6 == KEY_HEAD_BITS + 128 and data6[7:] == ipaddress.ip_address("fd00::5").packed


def _containers() -> list[tuple[int, Any]]:
    return [(101, web("web-1")), (102, web("web-2", cid="c" * 64)),
            (200, web("api", cid="d" * 64))]


def _key(c: Any) -> str:
    return "image:nginx/web" if c.name.startswith("web") else "image:nginx/api"


def test_enforcing_workloads_get_their_cgroups_and_peers() -> None:
    numbers: dict[str, int] = {}
    enforcing = {"image:nginx/web": frozenset({
        "outbound tcp/5432 workload:image:postgres/db", "outbound udp/53 host",
        "outbound tcp/443 203.0.113.0/24", "outbound tcp/8080 loopback",
        "outbound tcp/9000 workload:gone"})}
    table = build_network_table(enforcing, _key, _containers(), numbers, OWNERS)
    n = numbers["image:nginx/web"]
    assert table.cgroups == {101: (n, True), 102: (n, True)}  # both replicas, not the api
    assert table.workloads == 1 and table.unresolved == 1 and table.left_out == []
    # 2 db addresses + 2 host addresses in the hash, 1 prefix in the trie; loopback: none
    assert len(table.exact) == 4 and len(table.allow) == 1
    assert allow_key(n, socket.IPPROTO_TCP, 5432, ipaddress.ip_network("172.17.0.4/32"))[1] \
        in table.exact
    assert allow_key(n, socket.IPPROTO_TCP, 443, ipaddress.ip_network("203.0.113.0/24")) \
        in table.allow


def test_a_workload_without_a_container_or_not_enforcing_gets_nothing() -> None:
    table = build_network_table({"image:nginx/gone": frozenset({"outbound udp/53 host"})},
                                _key, _containers(), {}, OWNERS)
    assert table.cgroups == {} and table.exact == set()
    assert build_network_table({}, _key, _containers(), {}, OWNERS).cgroups == {}


def test_over_capacity_a_workload_is_left_out_whole_never_partly() -> None:
    enforcing = {"image:nginx/web": frozenset({"outbound udp/53 host"}),
                 "image:nginx/api": frozenset({"outbound tcp/1 host", "outbound tcp/2 host"})}
    numbers: dict[str, int] = {}
    table = build_network_table(enforcing, _key, _containers(), numbers, OWNERS,
                                exact_capacity=3)
    # api needs 4 entries (two ports x two host addresses): left out whole, alert only;
    # web needs 2: enforced with all of them
    assert table.left_out == ["image:nginx/api"]
    web_number = numbers["image:nginx/web"]
    assert table.cgroups == {101: (web_number, False), 102: (web_number, False)}
    assert len(table.exact) == 2
    assert all(k[:4] == web_number.to_bytes(4, "little") for k in table.exact)


class FakeHook:
    def __init__(self, fail: bool = False) -> None:
        self.cgroups: dict[int, tuple[int, bool]] = {}
        self.exact: set[bytes] = set()
        self.allow: set[tuple[int, bytes]] = set()
        self.refusals: dict[int, Refusal] = {}
        self.fail = fail
        self.closed = False

    def set_network(self, cgroups: dict[int, tuple[int, bool]], exact: set[bytes],
                    allow: set[tuple[int, bytes]]) -> None:
        if self.fail and cgroups:
            raise Exception("Could not update table: [Errno 7] Argument list too long")
        self.cgroups, self.exact, self.allow = dict(cgroups), set(exact), set(allow)

    def take_refusal(self, tid: int) -> Refusal | None:
        return self.refusals.pop(tid, None)

    def sendmsg_refusals(self, limit: int = 256) -> list[tuple[int, Refusal, int]]:
        return [(tid, r, 5) for tid, r in self.refusals.items() if r.op == "sendmsg"]

    def stats(self) -> dict[str, int]:
        return {"refused_connect": len(self.refusals)}

    def close(self) -> None:
        self.closed = True


class Enforcing:
    def __init__(self, peers: frozenset[str]) -> None:
        self.peers = peers

    def enforcing(self) -> dict[str, frozenset[str]]:
        return {"image:nginx/web": frozenset({"/bin/app"})}

    def enforcing_network(self) -> dict[str, frozenset[str]]:
        return {"image:nginx/web": self.peers}

    def workload_of(self, container: Any) -> str:
        return _key(container)


def _policy(hook: FakeHook, *, enforce: bool = True) -> KernelPolicy:
    policy = KernelPolicy(FakeMaps(), enforce_in_kernel=enforce, fold_window_ns=0,
                          containers=_containers, baselines=Enforcing(
                              frozenset({"outbound udp/53 host"})),
                          peer_owners=lambda: OWNERS)
    policy.set_network_hook(hook, Probe(True, "test"))  # type: ignore[arg-type]
    policy.apply_rules(ActiveRules([REPO / "rules"]).load())
    return policy


def _refused(errno: int, tid: int = 10, port: int = 22) -> Decoded:
    ev = connect_of(web(), "172.17.0.3", port, errno=errno).event
    assert isinstance(ev, ConnectEvent)
    return Decoded(dataclasses.replace(ev, cgroup_id=101, tid=tid), fold_key=b"k")


def test_the_policy_writes_the_hook_and_names_its_refusals() -> None:
    hook = FakeHook()
    policy = _policy(hook)
    assert set(hook.cgroups) == {101, 102} and len(hook.exact) == 2 and hook.allow == set()
    assert hook.cgroups[101][1] is False  # no prefixes: the trie is never walked
    snap = policy.snapshot()
    assert snap["network_cgroups"] == 2 and snap["network_allow_entries"] == 2
    assert snap["network_enforcement"]["effective"] == "refuse in kernel (EPERM)"  # type: ignore
    # EPERM with the hook's verdict for that thread: the kernel refused it
    hook.refusals[10] = Refusal(101, 1, 22, 6, "connect", "172.17.0.3")
    assert policy.on_event(_refused(1), web()) == NETWORK_VERDICT
    assert policy.snapshot()["network_refused"] == 1
    # EPERM without a verdict (a firewall, another program): not claimed
    assert policy.on_event(_refused(1), web()) is None
    # a verdict for another connect of the thread is not this one's
    hook.refusals[10] = Refusal(101, 1, 443, 6, "connect", "172.17.0.3")
    assert policy.on_event(_refused(1), web()) is None
    policy.close_network_hook()
    assert hook.closed


def test_monitor_mode_and_a_refused_hook_enforce_nothing() -> None:
    hook = FakeHook()
    policy = _policy(hook, enforce=False)
    assert hook.cgroups == {} and hook.exact == set() and hook.allow == set()
    assert policy.snapshot()["network_enforcement"]["effective"] == "alert only"  # type: ignore
    none = KernelPolicy(FakeMaps(), enforce_in_kernel=True, fold_window_ns=0,
                        containers=_containers)
    none.set_network_hook(None, Probe(False, "attaching netenf_connect4: Operation not "
                                             "permitted"))
    enf = none.network_enforcement
    assert enf["effective"] == "alert only" and "not permitted" in str(enf["detail"])


def test_a_full_hook_map_is_counted_never_fatal_and_enforces_nothing() -> None:
    hook = FakeHook(fail=True)
    policy = _policy(hook)
    snap = policy.snapshot()
    assert snap["network_table_errors"] >= 1 and snap["network_cgroups"] == 0
    assert hook.cgroups == {}  # never a cgroup enforced with a partial allow-list


def test_the_alert_says_block_in_kernel_only_for_the_hooks_refusal() -> None:
    rules = ActiveRules([REPO / "rules"]).load()
    event = dataclasses.replace(
        connect_of(web(), "172.17.0.3", 22, errno=1),
        baseline=BaselineFacts(workload="image:nginx/web", mode="enforce", verdict="anomaly",
                               locked_at_ns=1, learned=1, first_seen_ns=1,
                               element="outbound tcp/22 workload:image:postgres/db"))
    matches = rules.match(event)
    match = next(m for m in matches if m.rule.id == "baseline.new-network-peer")
    done = kernel_actions(event, [], NETWORK_VERDICT, match)
    assert [(r.action, r.outcome, r.in_kernel) for r in done] == [
        (ActionKind.BLOCK, Outcome.DONE, True)]
    assert "EPERM" in done[0].reason
    assert kernel_actions(event, [], None, match) == ()  # no verdict: alert only


def test_block_is_not_an_action_a_rule_can_ask_for() -> None:
    with pytest.raises(Invalid, match="unknown action 'block'"):
        _actions({"actions": ["alert", "block"]}, "actions")


def test_a_refused_udp_send_becomes_an_event_claimed_once() -> None:
    hook = FakeHook()
    policy = _policy(hook)
    hook.refusals[77] = Refusal(101, 1, 9001, 17, "sendmsg", "172.17.0.3")
    hook.refusals[78] = Refusal(101, 1, 22, 6, "connect", "172.17.0.3")  # its tracepoint's
    sends = policy.refused_sends(1_000)
    assert len(sends) == 1
    ev = sends[0].event
    assert isinstance(ev, ConnectEvent)
    assert (ev.tid, ev.protocol, ev.dport, ev.daddr, ev.errno, ev.cgroup_id, ev.time_ns) == (
        77, "udp", 9001, "172.17.0.3", 1, 101, 1_005)
    assert policy.on_event(sends[0], web()) == NETWORK_VERDICT
    policy.forget_refusal(77)
    assert policy.refused_sends(1_000) == [] and 78 in hook.refusals
