"""roxctl against a real roxd on the real kernel with real containers: `roxctl top` in a real
terminal (tmux) at 80x24 and in batch mode, a learned seccomp profile that `docker run
--security-opt seccomp=p.json` takes as is, and roxd's ready line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import IMAGE, REPO, SESSION, RoxdProcess, start_roxd, wait_until
from tests.terminal import Terminal

pytestmark = pytest.mark.kernel

CONFIG = "[daemon]\nstats_interval_s = 1.0\n[seccomp]\nhonor_label = true\n"


@pytest.fixture(scope="module")
def ctl_roxd(docker_engine: Any) -> Iterator[tuple[RoxdProcess, str]]:
    workdir = Path(tempfile.mkdtemp(prefix="roxd-ctl-"))
    rp = start_roxd(workdir, config=CONFIG)
    try:
        rp.wait_ready()
        yield rp, str(workdir / "roxd.sock")
    finally:
        rp.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def roxctl(sock: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "roxd.ctl", *args, "--socket", sock],
                          capture_output=True, text=True, timeout=60, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def test_ready_line_says_what_was_attached(ctl_roxd: Any) -> None:
    rp, sock = ctl_roxd
    line = next(ln for ln in rp.stderr().splitlines() if "roxd is watching:" in ln)
    status = json.loads(roxctl(sock, "status", "-o", "json").stdout)
    count = status["programs"]["count"]
    assert f"roxd is watching: {count} programs attached (process exec, exit" in line, line
    assert f"{status['rules']['count']} rules (" in line and " kill in kernel" in line
    assert "runtime docker" in line and f"api {sock}" in line
    # the full list only at debug level (this roxd logs at info)
    assert "sys_enter_connect" not in rp.stderr()


def test_top_shows_a_real_container_at_80x24(ctl_roxd: Any, run_container: Any) -> None:
    _rp, sock = ctl_roxd
    name = f"roxd-top-{uuid.uuid4().hex[:6]}"
    run_container("while true; do /bin/true; sleep 0.2; done", name=name)
    wait_until(lambda: name in roxctl(sock, "containers").stdout, 20,
               message="roxd to know the container")
    # batch: one plain-text frame with the container's row; JSON frames with its rate
    batch = roxctl(sock, "top", "-b", "-d", "1")
    assert batch.returncode == 0, batch.stderr
    rows = {ln.split()[0]: ln.split() for ln in batch.stdout.splitlines() if ln.strip()}
    assert name in rows, batch.stdout
    assert rows["NAME"][:5] == ["NAME", "RISK", "EV/S", "ALERTS", "DROPS"]

    def busy() -> Any:
        frame = json.loads(roxctl(sock, "top", "-b", "-d", "1", "-o", "json").stdout)
        mine = next(c for c in frame["containers"] if c["name"] == name)
        return mine if mine["events_per_s"] and mine["events_per_s"] > 0 else None

    mine = wait_until(busy, 30, interval=0.5, message="events/s of the busy container")
    assert mine["events"] > 0 and mine["baseline"].startswith(("learning/", "locked/"))

    argv = [sys.executable, "-m", "roxd.ctl", "top", "-d", "1", "--socket", sock]
    with Terminal(argv, cols=80, rows=24, env={"PYTHONPATH": str(REPO), "TERM": "xterm"},
                  cwd=str(REPO)) as t:
        screen = t.wait_for(lambda s: name in s and "q:quit" in s, message="the container row")
        assert t.alternate_screen() and t.size() == (80, 24)
        lines = screen.splitlines()
        assert len(lines) <= 24 and all(len(ln) <= 80 for ln in lines)
        row = next(ln for ln in lines if ln.startswith(name))
        assert len(row.split()) >= 6  # name, risk, ev/s, alerts, drops, baseline at 80 columns
        t.keys("e")  # sort by events/s
        t.wait_for(lambda s: "sort events" in s, message="the events sort")
        t.keys("q")
        assert t.wait_exit() == 0
        assert not t.alternate_screen()  # the terminal is restored


def test_seccomp_profile_is_what_docker_run_takes(ctl_roxd: Any, run_container: Any,
                                                  tmp_path: Path) -> None:
    _rp, sock = ctl_roxd
    name = f"roxd-sc-{uuid.uuid4().hex[:6]}"
    workload = "while true; do echo hi > /dev/null; cat /etc/hostname > /dev/null; sleep 0.2; done"
    run_container(workload, name=name, labels={"roxd.learn": "true"})

    def learned() -> str | None:
        result = roxctl(sock, "seccomp", "profile", name)
        return result.stdout if result.returncode == 0 else None

    text = wait_until(learned, 30, interval=0.5, message="a learned profile")
    profile = json.loads(text)  # the document itself, no wrapper
    assert "defaultAction" in profile and "syscalls" in profile
    assert set(profile) <= {"defaultAction", "defaultErrnoRet", "architectures", "syscalls",
                            "comment", "archMap", "flags", "listenerPath", "listenerMetadata"}
    path = tmp_path / "p.json"
    path.write_text(text)
    docker = shutil.which("docker")
    assert docker is not None, "the docker CLI is needed (scripts/setup.sh installs docker.io)"
    run = [docker, "run", "--rm", "--label", f"roxd-test={SESSION}",
           "--security-opt", f"seccomp={path}", IMAGE, "/bin/sh", "-c"]
    ok = subprocess.run([*run, "echo hi > /dev/null; cat /etc/hostname > /dev/null; "
                         "sleep 0.2; echo ok"], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and ok.stdout.strip() == "ok", ok.stderr
    # the profile is in force: a syscall the workload never made (mkdir) is refused
    denied = subprocess.run([*run, "mkdir /tmp/x"], capture_output=True, text=True,
                            timeout=60)
    assert denied.returncode != 0 and "not permitted" in denied.stderr.lower(), denied
    report = json.loads(roxctl(sock, "seccomp", "profile", name, "--report").stdout)
    assert report["profile"] == profile  # --report: the whole report around the same profile
