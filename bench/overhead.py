"""Phase 1 (workload overhead) and the roxd footprint figures of phase 4.

Repetitions alternate the agents (none, roxd, auditd, bpftrace, none, roxd, ...); each slot
starts its agent, runs every workload once in the same worker container with the same binary
and iteration count, and stops the agent. A ratio is the agent's time over the no-agent time
of the same repetition; the figure is the median of those ratios, with min and max."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from bench.agents import (
    Agent,
    AuditdAgent,
    BpftraceAgent,
    NoAgent,
    RoxdAgent,
    available_agents,
)
from bench.containers import run_json
from bench.env import Env, log
from bench.stats import Summary


@dataclass(frozen=True)
class Workload:
    name: str
    argv: tuple[str, ...]


def workloads(env: Env) -> list[Workload]:
    s = env.settings
    return [
        Workload("exec_storm", ("/bench/execstorm", "/bench/tiny", str(s.exec_iters))),
        Workload("connect_storm", ("/bench/connstorm", str(s.connect_iters))),
        Workload("syscall_loop", ("/bench/sysloop", str(s.syscall_iters))),
        # open/close of an unwatched file: a syscall-heavy loop that every file program sees
        Workload("file_storm", ("/bench/openloop", str(max(1, s.syscall_iters // 8)))),
    ]


@dataclass
class OverheadResult:
    seconds: dict[tuple[str, str], list[float]] = field(
        default_factory=lambda: defaultdict(list))
    ratios: dict[tuple[str, str], list[float]] = field(default_factory=lambda: defaultdict(list))
    agent_cpu_s: dict[tuple[str, str], list[float]] = field(
        default_factory=lambda: defaultdict(list))
    ready_s: list[float] = field(default_factory=list)
    rss_idle_mb: list[float] = field(default_factory=list)
    rss_after_mb: list[float] = field(default_factory=list)
    rss_after_storms_before_learning_mb: list[float] = field(default_factory=list)
    rss_split_mb: dict[str, float] = field(default_factory=dict)
    roxd_counters: list[dict[str, int]] = field(default_factory=list)
    roxd_warnings: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for (wl, agent), values in sorted(self.seconds.items()):
            out[f"{wl}.{agent}.seconds"] = _d(Summary.of(values))
        for (wl, agent), values in sorted(self.ratios.items()):
            out[f"{wl}.{agent}.ratio"] = _d(Summary.of(values))
        for (wl, agent), values in sorted(self.agent_cpu_s.items()):
            out[f"{wl}.{agent}.agent_cpu_s"] = _d(Summary.of(values))
        out["roxd.ready_s"] = _d(Summary.of(self.ready_s))
        out["roxd.rss_idle_mb"] = _d(Summary.of(self.rss_idle_mb))
        out["roxd.rss_after_storms_mb"] = _d(Summary.of(self.rss_after_mb))
        out["roxd.rss_after_storms_before_learning_mb"] = _d(
            Summary.of(self.rss_after_storms_before_learning_mb))
        out["roxd.rss_split_last_slot_mb"] = self.rss_split_mb
        if self.roxd_counters:
            out["roxd.kernel_counters_last_slot"] = self.roxd_counters[-1]
        out["failures"] = self.failures
        return out


def _d(summary: Summary | None) -> dict[str, Any] | None:
    return summary.to_dict() if summary else None


def _agents(env: Env) -> list[str]:
    return available_agents(env.settings.agents, env.note)


def _make(env: Env, name: str) -> Agent:
    if name == "roxd":
        return env.roxd()
    if name == "auditd":
        return AuditdAgent(cleanup=env.cleanup)
    if name == "bpftrace":
        return BpftraceAgent(cleanup=env.cleanup, workdir=env.workdir / "bpftrace")
    return NoAgent()


def _timed(env: Env, worker: Any, wl: Workload, agent: Agent, result: OverheadResult,
           key: str) -> float:
    cpu0 = agent.cpu_s()
    out = run_json(worker, list(wl.argv))
    cpu1 = agent.cpu_s()
    if out.get("failed"):
        result.failures.append(f"{key} under {agent.name}: {out['failed']} of {out['n']} failed")
    seconds = out["elapsed_ns"] / 1e9
    result.seconds[(key, agent.name)].append(seconds)
    if cpu0 is not None and cpu1 is not None:
        result.agent_cpu_s[(key, agent.name)].append(cpu1 - cpu0)
    return seconds


def run(env: Env, worker: Any) -> OverheadResult:
    result = OverheadResult()
    agents = _agents(env)
    wls = workloads(env)
    log("overhead: warm-up (no agent, discarded)")
    for wl in wls:
        run_json(worker, list(wl.argv))
    for rep in range(env.settings.reps):
        base: dict[str, float] = {}
        for name in agents:
            log(f"overhead: repetition {rep + 1}/{env.settings.reps}, agent {name}")
            with _make(env, name) as agent:
                if isinstance(agent, RoxdAgent):
                    result.ready_s.append(agent.ready_s)
                    time.sleep(2.0)  # settle: container scan, first policy push
                    result.rss_idle_mb.append(agent.rss_mb())
                times = {wl.name: _timed(env, worker, wl, agent, result, wl.name) for wl in wls}
                if isinstance(agent, RoxdAgent):
                    result.rss_after_storms_before_learning_mb.append(agent.rss_mb())
                    if env.settings.learning:
                        times.update(_learning(env, worker, agent, wls[-1], result))
                    result.rss_after_mb.append(agent.rss_mb())
                    result.rss_split_mb = {k: round(agent.rss_mb(k), 1)
                                           for k in ("RssAnon", "RssFile", "RssShmem")}
                    result.roxd_counters.append(agent.kernel_counters())
                    result.roxd_warnings.extend(w for w in agent.warnings()
                                                if w not in result.roxd_warnings)
            if name == "none":
                base = times
            for wl_name, seconds in times.items():
                ref = base.get(wl_name.split("_bystander")[0].split("_learning")[0])
                if ref and name != "none":
                    result.ratios[(wl_name, name)].append(seconds / ref)
    return result


def _learning(env: Env, worker: Any, agent: RoxdAgent, loop: Workload,
              result: OverheadResult) -> dict[str, float]:
    """The syscall loop while another container learns (the raw sys_enter tracepoint is
    attached host-wide), then while its own container learns."""
    bystander = env.idle[0]
    times: dict[str, float] = {}
    agent.seccomp("learn", bystander.name)
    try:
        times["syscall_loop_bystander"] = _timed(env, worker, loop, agent, result,
                                                 "syscall_loop_bystander")
        agent.seccomp("learn", worker.name)
        try:
            times["syscall_loop_learning"] = _timed(env, worker, loop, agent, result,
                                                    "syscall_loop_learning")
        finally:
            agent.seccomp("stop", worker.name)
    finally:
        agent.seccomp("stop", bystander.name)
    return times
