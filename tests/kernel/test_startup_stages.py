"""A real roxd reports where its start-up to READY went (issue 22): the READY line's summary,
the "start-up stages" log line and `startup` in /v1/status carry the same stages, the eBPF
compile and load on their own thread, CPU seconds that add up. Structure and consistency
only: no figure is asserted (the host may be busy).

The eBPF stages depend on where the object came from (roxd/sensor/loader.py): loaded from the
compiled-object cache, compiled and written to it (nothing cached for these inputs yet), or
compiled by bcc as before the cache (ROXD_BPF_CACHE=off, or a cache refused on this host). The
test expects exactly the set of the path roxd reports (`bpf_object` in the log and status),
and that path must be the one this environment asks for: correct run either way.

The roxd runs in monitor mode (`--monitor`: the stages are the same), which the second test
uses: no place is urgent for the ring's wake-ups there (roxd/policy/wakeups.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from roxd.api.client import ApiClient
from roxd.sensor.loader import BPF_CACHE_OFF_ENV
from tests.conftest import RoxdProcess, start_roxd

pytestmark = pytest.mark.kernel

# stages every start has, whatever the host (the container runtime may be absent)
MAIN_STAGES = {"interpreter", "config", "import daemon", "runtime connect", "feature probes",
               "rules", "build", "container scan", "bpf compile wait", "bpf attach",
               "sensor rings and cgroup hooks", "rules to kernel", "api"}
# the compile thread's stages, one set per path through roxd/sensor/loader.py
FROM_CACHE = {"bpf flags (BTF)", "bpf cache load", "bpf maps", "bpf load"}
COMPILED_FOR_CACHE = {"bpf flags (BTF)", "bpf cache load", "bpf compile", "bpf cache write",
                      "bpf maps", "bpf load"}  # load_cached, nothing cached for the inputs
COMPILED_BY_BCC = {"bpf flags (BTF)", "bpf compile", "bpf load"}  # load_bcc
COMPILE_THREAD_STAGES = FROM_CACHE | COMPILED_FOR_CACHE | COMPILED_BY_BCC
# the loader's notes when it compiled for the cache (anything else: why it did not use it)
FOR_CACHE_NOTES = ("no cached object for these inputs", "not written to ")


def _cache_off() -> bool:
    """Whether this environment (which roxd inherits) turns the cache off, as loader.py
    reads it."""
    return os.environ.get(BPF_CACHE_OFF_ENV, "").lower() in ("off", "0", "no", "false")


def _expected_bpf_stages(bpf_object: dict[str, str]) -> set[str]:
    origin, note = bpf_object["origin"], bpf_object["note"]
    if _cache_off():
        assert (origin, note) == ("compiled", f"{BPF_CACHE_OFF_ENV}=off"), bpf_object
        return COMPILED_BY_BCC
    if origin == "cache":
        return FROM_CACHE
    assert origin == "compiled", bpf_object
    assert note, "a compile with the cache on must say why the cache had nothing"
    return COMPILED_FOR_CACHE if note.startswith(FOR_CACHE_NOTES) else COMPILED_BY_BCC


@pytest.fixture(scope="module")
def roxd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoxdProcess]:
    rp = start_roxd(tmp_path_factory.mktemp("roxd"), "--monitor")
    try:
        rp.wait_ready()
        yield rp
    finally:
        rp.stop()


def _logged_stages(stderr: str) -> dict[str, Any]:
    lines = [ln for ln in stderr.splitlines() if "start-up stages: " in ln]
    assert len(lines) == 1, stderr[-2000:]
    return json.loads(lines[0].split("start-up stages: ", 1)[1])


def test_start_up_stages_are_logged_and_in_status(roxd: RoxdProcess) -> None:
    stderr = roxd.stderr()
    ready = next(ln for ln in stderr.splitlines() if "roxd is watching" in ln)
    logged = _logged_stages(stderr)
    origin = logged["bpf_object"]["origin"]
    assert origin in ("cache", "compiled"), logged["bpf_object"]
    assert f"start-up {logged['ready_s']:.2f}s (eBPF {origin}): " in ready

    stages = logged["stages"]
    by_name = {s["name"]: s for s in stages}
    assert len(by_name) == len(stages), "a stage is recorded twice"
    assert set(by_name) >= MAIN_STAGES
    # exactly the eBPF stages of the path roxd took, and that path is the one asked for
    assert set(by_name) & COMPILE_THREAD_STAGES == _expected_bpf_stages(logged["bpf_object"])
    if origin == "compiled":
        assert by_name["bpf compile"]["cpu_s"] > 0  # real work on its thread
    else:
        assert "bpf compile" not in by_name  # no clang, no LLVM
    for stage in stages:
        assert set(stage) == {"name", "wall_s", "cpu_s", "thread"}
        assert stage["wall_s"] >= 0 and stage["cpu_s"] >= 0
        want = "bpf-compile" if stage["name"] in COMPILE_THREAD_STAGES else "main"
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


def test_monitor_mode_makes_no_place_urgent(roxd: RoxdProcess) -> None:
    # the shipped pack kills by pidfd in containers: urgent when enforcing; in monitor mode
    # that kill is a "would", and the daemon tells the policy so (roxd/daemon.py)
    ready = next(ln for ln in roxd.stderr().splitlines() if "roxd is watching" in ln)
    assert "monitor mode: nothing is killed" in ready
    status = ApiClient(str(roxd.stderr_path.parent / "roxd.sock")).get("/v1/status")
    assert status["policy"]["ring_urgent"] == 0
