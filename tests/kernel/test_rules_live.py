"""Issue 3 acceptance on the real kernel: per-container rules, hot reload, offline validation."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import OTHER_IMAGE, REPO, RoxdProcess, start_roxd, wait_until

pytestmark = pytest.mark.kernel


def alert_of(rule_id: str, **where: Any) -> Any:
    def predicate(obj: dict[str, Any]) -> bool:
        if obj.get("type") != "alert" or obj["rule"]["id"] != rule_id:
            return False
        return all(check(obj) for check in where.values())
    return predicate


def test_shell_from_non_shell_parent_in_container(shared_roxd: RoxdProcess,
                                                  run_container: Any) -> None:
    """`docker exec -t c sh -c ...`: the shell's parent is the runtime, not a shell, and the
    session has a terminal (a non-interactive exec session is tests/kernel/test_benign_quiet)."""
    container = run_container("sleep 600")
    marker = f"marker-{uuid.uuid4().hex}"
    # alive a second: roxd reads its vpid from /proc at the exec
    container.exec_run(["sh", "-c", f"echo {marker}; sleep 1"], tty=True)
    alert = shared_roxd.wait_for(
        alert_of("foothold.shell-in-container",
                 mine=lambda o: marker in " ".join(o["process"]["args"])),
        timeout=20, message="foothold alert")
    assert alert["rule"]["phase"] == "foothold"
    assert alert["rule"]["mitre"]
    assert alert["container"]["id"] == container.id
    assert alert["container"]["name"] == container.name
    assert alert["process"]["args"][:2] == ["sh", "-c"]
    assert alert["actions"] == [{"action": "alert", "outcome": "done", "reason": "",
                                 "in_kernel": False}]
    assert alert["process"]["vpid"] not in (None, 1)
    # the container's own entrypoint (`/bin/sh -c "sleep 600"`, pid 1 inside) is no foothold
    assert not shared_roxd.matching(
        alert_of("foothold.shell-in-container",
                 mine=lambda o: o["container"]["id"] == container.id
                 and o["process"]["args"] == ["/bin/sh", "-c", "sleep 600"]))
    parent = alert["process"]["ancestors"][0] if alert["process"]["ancestors"] else None
    # the parent, when still known, is not a shell (runc / containerd-shim)
    if parent is not None:
        assert Path(parent["exe"]).name not in ("sh", "bash", "busybox")


def test_same_shell_on_host_raises_no_container_alert(shared_roxd: RoxdProcess) -> None:
    marker = f"hostshell-{uuid.uuid4().hex}"
    # a shell started by a non-shell parent (python) on the host
    subprocess.run(["sh", "-c", f"echo {marker} >/dev/null"], check=True)
    shared_roxd.wait_for(lambda o: o.get("type") == "exec"
                         and marker in " ".join(o["process"]["args"]), message="host exec")
    # the exec was processed; had the rule fired, its alert would precede the next stats line
    stats_seen = len(shared_roxd.matching(lambda o: o.get("type") == "stats"))
    shared_roxd.wait_for(lambda o: o.get("type") == "stats"
                         and len(shared_roxd.matching(lambda x: x.get("type") == "stats"))
                         > stats_seen + 1, timeout=10, message="two more stats lines")
    assert not shared_roxd.matching(
        alert_of("foothold.shell-in-container",
                 mine=lambda o: marker in " ".join(o["process"]["args"])))


IMAGE_RULE = """
[[rule]]
id = "test.echo-in-image-a"
name = "Marker echo in image A"
description = "Test rule scoped to one image: the same binary is fine in image B."
phase = "objectives"
severity = "warning"
mitre = ["T1059"]
event = "exec"
actions = ["alert"]
[rule.when]
exe_basename = "echo"
args = { contains = ["{marker}"] }
[rule.scope]
host = false
image = ["roxd-test/busybox:latest"]
"""


def test_rule_scoped_to_image_a_does_not_fire_in_image_b(
        rules_roxd: RulesRoxd, run_container: Any) -> None:
    roxd, marker = rules_roxd.roxd, rules_roxd.scoped
    b = run_container(f"sleep 1; /bin/echo {marker} b; sleep 30", image=OTHER_IMAGE)
    a = run_container(f"sleep 1; /bin/echo {marker} a; sleep 30")
    alert = roxd.wait_for(alert_of("test.echo-in-image-a"), timeout=20, message="scoped alert")
    assert alert["container"]["id"] == a.id
    # image B's echo was seen as an event, and raised nothing
    roxd.wait_for(lambda o: o.get("type") == "exec" and o["container"]
                  and o["container"]["id"] == b.id and marker in o["process"]["args"],
                  timeout=20, message="image B exec event")
    assert all(x["container"]["id"] == a.id
               for x in roxd.matching(alert_of("test.echo-in-image-a")))


RELOAD_BASE = """
[[rule]]
id = "test.reload-one"
name = "Reload one"
description = "Test rule present from the start."
phase = "foothold"
severity = "notice"
mitre = ["T1059"]
event = "exec"
actions = ["alert"]
[rule.when]
args = { contains = ["{one}"] }
"""

RELOAD_ADDED = """
[[rule]]
id = "test.reload-two"
name = "Reload two"
description = "Test rule added by a reload."
phase = "foothold"
severity = "notice"
mitre = ["T1059"]
event = "exec"
actions = ["alert"]
[rule.when]
args = { contains = ["{two}"] }
"""


def test_sighup_reload_swaps_rules_and_a_bad_file_keeps_the_old_set(
        rules_roxd: RulesRoxd) -> None:
    roxd, rules, one = rules_roxd.roxd, rules_roxd.rules, rules_roxd.one
    two = f"two-{uuid.uuid4().hex[:8]}"
    # counted from here: the module's roxd may have reloaded before (another run of this test)
    reloaded = roxd.stderr().count("rules reloaded")
    failed = roxd.stderr().count("rule reload failed")

    def echo(word: str) -> None:
        subprocess.run(["/bin/echo", word], check=True, stdout=subprocess.DEVNULL)

    echo(one)
    roxd.wait_for(alert_of("test.reload-one"), message="rule one")
    try:
        # add a rule, SIGHUP: it fires without restarting the programs
        (rules / "b.toml").write_text(RELOAD_ADDED.replace("{two}", two))
        roxd.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: roxd.stderr().count("rules reloaded") > reloaded, 10,
                   message="reload log line")
        echo(two)
        roxd.wait_for(alert_of("test.reload-two"), message="rule two after reload")
        # break a file: the reload fails with file, line and rule; the previous set keeps
        # running
        (rules / "b.toml").write_text(RELOAD_ADDED.replace("{two}", two)
                                      .replace('phase = "foothold"', 'phase = "sideways"'))
        roxd.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: roxd.stderr().count("rule reload failed") > failed, 10,
                   message="failed reload")
        err = roxd.stderr()
        assert "b.toml:" in err and "test.reload-two" in err and "sideways" in err
        before = len(roxd.matching(alert_of("test.reload-two")))
        echo(two)
        wait_until(lambda: len(roxd.matching(alert_of("test.reload-two"))) > before, 10,
                   message="rule two still active after the failed reload")
        assert err.count("eBPF programs attached in") == 1  # never recompiled or re-attached
    finally:
        # the module's roxd goes back to the set it started with, for the tests after this one
        (rules / "b.toml").unlink(missing_ok=True)
        reloaded = roxd.stderr().count("rules reloaded")
        roxd.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: roxd.stderr().count("rules reloaded") > reloaded, 10,
                   message="reload back to the module's rules")


def test_validate_rules_cli(tmp_path: Path) -> None:
    ok = subprocess.run([sys.executable, "-m", "roxd", "--validate-rules", str(REPO / "rules")],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text(RELOAD_BASE.replace("{one}", "x").replace('event = "exec"\n', ""))
    result = subprocess.run([sys.executable, "-m", "roxd", "--validate-rules", str(bad)],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert "bad.toml:" in result.stderr and "test.reload-one" in result.stderr
    assert "Traceback" not in result.stderr


HOSTILE_RULE = """
[[rule]]
id = "test.hostile-bytes"
name = "Exec with a marker argument"
description = "Test rule: any exec whose argv carries the marker, on the host."
phase = "foothold"
severity = "warning"
mitre = ["T1059"]
event = "exec"
actions = ["alert"]
[rule.when]
args = { contains = ["{marker}"] }
"""


@dataclass
class RulesRoxd:
    """One roxd for the three tests below that each need a rule of their own: one start
    (one eBPF compile) instead of three. Each rule matches only its own marker, so the tests
    cannot fire each other's rules; the reload test puts the rule set back when it ends."""
    roxd: RoxdProcess
    rules: Path
    scoped: str
    one: str
    hostile: str


@pytest.fixture(scope="module")
def rules_roxd(tmp_path_factory: pytest.TempPathFactory,
               docker_engine: Any) -> Iterator[RulesRoxd]:
    scoped = f"scoped-{uuid.uuid4().hex[:10]}"
    one = f"one-{uuid.uuid4().hex[:8]}"
    hostile = f"hostile-{uuid.uuid4().hex[:10]}"
    rules = tmp_path_factory.mktemp("rules-live")
    (rules / "scoped.toml").write_text(IMAGE_RULE.replace("{marker}", scoped))
    (rules / "a.toml").write_text(RELOAD_BASE.replace("{one}", one))
    (rules / "hostile.toml").write_text(HOSTILE_RULE.replace("{marker}", hostile))
    roxd = start_roxd(tmp_path_factory.mktemp("roxd-rules"), rules=[rules])
    try:
        roxd.wait_ready()
        yield RulesRoxd(roxd, rules, scoped, one, hostile)
    finally:
        roxd.stop()


def test_a_non_utf8_exe_and_escape_sequences_reach_the_store_and_roxctl_intact(
        rules_roxd: RulesRoxd, tmp_path: Path) -> None:
    """A real exec of /tmp/.../\\xff\\xfe/true with ESC sequences, a newline and a non-UTF-8
    byte in argv: the alert is stored, `roxctl --json alerts list` gives the exact bytes
    back (roxd/text.py to_bytes), and `roxctl alerts show` prints them escaped."""
    import os
    import shutil

    from roxd.text import to_bytes

    roxd, marker = rules_roxd.roxd, rules_roxd.hostile
    sock = str(roxd.stderr_path.parent / "roxd.sock")
    exe = os.fsencode(tmp_path) + b"/dir-\xff\xfe/true"
    os.makedirs(os.path.dirname(exe))
    shutil.copy(b"/bin/true", exe)
    argv = [exe, marker.encode(), b"\x1b[2J\x1b]0;pwned\x07", b"line1\nline2", b"bad\xc3("]
    subprocess.run(argv, check=True)

    alert = roxd.wait_for(alert_of("test.hostile-bytes"), timeout=20, message="the alert")
    assert to_bytes(alert["process"]["exe"]) == exe
    assert [to_bytes(a) for a in alert["process"]["args"]] == argv

    def stored() -> Any:
        out = subprocess.run([sys.executable, "-m", "roxd.ctl", "--socket", sock, "--json",
                              "alerts", "list", "--rule", "test.hostile-bytes"],
                             capture_output=True, text=True, timeout=30, cwd=REPO)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)
    [item] = wait_until(stored, 20, message="the alert in the store")
    assert to_bytes(item["process"]["exe"]) == exe
    assert [to_bytes(a) for a in item["process"]["args"]] == argv
    shown = subprocess.run([sys.executable, "-m", "roxd.ctl", "--socket", sock, "alerts",
                            "show", item["id"]], capture_output=True, text=True, timeout=30,
                           cwd=REPO)
    assert shown.returncode == 0, shown.stderr
    assert "\x1b" not in shown.stdout and "\x07" not in shown.stdout
    assert "dir-\\xff\\xfe/true" in shown.stdout and "\\x1b[2J" in shown.stdout
    assert "line1\\x0aline2" in shown.stdout and "bad\\xc3(" in shown.stdout
