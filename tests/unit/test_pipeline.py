"""The event pipeline and the kernel policy without a kernel: a recorded exec through
attribution, the policy, matching, response and the alert fan-out, with fakes only at the
edges (the kernel's maps, the runtime's metadata, the signal sender).

These could not be written while the daemon did this work itself: it built its collaborators
and kept the kernel's slot table and the held-exec verdict as private state.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from roxd.alerts.delivery import AlertDelivery
from roxd.alerts.dispatch import AlertDispatcher, TopicSink
from roxd.alerts.settings import AlertsSettings, JournaldSettings, NoiseSettings, StoreSettings
from roxd.alerts.store import AlertQuery, AlertStore
from roxd.containers.cgroups import CgroupIndex
from roxd.containers.enricher import Enricher
from roxd.containers.metadata import ContainerMetadata
from roxd.containers.process_table import ProcessTable
from roxd.containers.resolver import ContainerResolver
from roxd.enforce.kill import KillOutcome
from roxd.enforce.response import Responder
from roxd.model import (
    Alert,
    BaselineFacts,
    ConnectEvent,
    ExecEvent,
    ExitEvent,
    FileEvent,
    Outcome,
    SeccompEvent,
)
from roxd.pipeline import EventTaps, Pipeline
from roxd.policy.kernel import KernelPolicy
from roxd.policy.kill_tables import split_verdict
from roxd.pubsub import Topic
from roxd.rules.active import ActiveRules
from roxd.sensor.maps import FileWatchEntries
from roxd.sensor.records import Decoded
from tests.unit.test_containers_resolver import FakeSource

pytestmark = pytest.mark.unit

ID = "3c79270d70136d5d3f9916700ee58f8f50872c19d77f622a21dcbb64778ff218"

RULES = '''
[[rule]]
id = "t.miner"
name = "Miner"
description = "A miner ran."
phase = "objectives"
severity = "critical"
mitre = ["T1496"]
event = "exec"
actions = ["alert", "kill"]
[rule.when]
exe_basename = "xmrig"

[[rule]]
id = "t.netcat-in-web"
name = "Netcat in the web image"
description = "nc in a web container."
phase = "lateral_movement"
severity = "warning"
mitre = ["T1059"]
event = "exec"
actions = ["alert", "kill"]
[rule.when]
exe_basename = "nc"
[rule.scope]
host = false
image = ["web"]

[[rule]]
id = "t.cat-passwd"
name = "passwd read by cat"
description = "cat /etc/passwd."
phase = "objectives"
severity = "notice"
mitre = ["T1003"]
event = "exec"
[rule.when]
exe_basename = "cat"
'''

RULES += '''
[[rule]]
id = "t.docker-api"
name = "Docker API"
description = "A connect to the Docker API port."
phase = "privilege_escalation"
severity = "critical"
mitre = ["T1611"]
event = "connect"
actions = ["alert", "kill"]
[rule.when]
dport = 2375
'''

# A reload that puts a new kill rule first: every rule index moves.
RULES_RENUMBERED = RULES.replace('[[rule]]\nid = "t.miner"', '''[[rule]]
id = "t.wget"
name = "wget"
description = "wget ran."
phase = "objectives"
severity = "warning"
mitre = ["T1105"]
event = "exec"
actions = ["alert", "kill"]
[rule.when]
exe_basename = "wget"

[[rule]]
id = "t.miner"''', 1)


@dataclass
class FakeMaps:
    """The sensor's map writers, recorded: what the kernel would hold now."""

    container_cgroups: set[int] = field(default_factory=set)
    known_cgroups: set[int] = field(default_factory=set)
    hold_unknown: int = 0  # the lease: CLOCK_MONOTONIC ns until which the kernel holds
    exec_kills: dict[tuple[int, int], int] = field(default_factory=dict)
    connect_kills: tuple[dict[Any, int], dict[Any, int]] = ({}, {})
    file_watches: FileWatchEntries | None = None
    syscall_watches: frozenset[str] | None = frozenset()
    quiet: list[bytes] = field(default_factory=list)
    baselines: tuple[dict[int, tuple[int, int]], set[tuple[int, int]]] = ({}, set())
    writes: int = 0
    fold_clears: int = 0

    def set_container_cgroups(self, cgroup_ids: Iterable[int]) -> None:
        self.container_cgroups = set(cgroup_ids)
        self.writes += 1

    def set_known_cgroups(self, cgroup_ids: Iterable[int]) -> None:
        self.known_cgroups = set(cgroup_ids)

    def add_known_cgroup(self, cgroup_id: int) -> None:
        self.known_cgroups.add(cgroup_id)

    def set_hold_unknown(self, until_ns: int) -> None:
        self.hold_unknown = until_ns

    def set_exec_kills(self, entries: dict[tuple[int, int], int]) -> None:
        self.exec_kills = dict(entries)

    def set_connect_kills(self, by_port: Any, any_port: Any) -> None:
        self.connect_kills = (dict(by_port), dict(any_port))

    def set_baselines(self, cgroups: dict[int, tuple[int, int]],
                      allow: set[tuple[int, int]]) -> None:
        self.baselines = (dict(cgroups), set(allow))

    def set_file_watches(self, entries: FileWatchEntries) -> None:
        self.file_watches = entries

    def set_syscall_watches(self, names: Iterable[str] | None) -> None:
        self.syscall_watches = None if names is None else frozenset(names)

    def set_ring_urgent(self, mask: int) -> None:
        self.ring_urgent = mask

    def clear_folds(self) -> None:
        self.fold_clears += 1
        self.quiet.clear()

    def mark_quiet(self, decoded: Decoded, window_ns: int) -> None:
        assert decoded.fold_key is not None and window_ns > 0
        self.quiet.append(decoded.fold_key)


class Signals:
    """Records the signals a held-exec release sends, instead of sending them."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, int]] = []

    def __call__(self, pid: int, sig: int) -> KillOutcome:
        self.sent.append((pid, sig))
        return KillOutcome(True, f"signal {sig} sent by pidfd")


class RecordingSink:
    def __init__(self) -> None:
        self.alerts: list[Alert] = []

    def emit(self, alert: Alert) -> None:
        self.alerts.append(alert)

    def stats(self) -> dict[str, int]:
        return {"sent": len(self.alerts)}

    def close(self, timeout: float = 0.0) -> None:
        pass


@dataclass
class Rig:
    maps: FakeMaps
    signals: Signals
    policy: KernelPolicy
    pipeline: Pipeline
    rules: ActiveRules
    resolver: ContainerResolver
    web_cgroup: int
    host_cgroup: int
    recorded: RecordingSink
    alerts_topic: Topic
    delivery: AlertDelivery
    rule_file: Path
    state_dir: Path
    enricher: Enricher


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    root = tmp_path / "cg"
    (root / "docker" / ID).mkdir(parents=True)
    (root / "user.slice").mkdir()
    (tmp_path / "proc").mkdir()
    index = CgroupIndex(str(root))
    source = FakeSource()
    source.meta[ID] = ContainerMetadata(id=ID, name="web-1", image="web:1")
    resolver = ContainerResolver(index, [source])
    processes = ProcessTable(proc=str(tmp_path / "proc"), cgroup_id_of_pid=index.lookup_pid)
    enricher = Enricher(resolver, processes)
    rule_file = tmp_path / "rules.toml"
    rule_file.write_text(RULES)
    rules = ActiveRules([rule_file])
    rules.load()
    maps, signals = FakeMaps(), Signals()
    policy = KernelPolicy(maps, enforce_in_kernel=True, fold_window_ns=10**9,
                          containers=resolver.containers, known_cgroups=index.known_ids,
                          signal_pid=signals, host_kills=True)  # the tests' rules kill on hosts
    policy.apply_rules(rules.current)
    rules.add_listener(policy.apply_rules)
    resolver.add_change_listener(policy.containers_changed)
    recorded, alerts_topic = RecordingSink(), Topic("alerts")
    settings = AlertsSettings(journald=JournaldSettings(enabled=False),
                              store=StoreSettings(enabled=True),
                              noise=NoiseSettings(fold_window_s=60.0))
    delivery = AlertDelivery.from_settings(
        settings, tmp_path / "state",
        taps={"api": TopicSink(alerts_topic), "recorded": recorded})
    pipeline = Pipeline(enricher=enricher, rules=lambda: rules.current,
                        policy=policy, responder=Responder(guard=policy.kill_guard),
                        alerts=AlertDispatcher(delivery),
                        taps=EventTaps(Topic("events")))
    return Rig(maps, signals, policy, pipeline, rules, resolver,
               os.stat(root / "docker" / ID).st_ino, os.stat(root / "user.slice").st_ino,
               recorded, alerts_topic, delivery, rule_file, tmp_path / "state", enricher)


def exec_record(cgroup_id: int, filename: str, *args: str, pid: int = 4242, verdict: int = 0,
                held: bool = False) -> Decoded:
    event = ExecEvent(time_ns=time.time_ns(), pid=pid, ppid=1, uid=0, gid=0,
                      cgroup_id=cgroup_id, comm=filename.rpartition("/")[2][:15],
                      filename=filename, args=args or (filename,), args_truncated=False)
    return Decoded(event, fold_key=b"k" * 8 + filename.encode(), kill_slot=verdict, held=held)


def test_a_recorded_exec_goes_through_every_stage(rig: Rig) -> None:
    out = rig.pipeline.handle(exec_record(rig.web_cgroup, "/bin/cat", "cat", "/etc/passwd"))
    assert out.event.container is not None and out.event.container.name == "web-1"
    assert [m.rule.id for m in out.matches] == ["t.cat-passwd"]
    assert out.killed_by is None and not out.quiet
    alert = out.alerts[0]
    assert [(a.action.value, a.outcome) for a in alert.actions] == [("alert", Outcome.DONE)]
    assert rig.pipeline.counters.events == 1 and rig.pipeline.counters.alerts == 1


def test_no_rule_cares_so_the_kernel_folds_it(rig: Rig) -> None:
    # the first quiet verdict on a key is only remembered (most keys never come again, and a
    # mark is a syscall); the second marks it in the kernel (policy/sightings.py)
    first = rig.pipeline.handle(exec_record(rig.web_cgroup, "/bin/ls", "ls"))
    assert not first.quiet and not first.alerts and rig.maps.quiet == []
    out = rig.pipeline.handle(exec_record(rig.web_cgroup, "/bin/ls", "ls"))
    assert out.quiet and not out.alerts
    assert rig.maps.quiet == [b"k" * 8 + b"/bin/ls"]
    assert rig.pipeline.counters.quiet_marks == 1
    # a new rule set clears every fold verdict of the old one, and the sightings too
    rig.rules.reload()
    assert rig.maps.quiet == []
    assert not rig.pipeline.handle(exec_record(rig.web_cgroup, "/bin/ls", "ls")).quiet
    assert rig.pipeline.handle(exec_record(rig.web_cgroup, "/bin/ls", "ls")).quiet


def test_a_key_that_raised_an_alert_is_never_marked(rig: Rig) -> None:
    for _ in range(3):
        out = rig.pipeline.handle(exec_record(rig.web_cgroup, "/bin/cat", "cat", "/etc/passwd"))
        assert out.alerts and not out.quiet
    assert rig.maps.quiet == []


def test_exits_are_published_but_never_matched(rig: Rig) -> None:
    event = ExitEvent(time_ns=time.time_ns(), pid=4242, cgroup_id=rig.web_cgroup, comm="cat",
                      exit_code=0)
    out = rig.pipeline.handle(Decoded(event))
    assert not out.matches and not out.quiet and rig.maps.quiet == []


def test_an_exits_ancestry_is_read_only_for_a_listener(rig: Rig) -> None:
    """Exits meet no rule: their ancestry and session are walked only when an event tap
    listens (the API's event stream shows them), not on every exit (issue 22)."""
    for pid, parent in ((4200, 1), (4201, 4200), (4202, 4201), (4203, 4201)):
        rig.pipeline.handle(exec_record(rig.web_cgroup, "/bin/sh", "sh", pid=pid))
        rig.enricher.processes._table[pid] = dataclasses.replace(
            rig.enricher.processes._table[pid], ppid=parent)

    def exit_of(pid: int) -> Decoded:
        return Decoded(ExitEvent(time_ns=time.time_ns(), pid=pid, cgroup_id=rig.web_cgroup,
                                 comm="sh", exit_code=0))

    quiet = rig.pipeline.handle(exit_of(4202)).event
    assert quiet.process.exe == "/bin/sh" and quiet.process.ancestors == ()
    assert quiet.container is not None and quiet.container.name == "web-1"
    topic: Topic = rig.pipeline._taps.topic
    sub = topic.subscribe()
    try:
        seen = rig.pipeline.handle(exit_of(4203)).event
        assert [a.pid for a in seen.process.ancestors] == [4201, 4200]
        assert seen.process.session is not None
        assert sub.get(1.0)["process"]["ancestors"][0]["pid"] == 4201
    finally:
        topic.unsubscribe(sub)


def test_the_kernel_kill_is_reported_against_its_rule(rig: Rig) -> None:
    verdict = rig.maps.exec_kills[(0xFFFFFFFFFFFFFFFF, _fnv("xmrig"))]
    out = rig.pipeline.handle(exec_record(rig.host_cgroup, "/tmp/xmrig", verdict=verdict))
    assert out.killed_by == "t.miner"
    kill = next(a for a in out.alerts[0].actions if a.action.value == "kill")
    assert kill.outcome is Outcome.DONE and kill.in_kernel


def test_a_kill_right_across_a_reload_names_the_rule_that_killed(rig: Rig) -> None:
    """The record of a kernel kill can still be in the ring buffer when a reload renumbers
    the rules: its verdict names the old generation, and the alert the rule that killed."""
    old = rig.maps.exec_kills[(0xFFFFFFFFFFFFFFFF, _fnv("xmrig"))]
    rig.rule_file.write_text(RULES_RENUMBERED)
    rig.rules.reload()
    new = rig.maps.exec_kills[(0xFFFFFFFFFFFFFFFF, _fnv("xmrig"))]
    assert split_verdict(old)[1] == split_verdict(new)[1] - 1  # t.miner moved down one slot
    assert split_verdict(new)[0] == split_verdict(old)[0] + 1  # in a new generation
    wget_now = rig.maps.exec_kills[(0xFFFFFFFFFFFFFFFF, _fnv("wget"))]
    assert split_verdict(wget_now)[1] == split_verdict(old)[1]  # old index, another rule now
    out = rig.pipeline.handle(exec_record(rig.host_cgroup, "/tmp/xmrig", verdict=old))
    assert out.killed_by == "t.miner"
    assert [m.rule.id for m in out.matches] == ["t.miner"]
    assert next(a for a in out.alerts[0].actions if a.action.value == "kill").in_kernel


def test_a_held_exec_in_a_new_container_is_decided_by_the_kernel_table(rig: Rig) -> None:
    """The container's kill entries reach the maps before the held exec is decided, and the
    decision is the kernel's own lookup on the table just written."""
    assert rig.maps.hold_unknown  # t.netcat-in-web holds in some containers only
    assert rig.web_cgroup not in rig.maps.container_cgroups  # roxd has not seen it yet
    out = rig.pipeline.handle(exec_record(rig.web_cgroup, "/usr/bin/nc", "nc", "-l",
                                          pid=777, held=True))
    assert rig.web_cgroup in rig.maps.container_cgroups
    assert rig.web_cgroup in rig.maps.known_cgroups
    assert rig.signals.sent == [(777, signal.SIGKILL)]
    assert out.killed_by == "t.netcat-in-web"
    kill = next(a for a in out.alerts[0].actions if a.action.value == "kill")
    assert kill.in_kernel and "stopped by the eBPF program" in kill.reason


def test_a_held_exec_no_rule_kills_is_continued(rig: Rig) -> None:
    out = rig.pipeline.handle(exec_record(rig.web_cgroup, "/bin/sleep", "sleep", "1",
                                          pid=778, held=True))
    assert rig.signals.sent == [(778, signal.SIGCONT)]
    assert out.killed_by is None and not out.alerts


def test_a_held_host_exec_of_a_container_only_rule_is_continued(rig: Rig) -> None:
    rig.pipeline.handle(exec_record(rig.host_cgroup, "/usr/bin/nc", "nc", pid=779, held=True))
    assert rig.signals.sent == [(779, signal.SIGCONT)]


def test_container_changes_reach_the_kernel_once_not_per_event(rig: Rig) -> None:
    rig.pipeline.handle(exec_record(rig.web_cgroup, "/bin/ls", "ls"))
    syncs = rig.policy.counters.container_syncs
    for i in range(5):
        rig.pipeline.handle(exec_record(rig.web_cgroup, "/bin/ls", "ls", str(i)))
    assert rig.policy.counters.container_syncs == syncs
    rig.resolver.metadata_changed("docker", ID)  # nothing changed: no listener call
    rig.policy.containers_changed()  # a change announced by the runtime's thread
    rig.pipeline.handle(exec_record(rig.web_cgroup, "/bin/ls", "ls"))
    assert rig.policy.counters.container_syncs == syncs + 1


def test_monitor_mode_writes_no_kill_entries(tmp_path: Path) -> None:
    rule_file = tmp_path / "r.toml"
    rule_file.write_text(RULES)
    rules = ActiveRules([rule_file])
    maps = FakeMaps()
    policy = KernelPolicy(maps, enforce_in_kernel=False, fold_window_ns=0,
                          containers=list, known_cgroups=tuple)
    policy.apply_rules(rules.load())
    assert maps.exec_kills == {} and not maps.hold_unknown
    assert maps.connect_kills == ({}, {})
    assert maps.file_watches is not None  # watches are not enforcement: still written


def test_every_consumer_sees_the_same_alerts_after_noise_control(rig: Rig) -> None:
    """One fan-out: the API stream (and the ring it feeds), the store and any other sink get
    the same alerts: folded repeats are held back from all of them alike."""
    sub = rig.alerts_topic.subscribe()
    for _ in range(3):
        rig.pipeline.handle(exec_record(rig.web_cgroup, "/bin/cat", "cat", "/etc/passwd"))
    assert rig.pipeline.counters.alerts == 3  # raised
    rig.delivery.close(2.0)  # ends the fold window: one summary of the two held back
    streamed = []
    while (item := sub.get(0.1)) is not None:
        streamed.append(item)
    assert rig.delivery.store is not None
    reopened = AlertStore(rig.state_dir, StoreSettings())  # what survives the close
    kept = reopened.query(AlertQuery(limit=100)).items
    reopened.close()
    recorded = [a.id for a in rig.recorded.alerts]
    assert len(recorded) == 2 and recorded[1].startswith("folded-")
    assert [a["id"] for a in streamed] == recorded
    assert sorted(a.id for a in kept) == sorted(recorded)
    assert rig.recorded.alerts[1].count == 2


def test_connect_verdicts_share_the_generation(rig: Rig) -> None:
    """Connect and exec kill rules are numbered in one table per generation: a connect killed
    at connect() entry names its rule like an exec does."""
    (by_port, _any) = rig.maps.connect_kills
    verdicts = set(by_port.values())
    assert len(verdicts) == 1
    verdict = verdicts.pop()
    assert split_verdict(verdict)[0] == split_verdict(
        rig.maps.exec_kills[(0xFFFFFFFFFFFFFFFF, _fnv("xmrig"))])[0]
    event = ConnectEvent(time_ns=time.time_ns(), pid=9, tid=9, uid=0,
                         cgroup_id=rig.host_cgroup, comm="curl", family="ipv4",
                         daddr="127.0.0.1", dport=2375, errno=0)
    out = rig.pipeline.handle(Decoded(event, fold_key=b"c" * 8, kill_slot=verdict))
    assert out.killed_by == "t.docker-api" and [m.rule.id for m in out.matches] == [
        "t.docker-api"]
    assert "connect() entry" in next(a for a in out.alerts[0].actions
                                     if a.action.value == "kill").reason


def _fnv(name: str) -> int:
    from roxd.sensor.records import fnv1a

    return fnv1a(name.encode())


def seccomp_record(cgroup_id: int, syscall: str, verdict: str) -> Decoded:
    return Decoded(SeccompEvent(time_ns=time.time_ns(), pid=4343, uid=0, cgroup_id=cgroup_id,
                                comm="", syscall=syscall, verdict=verdict, count=3))


def test_seccomp_violations_are_matched_by_the_built_in_rules(rig: Rig) -> None:
    """The seccomp sensor's violations go through the same path as every event: the built-in
    rules decide, and the kernel's kill shows as an in-kernel action of the alert."""
    killed = rig.pipeline.handle(seccomp_record(rig.web_cgroup, "mount", "killed"))
    assert [m.rule.id for m in killed.matches] == ["seccomp.enforce-kill"]
    assert killed.event.container is not None and killed.event.container.name == "web-1"
    actions = {a.action.value: a for a in killed.alerts[0].actions}
    assert actions["kill"].in_kernel and actions["kill"].outcome is Outcome.DONE
    assert "mount" in actions["kill"].reason
    assert killed.event.to_dict()["seccomp"] == {"syscall": "mount", "verdict": "killed",
                                                 "count": 3}
    denied = rig.pipeline.handle(seccomp_record(rig.web_cgroup, "unshare", "denied"))
    assert [m.rule.id for m in denied.matches] == ["seccomp.profile-denied"]
    assert [a.action.value for a in denied.alerts[0].actions] == ["alert"]


def test_a_rule_file_can_override_a_built_in_rule(rig: Rig) -> None:
    rig.rule_file.write_text(RULES + '''
[[override]]
id = "seccomp.profile-denied"
enabled = false
''')
    rig.rules.reload()
    assert not rig.rules.current.get("seccomp.profile-denied").enabled
    out = rig.pipeline.handle(seccomp_record(rig.web_cgroup, "unshare", "denied"))
    assert not out.matches and not out.alerts


# ---------------------------------------------------------------------- issue 23, item 8


class BrokenResponder:
    """A responder with a bug (or a runtime client raising what no one expected)."""

    def respond(self, *args: Any, **kwargs: Any) -> list[Any]:
        raise RuntimeError("docker hung: read timed out")


def test_a_responder_that_raises_never_loses_the_alert(rig: Rig) -> None:
    pipeline = Pipeline(enricher=rig.enricher, rules=lambda: rig.rules.current,
                        policy=rig.policy, responder=BrokenResponder(),
                        alerts=AlertDispatcher(rig.delivery), taps=EventTaps(Topic("events")))
    out = pipeline.handle(exec_record(rig.web_cgroup, "/tmp/xmrig", "xmrig"))
    assert [m.rule.id for m in out.matches] == ["t.miner"]
    (alert,) = out.alerts
    got = {a.action.value: a for a in alert.actions}
    assert got["alert"].outcome is Outcome.DONE
    assert got["kill"].outcome is Outcome.FAILED
    assert "RuntimeError: docker hung: read timed out" in got["kill"].reason
    assert [a.rule.id for a in rig.recorded.alerts] == ["t.miner"]  # it reached the sinks
    assert pipeline.counters.alerts == 1


ISOLATE_RULE = """
[[rule]]
id = "t.nc-isolate"
name = "nc isolates"
description = "nc in a container: isolate it."
phase = "lateral_movement"
severity = "warning"
mitre = ["T1059"]
event = "exec"
actions = ["alert", "isolate"]
[rule.when]
exe_basename = "ncat"
"""


class VanishingQuarantine:
    """The container's init exited between the runtime's inspect and the stat of its netns."""

    def is_quarantined(self, container_id: str) -> bool:
        return False

    def isolate(self, container_id: str, name: str | None, reason: str) -> None:
        raise FileNotFoundError(2, "No such file or directory", "/proc/4242/ns/net")


def test_a_container_exiting_mid_isolate_still_raises_the_alert(rig: Rig) -> None:
    rig.rule_file.write_text(RULES + ISOLATE_RULE)
    rig.rules.reload()
    pipeline = Pipeline(enricher=rig.enricher, rules=lambda: rig.rules.current,
                        policy=rig.policy,
                        responder=Responder(quarantine=VanishingQuarantine(),  # type: ignore
                                            guard=rig.policy.kill_guard),
                        alerts=AlertDispatcher(rig.delivery), taps=EventTaps(Topic("events")))
    out = pipeline.handle(exec_record(rig.web_cgroup, "/usr/bin/ncat", "ncat"))
    (alert,) = out.alerts
    got = {a.action.value: a for a in alert.actions}
    assert got["alert"].outcome is Outcome.DONE
    assert got["isolate"].outcome is Outcome.FAILED
    assert "FileNotFoundError" in got["isolate"].reason and "ns/net" in got["isolate"].reason
    assert [a.rule.id for a in rig.recorded.alerts] == ["t.nc-isolate"]


# ---------------------------------------------------------------------- issue 23, item 10


def shipped_policy(**options: Any) -> tuple[FakeMaps, KernelPolicy]:
    from roxd.config import shipped_rules_dir

    rules = ActiveRules([shipped_rules_dir()]).load()
    maps = FakeMaps()
    policy = KernelPolicy(maps, enforce_in_kernel=True, fold_window_ns=0, containers=list,
                          known_cgroups=tuple, **options)
    policy.apply_rules(rules)
    return maps, policy


def test_the_shipped_pack_builds_no_host_kill_entries_by_default() -> None:
    """Host kills are opt-in: with the defaults the kernel kills an xmrig exec in any container
    but never a host process (an operator's tools, a benchmark on the host)."""
    from roxd.sensor.records import SCOPE_ANY_CONTAINER, SCOPE_HOST

    maps, policy = shipped_policy()
    assert maps.exec_kills, "the shipped pack has in-kernel exec kills"
    assert not [k for k in maps.exec_kills if k[0] == SCOPE_HOST]
    assert (SCOPE_ANY_CONTAINER, _fnv("xmrig")) in maps.exec_kills
    host_scope = SCOPE_HOST.to_bytes(8, "little")
    for table in maps.connect_kills:
        assert not [k for k in table if k[1].startswith(host_scope)]
    assert policy.exec_table.lookup(12345, False, "/usr/bin/xmrig") == 0  # a host exec
    assert policy.exec_table.lookup(12345, True, "/usr/bin/xmrig") != 0  # in a container
    assert policy.snapshot()["host_kills"] is False


def test_host_kills_when_the_operator_opts_in() -> None:
    from roxd.sensor.records import SCOPE_HOST

    maps, policy = shipped_policy(host_kills=True)
    assert (SCOPE_HOST, _fnv("xmrig")) in maps.exec_kills
    assert policy.snapshot()["host_kills"] is True


def test_the_effective_action_says_containers_only_when_host_kills_are_off() -> None:
    from roxd.config import shipped_rules_dir

    rules = ActiveRules([shipped_rules_dir()]).load()
    off = rules.effective_action_notes(host_kills=False)
    assert off["objectives.crypto-miner-binary"] == (
        "alert; kill: in-kernel, containers only (host kills off)")
    assert off["objectives.crypto-miner-arguments"] == (
        "alert; kill: userspace, containers only (host kills off)")
    on = rules.effective_action_notes(host_kills=True)
    assert on["objectives.crypto-miner-binary"] == "alert; kill: in-kernel"


def test_host_kills_never_build_an_entry_for_a_protected_exe(tmp_path: Path) -> None:
    """Opted in, a rule that kills `sshd` (or an operator's protected exe) still gets no host
    entry for it: the kernel would kill the host's ssh daemon at its next exec. Containers
    keep theirs."""
    from roxd.sensor.records import SCOPE_ANY_CONTAINER, SCOPE_HOST

    rule_file = tmp_path / "r.toml"
    rule_file.write_text(RULES.replace('exe_basename = "xmrig"',
                                       'exe_basename = ["xmrig", "sshd", "containerd-shim-runc-v2"]'
                                       '\n[[rule]]\nid = "t.agent"\nname = "agent"\n'
                                       'description = "d"\nphase = "objectives"\n'
                                       'severity = "critical"\nmitre = ["T1496"]\n'
                                       'event = "exec"\nactions = ["alert", "kill"]\n'
                                       '[rule.when]\nexe = "/opt/agent/bin/agent"', 1))
    maps = FakeMaps()
    policy = KernelPolicy(maps, enforce_in_kernel=True, fold_window_ns=0, containers=list,
                          host_kills=True, protected_exes=("/opt/agent/*",))
    policy.apply_rules(ActiveRules([rule_file]).load())
    host = {h for (scope, h) in maps.exec_kills if scope == SCOPE_HOST}
    anywhere = {h for (scope, h) in maps.exec_kills if scope == SCOPE_ANY_CONTAINER}
    assert _fnv("xmrig") in host
    for name in ("sshd", "containerd-shim-runc-v2", "/opt/agent/bin/agent"):
        assert _fnv(name) not in host, name
        assert _fnv(name) in anywhere, name


def test_the_exec_hold_is_a_lease_roxd_must_renew(rig: Rig) -> None:
    """A hung or dead roxd must not hold new cgroups' execs for good: the kernel holds only
    until the lease it was given, and the policy renews it (housekeeping, every second)."""
    now = [1_000 * 10**9]
    rig.policy._monotonic_ns = lambda: now[0]  # the clock bpf_ktime_get_ns shares
    rig.policy.renew_hold()
    lease = rig.policy.HOLD_LEASE_S
    assert rig.maps.hold_unknown == now[0] + int(lease * 1e9)
    now[0] += 10**9
    rig.policy.renew_hold()
    assert rig.maps.hold_unknown == now[0] + int(lease * 1e9)
    rig.rule_file.write_text(RULES.replace('host = false\nimage = ["web"]', ''))
    rig.rules.reload()  # no rule needs the hold any more: the lease is 0, off
    assert rig.maps.hold_unknown == 0


class _FactsForEverything:
    """A baselines stage with a verdict on every event: the pipeline then builds a new
    EnrichedEvent with the facts (the place the resolved file path was once lost)."""

    def observe(self, event: Any) -> BaselineFacts:
        return BaselineFacts(workload="web", mode="monitor", verdict="learning",
                             locked_at_ns=None, learned=1, first_seen_ns=1)


def test_a_file_path_resolved_by_the_enricher_survives_the_baseline_facts(rig: Rig) -> None:
    """CI caught `resolved` None on file alerts: the facts' new EnrichedEvent took the raw
    sensor event instead of the enriched one (whose relative path was resolved against
    /proc/<pid>/cwd while the process lived)."""
    pipeline = Pipeline(enricher=rig.enricher, rules=lambda: rig.rules.current,
                        policy=rig.policy, responder=Responder(guard=rig.policy.kill_guard),
                        alerts=AlertDispatcher(rig.delivery), taps=EventTaps(Topic("events")),
                        baselines=_FactsForEverything())  # type: ignore[arg-type]
    event = FileEvent(time_ns=time.time_ns(), pid=os.getpid(), uid=0,
                      cgroup_id=rig.web_cgroup, comm="sh", operation="open",
                      path="authorized_keys", access=("write",))
    out = pipeline.handle(Decoded(event))
    assert out.event.container is not None
    assert out.event.baseline is not None and out.event.baseline.verdict == "learning"
    assert isinstance(out.event.event, FileEvent)
    assert out.event.event.resolved == os.path.join(os.getcwd(), "authorized_keys")
