"""The compact stores behind baselines (issue 15's memory target): learned elements in arrays,
the policy's allow-list as sorted hashes, the network table's counts; and state files written
before them still load to the same baselines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from roxd.baselines.elements import Elements, LearnedProcess
from roxd.baselines.engine import BaselineEngine
from roxd.baselines.settings import BaselineSettings
from roxd.model import Ancestor, Container, EnrichedEvent, ExecEvent, Process
from roxd.policy.kill_tables import build_baseline_table
from roxd.policy.netenf import NetworkTable
from roxd.sensor.records import fnv1a

pytestmark = pytest.mark.unit

NS = 1_764_000_000_000_000_000  # a real wall-clock time: beyond 32 bits, inside 64


def test_elements_add_count_parents_and_snapshot() -> None:
    els = Elements()
    els.add("/bin/sh", LearnedProcess(NS, NS, 1))
    els.add("/usr/bin/env", LearnedProcess(NS + 1, NS + 2, 3, ("/bin/sh",)))
    assert len(els) == 2 and "/bin/sh" in els and "/bin/ls" not in els
    assert list(els) == ["/bin/sh", "/usr/bin/env"]  # sorted by name
    assert els.seen("/bin/sh", NS + 50, 2) == 0 and els.seen("/bin/ls", NS) == -1
    assert els.parents_at(els.seen("/usr/bin/env", NS + 2, 0)) == ("/bin/sh",)
    assert els.get("/bin/sh") == LearnedProcess(NS, NS + 50, 3, ())
    assert els.parents("/usr/bin/env") == ("/bin/sh",)
    els.set_parents("/bin/sh", ("/sbin/init",))
    assert dict(els.items()) == {"/bin/sh": LearnedProcess(NS, NS + 50, 3, ("/sbin/init",)),
                                 "/usr/bin/env": LearnedProcess(NS + 1, NS + 2, 3, ("/bin/sh",))}
    # a snapshot is not a view: changing it changes nothing stored
    snap = els.get("/bin/sh")
    assert snap is not None
    snap.count = 99
    assert els.get("/bin/sh").count == 3  # type: ignore[union-attr]
    # learning an element again replaces it, in place
    els.add("/bin/sh", LearnedProcess(1, 2, 0))
    assert els.get("/bin/sh") == LearnedProcess(1, 2, 0, ()) and len(els) == 2
    assert els.get("/nope") is None
    # an element added before the others keeps every element's values in step
    els.add("/a", LearnedProcess(5, 6, 7))
    assert list(els) == ["/a", "/bin/sh", "/usr/bin/env"]
    assert els.get("/a") == LearnedProcess(5, 6, 7, ())
    assert els.get("/usr/bin/env") == LearnedProcess(NS + 1, NS + 2, 3, ("/bin/sh",))
    assert els.parents("/bin/sh") == ()  # replaced above, parents too
    with pytest.raises(KeyError):
        els.parents("/nope")


def test_elements_refuse_what_does_not_fit_64_bits() -> None:
    with pytest.raises(ValueError, match="64 bits"):
        Elements().add("/bin/sh", LearnedProcess(2**63, 0, 1))


# a state file as the engine wrote it before the compact store (format 1): every field it had
OLD_STATE = {"format": 1, "baselines": [{
    "workload": "image:docker.io/library/nginx", "first_seen_ns": NS, "mode": "enforce",
    "effective_mode": "enforce", "state": "locked", "locked_at_ns": NS + 60, "image":
    "nginx:1.25", "anomalies": 2, "breakglass_until_ns": None, "breakglass_reason": "",
    "image_ids": ["sha256:" + "a" * 64],
    "processes": {
        "/docker-entrypoint.sh": {"first_ns": NS, "last_ns": NS + 5, "count": 4,
                                  "parents": []},
        "/usr/sbin/nginx": {"first_ns": NS + 1, "last_ns": NS + 9, "count": 7,
                            "parents": ["/bin/sh", "/docker-entrypoint.sh"]}},
    "peers": {"outbound tcp/5432 workload:image:docker.io/library/postgres":
              {"first_ns": NS + 2, "last_ns": NS + 3, "count": 12, "parents": []}},
    "file_dirs": {"/var/cache/nginx": {"first_ns": NS + 4, "last_ns": NS + 4, "count": 1}}}]}


def test_a_state_file_from_before_loads_and_is_written_back_the_same(tmp_path: Path) -> None:
    (tmp_path / "baselines.json").write_text(json.dumps(OLD_STATE))
    eng = BaselineEngine(BaselineSettings(), tmp_path, peer_of=lambda a: a)
    key = "image:docker.io/library/nginx"
    got = eng.get(key)
    assert got["processes"] == OLD_STATE["baselines"][0]["processes"]  # type: ignore[index]
    assert got["peers"] == OLD_STATE["baselines"][0]["peers"]  # type: ignore[index]
    assert eng.enforcing() == {key: frozenset({"/docker-entrypoint.sh", "/usr/sbin/nginx"})}
    assert eng.enforcing_network() == {
        key: frozenset({"outbound tcp/5432 workload:image:docker.io/library/postgres"})}
    eng._dirty = True
    eng.save_if_changed()
    again = json.loads((tmp_path / "baselines.json").read_text())
    assert again == OLD_STATE
    assert not list(tmp_path.glob("baselines.bad-*"))


def test_a_state_file_with_a_count_beyond_64_bits_is_set_aside(tmp_path: Path) -> None:
    doc = json.loads(json.dumps(OLD_STATE))
    doc["baselines"][0]["peers"]["outbound tcp/5432 workload:image:docker.io/library/postgres"][
        "count"] = 2**64
    (tmp_path / "baselines.json").write_text(json.dumps(doc))
    eng = BaselineEngine(BaselineSettings(), tmp_path, peer_of=lambda a: a)
    assert eng.list() == []
    assert list(tmp_path.glob("baselines.bad-*")), "not trusted in part, kept for a look"


def test_the_policy_allow_list_answers_as_the_kernel_map_would() -> None:
    c1 = Container(id="a" * 64, runtime="docker", name="web-1", labels={"k": "web"})
    c2 = Container(id="b" * 64, runtime="docker", name="db-1", labels={"k": "db"})
    numbers: dict[str, int] = {}
    table = build_baseline_table(
        {"web": frozenset({"/usr/sbin/nginx", "/bin/sh"}), "db": frozenset({"/usr/bin/pg"})},
        lambda c: c.labels["k"], [(11, c1), (12, c2)], numbers, 77)
    web, db = numbers["web"], numbers["db"]
    assert table.entries() == {(web, fnv1a(b"/usr/sbin/nginx")), (web, fnv1a(b"/bin/sh")),
                               (db, fnv1a(b"/usr/bin/pg"))}
    assert table.allow_entries == 3
    assert table.cgroups == {11: (web, 77), 12: (db, 77)}
    assert table.lookup(11, "/usr/sbin/nginx") == 0 and table.lookup(11, "/bin/sh") == 0
    assert table.lookup(11, "/usr/bin/pg") == 77  # another workload's path is not this one's
    assert table.lookup(12, "/usr/bin/pg") == 0 and table.lookup(12, "/tmp/x") == 77
    assert table.lookup(13, "/tmp/x") == 0  # not an enforcing cgroup


def test_the_policy_keeps_the_network_tables_counts_not_its_entries() -> None:
    table = NetworkTable(cgroups={1: (1, True), 2: (1, True)}, allow={(100, b"p")},
                         exact={b"a", b"b"}, workloads=1, left_out=["x"], unresolved=3)
    s = table.summary()
    assert (s.cgroups, s.entries, s.workloads, s.left_out, s.unresolved) == (2, 3, 1, ("x",), 3)


def _exec(path: str, parent: str) -> EnrichedEvent:
    ev = ExecEvent(time_ns=1, pid=7, ppid=1, uid=0, gid=0, cgroup_id=100, comm="x",
                   filename=path, args=(path,), args_truncated=False)
    return EnrichedEvent(ev, Container(id="c" * 64, runtime="docker", name="web-1",
                                       image="nginx:1.25"),
                         Process(pid=7, ppid=1, uid=0, exe=path, comm="x", args=(path,),
                                 cgroup_id=100, ancestors=(Ancestor(1, parent),)))


def test_live_learning_counts_sightings_and_parents_in_the_compact_store(tmp_path: Path
                                                                         ) -> None:
    now = [NS]
    eng = BaselineEngine(BaselineSettings(), tmp_path, clock=lambda: now[0])
    eng.observe(_exec("/usr/sbin/nginx", "/bin/sh"))
    now[0] += 5
    eng.observe(_exec("/usr/sbin/nginx", "/docker-entrypoint.sh"))
    eng.observe(_exec("/usr/sbin/nginx", "/bin/sh"))  # a parent already known: once
    now[0] += 5
    eng.observe(_exec("/bin/ash", "/usr/sbin/nginx"))  # sorts before: nginx's record moves
    key = eng.list()[0]["workload"]
    got = eng.get(key)["processes"]
    assert got == {
        "/bin/ash": {"first_ns": NS + 10, "last_ns": NS + 10, "count": 1,
                     "parents": ["/usr/sbin/nginx"]},
        "/usr/sbin/nginx": {"first_ns": NS, "last_ns": NS + 5, "count": 3,
                            "parents": ["/bin/sh", "/docker-entrypoint.sh"]}}
    eng.tick()  # saved, and read back the same by a new engine
    again = BaselineEngine(BaselineSettings(), tmp_path, clock=lambda: now[0])
    assert again.get(key)["processes"] == got
