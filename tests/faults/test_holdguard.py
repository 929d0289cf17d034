"""The held-exec guardian continues only processes stopped inside execve (what the hold
does), never a job stopped by its user (Ctrl-Z, kill -STOP) while it runs or sleeps."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from roxd.holdguard import release_exec_stops, stopped_in_exec

pytestmark = pytest.mark.faults


def state(pid: int) -> str:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2]


@pytest.mark.parametrize("argv", [["sleep", "30"], ["sh", "-c", "while :; do :; done"]],
                         ids=["sleeping", "running"])
def test_a_job_stopped_by_its_user_is_left_stopped(argv: list[str]) -> None:
    job = subprocess.Popen(argv)
    try:
        time.sleep(0.2)
        job.send_signal(signal.SIGSTOP)
        for _ in range(100):
            if state(job.pid) == "T":
                break
            time.sleep(0.02)
        assert state(job.pid) == "T"
        assert not stopped_in_exec(job.pid)
        assert job.pid not in release_exec_stops()
        assert state(job.pid) == "T"
    finally:
        job.kill()  # SIGKILL ends a stopped process too
        job.wait()
