"""Phase "profile": where roxd's cost goes, in measures that hold on a loaded machine.

With kernel.bpf_stats_enabled=1 (restored after) the kernel counts, per BPF program, its runs
and the nanoseconds spent in it; roxd's own CPU time is summed from every thread's
/proc/<pid>/task/<tid>/schedstat (nanoseconds on CPU, not 10 ms ticks). Both count time spent
*in* roxd's code, not the wall-clock time of the workload, so other work on the machine
changes them far less than it changes a ratio of run times (it still does somewhat: caches,
and a program preempted in a VM is charged the steal).

Per storm and repetition: BPF ns per event over all of roxd's programs, BPF ns per exec+exit
over the exec path's programs only (bench.bpfstats.EXEC_PATH), roxd CPU µs per event after
roxd's CPU time settled (it drains its ring buffer after the workload ended), minus what an
idle roxd spends over the same time. Measured apart from phase 1 because BPF statistics
themselves add two clock reads to every program run."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

from bench import bpfstats
from bench.containers import run_json
from bench.env import Env, log
from bench.stats import Summary

SYSCTL = Path("/proc/sys/kernel/bpf_stats_enabled")
ALERT_BINARY = "/tmp/tiny"  # an exec from /tmp raises foothold.exec-from-tmp (never folded)


def cpu_ns(pid: int) -> int:
    """Time on CPU of every thread of pid, in ns (schedstat's first field)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, IndexError, ValueError):
            continue  # thread gone
    return total


def settled_cpu_ns(pid: int, idle_ns_per_s: float, timeout: float = 15.0) -> int:
    """roxd's CPU time once it stopped working off a backlog: two samples 0.3 s apart that
    differ by no more than idle would (plus 2 ms)."""
    last = cpu_ns(pid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.3)
        now = cpu_ns(pid)
        if now - last <= idle_ns_per_s * 0.3 + 2e6:
            return now
        last = now
    return last


def storms(env: Env) -> list[tuple[str, list[str]]]:
    s = env.settings
    return [
        ("exec_storm", ["/bench/execstorm", "/bench/tiny", str(s.exec_iters)]),
        ("exec_storm_distinct_args", ["/bench/execstorm", "/bench/tiny", str(s.exec_iters),
                                      "1"]),
        ("exec_alerting", ["/bench/execstorm", ALERT_BINARY, str(s.exec_iters), "1"]),
        ("connect_storm", ["/bench/connstorm", str(s.connect_iters)]),
        ("file_storm", ["/bench/openloop", str(max(1, s.syscall_iters // 8))]),
    ]


def run(env: Env, worker: Any) -> dict[str, Any]:
    """The profile of roxd; with env.against_source, also of that roxd, run at the same time
    (results under "against": the same keys)."""
    old = SYSCTL.read_text().strip()
    SYSCTL.write_text("1")
    restore = env.cleanup.push("kernel.bpf_stats_enabled", lambda: SYSCTL.write_text(old))
    try:
        worker.exec_run(["cp", "/bench/tiny", ALERT_BINARY])
        with contextlib.ExitStack() as stack:
            agents = {"roxd": stack.enter_context(env.roxd("roxd"))}
            if env.against_source is not None:
                agents["against"] = stack.enter_context(
                    env.roxd("against", source=env.against_source))
            results = _measure(env, worker, {k: a.pid for k, a in agents.items()
                                             if a.pid is not None})
    finally:
        restore()
    res = results.pop("roxd")
    if "against" in results:
        res["against"] = results["against"]
    return res


def _measure(env: Env, worker: Any, pids: dict[str, int]) -> dict[str, dict[str, Any]]:
    time.sleep(1.0)  # start-up work (container scan, first status) out of the way
    c0 = {k: cpu_ns(p) for k, p in pids.items()}
    t0 = time.monotonic()
    time.sleep(2.0)
    idle = {k: (cpu_ns(p) - c0[k]) / (time.monotonic() - t0) for k, p in pids.items()}
    names = bpfstats.names()
    samples: dict[str, dict[str, dict[str, list[float]]]] = {k: {} for k in pids}
    programs: dict[str, dict[str, dict[str, dict[str, float]]]] = {k: {} for k in pids}
    events: dict[str, int] = {}
    for rep in range(env.settings.reps):
        for name, argv in storms(env):
            log(f"profile: {name} (repetition {rep + 1})")
            p0 = {k: bpfstats.read(p) for k, p in pids.items()}
            c0 = {k: cpu_ns(p) for k, p in pids.items()}
            t0 = time.monotonic()
            out = run_json(worker, argv)
            c1 = {k: settled_cpu_ns(p, idle[k]) for k, p in pids.items()}
            p1 = {k: bpfstats.read(p) for k, p in pids.items()}
            t1 = time.monotonic()
            n = out["n"]
            events[name] = n
            for k in pids:
                d = bpfstats.delta(p0[k], p1[k])
                total = sum(x.ns for x in d.values())
                exec_path = sum(x.ns for i, x in d.items()
                                if bpfstats.on_exec_path(names.get(i, "")))
                roxd_ns = max(0.0, c1[k] - c0[k] - idle[k] * (t1 - t0))
                s = samples[k].setdefault(name, {})
                s.setdefault("bpf_ns_per_event", []).append(total / n)
                if name.startswith("exec"):
                    s.setdefault("exec_path_bpf_ns_per_exec", []).append(exec_path / n)
                s.setdefault("roxd_cpu_us_per_event", []).append(roxd_ns / n / 1e3)
                s.setdefault("workload_s", []).append(out["elapsed_ns"] / 1e9)
                per = programs[k].setdefault(name, {})
                for i, x in d.items():
                    prog = per.setdefault(names.get(i, str(i)), {"runs": 0, "ns": 0})
                    prog["runs"] += x.runs
                    prog["ns"] += x.ns
    out_all: dict[str, dict[str, Any]] = {}
    for k in pids:
        res: dict[str, Any] = {"roxd_idle_cpu_pct": round(idle[k] / 1e7, 3), "events": events}
        for name, keys in samples[k].items():
            entry: dict[str, Any] = {key: Summary.of(v).to_dict(1)  # type: ignore[union-attr]
                                     for key, v in keys.items() if v}
            entry["programs"] = {
                prog: {"runs": p["runs"], "ns_per_run": round(p["ns"] / p["runs"], 1)}
                for prog, p in sorted(programs[k][name].items(), key=lambda kv: -kv[1]["ns"])}
            res[name] = entry
        out_all[k] = res
    return out_all
