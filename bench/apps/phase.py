"""The `apps` phase: real applications in containers under each agent, side by side.

Agents: none; roxd with the default pack (baselines learning, as shipped); roxd-baselines
(roxd whose baselines learned the applications in a warm-up, then were locked and set to
enforce through the API, as `roxctl baselines lock W` and `mode W enforce` do); auditd
with rules for what roxd watches (bench/agents.py AUDIT_RULES_APPS); the bpftrace floor.

Each repetition runs every agent once, in an order rotated per repetition (ABCDE, BCDEA, ...)
so drift over the run hits every agent alike; each slot starts the agent, runs every
application for the same duration (the same request count for redis) and stops the agent.
A ratio compares an agent with the no-agent slot of the same repetition: throughput ratio =
none / agent, p99 ratio = agent / none, cpu/op ratio = agent / none of the CPU time charged to
the application's containers per operation (above 1: slower or costlier). The last one holds
best on a busy machine: waiting for a CPU is not in it, and an agent's in-kernel work (BPF
programs, audit records) runs in the application's tasks and is. Figures are the median of
the ratios over repetitions, with min and max."""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from typing import Any

import docker.errors

from bench import bpfstats
from bench.agents import (
    AUDIT_RULES_APPS,
    BPFTRACE_PROGRAM_APPS,
    Agent,
    AuditdAgent,
    BpftraceAgent,
    NoAgent,
    RoxdAgent,
    auditd_unavailable,
    available_agents,
    wait_for,
)
from bench.apps import image
from bench.apps.loads import (
    APPS,
    App,
    LoadError,
    Measurement,
    Stage,
    cgroup_cpu_ns,
    remove,
    remove_leftovers,
)
from bench.apps.profiling import RunProfile, enable_bpf_stats
from bench.env import Env, log
from bench.stats import Summary

AGENTS = ("none", "roxd", "roxd-baselines", "auditd", "bpftrace")
TARGET = 1.03  # issue 22: per application with the default pack
LEARN_SECONDS = 3.0  # warm-up per application under roxd-baselines, before the lock


def rotation(agents: list[str], rep: int) -> list[str]:
    k = rep % len(agents)
    return agents[k:] + agents[:k]


def choose_agents(env: Env) -> list[str]:
    return available_agents(env.settings.app_agents, env.note, what="apps: agent")


def make_agent(env: Env, name: str) -> Agent:
    if name in ("roxd", "roxd-baselines"):
        return env.roxd(variant=name)
    if name == "auditd":
        return AuditdAgent(cleanup=env.cleanup, rules=AUDIT_RULES_APPS)
    if name == "bpftrace":
        return BpftraceAgent(cleanup=env.cleanup, workdir=env.workdir / "bpftrace-apps",
                             program=BPFTRACE_PROGRAM_APPS)
    return NoAgent()


def ratios(runs: dict[tuple[int, str, str], Measurement], app: str, agent: str,
           reps: int) -> tuple[list[float], list[float]]:
    """(throughput ratios none/agent, p99 ratios agent/none) over the repetitions that have
    both slots."""
    tput, p99 = [], []
    for rep in range(reps):
        base, other = runs.get((rep, app, "none")), runs.get((rep, app, agent))
        if base is None or other is None:
            continue
        tput.append(base.throughput / other.throughput)
        p99.append(other.p99_ms / base.p99_ms)
    return tput, p99


def _cgroups_cpu_ns(stage: Stage, app: App) -> int | None:
    values = [cgroup_cpu_ns(c) for c in app.cgroups(stage)]
    return None if any(v is None for v in values) else sum(v for v in values if v is not None)


def _summary(values: list[float], digits: int = 4) -> dict[str, Any] | None:
    s = Summary.of(values)
    return s.to_dict(digits) if s else None


def learn_and_lock(stage: Stage, apps: list[App], agent: RoxdAgent) -> dict[str, Any]:
    """Run each application once (learned), then lock the baselines of the benchmark's
    containers (and only those: other containers on the host are not the benchmark's to
    enforce on) in enforce mode, and wait until the kernel holds them."""
    for app in apps:
        app.warm(stage, LEARN_SECONDS)
    locked = agent.lock_baselines(stage.marker, "enforce")
    if not locked:
        raise RuntimeError("roxd-baselines: roxd learned no workload of the benchmark's "
                           "containers in the warm-up")

    def pushed() -> dict[str, Any] | None:
        # the policy stage writes the kernel maps after the lock: measure only once they hold
        # the locked workloads (status counters are cached for about a second)
        policy = agent.status().get("policy", {})
        return policy if (policy.get("baseline_cgroups") or 0) >= 1 else None

    policy = wait_for(pushed, 30, "the locked baselines to reach the kernel", interval=0.5)
    return {"workloads": [{k: b[k] for k in ("workload", "state", "mode", "enforced_mode",
                                             "learned")} for b in locked],
            "baseline_cgroups": policy.get("baseline_cgroups"),
            "baseline_allow_entries": policy.get("baseline_allow_entries")}


def foreign_audit_daemon() -> str | None:
    """An audit daemon this benchmark did not start: it would log every application's execs
    and connects in every slot, and the auditd agent cannot replace it."""
    why = auditd_unavailable()
    return why if why and "already runs" in why else None


PROBE = ["/usr/bin/whoami"]  # never run in the client container by any load generator


def enforcement_probe(stage: Stage) -> dict[str, Any]:
    """After the measured runs: an exec the client's baseline never learned. Under a locked
    enforce baseline the kernel kills it before its first instruction (docker exec reports
    128 + SIGKILL and no output): proof that the runs were measured with enforcement on."""
    code, output = stage.ensure_client().exec_run(PROBE)
    text = output.decode(errors="replace").strip()
    return {"argv": PROBE, "exit_code": code, "output": text[:200],
            "killed": code == 137 and not text}


def run(env: Env) -> dict[str, Any]:
    s = env.settings
    if why := foreign_audit_daemon():
        env.note(f"apps: refused to run: {why}")
        return {"refused": why, "apps": list(s.apps), "agents": [], "reps": s.app_reps,
                "seconds_per_run": s.app_seconds, "figures": {}, "failures": []}
    image.build()
    out_dir = env.workdir / "apps-out"
    out_dir.mkdir(parents=True, exist_ok=True)
    out_dir.chmod(0o777)
    stage = Stage(env.containers, out_dir)
    remove_leftovers(env.containers.client)
    env.cleanup.push("apps containers", lambda: remove(stage))
    apps = [APPS[name]() for name in s.apps]
    agents = choose_agents(env)
    runs: dict[tuple[int, str, str], Measurement] = {}
    agent_cpu: dict[tuple[str, str], list[float]] = defaultdict(list)
    app_cpu: dict[tuple[int, str, str], float] = {}  # CPU µs per operation, app's cgroups
    result: dict[str, Any] = {"apps": list(s.apps), "agents": agents, "reps": s.app_reps,
                              "seconds_per_run": s.app_seconds, "orders": [],
                              "failures": [], "baselines": [], "roxd_warnings": [],
                              "bpf_stats_enabled": s.app_profile, "profile": []}
    if s.app_profile:
        enable_bpf_stats(env.cleanup)
    for app in apps:
        log(f"apps: starting {app.name}")
        app.start(stage, quick=s.app_seconds < 10)
    log("apps: warm-up, no agent (discarded)")
    for app in apps:
        app.warm(stage, min(s.app_seconds, 5.0))
    for rep in range(s.app_reps):
        order = rotation(agents, rep)
        result["orders"].append(order)
        for name in order:
            log(f"apps: repetition {rep + 1}/{s.app_reps}, agent {name}")
            with make_agent(env, name) as agent:
                roxd = isinstance(agent, RoxdAgent) and agent.pid is not None
                if name == "roxd-baselines":
                    assert isinstance(agent, RoxdAgent)
                    try:
                        result["baselines"].append(learn_and_lock(stage, apps, agent))
                    except (RuntimeError, LoadError) as exc:
                        # not measured: without enforcing baselines the slot is plain roxd
                        result["failures"].append(f"rep {rep + 1} roxd-baselines: {exc}")
                        log(f"apps: FAILED roxd-baselines set-up: {exc}")
                        continue
                elif isinstance(agent, RoxdAgent):
                    time.sleep(2.0)  # settle: container scan, first policy push
                names = bpfstats.names() if s.app_profile and roxd else {}
                for app in apps:
                    app_cpu0 = _cgroups_cpu_ns(stage, app)
                    cpu0 = agent.cpu_s()
                    prof = (RunProfile(agent.pid, out_dir / f"spy-{rep}-{name}-{app.name}",
                                       s.app_seconds, sample=rep % 2 == 1)
                            if s.app_profile and roxd else None)
                    try:
                        runs[(rep, app.name, name)] = app.run(stage, s.app_seconds,
                                                              f"{rep}-{name}")
                    except (LoadError, docker.errors.APIError) as exc:
                        result["failures"].append(f"rep {rep + 1} {app.name} under {name}: "
                                                  f"{exc}")
                        log(f"apps: FAILED {app.name} under {name}: {exc}")
                        continue
                    finally:
                        cpu1 = agent.cpu_s()
                        profiled = prof.finish(names) if prof is not None else None
                    if cpu0 is not None and cpu1 is not None:
                        agent_cpu[(app.name, name)].append(cpu1 - cpu0)
                    app_cpu1 = _cgroups_cpu_ns(stage, app)
                    done = runs[(rep, app.name, name)].ops
                    if app_cpu0 is not None and app_cpu1 is not None and done:
                        app_cpu[(rep, app.name, name)] = (app_cpu1 - app_cpu0) / 1000 / done
                    if profiled is not None:
                        result["profile"].append({"rep": rep, "app": app.name, "agent": name,
                                                  **profiled})
                if isinstance(agent, RoxdAgent):
                    if name == "roxd-baselines":
                        after = agent.baselines()
                        result["baselines"][-1]["anomalies_after_runs"] = sum(
                            b.get("anomalies", 0) for b in after
                            if stage.marker in b["workload"])
                        result["baselines"][-1]["probe"] = enforcement_probe(stage)
                    result["roxd_warnings"].extend(
                        w for w in agent.warnings() if w not in result["roxd_warnings"])
    with contextlib.suppress(Exception):
        remove(stage)
    figures: dict[str, Any] = {}
    for app in apps:
        fig: dict[str, Any] = {"unit": app.unit}
        for name in agents:
            mine = [m for (rep, a, g), m in sorted(runs.items()) if a == app.name and g == name]
            fig[name] = {
                "throughput": _summary([m.throughput for m in mine], 2),
                "p99_ms": _summary([m.p99_ms for m in mine], 3),
                "agent_cpu_s": _summary(agent_cpu.get((app.name, name), []), 2),
            }
            fig[name]["app_cpu_us_per_op"] = _summary(
                [v for (rep, a, g), v in sorted(app_cpu.items()) if a == app.name and g == name],
                2)
            if name != "none":
                tput, p99 = ratios(runs, app.name, name, s.app_reps)
                fig[name]["throughput_ratio"] = _summary(tput)
                fig[name]["p99_ratio"] = _summary(p99)
                fig[name]["cpu_per_op_ratio"] = _summary(
                    [app_cpu[(rep, app.name, name)] / app_cpu[(rep, app.name, "none")]
                     for rep in range(s.app_reps)
                     if (rep, app.name, name) in app_cpu and (rep, app.name, "none") in app_cpu])
        figures[app.name] = fig
    result["figures"] = figures
    result["runs"] = [{"rep": rep, "app": a, "agent": g, "throughput": round(m.throughput, 2),
                       "p99_ms": round(m.p99_ms, 3), "ops": m.ops,
                       "app_cpu_us_per_op": round(app_cpu.get((rep, a, g), 0.0), 2), **m.detail}
                      for (rep, a, g), m in sorted(runs.items())]
    return result


def _fmt(s: dict[str, Any] | None) -> str:
    if not s:
        return "-"
    return f"{s['median']:.3f} [{s['min']:.3f}-{s['max']:.3f}]"


def table(res: dict[str, Any]) -> str:
    """Throughput and p99 ratios per application and agent: median [min-max]."""
    if res.get("refused"):
        return f"application benchmarks: refused: {res['refused']}"
    agents = [a for a in res.get("agents", []) if a != "none"]
    lines = [f"application benchmarks: {res['reps']} repetitions x {res['seconds_per_run']:g} s"
             f" per run; ratio to no agent, median [min-max]; above 1 = slower "
             f"(target <= {TARGET} with the default pack)"]
    lines.append(f"{'app':9} {'figure':11} {'none':>16}" + "".join(f" {a:>22}" for a in agents))
    for app, fig in res.get("figures", {}).items():
        none = fig.get("none", {})
        tp = none.get("throughput")
        p99 = none.get("p99_ms")
        base_t = f"{tp['median']:.1f} {fig['unit']}" if tp else "-"
        base_p = f"{p99['median']:.2f} ms" if p99 else "-"
        row_t = f"{app:9} {'throughput':11} {base_t:>16}"
        row_p = f"{'':9} {'p99':11} {base_p:>16}"
        cpu = none.get("app_cpu_us_per_op")
        base_c = f"{cpu['median']:.1f} us" if cpu else "-"
        row_c = f"{'':9} {'cpu/op':11} {base_c:>16}"
        for a in agents:
            row_t += f" {_fmt(fig.get(a, {}).get('throughput_ratio')):>22}"
            row_p += f" {_fmt(fig.get(a, {}).get('p99_ratio')):>22}"
            row_c += f" {_fmt(fig.get(a, {}).get('cpu_per_op_ratio')):>22}"
        lines += [row_t, row_p, row_c]
    for b in res.get("baselines", []):
        lines.append(f"roxd-baselines: {len(b['workloads'])} workloads locked "
                     f"({', '.join(sorted({w['enforced_mode'] for w in b['workloads']}))}), "
                     f"{b.get('baseline_cgroups')} cgroups in the kernel map, anomalies after "
                     f"the runs: {b.get('anomalies_after_runs')}, unlearned exec afterwards "
                     f"{'killed' if (b.get('probe') or {}).get('killed') else 'NOT killed'}")
    for p in res.get("profile", []):
        head = f"profile rep {p['rep'] + 1} {p['app']:8} {p['agent']:14}"
        if "bpf_s" in p:
            progs = ", ".join(f"{n} {sec:.3f}" for n, sec in p["bpf_top"][:3])
            lines.append(f"{head} BPF {p['bpf_s']:.3f} s ({progs})")
        if "pyspy_top_modules" in p:
            mods = ", ".join(f"{m} {share:.0%}" for m, share in p["pyspy_top_modules"][:4])
            lines.append(f"{head} py-spy: {mods or 'no samples'}")
    for f in res.get("failures", []):
        lines.append(f"FAILED: {f}")
    return "\n".join(lines)
