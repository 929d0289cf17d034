"""Process baselines with the real kernel and real containers, short windows.

Monitor: a workload learns what its entrypoint and an operator's `docker exec` run; after the
lock the same things raise no baseline alert, a new binary does, a second replica started after
the lock is covered from its first exec, and a restarted roxd keeps the locked baseline.
Enforce: after the lock, a new binary (a static program whose first instructions append to a
marker file) is killed in the kernel before its first instruction; learned ones keep working.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from roxd.api.client import ApiClient
from roxd.baselines.workload import workload_key
from roxd.model import Container
from tests.conftest import OTHER_IMAGE, RoxdProcess, wait_until
from tests.kernel.test_enforce import MARKER_C

pytestmark = pytest.mark.kernel

GRACE_S = 1.5
CONFIG = """
[daemon]
stats_interval_s = 1.0
[baselines]
window_s = 5.0
startup_grace_s = 1.5
image_modes = ["roxd-test/busybox:other=enforce"]
"""


def socket_of(roxd: RoxdProcess) -> str:
    return str(roxd.stderr_path.parent / "roxd.sock")


def baseline(roxd: RoxdProcess, key: str) -> dict[str, Any] | None:
    with ApiClient(socket_of(roxd)) as api:
        for b in api.get("/v1/baselines")["baselines"]:
            if b["workload"] == key:
                return b
    return None


def wait_locked(roxd: RoxdProcess, key: str) -> dict[str, Any]:
    return wait_until(lambda: (b := baseline(roxd, key)) and b["state"] == "locked" and b,
                      30, 0.2, message=f"the baseline of {key} to lock")


def baseline_alerts(roxd: RoxdProcess, container_id: str) -> list[dict[str, Any]]:
    return roxd.matching(lambda o: o.get("type") == "alert"
                         and o["rule"]["id"].startswith("baseline.")
                         and (o.get("container") or {}).get("id") == container_id)


def key_of(name: str, image: str) -> str:
    return workload_key(Container(id="x" * 64, runtime="docker", name=name, image=image))


def test_monitor_learns_then_alerts_on_what_is_new_in_every_replica(
        roxd_factory: Any, run_container: Any, tmp_path: Path) -> None:
    state = tmp_path / "state"
    roxd: RoxdProcess = roxd_factory("--state-dir", str(state), config=CONFIG)
    prefix = f"bl-mon-{uuid.uuid4().hex[:6]}x"
    first = run_container("sleep 600", name=f"{prefix}-1")
    key = key_of(f"{prefix}-1", "roxd-test/busybox:latest")
    # learning: an operator's exec and a health-check-like probe
    wait_until(lambda: baseline(roxd, key), 15, 0.2, message="the workload to appear")
    assert first.exec_run(["/bin/sh", "-c", "true"]).exit_code == 0
    assert first.exec_run(["/bin/date"]).exit_code == 0
    locked = wait_locked(roxd, key)
    assert locked["mode"] == "monitor" and locked["learned"] >= 3
    # what was learned raises nothing; what is new does
    assert first.exec_run(["/bin/date"]).exit_code == 0
    assert first.exec_run(["/bin/cat", "/etc/hostname"]).exit_code == 0
    alert = roxd.wait_for(lambda o: o.get("type") == "alert"
                          and o["rule"]["id"] == "baseline.new-process"
                          and (o.get("container") or {}).get("id") == first.id,
                          timeout=15, message="a baseline alert for /bin/cat")
    assert alert["event"]["exec"]["filename"] == "/bin/cat"
    assert alert["event"]["baseline"]["verdict"] == "anomaly"
    assert alert["event"]["baseline"]["workload"] == key
    assert alert["event"]["baseline"]["locked_at"]
    assert [a["action"] for a in alert["actions"]] == ["alert"]  # monitor: nothing killed
    assert all(a["event"]["exec"]["filename"] == "/bin/cat"
               for a in baseline_alerts(roxd, first.id))
    # a replica started after the lock: its entrypoint is in its startup grace, then it is
    # judged by the same baseline
    second = run_container("sleep 600", name=f"{prefix}-2")
    wait_until(lambda: roxd.matching(lambda o: o.get("type") == "exec"
                                     and (o.get("container") or {}).get("id") == second.id),
               15, message="the replica's first exec")
    time.sleep(GRACE_S + 0.5)  # what a replica runs in its grace joins the baseline
    assert second.exec_run(["/bin/cat", "/etc/hostname"]).exit_code == 0
    wait_until(lambda: baseline_alerts(roxd, second.id), 15,
               message="a baseline alert in the replica")
    # restart: the locked baseline is the same
    learned = baseline(roxd, key)
    roxd.stop()
    again: RoxdProcess = roxd_factory("--state-dir", str(state), config=CONFIG)
    kept = baseline(again, key)
    assert kept is not None and kept["state"] == "locked"
    assert kept["learned"] == learned["learned"] and kept["locked_at_ns"] == \
        learned["locked_at_ns"]
    saved = json.loads((state / "baselines.json").read_text())
    assert any(b["workload"] == key for b in saved["baselines"])


def test_enforce_kills_a_new_binary_before_its_first_instruction(
        roxd_factory: Any, run_container: Any, tmp_path: Path) -> None:
    roxd: RoxdProcess = roxd_factory(config=CONFIG)
    marker = tmp_path / "marker"
    marker.mkdir()
    (tmp_path / "marker.c").write_text(MARKER_C)
    subprocess.run(["gcc", "-static", "-nostdlib", "-O2", "-o", str(marker / "tool"),
                    str(tmp_path / "marker.c")], check=True)
    name = f"bl-enf-{uuid.uuid4().hex[:6]}x"
    c = run_container("sleep 600", image=OTHER_IMAGE, name=name,
                      volumes={str(marker): {"bind": "/marker", "mode": "rw"}})
    key = key_of(name, OTHER_IMAGE)
    wait_until(lambda: baseline(roxd, key), 15, 0.2, message="the workload to appear")
    assert c.exec_run(["/bin/sh", "-c", "true"]).exit_code == 0  # learned: docker exec works
    locked = wait_locked(roxd, key)
    assert locked["mode"] == "enforce"
    wait_until(lambda: json.loads(subprocess.run(
        [*roxctl(roxd), "--json", "status"], capture_output=True, text=True,
        check=True).stdout)["policy"]["baseline_cgroups"] >= 1, 15, 0.2,
        message="the kernel's baseline allow-list")
    # learned behaviour keeps working
    assert c.exec_run(["/bin/sh", "-c", "true"]).exit_code == 0
    # the new binary: killed at exec, before it wrote one byte
    result = c.exec_run(["/bin/sh", "-c", "/marker/tool; echo rc=$?"])
    assert b"rc=137" in result.output, result.output
    assert not (marker / "hits").exists() or (marker / "hits").stat().st_size == 0
    alert = roxd.wait_for(lambda o: o.get("type") == "alert"
                          and o["rule"]["id"].startswith("baseline.")
                          and o["event"]["exec"]["filename"] == "/marker/tool",
                          timeout=15, message="the baseline alert of the killed tool")
    kill = next(a for a in alert["actions"] if a["action"] == "kill")
    assert kill["outcome"] == "done" and kill["in_kernel"] is True
    assert "locked baseline" in kill["reason"]
    # an operator accepts it: it runs from then on
    with ApiClient(socket_of(roxd)) as api:
        api.post("/v1/baselines/accept", {"workload": key, "path": "/marker/tool"})
    wait_until(lambda: b"rc=0" in c.exec_run(["/bin/sh", "-c", "/marker/tool; echo rc=$?"])
               .output, 15, 0.5, message="the accepted tool to run")
    assert (marker / "hits").stat().st_size >= 1


def roxctl(roxd: RoxdProcess) -> list[str]:
    import sys

    return [sys.executable, "-m", "roxd.ctl", "--socket", socket_of(roxd)]
