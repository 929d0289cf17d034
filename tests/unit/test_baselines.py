"""Process baselines without a kernel: workload keys, the learn -> lock -> judge lifecycle,
persistence, and an anomaly through the policy (kernel allow-lists, held execs) and the
pipeline (built-in `baseline.*` rules), with fakes only at the edges."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from roxd.alerts.dispatch import AlertDispatcher
from roxd.baselines.engine import BaselineEngine, BaselineError
from roxd.baselines.settings import BaselineSettings
from roxd.baselines.workload import image_repository, workload_key
from roxd.containers.cgroups import CgroupIndex
from roxd.containers.enricher import Enricher
from roxd.containers.metadata import ContainerMetadata
from roxd.containers.process_table import ProcessTable
from roxd.containers.resolver import ContainerResolver
from roxd.enforce.response import Responder
from roxd.model import Container, EnrichedEvent, ExecEvent, Outcome, Process
from roxd.pipeline import EventTaps, Pipeline
from roxd.policy.kernel import KernelPolicy
from roxd.policy.kill_tables import BASELINE_VERDICT
from roxd.pubsub import Topic
from roxd.rules.active import ActiveRules
from roxd.sensor.records import Decoded, fnv1a
from tests.unit.test_pipeline import FakeMaps, FakeSource, Signals

pytestmark = pytest.mark.unit

ID = "3c79270d70136d5d3f9916700ee58f8f50872c19d77f622a21dcbb64778ff218"
ID2 = "9f2d1c5e8a7b6c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d"
SEC = 1_000_000_000


class Clock:
    def __init__(self) -> None:
        self.ns = 1_700_000_000 * SEC
        self.mono = 1000.0

    def wall(self) -> int:
        return self.ns

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.ns += int(seconds * SEC)
        self.mono += seconds


def web(name: str = "web-1", cid: str = ID, **labels: str) -> Container:
    return Container(id=cid, runtime="docker", name=name, image="nginx:1.25", labels=labels)


def exec_in(container: Container, path: str, cgroup_id: int = 100, pid: int = 4242
            ) -> EnrichedEvent:
    ev = ExecEvent(time_ns=time.time_ns(), pid=pid, ppid=1, uid=0, gid=0, cgroup_id=cgroup_id,
                   comm=path.rpartition("/")[2][:15], filename=path, args=(path,),
                   args_truncated=False)
    return EnrichedEvent(ev, container, Process(pid=pid, ppid=1, uid=0, exe=path,
                                                comm=ev.comm, args=(path,), cgroup_id=cgroup_id))


# ---------------------------------------------------------------------------- workload keys


def test_replicas_and_restarts_share_a_workload() -> None:
    assert workload_key(web("web-1")) == workload_key(web("web_2", ID2)) == "image:nginx/web"
    assert workload_key(web("shop-web.3")) == "image:nginx/shop-web"
    assert image_repository("docker.io/library/nginx:1.25@sha256:ab") == "nginx"
    assert image_repository("ghcr.io/acme/api:3") == "ghcr.io/acme/api"
    assert image_repository("localhost:5000/x") == "localhost:5000/x"


def test_orchestrator_labels_name_the_workload() -> None:
    pod = web("k8s_web_web-7d9f8b6c5d-x2x9q_shop_uid_0",
              **{"io.kubernetes.pod.namespace": "shop",
                 "io.kubernetes.pod.name": "web-7d9f8b6c5d-x2x9q",
                 "io.kubernetes.container.name": "nginx"})
    assert workload_key(pod) == "k8s:shop/web/nginx"
    compose = web("shop-web-1", **{"com.docker.compose.project": "shop",
                                   "com.docker.compose.service": "web"})
    assert workload_key(compose) == "compose:shop/web"
    labelled = web(**{"roxd.workload": "checkout"})
    assert workload_key(labelled, "roxd.workload") == "label:checkout"


# ---------------------------------------------------------------------------- lifecycle


def engine(tmp_path: Path, clock: Clock, **kw: object) -> BaselineEngine:
    settings = BaselineSettings(**{"window_s": 60.0, "startup_grace_s": 5.0, **kw})
    return BaselineEngine(settings, tmp_path, clock=clock.wall, monotonic=clock.monotonic)


def test_learn_lock_then_judge(tmp_path: Path) -> None:
    clock = Clock()
    eng = engine(tmp_path, clock)
    c = web()
    assert eng.observe(exec_in(c, "/usr/sbin/nginx")).verdict == "learning"
    clock.advance(10)  # past the startup grace, still in the window
    assert eng.observe(exec_in(c, "/bin/sh")).verdict == "learning"
    clock.advance(60)
    eng.tick()  # the window ended: locked
    facts = eng.observe(exec_in(c, "/usr/sbin/nginx"))
    assert facts.verdict == "learned" and facts.locked_at_ns is not None and facts.learned == 2
    odd = eng.observe(exec_in(c, "/tmp/xmrig"))
    assert odd.verdict == "anomaly" and odd.mode == "monitor"
    # busybox applets count apart: the path as executed
    assert eng.observe(exec_in(c, "/bin/nslookup")).verdict == "anomaly"
    # a second replica after the lock is judged by the same baseline from its first exec,
    # once past its own startup grace
    replica = web("web-2", ID2)
    assert eng.observe(exec_in(replica, "/usr/sbin/nginx", cgroup_id=200)).verdict == "learned"
    clock.advance(6)
    assert eng.observe(exec_in(replica, "/bin/cat", cgroup_id=200)).verdict == "anomaly"
    assert eng.stats()["anomalies"] == 3


def test_startup_grace_learns_even_after_the_lock(tmp_path: Path) -> None:
    clock = Clock()
    eng = engine(tmp_path, clock)
    eng.observe(exec_in(web(), "/usr/sbin/nginx"))
    clock.advance(61)
    eng.tick()
    # a restarted container: a new cgroup, in its grace: its entrypoint joins, no anomaly
    facts = eng.observe(exec_in(web(), "/docker-entrypoint.sh", cgroup_id=300))
    assert facts.verdict == "learning"
    clock.advance(6)
    assert eng.observe(exec_in(web(), "/docker-entrypoint.sh", cgroup_id=300)).verdict == \
        "learned"


def test_modes_learn_monitor_enforce(tmp_path: Path) -> None:
    clock = Clock()
    eng = engine(tmp_path, clock, image_modes=("nginx*=enforce",))
    key = workload_key(web())
    eng.observe(exec_in(web(), "/usr/sbin/nginx"))
    assert eng.enforcing() == {}  # not locked yet
    clock.advance(61)
    eng.tick()
    assert eng.enforcing() == {key: frozenset({"/usr/sbin/nginx"})}
    eng.set_mode(key, "learn")
    assert eng.observe(exec_in(web(), "/bin/date")).verdict == "learning"
    assert eng.enforcing() == {}
    eng.set_mode(key, "enforce")
    assert eng.enforcing()[key] == {"/usr/sbin/nginx", "/bin/date"}
    eng.accept(key, "/bin/ls")
    assert "/bin/ls" in eng.enforcing()[key]
    eng.unlock(key)
    assert eng.enforcing() == {} and eng.get(key)["state"] == "learning"


def test_bad_requests_are_refused_with_the_reason(tmp_path: Path) -> None:
    eng = engine(tmp_path, Clock())
    with pytest.raises(BaselineError, match="no baseline for workload"):
        eng.lock("image:nope/nope")
    eng.observe(exec_in(web(), "/usr/sbin/nginx"))
    with pytest.raises(BaselineError, match="mode must be one of"):
        eng.set_mode(workload_key(web()), "enforcing")
    assert BaselineSettings(default_mode="block").problems()
    assert BaselineSettings(image_modes=("nginx",)).problems()


def test_baselines_survive_a_restart_and_a_bad_file_is_set_aside(tmp_path: Path) -> None:
    clock = Clock()
    eng = engine(tmp_path, clock)
    eng.observe(exec_in(web(), "/usr/sbin/nginx"))
    eng.lock(workload_key(web()))
    eng.tick()
    again = engine(tmp_path, clock)
    assert again.get(workload_key(web()))["state"] == "locked"
    clock.advance(10)
    assert again.observe(exec_in(web(), "/tmp/x", cgroup_id=1)).verdict == "learning"  # grace
    clock.advance(10)
    assert again.observe(exec_in(web(), "/tmp/y", cgroup_id=1)).verdict == "anomaly"
    (tmp_path / "baselines.json").write_text("{not json")
    fresh = engine(tmp_path, clock)
    assert fresh.list() == []
    assert list(tmp_path.glob("baselines.bad-*")), "the bad file was not kept for a look"


def test_the_host_and_other_events_have_no_baseline(tmp_path: Path) -> None:
    eng = engine(tmp_path, Clock())
    host = exec_in(web(), "/bin/ls")
    assert eng.observe(EnrichedEvent(host.event, None, host.process)) is None
    assert BaselineEngine(BaselineSettings(enabled=False), tmp_path).observe(host) is None


# ---------------------------------------------------------------------------- kernel and rules


def make_rig(tmp_path: Path, mode: str) -> tuple[BaselineEngine, KernelPolicy, FakeMaps,
                                                  Signals, Pipeline, int, Clock]:
    root = tmp_path / "cg"
    (root / "docker" / ID).mkdir(parents=True)
    (tmp_path / "proc").mkdir()
    index = CgroupIndex(str(root))
    source = FakeSource()
    source.meta[ID] = ContainerMetadata(id=ID, name="web-1", image="nginx:1.25")
    resolver = ContainerResolver(index, [source])
    clock = Clock()
    eng = BaselineEngine(BaselineSettings(default_mode=mode, window_s=60, startup_grace_s=5),
                         tmp_path / "state", clock=clock.wall, monotonic=clock.monotonic)
    rules = ActiveRules([])  # the built-in rules only
    rules.load()
    maps, signals = FakeMaps(), Signals()
    policy = KernelPolicy(maps, enforce_in_kernel=True, fold_window_ns=10**9,
                          containers=resolver.containers, known_cgroups=index.known_ids,
                          signal_pid=signals, baselines=eng)
    policy.apply_rules(rules.current)
    resolver.add_change_listener(policy.containers_changed)
    eng.add_listener(policy.containers_changed)
    pipeline = Pipeline(enricher=Enricher(resolver, ProcessTable(proc=str(tmp_path / "proc"))),
                        rules=lambda: rules.current, policy=policy,
                        responder=Responder(guard=policy.kill_guard),
                        alerts=AlertDispatcher(_Drop()), taps=EventTaps(Topic("events")),
                        baselines=eng)
    return eng, policy, maps, signals, pipeline, os.stat(root / "docker" / ID).st_ino, clock


class _Drop:
    def emit(self, alert: object) -> None:
        pass


def record(cgroup_id: int, path: str, *, verdict: int = 0, held: bool = False,
           pid: int = 4242) -> Decoded:
    ev = ExecEvent(time_ns=time.time_ns(), pid=pid, ppid=1, uid=0, gid=0, cgroup_id=cgroup_id,
                   comm=path.rpartition("/")[2][:15], filename=path, args=(path,),
                   args_truncated=False)
    return Decoded(ev, fold_key=b"f" * 8 + path.encode(), kill_slot=verdict, held=held)


def test_monitor_mode_alerts_by_what_the_new_program_is(tmp_path: Path) -> None:
    eng, policy, maps, _signals, pipeline, cg, clock = make_rig(tmp_path, "monitor")
    assert pipeline.handle(record(cg, "/usr/sbin/nginx")).matches == ()
    clock.advance(61)
    eng.tick()
    assert maps.baselines == ({}, set())  # monitor: nothing for the kernel
    out = pipeline.handle(record(cg, "/bin/sh"))
    assert [m.rule.id for m in out.matches] == ["baseline.new-shell-or-interpreter"]
    assert out.event.to_dict()["baseline"]["verdict"] == "anomaly"
    assert [a.action.value for a in out.alerts[0].actions] == ["alert"]
    assert [m.rule.id for m in pipeline.handle(record(cg, "/opt/x/xmrig")).matches] == [
        "baseline.new-miner"]
    assert [m.rule.id for m in pipeline.handle(record(cg, "/usr/bin/nc")).matches] == [
        "baseline.new-network-tool"]
    assert [m.rule.id for m in pipeline.handle(record(cg, "/opt/app/tool")).matches] == [
        "baseline.new-process"]
    assert pipeline.handle(record(cg, "/usr/sbin/nginx")).matches == ()


def test_enforce_mode_writes_the_allow_list_and_names_the_kernel_kill(tmp_path: Path) -> None:
    eng, policy, maps, signals, pipeline, cg, clock = make_rig(tmp_path, "enforce")
    pipeline.handle(record(cg, "/usr/sbin/nginx"))
    clock.advance(61)
    eng.tick()  # locked: the listener marks the policy, the next event writes the maps
    pipeline.handle(record(cg, "/usr/sbin/nginx"))
    cgroups, allow = maps.baselines
    assert set(cgroups) == {cg} and maps.hold_unknown
    workload, verdict = cgroups[cg]
    assert allow == {(workload, fnv1a(b"/usr/sbin/nginx"))}
    assert policy.rule_of_verdict(verdict) == BASELINE_VERDICT
    # the kernel killed an exec outside the baseline: the alert says it was in the kernel
    out = pipeline.handle(record(cg, "/tmp/xmrig", verdict=verdict))
    assert out.killed_by == BASELINE_VERDICT
    kill = next(a for a in out.alerts[0].actions if a.action.value == "kill")
    assert kill.in_kernel and kill.outcome is Outcome.DONE and "baseline" in kill.reason
    # a held exec of a new replica's cgroup is decided by the same allow-list
    signals.sent.clear()
    pipeline.handle(record(cg, "/bin/sh", held=True, pid=5151))
    assert signals.sent == [(5151, signal.SIGKILL)]
    signals.sent.clear()
    pipeline.handle(record(cg, "/usr/sbin/nginx", held=True, pid=5152))
    assert signals.sent == [(5152, signal.SIGCONT)]
    # an accepted anomaly is allowed in the kernel from the next event on
    eng.accept(eng.list()[0]["workload"], "/tmp/xmrig")
    pipeline.handle(record(cg, "/usr/sbin/nginx"))
    assert (workload, fnv1a(b"/tmp/xmrig")) in maps.baselines[1]
    assert json.loads(json.dumps(policy.snapshot()))["baseline_cgroups"] == 1


def test_export_then_import_round_trips_and_a_bad_import_changes_nothing(
        tmp_path: Path) -> None:
    from roxd.baselines.engine import BaselineError

    clock = Clock()
    eng = engine(tmp_path / "a", clock)
    c = web()
    eng.observe(exec_in(c, "/usr/sbin/nginx"))
    key = eng.workload_of(c)
    eng.lock(key)
    doc = eng.export()
    assert [b["workload"] for b in doc["baselines"]] == [key]
    assert eng.export(key) == doc
    other = engine(tmp_path / "b", clock)
    assert other.import_(doc) == {"imported": [key]}
    assert other.get(key)["state"] == "locked"
    assert set(other.get(key)["processes"]) == {"/usr/sbin/nginx"}
    clock.advance(10)
    assert other.observe(exec_in(c, "/bin/sh", cgroup_id=300)).verdict in (
        "anomaly", "learning")  # the startup grace of a new cgroup may still apply
    before = other.export()
    for bad, said in ((["not", "an", "object"], "`baselines` list"),
                      ({"baselines": [{"workload": "x"}]},
                       r"baselines\[0\]: missing .first_seen_ns."),
                      ({"baselines": [{**doc["baselines"][0], "mode": "yolo"}]}, "mode"),
                      ({"format": 9, "baselines": []}, "format 9")):
        with pytest.raises(BaselineError, match=said):
            other.import_(bad)
    assert other.export() == before
    with pytest.raises(BaselineError, match="no baseline for workload"):
        eng.export("nope")


def test_the_workload_key_is_kept_per_container_object(tmp_path: Path) -> None:
    """observe() keeps each container object's workload key (issue 22: a key per exec cost
    µs): a container whose metadata changes is a new object from the resolver, with the key
    of its new labels; an object whose id() is reused by another never gets the old key."""
    clock = Clock()
    eng = engine(tmp_path, clock)
    first = web("web-1")
    assert eng.observe(exec_in(first, "/usr/sbin/nginx")).workload == "image:nginx/web"
    assert eng.observe(exec_in(first, "/bin/ls")).workload == "image:nginx/web"
    relabelled = web("web-1", **{"com.docker.compose.project": "shop",
                                 "com.docker.compose.service": "front"})
    assert eng.observe(exec_in(relabelled, "/usr/sbin/nginx")).workload == "compose:shop/front"
    del first
    other = web("api-1")  # may reuse the freed object's id()
    assert eng.observe(exec_in(other, "/usr/sbin/nginx")).workload == "image:nginx/api"
    assert eng.workload_of(relabelled) == "compose:shop/front"


def test_unchanged_exec_facts_are_shared_and_any_change_makes_new_ones(tmp_path: Path) -> None:
    """observe() hands out the previous exec's BaselineFacts while nothing in them changed
    (issue 22), and new ones when the verdict, the count, the lock or the mode does."""
    clock = Clock()
    eng = engine(tmp_path, clock)
    c = web()
    first = eng.observe(exec_in(c, "/usr/sbin/nginx"))
    again = eng.observe(exec_in(c, "/usr/sbin/nginx"))
    assert again is first and again.learned == 1
    grown = eng.observe(exec_in(c, "/bin/sh"))
    assert grown is not first and grown.learned == 2
    clock.advance(70)
    eng.tick()  # the window ended: locked
    locked = eng.observe(exec_in(c, "/bin/sh"))
    assert locked.verdict == "learned" and locked.locked_at_ns is not None
    key = locked.workload
    eng.set_mode(key, "enforce")
    enforced = eng.observe(exec_in(c, "/bin/sh"))
    assert enforced.mode == "enforce" and locked.mode == "monitor"
    assert eng.observe(exec_in(c, "/bin/nc")).verdict == "anomaly"
