"""The exec path with kernel BTF (argv from the new stack, parent from task->real_parent,
exit code from the task, namespace pid) and without it (the older programs: argv at
sys_enter_execve, parents at fork, exit_group): both loaded into the real kernel, both must
report the same exec, parent and exit code (issue 22)."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from roxd.model import ExecEvent, ExitEvent
from roxd.sensor import btf
from roxd.sensor.program import Sensor, SensorConfig
from roxd.sensor.records import Decoded

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="loads eBPF programs: needs root")


def _run_and_collect(tmp_path: Path) -> tuple[str, list[Any]]:
    seen: list[Decoded] = []
    sensor = Sensor(SensorConfig(cache_dir=tmp_path / "cache"), seen.append)
    sensor.start()
    try:
        marker = f"paths-{uuid.uuid4().hex}"
        # sh execs /bin/sh -c ...; the inner echo is its child; sh exits 3 (exit_group)
        subprocess.run(["/bin/sh", "-c", f"/bin/echo {marker} '' end >/dev/null; exit 3"],
                       check=False)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            sensor.poll(100)
            if any(isinstance(d.event, ExitEvent) and d.event.exit_code == 3 for d in seen):
                break
        sensor.drain()
        stats = sensor.stats()
    finally:
        sensor.close()
    return marker, [seen, stats, sensor.attached]


def _check(marker: str, seen: list[Decoded]) -> None:
    execs = [d.event for d in seen if isinstance(d.event, ExecEvent)]
    sh = next(e for e in execs if e.filename == "/bin/sh" and marker in " ".join(e.args))
    echo = next(e for e in execs if e.filename == "/bin/echo" and marker in e.args)
    assert echo.args == ("/bin/echo", marker, "", "end")  # the empty argument survives
    assert not echo.args_truncated
    assert sh.ppid == os.getpid()  # the test started it
    assert echo.ppid == sh.pid
    exit_sh = next(d.event for d in seen if isinstance(d.event, ExitEvent)
                   and d.event.pid == sh.pid)
    assert exit_sh.exit_code == 3


def test_with_btf(tmp_path: Path) -> None:
    try:
        btf.offsets()
    except btf.BtfError as exc:
        pytest.skip(f"no kernel BTF here: {exc}")
    marker, (seen, stats, attached) = _run_and_collect(tmp_path)
    _check(marker, seen)
    # three programs on the exec path, no syscall programs for execve or exit_group
    assert "sched:sched_process_fork" not in attached
    assert not any(tp.endswith(("_execve", "_execveat", "_exit_group")) for tp in attached)
    assert stats.counters["exec_no_args"] == 0
    echo = next(d.event for d in seen if isinstance(d.event, ExecEvent)
                and d.event.filename == "/bin/echo" and marker in d.event.args)
    assert echo.vpid == echo.pid  # on the host: the initial pid namespace


def test_without_btf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_btf(*_a: Any, **_k: Any) -> dict[str, int]:
        raise btf.BtfError("hidden by the test")

    monkeypatch.setattr(btf, "offsets", no_btf)
    marker, (seen, stats, attached) = _run_and_collect(tmp_path)
    _check(marker, seen)
    assert "sched:sched_process_fork" in attached
    assert "syscalls:sys_enter_execve" in attached
    assert stats.counters["fork_seen"] > 0
