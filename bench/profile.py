"""Phase "profile": where roxd's cost goes, in measures that hold on a loaded machine.

With kernel.bpf_stats_enabled=1 (restored after) the kernel counts, per BPF program, its runs
and the nanoseconds spent in it; roxd's own CPU time is summed from every thread's
/proc/<pid>/task/<tid>/schedstat (nanoseconds on CPU, not 10 ms ticks). Both count time spent
*in* roxd's code, not the wall-clock time of the workload, so other work on the machine
changes them far less than it changes a ratio of run times (it still does somewhat: caches,
and a program preempted in a VM is charged the steal).

Per storm and repetition: BPF ns per event over all of roxd's programs (divided by the
storm's events: other work on the host inflates it), BPF ns per exec+exit over the exec
path's programs (bench.bpfstats.EXEC_PATH; the sum of each program's ns per run, which other
execs on the host do not inflate), roxd CPU µs per event of the storm and per event roxd
handled (its status counters; on a shared host it also handles others' events) and per
alert, after roxd's CPU time settled (it drains its ring buffer after the workload ended),
minus what an idle roxd spends over the same time. Measured apart from phase 1 because BPF
statistics themselves add two clock reads to every program run."""

from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import bpfstats
from bench.agents import RoxdAgent
from bench.containers import run_json
from bench.env import Env, log
from bench.stats import Summary

SYSCTL = Path("/proc/sys/kernel/bpf_stats_enabled")
ALERT_BINARY = "/tmp/tiny"  # an exec from /tmp raises foothold.exec-from-tmp (never folded)
PACED_EXECS_PER_S = 400  # a busy build's or shell loop's pace (docs/performance.md)


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
        # the same distinct execs paced at PACED_EXECS_PER_S (a build, a shell loop): each
        # exec is a wake-up of roxd with its caches cold unless a linger batches them,
        # several times a storm's cost per exec (issue 22)
        ("exec_paced_distinct_args", ["/bench/execstorm", "/bench/tiny",
                                      str(max(1, s.exec_iters // 2)), "1",
                                      str(PACED_EXECS_PER_S)]),
        ("connect_storm", ["/bench/connstorm", str(s.connect_iters)]),
        ("file_storm", ["/bench/openloop", str(max(1, s.syscall_iters // 8))]),
    ]


def run(env: Env, worker: Any) -> dict[str, Any]:
    """The profile of roxd; with env.against_source, also of that roxd, run at the same time
    (results under "against": the same keys). Two programs on one tracepoint run one after
    the other and the second finds warm caches: the two roxds are started in alternating
    order, one repetition each way (a connect storm showed 1.4x between identical programs)."""
    old = SYSCTL.read_text().strip()
    SYSCTL.write_text("1")
    restore = env.cleanup.push("kernel.bpf_stats_enabled", lambda: SYSCTL.write_text(old))
    acc = _Acc()
    try:
        worker.exec_run(["cp", "/bench/tiny", ALERT_BINARY])
        if env.against_source is None:
            with env.roxd("roxd") as roxd:
                _measure(env, worker, {"roxd": roxd}, env.settings.reps, acc)
        else:
            for rep in range(env.settings.reps):
                order = [("roxd", None), ("against", env.against_source)]
                if rep % 2:
                    order.reverse()
                with contextlib.ExitStack() as stack:
                    agents = {variant: stack.enter_context(env.roxd(variant, source=source))
                              for variant, source in order}
                    _measure(env, worker, agents, 1, acc)
    finally:
        restore()
    results = acc.results()
    res = results.pop("roxd")
    if "against" in results:
        res["against"] = results["against"]
    return res


@dataclass
class _Acc:
    """Samples over repetitions (and over roxd restarts), per roxd variant."""

    samples: dict[str, dict[str, dict[str, list[float]]]] = field(default_factory=dict)
    programs: dict[str, dict[str, dict[str, dict[str, float]]]] = field(default_factory=dict)
    idle: dict[str, list[float]] = field(default_factory=dict)
    events: dict[str, int] = field(default_factory=dict)

    def results(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for k, storms_ in self.samples.items():
            res: dict[str, Any] = {
                "roxd_idle_cpu_pct": round(statistics.median(self.idle[k]) / 1e7, 3),
                "events": self.events}
            for name, keys in storms_.items():
                entry: dict[str, Any] = {key: Summary.of(v).to_dict(1)  # type: ignore[union-attr]
                                         for key, v in keys.items() if v}
                entry["programs"] = {
                    prog: {"runs": p["runs"], "ns_per_run": round(p["ns"] / p["runs"], 1)}
                    for prog, p in sorted(self.programs[k][name].items(),
                                          key=lambda kv: -kv[1]["ns"])}
                res[name] = entry
            out[k] = res
        return out


def _measure(env: Env, worker: Any, agents: dict[str, RoxdAgent], reps: int,
             acc: _Acc) -> None:
    pids = {k: a.pid for k, a in agents.items() if a.pid is not None}
    time.sleep(1.0)  # start-up work (container scan, first status) out of the way
    c0 = {k: cpu_ns(p) for k, p in pids.items()}
    t0 = time.monotonic()
    time.sleep(2.0)
    idle = {k: (cpu_ns(p) - c0[k]) / (time.monotonic() - t0) for k, p in pids.items()}
    for k in pids:
        acc.idle.setdefault(k, []).append(idle[k])
    names = bpfstats.names()
    for rep in range(reps):
        for name, argv in storms(env):
            log(f"profile: {name} (repetition {rep + 1}, {' then '.join(pids)})")
            if SYSCTL.read_text().strip() != "1":  # someone else on the host turned it off
                SYSCTL.write_text("1")
            s0 = {k: a.status() for k, a in agents.items()}
            p0 = {k: bpfstats.read(p) for k, p in pids.items()}
            c0 = {k: cpu_ns(p) for k, p in pids.items()}
            t0 = time.monotonic()
            out = run_json(worker, argv)
            c1 = {k: settled_cpu_ns(p, idle[k]) for k, p in pids.items()}
            p1 = {k: bpfstats.read(p) for k, p in pids.items()}
            t1 = time.monotonic()
            s1 = {k: a.status() for k, a in agents.items()}
            if SYSCTL.read_text().strip() != "1":
                env.note(f"profile: kernel.bpf_stats_enabled was turned off during {name} "
                         "by another process: that repetition is not counted")
                continue
            n = out["n"]
            acc.events[name] = n
            for k in pids:
                d = bpfstats.delta(p0[k], p1[k])
                total = sum(x.ns for x in d.values())
                # per run, not per event of this storm: other work on the host runs the same
                # programs; one run of each exec-path program is one exec+exit
                exec_path = sum(x.ns / x.runs for i, x in d.items()
                                if bpfstats.on_exec_path(names.get(i, "")))
                roxd_ns = max(0.0, c1[k] - c0[k] - idle[k] * (t1 - t0))
                handled = s1[k]["events"]["total"] - s0[k]["events"]["total"]
                alerts = s1[k]["alerts"]["total"] - s0[k]["alerts"]["total"]
                s = acc.samples.setdefault(k, {}).setdefault(name, {})
                s.setdefault("bpf_ns_per_event", []).append(total / n)
                if name.startswith("exec"):
                    s.setdefault("exec_path_bpf_ns_per_exec", []).append(exec_path)
                    s.setdefault("exit_group_bpf_ns_per_run", []).append(
                        sum(x.ns / x.runs for i, x in d.items()
                            if bpfstats.is_exit_group(names.get(i, ""))))
                s.setdefault("roxd_cpu_us_per_event", []).append(roxd_ns / n / 1e3)
                if handled:
                    s.setdefault("roxd_cpu_us_per_handled_event", []).append(
                        roxd_ns / handled / 1e3)
                    s.setdefault("handled_events", []).append(handled)
                if alerts:
                    s.setdefault("roxd_cpu_us_per_alert", []).append(roxd_ns / alerts / 1e3)
                    s.setdefault("alerts", []).append(alerts)
                s.setdefault("workload_s", []).append(out["elapsed_ns"] / 1e9)
                per = acc.programs.setdefault(k, {}).setdefault(name, {})
                for i, x in d.items():
                    prog = per.setdefault(names.get(i, str(i)), {"runs": 0, "ns": 0})
                    prog["runs"] += x.runs
                    prog["ns"] += x.ns
