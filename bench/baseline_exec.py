"""`python -m bench.baseline_exec`: what process baselines cost per exec (issue 15, Cost).

1. Kernel: a real roxd (python -m roxd, temp config/state/socket) and a real busybox container
   (roxd-test/busybox, scripts/test-images.sh) running `while :; do /bin/true; done`. With
   kernel.bpf_stats_enabled=1 (the old value restored afterwards), the run_time_ns/run_cnt of
   roxd's sched_process_exec program (where bpf/process.bpf.c looks up baseline_cgroups and,
   in enforcing cgroups, baseline_allow) over a window, read from /proc/<roxd>/fdinfo (no
   bpf() call, bench/bpfstats.py), for the container (a) not baselined (a roxd with
   `[baselines] enabled = false`), (b) learning, (c) locked in enforce mode with 1,000
   workloads x 50 paths imported (POST /v1/baselines/import) into the allow-list.
   The program runs for every exec on the host: the figure is an average over the window's
   execs, the container's loop being ~99% of them (the host's own exec rate before the
   container starts is reported: host_only). Each case is ROUNDS windows, median reported;
   (b) and (c) alternate by unlocking and locking the workload.
2. Userspace: BaselineEngine.observe() of an exec, learning (a new path each time) and
   locked (a learned path, 1,000 x 50 loaded), best of REPS runs (as bench/baseline_memory).

Writes bench/results/baseline-exec-<time>.json. Needs root, docker, bcc, bpftool.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import bpfstats, report

REPO = Path(__file__).resolve().parents[1]
SYSCTL = Path("/proc/sys/kernel/bpf_stats_enabled")
IMAGE = "roxd-test/busybox:latest"
WORKLOADS, PATHS = 1000, 50
PROG = "sched_process_exec"


def _load() -> list[str]:
    return Path("/proc/loadavg").read_text().split()[:3]


class Roxd:
    def __init__(self, work: Path, baselines: bool) -> None:
        self.work = work
        work.mkdir(parents=True)
        cfg = work / "roxd.toml"
        cfg.write_text('[daemon]\ncache_dir = "/var/cache/roxd"\n\n[baselines]\n'
                       f"enabled = {'true' if baselines else 'false'}\n"
                       "window_s = 86400.0\nstartup_grace_s = 0.0\n")
        self.sock = work / "roxd.sock"
        self.err = work / "stderr.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "roxd", "--config", str(cfg), "--state-dir",
             str(work / "state"), "--socket", str(self.sock)], cwd=REPO,
            stdout=subprocess.DEVNULL, stderr=self.err.open("w"), start_new_session=True)
        deadline = time.monotonic() + 300
        while "roxd is watching" not in self.err.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"roxd did not start:\n{self.err.read_text()[-3000:]}")
            time.sleep(0.2)
        while not self.sock.exists():
            time.sleep(0.1)

    def api(self) -> Any:
        from roxd.api.client import ApiClient

        return ApiClient(str(self.sock))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _window(pid: int, prog_ids: list[int], seconds: float) -> dict[str, Any]:
    before = bpfstats.read(pid)
    t0 = time.monotonic()
    time.sleep(seconds)
    after = bpfstats.read(pid)
    dt = time.monotonic() - t0
    d = bpfstats.delta(before, after)
    runs = sum(d[i].runs for i in prog_ids if i in d)
    ns = sum(d[i].ns for i in prog_ids if i in d)
    return {"seconds": round(dt, 1), "execs": runs, "execs_per_s": round(runs / dt),
            "ns_per_exec": round(ns / runs, 1) if runs else None, "loadavg": _load()}


def _exec_prog_ids(pid: int) -> list[int]:
    names = bpfstats.names()
    ids = [i for i in bpfstats.read(pid) if names.get(i, "").rsplit("__", 1)[-1] == PROG]
    if not ids:
        raise RuntimeError(f"roxd pid {pid} holds no {PROG} program")
    return ids


def _host_exec_rate(pid: int, ids: list[int], seconds: float) -> float:
    return _window(pid, ids, seconds)["execs_per_s"]


def _allow_doc(workload: str, learned: dict[str, Any]) -> dict[str, Any]:
    """1,000 locked enforce-mode workloads x 50 paths; the container's own keeps what it
    learned (so its loop is allowed) padded to 50 paths."""
    now = time.time_ns()
    rec = {"first_ns": now, "last_ns": now, "count": 1}
    sample = next(iter(learned["processes"].values()), None)
    if sample is not None:
        rec = dict(sample)
    out = []
    for w in range(WORKLOADS):
        if w == 0:
            base = dict(learned)
            procs = dict(learned["processes"])
            for p in range(PATHS - len(procs)):
                procs[f"/usr/local/bin/pad-{p}"] = rec
        else:
            base = dict(learned, workload=f"image:registry.example/app{w}/app{w}",
                        image=f"registry.example/app{w}:1.0", image_ids=[])
            procs = {f"/usr/local/bin/app{w}-tool{p}": rec for p in range(PATHS)}
        base.update(processes=procs, mode="enforce", state="locked", locked_at_ns=now,
                    peers={}, file_dirs={})
        out.append(base)
    return {"baselines": out}


def _rounds(windows: list[dict[str, Any]]) -> dict[str, Any]:
    """The median window's ns per exec (the host's own execs and load vary between windows)."""
    ns = sorted(w["ns_per_exec"] for w in windows if w["ns_per_exec"] is not None)
    if not ns:
        raise RuntimeError(f"no execs counted in {windows}")
    return {"ns_per_exec": ns[len(ns) // 2], "windows": windows}


def kernel(seconds: float, rounds: int) -> dict[str, Any]:
    old = SYSCTL.read_text().strip()
    work = Path(tempfile.mkdtemp(prefix="roxd-bench-exec-"))
    name = f"roxd-bench-exec-{os.getpid()}"
    results: dict[str, Any] = {"window_s": seconds, "loadavg_at_start": _load()}
    roxd: Roxd | None = None
    try:
        SYSCTL.write_text("1")
        # (a) not baselined: roxd with baselines off
        roxd = Roxd(work / "a", baselines=False)
        ids = _exec_prog_ids(roxd.proc.pid)
        results["host_only"] = _window(roxd.proc.pid, ids, seconds)
        subprocess.run(["docker", "run", "-d", "--rm", "--name", name, IMAGE, "sh", "-c",
                        "while :; do /bin/true; done"], check=True, capture_output=True)
        time.sleep(2)
        results["a_not_baselined"] = _rounds(
            [_window(roxd.proc.pid, ids, seconds) for _ in range(rounds)])
        roxd.stop()
        roxd = None
        # (b) learning, then (c) locked in enforce mode with the allow-list loaded
        roxd = Roxd(work / "b", baselines=True)
        ids = _exec_prog_ids(roxd.proc.pid)
        time.sleep(3)
        first_b = _window(roxd.proc.pid, ids, seconds)
        with roxd.api() as api:
            listed = api.get("/v1/baselines")
            items = listed.get("baselines", listed) if isinstance(listed, dict) else listed
            keys = [b["workload"] for b in items if "busybox" in json.dumps(b)]
            if not keys:
                raise RuntimeError(f"the container's workload was not learned: {listed}")
            learned = api.get("/v1/baselines/export", {"workload": keys[0]})["baselines"][0]
            results["learned_paths"] = sorted(learned["processes"])
            t0 = time.monotonic()
            doc = _allow_doc(keys[0], learned)["baselines"]
            for i in range(0, len(doc), 100):  # the API takes 1 MiB bodies at most
                api.post("/v1/baselines/import", {"baselines": doc[i:i + 100]})
            results["import_s"] = round(time.monotonic() - t0, 1)
        time.sleep(5)  # the policy writes the kernel tables
        # (c) and (b) alternate (unlock: learning again, out of the kernel tables; lock:
        # enforcing with the allow-list), so a change of the host's load hits both alike
        b_windows, c_windows = [first_b], []
        with roxd.api() as api:
            for r in range(rounds):
                c_windows.append(_window(roxd.proc.pid, ids, seconds))
                if r == rounds - 1:
                    break
                api.post("/v1/baselines/unlock", {"workload": keys[0]})
                time.sleep(3)
                b_windows.append(_window(roxd.proc.pid, ids, seconds))
                api.post("/v1/baselines/lock", {"workload": keys[0]})
                time.sleep(3)
        running = subprocess.run(["docker", "inspect", "-f", "{{.State.Running}}", name],
                                 capture_output=True, text=True).stdout.strip()
        results["b_learning"] = _rounds(b_windows)
        results["c_enforce_locked_1000x50"] = _rounds(c_windows)
        results["container_running_after_c"] = running
        with roxd.api() as api:
            results["status_baselines"] = api.get("/v1/status").get("baselines")
        a = results["a_not_baselined"]["ns_per_exec"]
        for k in ("b_learning", "c_enforce_locked_1000x50"):
            results[k]["added_ns_vs_a"] = round(results[k]["ns_per_exec"] - a, 1)
        return results
    finally:
        SYSCTL.write_text(old)
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
        if roxd is not None:
            roxd.stop()
        shutil.rmtree(work, ignore_errors=True)


def userspace(reps: int) -> dict[str, Any]:
    from bench.baseline_memory import Clock, exec_event, fill, observe_ns
    from roxd.baselines.engine import BaselineEngine
    from roxd.baselines.settings import BaselineSettings

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        clock = Clock()
        eng = BaselineEngine(BaselineSettings(max_workloads=WORKLOADS + 10, startup_grace_s=0.0,
                                              max_processes=10**6), tmp,
                             clock=clock.wall, monotonic=clock.monotonic)
        fill(eng, WORKLOADS, PATHS, 0)
        cid, n = "b" * 64, 20000
        new = [exec_event(cid, f"/usr/bin/new-{i}", 7) for i in range(n)]
        out["observe_ns_learning_new_path"] = round(observe_ns(eng, new, 1))
        out["observe_ns_learning_known_path"] = round(observe_ns(eng, new, reps))
        eng.lock(eng.workload_of(new[0].container))  # type: ignore[arg-type]
        eng.set_mode(eng.workload_of(new[0].container), "enforce")  # type: ignore[arg-type]
        out["observe_ns_locked_known_path"] = round(observe_ns(eng, new, reps))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.baseline_exec", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=10.0, help="measurement window")
    p.add_argument("--rounds", type=int, default=3, help="windows per case (median)")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--skip-kernel", action="store_true")
    p.add_argument("--out", type=Path, default=REPO / "bench/results")
    args = p.parse_args(argv)
    if os.geteuid() != 0 and not args.skip_kernel:
        print("bench.baseline_exec: needs root", file=sys.stderr)
        return 1
    result: dict[str, Any] = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                              "kernel": os.uname().release, "cpus": os.cpu_count(),
                              "userspace": userspace(args.reps)}
    if not args.skip_kernel:
        result["bpf_per_exec"] = kernel(args.seconds, args.rounds)
    report.write_and_show(result, args.out, "baseline-exec")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
