"""`python -m bench.baseline_memory`: what file baselines cost in roxd's memory and CPU.

A real BaselineEngine (no daemon, no kernel: this measures the engine's own data) is filled
with WORKLOADS workloads of PROCESSES executables and PEERS network elements each, then with
DIRS written directories each; tracemalloc measures the Python heap the baselines hold before
and after the directories, so the figure is the directories' own cost. Then the userspace CPU
per file event: `observe()` of a write while learning (a new directory per event: the dict
insert) and once locked (a learned directory: the lookup and the count), best of REPS runs.
The state file's size is measured too (the JSON written to <state_dir>/baselines.json).

Results: bench/results/baseline-memory.json (and printed). Timings are of this machine,
cited in docs/baselines.md, never asserted by tests.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from roxd.baselines.engine import BaselineEngine, LearnedProcess, intern_parents, peer_element
from roxd.baselines.files import SeenDir
from roxd.baselines.settings import BaselineSettings
from roxd.model import Container, EnrichedEvent, ExecEvent, FileEvent, Process

RESULTS = Path(__file__).parent / "results"


class Clock:
    def __init__(self) -> None:
        self.ns = 1_700_000_000 * 10**9
        self.mono = 1000.0

    def wall(self) -> int:
        return self.ns

    def monotonic(self) -> float:
        return self.mono


def fill(eng: BaselineEngine, workloads: int, processes: int, peers: int) -> list[str]:
    """Workloads with process and network elements, inserted as the engine's own records."""
    keys = []
    for w in range(workloads):
        c = Container(id=f"{w:064x}", runtime="docker", name=f"app{w}-1", image=f"img{w}:1")
        key = eng.workload_of(c)
        base = eng._new(key, c, 1)  # the bench fills the engine directly
        for p in range(processes):
            base.processes.add(f"/usr/bin/prog-{w}-{p}",
                               LearnedProcess(1, 2, 3, intern_parents(("/bin/sh",))))
        for p in range(peers):
            base.peers.add(peer_element("tcp", 1000 + p, f"10.{w % 250}.{p}.0/24"),
                           LearnedProcess(1, 2, 3))
        keys.append(key)
    return keys


def heap() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def write(cid: str, path: str, cgroup_id: int) -> EnrichedEvent:
    ev = FileEvent(time_ns=1, pid=4242, uid=0, cgroup_id=cgroup_id, comm="app",
                   operation="open", path=path, access=("write", "create"))
    return EnrichedEvent(ev, Container(id=cid, runtime="docker", name="bench-1",
                                       image="bench:1"),
                         Process(pid=4242, ppid=1, uid=0, exe="/app", comm="app", args=(),
                                 cgroup_id=cgroup_id))


def exec_event(cid: str, path: str, cgroup_id: int) -> EnrichedEvent:
    ev = ExecEvent(time_ns=1, pid=4242, ppid=1, uid=0, gid=0, cgroup_id=cgroup_id, comm="app",
                   filename=path, args=(path,), args_truncated=False)
    return EnrichedEvent(ev, Container(id=cid, runtime="docker", name="bench-1",
                                       image="bench:1"),
                         Process(pid=4242, ppid=1, uid=0, exe=path, comm="app", args=(path,),
                                 cgroup_id=cgroup_id))


def observe_ns(eng: BaselineEngine, events: list[EnrichedEvent], reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter_ns()
        for e in events:
            eng.observe(e)
        best = min(best, (time.perf_counter_ns() - t0) / len(events))
    return best


def run(workloads: int, processes: int, peers: int, dirs: int, reps: int) -> dict[str, Any]:
    settings = BaselineSettings(max_workloads=workloads + 10, max_file_dirs=max(dirs, 1),
                                startup_grace_s=0.0)
    out: dict[str, Any] = {"workloads": workloads, "processes": processes, "peers": peers,
                           "dirs": dirs}
    with tempfile.TemporaryDirectory() as tmp:
        tracemalloc.start()
        clock = Clock()
        eng = BaselineEngine(settings, tmp, clock=clock.wall, monotonic=clock.monotonic)
        start = heap()
        keys = fill(eng, workloads, processes, peers)
        without = heap()
        for w, key in enumerate(keys):
            base = eng._baselines[key]
            for d in range(dirs):
                base.file_dirs[f"/var/log/app-{w}/sub-{d}"] = SeenDir(1, 2, 3)
        with_dirs = heap()
        tracemalloc.stop()
        out["heap_bytes_processes_and_peers"] = without - start
        out["heap_bytes_file_dirs"] = with_dirs - without
        out["bytes_per_workload_file_dirs"] = round((with_dirs - without) / workloads)
        out["bytes_per_dir"] = round((with_dirs - without) / max(workloads * dirs, 1))
        out["heap_mb_total"] = round((with_dirs - start) / 2**20, 1)
        eng._dirty = True
        eng.save_if_changed()
        size = (Path(tmp) / "baselines.json").stat().st_size
        out["state_file_mb"] = round(size / 2**20, 1)

    # userspace CPU per file write event, learning and locked
    with tempfile.TemporaryDirectory() as tmp:
        clock = Clock()
        eng = BaselineEngine(BaselineSettings(startup_grace_s=0.0, max_file_dirs=10**6), tmp,
                             clock=clock.wall, monotonic=clock.monotonic)
        cid = "b" * 64
        n = 20000
        learning = [write(cid, f"/var/log/app/d{i}/x.log", 7) for i in range(n)]
        out["observe_ns_learning_new_dir"] = round(observe_ns(eng, learning, 1))
        out["observe_ns_learning_known_dir"] = round(observe_ns(eng, learning, reps))
        eng.lock(eng.workload_of(learning[0].container))  # type: ignore[arg-type]
        out["observe_ns_locked_known_dir"] = round(observe_ns(eng, learning, reps))
        unread = [write(cid, "/etc/shadow", 7)]
        unread = [EnrichedEvent(FileEvent(time_ns=1, pid=1, uid=0, cgroup_id=7, comm="x",
                                          operation="open", path="/etc/shadow",
                                          access=("read",)),
                                e.container, e.process) for e in unread * n]
        out["observe_ns_not_a_write"] = round(observe_ns(eng, unread, reps))
        # for comparison: a learned exec in the same locked workload (the process baseline)
        execs = [exec_event(cid, "/app", 7)] * n
        eng.accept(eng.workload_of(execs[0].container), "/app")  # type: ignore[arg-type]
        out["observe_ns_exec_locked_known"] = round(observe_ns(eng, execs, reps))
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.baseline_memory", description=__doc__)
    p.add_argument("--workloads", type=int, default=1000)
    p.add_argument("--processes", type=int, default=50)
    p.add_argument("--peers", type=int, default=50)
    p.add_argument("--dirs", type=int, default=20, help="written directories per workload")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--out", type=Path, default=RESULTS / "baseline-memory.json")
    args = p.parse_args(argv)
    load = Path("/proc/loadavg").read_text().split()[:3]  # timings mean little under load
    result = {"machine": {"python": platform.python_version(), "kernel": platform.release(),
                          "cpus": os.cpu_count(), "loadavg_at_start": load},
              **run(args.workloads, args.processes, args.peers, args.dirs, args.reps)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
