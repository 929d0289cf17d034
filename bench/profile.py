"""Phase "profile": where roxd's cost goes. With kernel.bpf_stats_enabled=1 (restored after),
the run time and run count of each of roxd's BPF programs over an exec, a connect and a file
storm, and roxd's user+system CPU over the same storms. Measured apart from phase 1 because
BPF statistics themselves add a little to every program run."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.containers import run_json
from bench.env import Env, log

SYSCTL = Path("/proc/sys/kernel/bpf_stats_enabled")


def _progs() -> dict[int, dict[str, Any]]:
    out = subprocess.run(["bpftool", "--json", "prog", "show"], capture_output=True, text=True,
                         check=True).stdout
    return {p["id"]: p for p in json.loads(out)}


def run(env: Env, worker: Any) -> dict[str, Any]:
    old = SYSCTL.read_text().strip()
    SYSCTL.write_text("1")
    restore = env.cleanup.push("kernel.bpf_stats_enabled", lambda: SYSCTL.write_text(old))
    res: dict[str, Any] = {}
    try:
        before_start = set(_progs())
        with env.roxd("roxd") as roxd:
            mine = {i for i, p in _progs().items() if i not in before_start
                    and (not p.get("pids") or any(x.get("pid") == roxd.pid
                                                  for x in p["pids"]))}
            s = env.settings
            for name, argv in (
                ("exec_storm", ["/bench/execstorm", "/bench/tiny", str(s.exec_iters)]),
                ("exec_storm_distinct_args",
                 ["/bench/execstorm", "/bench/tiny", str(s.exec_iters), "1"]),
                ("connect_storm", ["/bench/connstorm", str(s.connect_iters)]),
                ("file_storm", ["/bench/openloop", str(max(1, s.syscall_iters // 8))]),
                ("syscall_loop_bystander", ["/bench/sysloop", str(s.syscall_iters)]),
            ):
                log(f"profile: {name}")
                if name == "syscall_loop_bystander":
                    if not env.settings.learning or not env.idle:
                        continue
                    # another container learns: the raw sys_enter program attaches host-wide
                    roxd.seccomp("learn", env.idle[0].name)
                    time.sleep(0.5)
                    mine |= {i for i, p in _progs().items() if i not in before_start}
                p0, cpu0 = _progs(), roxd.cpu_s() or 0.0
                out = run_json(worker, argv)
                p1, cpu1 = _progs(), roxd.cpu_s() or 0.0
                if name == "syscall_loop_bystander":
                    roxd.seccomp("stop", env.idle[0].name)
                progs = {}
                total_ns = 0
                for pid_ in sorted(mine & set(p1)):
                    a, b = p0.get(pid_, {}), p1[pid_]
                    cnt = b.get("run_cnt", 0) - a.get("run_cnt", 0)
                    ns = b.get("run_time_ns", 0) - a.get("run_time_ns", 0)
                    total_ns += ns
                    if cnt:
                        progs[b.get("name", str(pid_))] = {"runs": cnt, "ns_per_run":
                                                           round(ns / cnt, 1)}
                res[name] = {
                    "workload_s": round(out["elapsed_ns"] / 1e9, 3), "events": out["n"],
                    "bpf_ns_total": total_ns,
                    "bpf_ns_per_event": round(total_ns / out["n"], 1),
                    "roxd_cpu_s": round(cpu1 - cpu0, 3),
                    "roxd_cpu_us_per_event": round((cpu1 - cpu0) / out["n"] * 1e6, 1),
                    "programs": progs,
                }
    finally:
        restore()
    return res
