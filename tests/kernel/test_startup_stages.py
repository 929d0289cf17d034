"""A real roxd reports where its start-up to READY went (issue 22): the READY line's summary,
the "start-up stages" log line and `startup` in /v1/status carry the same stages, the eBPF
compile and load on their own thread, CPU seconds that add up. Structure and consistency
only: no figure is asserted (the host may be busy)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from roxd.api.client import ApiClient

pytestmark = pytest.mark.kernel

# stages every start has, whatever the host (the container runtime may be absent)
MAIN_STAGES = {"interpreter", "config", "import daemon", "runtime connect", "feature probes",
               "rules", "build", "container scan", "bpf compile wait", "bpf attach",
               "sensor rings and cgroup hooks", "rules to kernel", "api"}
COMPILE_STAGES = {"bpf flags (BTF)", "bpf cache load", "bpf maps", "bpf load"}
# only when the compiled-object cache had nothing for these inputs (roxd/sensor/bpf_cache.py)
COMPILED_STAGES = {"bpf compile", "bpf cache write"}


def _logged_stages(stderr: str) -> dict[str, Any]:
    lines = [ln for ln in stderr.splitlines() if "start-up stages: " in ln]
    assert len(lines) == 1, stderr[-2000:]
    return json.loads(lines[0].split("start-up stages: ", 1)[1])


def test_start_up_stages_are_logged_and_in_status(roxd_factory: Any) -> None:
    roxd = roxd_factory()
    stderr = roxd.stderr()
    ready = next(ln for ln in stderr.splitlines() if "roxd is watching" in ln)
    logged = _logged_stages(stderr)
    origin = logged["bpf_object"]["origin"]
    assert origin in ("cache", "compiled"), logged["bpf_object"]
    assert f"start-up {logged['ready_s']:.2f}s (eBPF {origin}): " in ready

    stages = logged["stages"]
    by_name = {s["name"]: s for s in stages}
    assert len(by_name) == len(stages), "a stage is recorded twice"
    assert set(by_name) >= MAIN_STAGES | COMPILE_STAGES
    if origin == "compiled":
        assert set(by_name) >= COMPILED_STAGES
        assert by_name["bpf compile"]["cpu_s"] > 0  # real work on its thread
    else:
        assert not set(by_name) & COMPILED_STAGES  # no clang, no LLVM
    for stage in stages:
        assert set(stage) == {"name", "wall_s", "cpu_s", "thread"}
        assert stage["wall_s"] >= 0 and stage["cpu_s"] >= 0
        want = "bpf-compile" if stage["name"] in COMPILE_STAGES | COMPILED_STAGES else "main"
        assert stage["thread"] == want, stage
    # the load is real work on the compile thread; the main thread only waits for it
    assert by_name["bpf load"]["cpu_s"] > 0
    # every stage's CPU is the process's: their sum cannot exceed what the process used
    # (stages are disjoint per thread; rounding of each to 1 ms allowed)
    assert sum(s["cpu_s"] for s in stages) <= logged["process_cpu_s"] + 0.001 * len(stages)
    # the main thread's stages happen one after another within the process's life
    assert sum(s["wall_s"] for s in stages if s["thread"] == "main") <= (
        logged["ready_s"] + 0.001 * len(stages))

    sock = str(roxd.stderr_path.parent / "roxd.sock")
    status = ApiClient(sock).get("/v1/status")
    assert status["startup"] == logged
    text = subprocess.run([sys.executable, "-m", "roxd.ctl", "--socket", sock, "status"],
                          capture_output=True, text=True, check=True).stdout
    longest = max(stages, key=lambda s: s["wall_s"])
    assert f"{logged['ready_s']} s to READY (longest: {longest['name']} " in text
    assert f"; eBPF {origin}" in text
