"""roxd SIGKILLed mid-hold during an exec storm, then restarted, on the real kernel and dockerd:
no process of the new container stays stopped after the lease, and no alert that reached the
store before the kill is lost across the restart."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from roxd.holdguard import stopped_in_exec
from tests.conftest import DEFAULT_TEST_CONFIG, NOISE_OFF_CONFIG, start_roxd, wait_until

pytestmark = [pytest.mark.faults, pytest.mark.kernel]

# An image-scoped kill rule turns the exec hold on (new cgroups' first execs are stopped until
# roxd classifies them); an alert-only rule gives host alerts to store.
RULES = """
[[rule]]
id = "test.fault-hold"
name = "Turns the hold on"
description = "Test rule: image-scoped kill, so new containers' execs are held."
phase = "objectives"
severity = "critical"
mitre = ["T1496"]
event = "exec"
actions = ["alert", "kill"]
[rule.when]
exe = "/never/runs"
[rule.scope]
host = false
image = ["roxd-test/busybox:latest"]

[[rule]]
id = "test.fault-mark"
name = "Fault marker"
description = "Test rule: a host command line with the marker."
phase = "foothold"
severity = "warning"
mitre = ["T1059"]
event = "exec"
actions = ["alert"]
[rule.when]
cmdline = { contains = ["roxd-fault-mark-"] }
"""

CONFIG = DEFAULT_TEST_CONFIG + NOISE_OFF_CONFIG


def api(sock: Path, path: str) -> Any:
    out = subprocess.run([sys.executable, "-m", "roxd.ctl", "--socket", str(sock), "--json",
                          *path.split()], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def stored_marks(sock: Path) -> set[str]:
    page = api(sock, "alerts list --rule test.fault-mark --limit 1000")
    items = page["items"] if isinstance(page, dict) else page
    return {a["id"] for a in items}


def container_pids(container: Any) -> list[int]:
    container.reload()
    init = container.attrs["State"]["Pid"]
    if not init:
        return []
    try:
        cgroup = Path(f"/proc/{init}/cgroup").read_text()
    except OSError:
        return []
    out = []
    for entry in os.scandir("/proc"):  # every process in the init's cgroup
        if entry.name.isdigit():
            try:
                if Path(f"/proc/{entry.name}/cgroup").read_text() == cgroup:
                    out.append(int(entry.name))
            except OSError:
                continue
    return out


def stopped(pids: list[int]) -> list[int]:
    out = []
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if stat[stat.rindex(")") + 2] == "T":
            out.append(pid)
    return out


def held_container(roxd: Any, docker_engine: Any, tag: str,
                   made: list[Any]) -> tuple[Any, list[int]]:
    """A new container whose first exec the kernel holds: roxd stopped (its lease still
    runs), the container started, its exec stopped inside execve. Docker under load can take
    longer than the 5 s lease to start one: then roxd runs a second, and it is tried again."""
    from tests.conftest import IMAGE, SESSION

    for _attempt in range(4):
        c = docker_engine.containers.create(
            IMAGE, ["/bin/sh", "-c",
                    f"i=0; while :; do /bin/echo $i > /tmp/n-{tag}; i=$((i+1)); done"],
            labels={"roxd-test": SESSION}, name=f"roxd-fault-{tag}-{_attempt}")
        made.append(c)
        time.sleep(1.2)  # a fresh lease
        os.kill(roxd.proc.pid, signal.SIGSTOP)
        c.start()
        deadline = time.monotonic() + 4.0
        while time.monotonic() < deadline:
            held = [p for p in container_pids(c) if stopped_in_exec(p)]
            if held:
                return c, held
            time.sleep(0.1)
        os.kill(roxd.proc.pid, signal.SIGCONT)  # the lease ran out first: again
    raise AssertionError("no exec of a new container was ever held")


def test_sigkill_mid_hold_leaves_nothing_stopped_and_loses_no_stored_alert(
        tmp_path: Path, docker_engine: Any) -> None:
    workdir = tmp_path / "roxd"
    workdir.mkdir()
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "fault.toml").write_text(RULES)
    sock = workdir / "roxd.sock"
    roxd = start_roxd(workdir, config=CONFIG, rules=[rules])
    restarted = None
    made: list[Any] = []
    try:
        roxd.wait_ready()
        assert api(sock, "status")["policy"]["hold_unknown"] is True
        marks = 40
        for i in range(marks):
            subprocess.run(["/bin/sh", "-c", f": roxd-fault-mark-{i}"], check=True)
        wait_until(lambda: len(stored_marks(sock)) == marks, 30,
                   message="the marker alerts in the store")
        before = stored_marks(sock)
        tag = uuid.uuid4().hex[:8]
        c, held = held_container(roxd, docker_engine, tag, made)
        os.kill(roxd.proc.pid, signal.SIGKILL)  # mid-hold, mid-storm
        roxd.proc.wait(10)
        # after the lease (5 s), the guardian continues what the hold stopped: the storm runs
        wait_until(lambda: not stopped(container_pids(c)) and all(
            not Path(f"/proc/{p}").exists() or not stopped_in_exec(p) for p in held), 20,
            0.2, message="no process of the container left stopped")
        first = c.exec_run(f"cat /tmp/n-{tag}").output
        wait_until(lambda: c.exec_run(f"cat /tmp/n-{tag}").output != first, 10,
                   message="the exec storm to go on")
        for _ in range(5):  # and nothing is stopped again: samples over a second
            assert not stopped(container_pids(c))
            time.sleep(0.2)
        # restart on the same state dir: every alert that was in the store is still there
        restarted = start_roxd(workdir, config=CONFIG, rules=[rules])
        restarted.wait_ready()
        after = stored_marks(sock)
        assert before <= after, f"lost: {sorted(before - after)}"
        assert len(before) == marks
    finally:
        if roxd.proc.poll() is None:
            os.kill(roxd.proc.pid, signal.SIGCONT)
            roxd.stop()
        if restarted is not None:
            restarted.stop()
        for made_one in made:
            made_one.remove(force=True)
