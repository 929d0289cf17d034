"""Issue 22 on the real kernel: the application benchmark's phase (bench/apps) in its shortest
form, one application (nginx under wrk, in containers of the offline-built apps image) and one
agent pair (none, and roxd whose baselines learned nginx, were locked and set to enforce).
Asserts the structure and the facts, never a time: figures and ratios present and computed
from the runs, the baselines really enforcing in the kernel while measured (an unlearned exec
afterwards is killed, none of the measured load was an anomaly), everything removed after."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from bench.apps import image
from bench.apps import phase as apps_phase
from bench.apps.loads import APPS_LABEL
from bench.cleanup import Cleanup
from bench.containers import Containers
from bench.env import Env, Settings
from tests.conftest import REPO

pytestmark = pytest.mark.kernel


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmd:
                found.append(f"{d.name}: {cmd[:120]}")
    return found


@pytest.fixture(scope="module")
def apps_image(docker_engine: Any) -> str:
    try:
        return image.build()
    except (subprocess.CalledProcessError, OSError, RuntimeError) as exc:
        pytest.fail(f"the apps image could not be built offline: {exc} (scripts/setup.sh "
                    "fetches its archives)")


def test_apps_phase_measures_nginx_under_enforcing_baselines_and_cleans_up(
        apps_image: str, docker_engine: Any) -> None:
    settings = Settings(apps=("nginx",), app_agents=("none", "roxd-baselines"), app_reps=1,
                        app_seconds=2.0, idle_containers=0)
    workdir = Path(tempfile.mkdtemp(prefix="roxd-apps-test-"))
    cleanup = Cleanup()
    containers = Containers(workdir / "bin", workdir / "out", cleanup)
    env = Env(settings, cleanup, containers, workdir, workdir / "cache", REPO)
    try:
        res = apps_phase.run(env)
    finally:
        cleanup.run_all()
        shutil.rmtree(workdir, ignore_errors=True)

    assert res["failures"] == []
    assert res["agents"] == ["none", "roxd-baselines"]
    assert res["orders"] == [["none", "roxd-baselines"]]
    fig = res["figures"]["nginx"]
    assert fig["unit"] == "req/s"
    runs = {r["agent"]: r for r in res["runs"] if r["app"] == "nginx"}
    for agent in ("none", "roxd-baselines"):
        assert fig[agent]["throughput"]["n"] == 1 and fig[agent]["throughput"]["median"] > 0
        assert fig[agent]["p99_ms"]["median"] > 0
    # the ratios are the runs' own figures, paired within the repetition
    ratio = fig["roxd-baselines"]
    assert ratio["throughput_ratio"]["n"] == 1
    assert ratio["throughput_ratio"]["median"] == pytest.approx(
        runs["none"]["throughput"] / runs["roxd-baselines"]["throughput"], rel=1e-3)
    assert ratio["p99_ratio"]["median"] == pytest.approx(
        runs["roxd-baselines"]["p99_ms"] / runs["none"]["p99_ms"], rel=1e-3)
    assert ratio["agent_cpu_s"]["n"] == 1  # roxd's CPU during the run was read
    # CPU charged to nginx's and the client's cgroups per request, paired the same way
    for agent in ("none", "roxd-baselines"):
        assert runs[agent]["ops"] > 0 and runs[agent]["app_cpu_us_per_op"] > 0
    assert ratio["cpu_per_op_ratio"]["median"] == pytest.approx(
        runs["roxd-baselines"]["app_cpu_us_per_op"] / runs["none"]["app_cpu_us_per_op"],
        rel=1e-2)

    # measured under locked, enforcing baselines: in the kernel, and with nothing of the
    # load itself judged an anomaly
    (b,) = res["baselines"]
    assert b["workloads"], "roxd learned no workload from the load"
    assert all(w["state"] == "locked" and w["enforced_mode"] == "enforce"
               for w in b["workloads"])
    assert b["baseline_cgroups"] and b["baseline_cgroups"] >= 1
    assert b["anomalies_after_runs"] == 0
    assert b["probe"]["killed"], f"an unlearned exec was not killed: {b['probe']}"

    # everything it started is gone: containers, roxd
    left = docker_engine.containers.list(all=True,
                                         filters={"label": f"{APPS_LABEL}={containers.run_id}"})
    assert left == []
    assert _processes_mentioning(str(workdir)) == [], "roxd (its config is in the work dir) left"
    text = apps_phase.table(res)
    assert "nginx" in text and "roxd-baselines" in text and "killed" in text
    assert "cpu/op" in text
