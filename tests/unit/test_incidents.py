"""Incident correlation with recorded alerts: ancestry, time window, network, quiet close with
an injected clock, phase order, severity, and the store across a re-open."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from roxd.incidents.journald import incident_fields
from roxd.incidents.settings import IncidentsSettings
from roxd.incidents.store import IncidentStore
from roxd.incidents.tracker import (
    Incident,
    IncidentChange,
    IncidentQuery,
    IncidentTracker,
    container_addresses,
    incident_severity,
)
from roxd.model import (
    ActionKind,
    ActionResult,
    Alert,
    Ancestor,
    BaselineFacts,
    ConnectEvent,
    Container,
    EnrichedEvent,
    ExecEvent,
    Outcome,
    Phase,
    Process,
    RuleRef,
    Severity,
)
from roxd.netmap.inbound import NEW_INBOUND_PEER, InboundObserver
from roxd.sensor.inbound import AcceptEvent

pytestmark = pytest.mark.unit
S = 1_000_000_000
T0 = 1_800_000_000 * S
WEB = Container("a1" * 32, "docker", "web", "nginx:1")
DB = Container("b2" * 32, "docker", "db", "postgres:16")
SHIM = Ancestor(900, "/usr/bin/containerd-shim-runc-v2", ("containerd-shim-runc-v2",))
RULES = {
    "foothold.shell-in-container": (Phase.FOOTHOLD, Severity.NOTICE),
    "privilege_escalation.read-shadow": (Phase.PRIVILEGE_ESCALATION, Severity.ERROR),
    "persistence.cron-file-write": (Phase.PERSISTENCE, Severity.WARNING),
    "lateral_movement.ssh-connect-from-container": (Phase.LATERAL_MOVEMENT, Severity.WARNING),
    "objectives.log-wipe": (Phase.OBJECTIVES, Severity.WARNING),
}


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


class Changes:
    def __init__(self) -> None:
        self.items: list[IncidentChange] = []

    def incident_changed(self, change: IncidentChange) -> None:
        self.items.append(change)

    def kinds(self) -> list[tuple[str, str | None]]:
        return [(c.kind, c.phase) for c in self.items if c.kind != "updated"]


def alert(rule: str, t: int, pid: int, ancestors: tuple[Ancestor, ...] = (),
          container: Container | None = WEB, exe: str = "/bin/busybox",
          args: tuple[str, ...] = ("sh",), connect: str | None = None,
          actions: tuple[ActionResult, ...] = ()) -> Alert:
    phase, severity = RULES[rule]
    if connect is not None:
        ev: Any = ConnectEvent(time_ns=t, pid=pid, tid=pid, uid=0, cgroup_id=5, comm="ssh",
                               family="ipv4", daddr=connect, dport=22, errno=0)
    else:
        ev = ExecEvent(time_ns=t, pid=pid, ppid=ancestors[0].pid if ancestors else 0, uid=0,
                       gid=0, cgroup_id=5, comm="x", filename=exe, args=args,
                       args_truncated=False)
    proc = Process(pid=pid, ppid=ev.ppid if connect is None else 0, uid=0, exe=exe,
                   comm="x", args=args, cgroup_id=5, ancestors=ancestors)
    return Alert(id=uuid.uuid4().hex, time_ns=t, rule=RuleRef(rule, rule, phase, severity, ()),
                 event=EnrichedEvent(ev, container, proc),
                 actions=(ActionResult(ActionKind.ALERT, Outcome.DONE), *actions))


def tracker(clock: Clock, changes: Changes | None = None, window_s: float = 60.0,
            **kw: Any) -> IncidentTracker:
    return IncidentTracker(IncidentsSettings(quiet_window_s=window_s),
                           [changes] if changes else [], clock=clock, timer=False, **kw)


def feed(t: IncidentTracker, clock: Clock, *alerts: Alert) -> None:
    for a in alerts:
        clock.now = max(clock.now, a.time_ns)
        t.emit(a)


def attack(base: int = T0, container: Container = WEB, pid0: int = 1000) -> list[Alert]:
    """A docker exec'd shell, then its children: shadow read, cron write, log wipe."""
    sh = Ancestor(pid0, "/bin/busybox", ("sh", "-c", "..."))
    return [
        alert("foothold.shell-in-container", base, pid0, (SHIM,), container),
        alert("privilege_escalation.read-shadow", base + 2 * S, pid0 + 1, (sh, SHIM), container,
              args=("cat", "/etc/shadow")),
        alert("persistence.cron-file-write", base + 4 * S, pid0 + 2, (sh, SHIM), container,
              args=("cp", "/tmp/x", "/etc/cron.d/x")),
        alert("objectives.log-wipe", base + 6 * S, pid0 + 3, (sh, SHIM), container,
              args=("rm", "-f", "/var/log/x")),
    ]


def test_an_attack_through_four_phases_is_one_incident_with_phases_in_order() -> None:
    clock, changes = Clock(), Changes()
    t = tracker(clock, changes)
    alerts = attack()
    feed(t, clock, *alerts)
    [inc] = t.query()
    assert [p["phase"] for p in inc["phases"]] == [
        "foothold", "privilege_escalation", "persistence", "objectives"]
    assert [p["first_ns"] for p in inc["phases"]] == [a.time_ns for a in alerts]
    assert [e["alert_id"] for e in inc["timeline"]] == [a.id for a in alerts]
    assert [e["link"] for e in inc["timeline"]] == ["first", "ancestry", "ancestry",
                                                     "ancestry"]
    assert inc["containers"] == [{"id": WEB.id, "name": "web", "image": "nginx:1"}]
    assert changes.kinds() == [("opened", None), ("phase_added", "privilege_escalation"),
                               ("phase_added", "persistence"), ("phase_added", "objectives")]
    # the process tree: the shim, the shell, its three children, each with its alert
    tree = {n["pid"]: n for n in inc["process_tree"]}
    assert tree[900]["parent"] is None and tree[1000]["parent"] == 900
    assert {tree[p]["parent"] for p in (1001, 1002, 1003)} == {1000}
    assert tree[1001]["alerts"] == [alerts[1].id]
    assert "links" not in inc  # internal


def test_phases_are_listed_in_kill_chain_order_whatever_order_they_came_in() -> None:
    clock = Clock()
    t = tracker(clock)
    sh = Ancestor(1000, "/bin/busybox", ("sh",))
    feed(t, clock, alert("persistence.cron-file-write", T0, 1001, (sh, SHIM)),
         alert("foothold.shell-in-container", T0 + S, 1000, (SHIM,)))
    [inc] = t.query()
    assert [p["phase"] for p in inc["phases"]] == ["foothold", "persistence"]
    assert [e["phase"] for e in inc["timeline"]] == ["persistence", "foothold"]  # as it came


def test_severity_rises_with_phases_reached() -> None:
    clock = Clock()
    t = tracker(clock)
    seen = []
    for a in attack():
        feed(t, clock, a)
        seen.append(t.query()[0]["severity"])
    # notice; error - 1 = critical; error - 2 = alert; capped at alert
    assert seen == ["notice", "critical", "alert", "alert"]
    assert incident_severity(Severity.WARNING.code, 1) == "warning"
    assert incident_severity(Severity.WARNING.code, 3) == "critical"
    assert incident_severity(Severity.EMERGENCY.code, 1) == "alert"


def test_two_unrelated_containers_are_two_incidents() -> None:
    clock = Clock()
    t = tracker(clock)
    a, b = attack(container=WEB, pid0=1000), attack(container=DB, pid0=2000)
    feed(t, clock, *sorted([*a, *b], key=lambda x: x.time_ns))
    incs = t.query()
    assert len(incs) == 2
    assert sorted(i["containers"][0]["name"] for i in incs) == ["db", "web"]
    assert all(i["alerts"] == 4 for i in incs)
    assert t.query(IncidentQuery(container="db"))[0]["containers"][0]["id"] == DB.id
    assert t.query(IncidentQuery(container=DB.id[:8]))[0]["containers"][0]["id"] == DB.id


def test_a_second_session_with_known_ancestry_is_its_own_incident() -> None:
    """Two docker exec'd sessions in one container, both traced up to the runtime: ancestry
    says they are unrelated, so two incidents."""
    clock = Clock()
    t = tracker(clock)
    first, second = attack(pid0=1000), attack(base=T0 + 10 * S, pid0=3000)
    feed(t, clock, *first, *second)
    assert len(t.query()) == 2


def test_unknown_ancestry_joins_the_open_incident_by_time_window() -> None:
    clock = Clock()
    t = tracker(clock, window_s=60)
    feed(t, clock, *attack()[:2])
    # a process forked before roxd started: no ancestry at all
    orphan = alert("persistence.cron-file-write", T0 + 30 * S, 4242, ())
    feed(t, clock, orphan)
    [inc] = t.query()
    assert inc["timeline"][-1]["link"] == "window"
    assert inc["alerts"] == 3


def test_quiet_window_closes_the_incident_and_a_later_alert_opens_a_new_one() -> None:
    clock, changes = Clock(), Changes()
    t = tracker(clock, changes, window_s=60)
    feed(t, clock, *attack()[:2])
    clock.now = T0 + 2 * S + 59 * S
    t.tick()
    assert t.query()[0]["state"] == "open"
    clock.now = T0 + 2 * S + 60 * S
    t.tick()
    [inc] = t.query()
    assert inc["state"] == "closed" and inc["closed_at"] is not None
    assert changes.kinds()[-1] == ("closed", None)
    late = alert("persistence.cron-file-write", clock.now + S, 1002,
                 (Ancestor(1000, "/bin/busybox", ("sh",)), SHIM))
    feed(t, clock, late)
    incs = t.query()
    assert [i["state"] for i in incs] == ["open", "closed"]
    assert t.query(IncidentQuery(state="closed"))[0]["id"] == inc["id"]
    assert t.query(IncidentQuery(since_ns=clock.now))[0]["id"] != inc["id"]


def test_a_connect_to_another_containers_address_links_both_containers() -> None:
    clock, changes = Clock(), Changes()
    addresses = {2000: frozenset({"172.17.0.3"}), 1005: frozenset({"172.17.0.2"})}

    def lookup(pids: Any) -> frozenset[str]:
        return next((addresses[p] for p in pids if p in addresses), frozenset())

    t = tracker(clock, changes, addresses=lookup)
    sh = Ancestor(1000, "/bin/busybox", ("sh",))
    feed(t, clock, alert("foothold.shell-in-container", T0, 1000, (SHIM,)),
         alert("lateral_movement.ssh-connect-from-container", T0 + S, 1005, (sh, SHIM),
               connect="172.17.0.3"),
         alert("persistence.cron-file-write", T0 + 5 * S, 2000,
               (Ancestor(1999, "/bin/busybox", ("sh",)), SHIM), container=DB))
    [inc] = t.query()
    assert [c["name"] for c in inc["containers"]] == ["web", "db"]
    assert inc["timeline"][-1]["link"] == "network"
    assert ("container_added", None) in changes.kinds()
    # db's next alert finds the incident by ancestry within db
    feed(t, clock, alert("objectives.log-wipe", T0 + 6 * S, 2001,
                         (Ancestor(2000, "/bin/busybox", ("sh",)), SHIM), container=DB))
    assert len(t.query()) == 1


def test_actions_other_than_the_alert_are_listed() -> None:
    clock = Clock()
    t = tracker(clock)
    kill = ActionResult(ActionKind.KILL, Outcome.DONE, "SIGKILL", in_kernel=True)
    feed(t, clock, alert("objectives.log-wipe", T0, 1000, (SHIM,), actions=(kill,)))
    [inc] = t.query()
    assert [(a["action"], a["outcome"], a["in_kernel"]) for a in inc["actions"]] == [
        ("kill", "done", True)]


def test_host_alerts_are_their_own_workload() -> None:
    clock = Clock()
    t = tracker(clock)
    feed(t, clock, alert("foothold.shell-in-container", T0, 1000, (SHIM,), container=None),
         *attack(base=T0 + S))
    incs = t.query()
    assert sorted(i["containers"][0]["id"] for i in incs) == sorted(["host", WEB.id])
    assert t.query(IncidentQuery(container="host"))[0]["alerts"] == 1


def test_the_timeline_is_capped_but_new_phases_are_always_kept() -> None:
    clock = Clock()
    t = IncidentTracker(IncidentsSettings(max_timeline=3), clock=clock, timer=False)
    sh = Ancestor(1000, "/bin/busybox", ("sh",))
    feed(t, clock, *(alert("foothold.shell-in-container", T0 + i, 1000 + i, (sh, SHIM))
                     for i in range(1, 10)))
    feed(t, clock, alert("objectives.log-wipe", T0 + 20, 1100, (sh, SHIM)))
    [inc] = t.query()
    assert inc["alerts"] == 10 and len(inc["timeline"]) == 4 and inc["timeline_dropped"] == 6
    assert inc["timeline"][-1]["phase"] == "objectives"


def test_journal_fields_per_change() -> None:
    clock, changes = Clock(), Changes()
    t = tracker(clock, changes)
    feed(t, clock, *attack()[:2])
    fields = incident_fields(changes.items[1])
    assert "ROXD_INCIDENT_CHANGE=phase_added" in fields
    assert "ROXD_INCIDENT_PHASE=privilege_escalation" in fields
    assert f"ROXD_INCIDENT_CONTAINER_ID={WEB.id}" in fields
    assert "ROXD_INCIDENT_PHASES=foothold,privilege_escalation" in fields
    assert "PRIORITY=2" in fields  # critical
    assert any(f.startswith("MESSAGE=incident ") for f in fields)


def test_store_survives_a_reopen_and_the_tracker_carries_on(tmp_path: Path) -> None:
    clock = Clock()
    store = IncidentStore(tmp_path)
    t = IncidentTracker(IncidentsSettings(quiet_window_s=60), [store], store=store,
                        clock=clock, timer=False)
    alerts = attack()
    feed(t, clock, *alerts[:2])
    feed(t, clock, *attack(container=DB, pid0=2000)[:1])
    t.close()  # flushes and closes the store
    store = IncidentStore(tmp_path)
    t = IncidentTracker(IncidentsSettings(quiet_window_s=60), [store], store=store,
                        clock=clock, timer=False)
    assert len(t.query()) == 2
    web = t.query(IncidentQuery(container="web"))[0]
    assert web["alerts"] == 2 and t.get(web["id"])["id"] == web["id"]
    # the open incident carries on: the next alert of the same session joins it by ancestry
    feed(t, clock, alerts[2])
    assert t.get(web["id"])["alerts"] == 3
    clock.now += 61 * S
    t.tick()
    t.close()
    store = IncidentStore(tmp_path)
    try:
        assert {d["state"] for d in store.query(IncidentQuery())} == {"closed"}
        assert store.query(IncidentQuery(container="web"))[0]["alerts"] == 3
        assert store.query(IncidentQuery(state="open")) == []
        assert store.get("0" * 32) is None
    finally:
        store.close()


def test_container_addresses_from_proc(tmp_path: Path) -> None:
    net = tmp_path / "77" / "net"
    net.mkdir(parents=True)
    (net / "fib_trie").write_text(
        "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n"
        "     +-- 127.0.0.0/8 2 0 2\n        |-- 127.0.0.1\n           /32 host LOCAL\n"
        "     |-- 172.17.0.3\n        /32 host LOCAL\n")
    (net / "if_inet6").write_text(
        "00000000000000000000000000000001 01 80 10 80       lo\n"
        "fd000000000000000000000000000003 2a 40 00 80     eth0\n")
    assert container_addresses([5, 77], proc=str(tmp_path)) == {"172.17.0.3", "fd00::3"}
    assert container_addresses([5], proc=str(tmp_path)) == frozenset()


# ---------------------------------------------------------------------------- risk


def test_risk_factors_sum_to_the_score_and_a_privileged_writable_mount_ranks_higher() -> None:
    from roxd.incidents.risk import ContainerRisk, facts_from_inspect

    clock = Clock()
    t = tracker(clock)
    feed(t, clock, *attack(container=WEB, pid0=1000), *attack(container=DB, pid0=2000))
    inspect = {
        WEB.id: {"HostConfig": {"Privileged": True, "Binds": ["/srv:/data"]},
                 "Mounts": [{"Type": "bind", "Source": "/srv", "RW": True}],
                 "Config": {"User": ""}},
        DB.id: {"HostConfig": {"Privileged": False}, "Config": {"User": "999"}},
    }
    risk = ContainerRisk(t, inspect.get)
    web, db = risk.of(WEB.id), risk.of(DB.id)
    for r in (web, db):
        assert r["score"] == sum(x["points"] for x in r["reasons"])
        assert all(x["points"] <= x["cap"] for x in r["reasons"])
    assert web["score"] > db["score"]
    assert [x["factor"] for x in web["reasons"]] == [
        "alerts", "phases", "privileged", "host_mount_rw", "root_user"]
    # the same alerts: notice 1 + error 9 + warning 4 + warning 4 = 18; 4 phases x 4 = 16
    assert {x["factor"]: x["points"] for x in db["reasons"]} == {"alerts": 18, "phases": 16}
    assert web["score"] == 18 + 16 + 15 + 10 + 5
    assert facts_from_inspect({"Mounts": [{"Type": "bind", "Source": "/var/run/docker.sock",
                                           "RW": True}]}).present() == [
        "docker_socket", "root_user"]
    assert facts_from_inspect({"HostConfig": {"NetworkMode": "host", "PidMode": "host"},
                               "Config": {"User": "app"}}).present() == [
        "host_network", "host_pid"]


def test_risk_caps_and_unknown_configuration() -> None:
    from roxd.incidents.risk import ALERTS_CAP, ContainerRisk

    clock = Clock()
    t = tracker(clock)
    sh = Ancestor(1000, "/bin/busybox", ("sh",))
    feed(t, clock, *(alert("privilege_escalation.read-shadow", T0 + i, 1000 + i, (sh, SHIM))
                     for i in range(1, 10)))
    r = ContainerRisk(t, None).of(WEB.id)
    assert r["reasons"][0] == {"factor": "alerts", "points": ALERTS_CAP, "cap": ALERTS_CAP,
                               "detail": "9 error (81 before the cap)"}
    assert r["config"] == "the container runtime adapter offers no inspect"
    assert ContainerRisk(t, lambda _cid: None).of(DB.id) == {
        "container": DB.id, "score": 0, "reasons": [], "config": "not known to the runtime"}


def test_the_trackers_own_timer_closes_a_quiet_incident() -> None:
    import time

    changes = Changes()
    t = IncidentTracker(IncidentsSettings(quiet_window_s=0.2), [changes])
    try:
        t.emit(alert("foothold.shell-in-container", time.time_ns(), 1000, (SHIM,)))
        deadline = time.monotonic() + 5
        while t.query()[0]["state"] != "closed":
            assert time.monotonic() < deadline, "not closed by the timer"
            time.sleep(0.05)
        assert changes.kinds() == [("opened", None), ("closed", None)]
    finally:
        t.close()


def test_risk_counts_added_capabilities_profiles_off_and_published_ports_once() -> None:
    from roxd.incidents.risk import facts_from_inspect, risk_of

    loose = {"HostConfig": {"CapAdd": ["NET_ADMIN"], "SecurityOpt": [
        "seccomp=unconfined", "apparmor:unconfined"], "PortBindings": {
        "80/tcp": [{"HostIp": "", "HostPort": "8080"}]}}, "Config": {"User": "app"}}
    facts = facts_from_inspect(loose)
    result = risk_of("c1", [], facts)
    assert {r["factor"]: r["points"] for r in result["reasons"]} == {
        "added_capabilities": 5, "no_seccomp": 3, "no_apparmor": 2, "published_ports": 3}
    assert result["score"] == 13
    # privileged already means every capability and no profiles: counted once
    privileged = {"HostConfig": {**loose["HostConfig"], "Privileged": True},
                  "Config": {"User": "app"}}
    factors = {r["factor"] for r in risk_of("c1", [], facts_from_inspect(privileged))["reasons"]}
    assert factors == {"privileged", "published_ports"}
    # an exposed port only when bound on the host
    unbound = {"NetworkSettings": {"Ports": {"80/tcp": None}}, "Config": {"User": "app"}}
    assert risk_of("c1", [], facts_from_inspect(unbound))["reasons"] == []


def test_the_tracker_reports_its_sinks_problems_for_health(tmp_path: Path) -> None:
    """The incident store's failing file reaches /v1/health through the tracker (the daemon
    lists `tracker.problems()` beside the alert sinks')."""

    class Failing:
        def incident_changed(self, change: IncidentChange) -> None:
            pass

        def problems(self) -> list[str]:
            return ["incident store: /x/incidents.db cannot be written (disk full)"]

    class Broken(Failing):
        def problems(self) -> list[str]:
            raise RuntimeError("boom")

    t = IncidentTracker(IncidentsSettings(), [Failing(), Broken()], timer=False)
    assert t.problems() == [
        "incident sink: incident store: /x/incidents.db cannot be written (disk full)",
        "incident sink: cannot report its state: boom"]
    assert IncidentTracker(IncidentsSettings(), [], timer=False).problems() == []


# ---------------------------------------------------------------------------- inbound links

CACHE = Container("c3" * 32, "docker", "cache", "redis:7")
ADDRESSES = {1000: frozenset({"172.17.0.2"}), 2000: frozenset({"172.17.0.3"}),
             3000: frozenset({"172.17.0.4"})}


def addresses_of(pids: Any) -> frozenset[str]:
    return next((ADDRESSES[p] for p in pids if p in ADDRESSES), frozenset())


def accept_alert(t: int, container: Container, listener_pid: int, peer: str) -> Alert:
    """`baseline.new-inbound-peer` as roxd/netmap/inbound.py raises it: its synthetic accept
    event on the listener's owner."""
    ev = AcceptEvent(time_ns=t, pid=listener_pid, uid=0, cgroup_id=7, comm="httpd",
                     family="ipv4", saddr=peer, sport=40000, laddr="0.0.0.0", lport=8080)
    facts = BaselineFacts("db", "monitor", "anomaly", T0, 3, T0, element="inbound tcp/8080")
    enriched = InboundObserver._event(ev, container, facts, "workload:web")
    # the listener's owner, started by the runtime: a complete chain of its own
    enriched = EnrichedEvent(enriched.event, container, Process(
        pid=listener_pid, ppid=SHIM.pid, uid=0, exe="/bin/busybox", comm="httpd",
        args=("httpd",), cgroup_id=7, ancestors=(SHIM,)), baseline=facts)
    return Alert(id=uuid.uuid4().hex, time_ns=t, rule=NEW_INBOUND_PEER, event=enriched,
                 actions=(ActionResult(ActionKind.ALERT, Outcome.DONE),))


def test_an_alerted_accept_from_an_incidents_container_joins_that_incident() -> None:
    """web is attacked; then db's locked baseline sees a new inbound peer, web's address: db
    joins web's incident (the attack reached db from web), and db's next alert follows it."""
    clock, changes = Clock(), Changes()
    t = tracker(clock, changes, addresses=addresses_of)
    feed(t, clock, alert("foothold.shell-in-container", T0, 1000, (SHIM,)),
         accept_alert(T0 + S, DB, 2000, "172.17.0.2"))
    [inc] = t.query()
    assert [c["name"] for c in inc["containers"]] == ["web", "db"]
    assert inc["timeline"][-1]["link"] == "network"
    assert inc["timeline"][-1]["rule"] == "baseline.new-inbound-peer"
    assert ("container_added", None) in changes.kinds()
    assert t._open[inc["id"]].sources == {"172.17.0.2": T0 + S}  # internal: not in the API
    # the same accept from an address no incident holds: its own incident
    feed(t, clock, accept_alert(T0 + 2 * S, CACHE, 3000, "172.17.0.9"))
    assert len(t.query()) == 2
    # an IPv4-mapped peer is the same address
    other = tracker(Clock(), addresses=addresses_of)
    feed(other, Clock(), alert("foothold.shell-in-container", T0, 1000, (SHIM,)),
         accept_alert(T0 + S, DB, 2000, "::ffff:172.17.0.2"))
    assert len(other.query()) == 1


def test_an_alert_in_the_peer_after_an_alerted_accept_joins_the_accepting_incident() -> None:
    """db alerts first on a new inbound peer (web's address); web then alerts: web is where
    the connection came from, one incident."""
    clock = Clock()
    t = tracker(clock, addresses=addresses_of)
    feed(t, clock, accept_alert(T0, DB, 2000, "172.17.0.2"),
         alert("foothold.shell-in-container", T0 + S, 1000, (SHIM,)))
    [inc] = t.query()
    assert [c["name"] for c in inc["containers"]] == ["db", "web"]
    assert inc["timeline"][-1]["link"] == "network"


def test_loopback_and_unrelated_accepts_link_nothing_and_sources_survive_a_restart() -> None:
    clock = Clock()
    t = tracker(clock, addresses=addresses_of)
    feed(t, clock, alert("foothold.shell-in-container", T0, 1000, (SHIM,)),
         accept_alert(T0 + S, DB, 2000, "127.0.0.1"))
    assert len(t.query()) == 2  # loopback names no other container
    [db] = t.query(IncidentQuery(container=DB.id))
    assert t._open[db["id"]].sources == {}
    # sources are in the record the store keeps (a restart carries the link on)
    t2 = tracker(Clock(), addresses=addresses_of)
    feed(t2, Clock(), accept_alert(T0, DB, 2000, "172.17.0.2"))
    [inc] = t2._open.values()
    assert Incident.from_dict(inc.to_dict()).sources == {"172.17.0.2": T0}


def _storm(base: int, n: int, pid0: int = 1000, step_ns: int = 1000) -> list[Alert]:
    """n alerts of one phase in one session, step_ns apart: one incident, plain updates."""
    sh = Ancestor(pid0, "/bin/busybox", ("sh",))
    return [alert("foothold.shell-in-container", base + i * step_ns, pid0 + 1 + i, (sh, SHIM))
            for i in range(n)]


def test_plain_updates_are_coalesced_to_the_latest_state() -> None:
    clock, changes = Clock(), Changes()
    t = tracker(clock, changes)
    storm = _storm(T0, 50)
    feed(t, clock, *storm)  # 50 alerts within 50 µs
    # the first update goes out at once (none for a second before it), the 48 after it wait
    assert [c.kind for c in changes.items] == ["opened", "updated"]
    assert changes.items[1].incident["alerts"] == 2
    clock.now += S // 2
    t.tick()
    assert len(changes.items) == 2  # not a second yet
    clock.now += S
    t.tick()
    [opened, _, updated] = changes.items
    assert updated.kind == "updated" and updated.alert_id == storm[-1].id
    assert updated.incident["alerts"] == 50 and updated.incident["id"] == opened.incident["id"]
    assert len(updated.incident["timeline"]) == 50
    t.tick()
    assert len(changes.items) == 3  # nothing new: nothing sent
    # the next alert after a quiet second goes out at once (the leading edge)
    clock.now += 2 * S
    feed(t, clock, *_storm(clock.now, 1, pid0=1000))
    assert [c.kind for c in changes.items][-1] == "updated"
    assert changes.items[-1].incident["alerts"] == 51


def test_a_pending_update_gives_way_to_a_change_that_carries_the_state() -> None:
    clock, changes = Clock(), Changes()
    t = tracker(clock, changes)
    storm = _storm(T0, 5)
    feed(t, clock, *storm)
    wipe = alert("objectives.log-wipe", T0 + 10_000, 1100,
                 (Ancestor(1000, "/bin/busybox", ("sh",)), SHIM))
    feed(t, clock, wipe)  # a new phase: published now, with the alerts before it
    assert [c.kind for c in changes.items] == ["opened", "updated", "phase_added"]
    assert changes.items[-1].incident["alerts"] == 6
    clock.now += 2 * S
    t.tick()
    assert len(changes.items) == 3  # nothing left over: the phase change carried it
    # a quiet close publishes `closed` with the state; the pending update is dropped
    feed(t, clock, *_storm(clock.now, 1, pid0=1000))
    feed(t, clock, *_storm(clock.now + 1000, 1, pid0=1000))
    clock.now += 61 * S
    t.tick()
    assert [c.kind for c in changes.items][-1] == "closed"
    assert changes.items[-1].incident["alerts"] == 8


def test_close_publishes_pending_updates_to_the_store(tmp_path: Path) -> None:
    clock = Clock()
    store = IncidentStore(tmp_path)
    t = IncidentTracker(IncidentsSettings(quiet_window_s=60), [store], store=store,
                        clock=clock, timer=False)
    feed(t, clock, *_storm(T0, 30))
    t.close()  # no tick came: close() must send the latest state before the store closes
    store = IncidentStore(tmp_path)
    try:
        [inc] = store.query(IncidentQuery())
        assert inc["alerts"] == 30 and inc["state"] == "open"
    finally:
        store.close()
