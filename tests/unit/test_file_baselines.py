"""File baselines (issue 15): the directories a workload writes below the watched trees,
learned with the process baseline's lifecycle; a write into a new directory after the lock is
an anomaly whose built-in rule's phase follows the file; accept, persistence, import checks,
the kernel watch set (writes below the trees only) and the config checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from roxd.baselines import files
from roxd.baselines.engine import BaselineEngine, BaselineError
from roxd.baselines.settings import BaselineSettings
from roxd.model import EnrichedEvent, FileEvent, FileWatchSet, Process
from roxd.policy.file_watch import file_watch_entries
from roxd.rules.active import ActiveRules
from roxd.sensor import records
from tests.unit.test_baselines import ID2, Clock, exec_in, web

pytestmark = pytest.mark.unit


def engine(tmp_path: Path, clock: Clock, **kw: object) -> BaselineEngine:
    settings = BaselineSettings(**{"window_s": 60.0, "startup_grace_s": 5.0, **kw})
    return BaselineEngine(settings, tmp_path, clock=clock.wall, monotonic=clock.monotonic)


def write(container: object, path: str, *, access: tuple[str, ...] = ("write", "create"),
          errno: int = 0, cgroup_id: int = 100, resolved: str | None = None,
          operation: str = "open", folded: int = 0) -> EnrichedEvent:
    ev = FileEvent(time_ns=1, pid=4242, uid=0, cgroup_id=cgroup_id, comm="app",
                   operation=operation, path=path, access=access, errno=errno,
                   resolved=resolved, folded=folded)
    return EnrichedEvent(ev, container,  # type: ignore[arg-type]
                         Process(pid=4242, ppid=1, uid=0, exe="/app", comm="app", args=(),
                                 cgroup_id=cgroup_id))


def learned_then_locked(tmp_path: Path) -> tuple[BaselineEngine, Clock, str]:
    clock = Clock()
    eng = engine(tmp_path, clock)
    app = web()
    eng.observe(exec_in(app, "/app"))
    clock.advance(10)  # past the startup grace
    assert eng.observe(write(app, "/var/log/app/access.log")).verdict == "learning"
    assert eng.observe(write(app, "/etc/app/rendered.conf")).verdict == "learning"
    clock.advance(60)
    eng.tick()
    return eng, clock, eng.workload_of(app)


def test_what_is_a_write_below_a_tree() -> None:
    trees = BaselineSettings().file_trees

    def d(path: str, **kw: object) -> str | None:
        return files.written_dir(write(web(), path, **kw).event, trees)  # type: ignore[arg-type]

    assert d("/etc/cron.d/job") == "/etc/cron.d"
    assert d("/etc/passwd") == "/etc"
    assert d("/var/log/app/x.log") == "/var/log/app"
    assert d("/etc//cron.d/./job") == "/etc/cron.d"  # normalized
    assert d("job", resolved="/etc/cron.d/job") == "/etc/cron.d"  # resolved wins
    assert d("job") is None  # relative, unresolved
    assert d("/etc/shadow", access=("read",)) is None  # a read
    assert d("/etc/cron.d/job", access=("unlink",)) is None  # removing is not placing
    assert d("/etc/cron.d/job", errno=13) is None  # EACCES: nothing was written
    assert d("/tmp/x") is None and d("/etcetera/x") is None  # not below a tree
    assert d("/etc/cron.d/job", access=("rename", "create", "write"),
             operation="rename") == "/etc/cron.d"


def test_learn_lock_then_judge_written_directories(tmp_path: Path) -> None:
    eng, clock, key = learned_then_locked(tmp_path)
    app = web()
    again = eng.observe(write(app, "/var/log/app/access.log.1", folded=4))
    assert again.verdict == "learned" and again.element == "write /var/log/app"
    odd = eng.observe(write(app, "/etc/cron.d/backdoor"))
    assert odd.verdict == "anomaly" and odd.element == "write /etc/cron.d"
    # the evidence: what the workload does write in that tree, and since when
    assert odd.nearby == ("/etc/app",)
    shown = odd.to_dict()
    assert shown["learned_nearby"] == ["/etc/app"] and shown["locked_at"] is not None
    assert shown["learning_since"] and shown["learned"] == 2
    # a replica after the lock shares the baseline, past its own startup grace
    replica = web("web-2", ID2)
    eng.observe(exec_in(replica, "/app", cgroup_id=200))
    clock.advance(6)
    assert eng.observe(write(replica, "/var/log/app/b.log", cgroup_id=200)).verdict == "learned"
    assert eng.observe(write(replica, "/root/.ssh/authorized_keys",
                             cgroup_id=200)).verdict == "anomaly"
    # a restarted container's startup grace learns, even after the lock
    assert eng.observe(write(app, "/etc/nginx/conf.d/x", cgroup_id=300)).verdict == "learning"
    got = eng.get(key)["file_dirs"]
    assert got["/var/log/app"]["count"] == 1 + 5 + 1  # folded writes count too
    assert set(got) == {"/var/log/app", "/etc/app", "/etc/nginx/conf.d"}
    # learn mode keeps learning after the lock
    eng.set_mode(key, "learn")
    assert eng.observe(write(app, "/usr/local/bin/tool")).verdict == "learning"
    # reads, host events and files off give no verdict
    assert eng.observe(write(app, "/etc/shadow", access=("read",))) is None
    assert eng.observe(write(None, "/etc/cron.d/x")) is None
    off = engine(tmp_path / "off", Clock(), files=False)
    assert off.observe(write(app, "/etc/cron.d/x")) is None


def test_max_file_dirs_bounds_the_learning(tmp_path: Path) -> None:
    eng = engine(tmp_path, Clock(), max_file_dirs=2)
    for n in range(5):
        eng.observe(write(web(), f"/var/log/d{n}/x"))
    assert len(eng.get(eng.workload_of(web()))["file_dirs"]) == 2


def test_accept_persist_export_import(tmp_path: Path) -> None:
    eng, clock, key = learned_then_locked(tmp_path)
    app = web()
    assert eng.observe(write(app, "/usr/share/app/state")).verdict == "anomaly"
    assert eng.observe(write(app, "/var/lib/app/state")) is None  # not below a tree
    eng.accept(key, "write /usr/share/app")
    eng.accept(key, "write /etc/cron.d")
    assert eng.observe(write(app, "/etc/cron.d/job")).verdict == "learned"
    with pytest.raises(BaselineError, match="not an absolute directory"):
        eng.accept(key, "write var/lib")
    with pytest.raises(BaselineError, match="not a normalized directory"):
        eng.accept(key, "write /etc/../root")
    eng.save_if_changed()
    restarted = engine(tmp_path, clock)  # roxd restarted: the same baseline
    assert restarted.get(key)["file_dirs"] == eng.get(key)["file_dirs"]
    assert restarted.observe(write(app, "/etc/cron.d/job2")).verdict == "learned"
    clock.advance(6)  # a restarted roxd gives the cgroups it first sees their grace again
    assert restarted.observe(write(app, "/etc/profile.d/x.sh")).verdict == "anomaly"
    # export carries it, import brings it back in another engine
    doc = json.loads(json.dumps(eng.export(key)))
    other = engine(tmp_path / "other", Clock())
    assert other.import_(doc) == {"imported": [key]}
    assert set(other.get(key)["file_dirs"]) == {"/var/log/app", "/etc/app", "/etc/cron.d",
                                                "/usr/share/app"}


@pytest.mark.parametrize(("entry", "reason"), [
    ({"etc/cron.d": {"first_ns": 1, "last_ns": 1, "count": 1}}, "not an absolute directory"),
    ({"/etc/./x": {"first_ns": 1, "last_ns": 1, "count": 1}}, "not a normalized directory"),
    ({"/etc/x": {"first_ns": 1, "count": 1}}, "missing last_ns"),
    ({"/etc/x": {"first_ns": 1, "last_ns": "soon", "count": 1}}, "integers >= 0"),
    ({"/etc/x": [1, 2, 3]}, "not an object"),
    (["/etc/x"], "file_dirs: not an object"),
])
def test_a_malformed_file_entry_changes_nothing_and_says_why(
        tmp_path: Path, entry: object, reason: str) -> None:
    eng, _, key = learned_then_locked(tmp_path)
    before = eng.export()
    doc = eng.export(key)
    doc["baselines"][0]["file_dirs"] = entry
    doc["baselines"][0]["processes"] = {}
    with pytest.raises(BaselineError, match=reason) as err:
        eng.import_(doc)
    assert str(err.value).startswith("baselines[0]: ")
    assert eng.export() == before


def test_the_kernel_watches_writes_below_the_trees_only() -> None:
    trees = BaselineSettings().file_trees
    watch = files.watch_set(trees)
    assert watch.prefixes["/etc/"] == files.WRITE_KINDS and "/var/log/" in watch.prefixes
    rules = FileWatchSet(prefixes={"/etc/cron": frozenset({"write"}),
                                   "/var/log/": frozenset({"unlink", "truncate"})},
                         exact={"/etc/shadow": frozenset({"read"})})
    both = files.merged(rules, watch)
    assert both.prefixes["/var/log/"] == frozenset({"unlink", "truncate"}) | files.WRITE_KINDS
    assert both.exact == rules.exact
    entries = file_watch_entries(both)
    write_bit = records.ACCESS_BITS["write"]
    read_bit = records.ACCESS_BITS["read"]
    assert entries.paths[b"/usr/"] & write_bit and not entries.paths[b"/usr/"] & read_bit
    # a longer rule prefix carries the tree's kinds too (the kernel's one LPM lookup)
    assert entries.paths[b"/etc/cron"] & records.ACCESS_BITS["create"]
    assert not entries.everything


def test_config_checks_the_trees() -> None:
    assert BaselineSettings().problems() == []
    problems = BaselineSettings(file_trees=("etc", "/", "/usr/")).problems()
    assert any("'etc' is not an absolute directory" in p for p in problems)
    assert any("'/' would watch every write" in p for p in problems)
    assert BaselineSettings(file_trees=("/usr/",)).problems() == []  # a trailing / is fine
    assert BaselineSettings(file_trees=("/usr/../etc",)).problems() != []


def test_built_in_rules_choose_the_phase_from_the_file(tmp_path: Path) -> None:
    eng, _, _ = learned_then_locked(tmp_path)
    rules = ActiveRules([]).load()  # the built-in rules only
    app = web()

    def matched(path: str) -> list[tuple[str, str]]:
        event = write(app, path)
        facts = eng.observe(event)
        enriched = EnrichedEvent(event.event, app, event.process, facts)
        return [(m.rule.id, m.rule.phase.value) for m in rules.match(enriched)]

    assert matched("/var/log/app/x") == []  # learned
    assert matched("/etc/cron.d/job") == [("baseline.new-file-write-dir-persistence",
                                           "persistence")]
    assert matched("/root/.ssh/authorized_keys") == [
        ("baseline.new-file-write-dir-persistence", "persistence")]
    assert matched("/etc/sudoers.d/x") == [("baseline.new-file-write-dir-privilege",
                                            "privilege_escalation")]
    assert matched("/usr/local/bin/kit") == [("baseline.new-file-write-dir-binaries",
                                              "foothold")]
    assert matched("/usr/share/misc/x") == [("baseline.new-file-write-dir", "foothold")]
    # the rules add no kernel watch of their own (the policy watches the baselines' trees)
    assert not rules.file_watch_set().everything
    for rule in rules.rules:
        if rule.id.startswith("baseline.new-file-write-dir"):
            assert rule.path_watches == frozenset()
            assert [str(getattr(a, "value", a)) for a in rule.actions] == ["alert"]


def test_the_policy_writes_the_trees_beside_the_rules_watches() -> None:
    from roxd.policy.kernel import KernelPolicy
    from tests.unit.test_pipeline import FakeMaps

    rules = ActiveRules([])
    rules.load()  # the built-in rules: no file watch of their own
    for trees, expect in ((BaselineSettings().file_trees, True), ((), False)):
        maps = FakeMaps()
        policy = KernelPolicy(maps, enforce_in_kernel=False, fold_window_ns=0,
                              containers=list, file_watches=files.watch_set(trees))
        policy.apply_rules(rules.current)
        assert maps.file_watches is not None
        assert (b"/var/log/" in maps.file_watches.paths) is expect
        if expect:  # writes only: a read below /usr stops at the kernel's mask
            mask = maps.file_watches.paths[b"/usr/"]
            assert mask & records.ACCESS_BITS["write"] and not mask & records.ACCESS_BITS["read"]
