"""`python -m bench [--quick] [...]`: run the benchmark phases and write bench/results/."""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import capacity, compare, latency, overhead, profile, report, startup
from bench.apps import phase as apps_phase
from bench.apps.loads import APPS
from bench.cleanup import Cleanup
from bench.containers import Containers, ensure_engine_and_image
from bench.env import Env, Settings, log
from bench.programs import build_all

REPO = Path(__file__).resolve().parents[1]

QUICK = Settings(reps=3, exec_iters=2000, connect_iters=20000, syscall_iters=3_000_000,
                 capacity_iters=1000, userspace_kills=50, ladder=(0.5, 0.25, 0.125),
                 app_reps=2, app_seconds=5.0)
FULL = Settings()
PHASES = ("overhead", "latency", "capacity", "profile", "startup", "apps")


def _names(p: argparse.ArgumentParser, text: str, known: tuple[str, ...],
           what: str) -> tuple[str, ...]:
    """A comma list of `known` names, in its order; an unknown one is a usage error that names
    it and the known ones."""
    names = tuple(x.strip() for x in text.split(","))
    if unknown := set(names) - set(known):
        p.error(f"unknown {what}: {', '.join(sorted(unknown))} (known: {', '.join(known)})")
    return names


def parse(argv: list[str] | None) -> tuple[Settings, argparse.Namespace]:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="fewer repetitions and iterations "
                   "(about 3 minutes instead of 15)")
    p.add_argument("--reps", type=int, help="alternating repetitions per agent")
    p.add_argument("--exec-iters", type=int, help="execs per exec storm")
    p.add_argument("--connect-iters", type=int, help="connects per connect storm")
    p.add_argument("--syscall-iters", type=int, help="syscalls per syscall loop")
    p.add_argument("--capacity-iters", type=int, help="execs per generator per capacity step "
                   "(connect steps use 5x)")
    p.add_argument("--kill-execs", type=int, help="forbidden execs for the in-kernel kill")
    p.add_argument("--userspace-kills", type=int, help="execs for the userspace kill latency")
    p.add_argument("--idle-containers", type=int, help="idle containers present throughout")
    p.add_argument("--agents", help="comma list of none,roxd,auditd,bpftrace")
    p.add_argument("--app-reps", type=int, help="apps phase: alternating repetitions "
                   "(default 3, --quick 2)")
    p.add_argument("--app-seconds", type=float, help="apps phase: seconds per application run "
                   "(default 20, --quick 5)")
    p.add_argument("--apps", help=f"apps phase: comma list of {','.join(APPS)}")
    p.add_argument("--app-agents", help="apps phase: comma list of "
                   f"{','.join(apps_phase.AGENTS)} (none is always added)")
    p.add_argument("--app-profile", action="store_true",
                   help="apps phase: per run under roxd, its BPF programs' kernel time "
                   "(kernel.bpf_stats_enabled=1 for the phase) in odd repetitions, a py-spy "
                   "sample of roxd in even ones")
    p.add_argument("--phases", help=f"comma list of {','.join(PHASES)}")
    p.add_argument("--no-learning", action="store_true",
                   help="skip the syscall loops with seccomp learning")
    p.add_argument("--roxd-rev", metavar="REV",
                   help="run roxd from this git revision (exported with git archive into the "
                   "work dir) instead of the checkout as it is: uncommitted edits of others "
                   "cannot break or colour the run")
    p.add_argument("--against", metavar="REV",
                   help="profile phase: run roxd from this git revision side by side with the "
                   "one under test (both attached at once, so both see the same events under "
                   "the same load) and report both programs' costs: a paired comparison that "
                   "holds on a busy machine")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results",
                   help="results directory (default bench/results)")
    args = p.parse_args(argv)
    s = QUICK if args.quick else FULL
    changes: dict[str, Any] = {}
    for field in ("reps", "exec_iters", "connect_iters", "syscall_iters", "capacity_iters",
                  "kill_execs", "userspace_kills", "idle_containers"):
        value = getattr(args, field)
        if value is not None:
            changes[field] = value
    if args.agents:
        agents = tuple(a.strip() for a in args.agents.split(","))
        if "none" not in agents:
            agents = ("none", *agents)  # ratios need the no-agent run of each repetition
        changes["agents"] = agents
    for field in ("app_reps", "app_seconds"):
        value = getattr(args, field)
        if value is not None:
            if value <= 0:
                p.error(f"--{field.replace('_', '-')} must be positive, not {value}")
            changes[field] = value
    if args.apps:
        changes["apps"] = _names(p, args.apps, APPS, "apps")
    if args.app_agents:
        app_agents = _names(p, args.app_agents, apps_phase.AGENTS, "app agents")
        if "none" not in app_agents:
            app_agents = ("none", *app_agents)  # ratios need the no-agent slot
        changes["app_agents"] = app_agents
    if args.phases:
        changes["phases"] = _names(p, args.phases, PHASES, "phases")
    if args.app_profile:
        changes["app_profile"] = True
    if args.no_learning:
        changes["learning"] = False
    return dataclasses.replace(s, **changes), args


def export_rev(rev: str, dest: Path) -> Path:
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def _commit(rev: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), "rev-parse", rev], capture_output=True,
                          text=True).stdout.strip()


def foreign_agents() -> list[str]:
    """Other roxd, auditd or bpftrace processes: they trace our workloads too (shared hosts)."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "-m roxd " in cmd or cmd.startswith(("auditd", "/sbin/auditd", "bpftrace")):
            found.append(f"pid {d.name}: {cmd.strip()[:120]}")
    return found


def write_apps(results: dict[str, Any], out_dir: Path) -> Path:
    """bench/results/apps-<ts>.json: the apps phase with the run's machine and settings, on
    its own (the lead compares it across runs without the other phases)."""
    doc = {k: results[k] for k in ("machine", "quick", "started", "roxd_source", "roxd_commit")
           if k in results}
    doc["apps"] = results["apps"]
    doc["notes"] = results.get("notes_start", [])
    return report.write_json(doc, out_dir, "apps", time.strftime("%Y%m%dT%H%M%S"))


def main(argv: list[str] | None = None) -> int:
    settings, args = parse(argv)
    if os.geteuid() != 0:
        print("bench: needs root (roxd, auditd and bpftrace load kernel programs)",
              file=sys.stderr)
        return 1
    cleanup = Cleanup()
    cleanup.install_signal_handlers()
    started = time.monotonic()
    results: dict[str, Any] = {"machine": report.machine(), "quick": args.quick,
                               "settings": dataclasses.asdict(settings),
                               "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    workdir = Path(tempfile.mkdtemp(prefix="roxd-bench-"))
    cleanup.push("work dir", lambda: shutil.rmtree(workdir, ignore_errors=True))
    try:
        ensure_engine_and_image()
        bin_dir, out_dir = workdir / "bin", workdir / "out"
        build_all(bin_dir)
        out_dir.mkdir()
        out_dir.chmod(0o777)
        containers = Containers(bin_dir, out_dir, cleanup)
        source = export_rev(args.roxd_rev, workdir / "src") if args.roxd_rev else REPO
        results["roxd_source"] = args.roxd_rev or "checkout"
        results["roxd_commit"] = _commit(args.roxd_rev or "HEAD")
        for other in foreign_agents():
            env_note = f"another tracer was running during the whole run: {other}"
            results.setdefault("notes_start", []).append(env_note)
            log(f"note: {env_note}")
        env = Env(settings, cleanup, containers, workdir, workdir / "cache", source)
        if args.against:
            env.against_source = export_rev(args.against, workdir / "against")
            results["against"] = {"rev": args.against, "commit": _commit(args.against)}
        env.idle = [containers.start(f"idle-{i}") for i in range(settings.idle_containers)]
        worker = containers.start("worker")
        for phase in settings.phases:
            t0 = time.monotonic()
            log(f"phase {phase}")
            if phase == "overhead":
                results["overhead"] = overhead.run(env, worker).to_dict()
            elif phase == "latency":
                results["latency"] = latency.run(env, worker)
            elif phase == "capacity":
                results["capacity"] = capacity.run(env)
            elif phase == "profile":
                results["profile"] = profile.run(env, worker)
            elif phase == "startup":
                results["startup"] = startup.run(env)
            elif phase == "apps":
                results["apps"] = apps_phase.run(env)
                results["apps"]["loadavg_after"] = Path("/proc/loadavg").read_text().split()[:3]
                results["apps"]["path"] = str(write_apps(results, args.out))
            results.setdefault("phase_seconds", {})[phase] = round(time.monotonic() - t0, 1)
        results["notes"] = results.pop("notes_start", []) + env.notes
    except KeyboardInterrupt:
        print("bench: interrupted; cleaning up", file=sys.stderr)
        cleanup.run_all()
        return 130
    finally:
        cleanup.run_all()
    results["total_seconds"] = round(time.monotonic() - started, 1)
    before = compare.previous(args.out)
    if before is not None:
        guard = compare.compare(before, results)
        results["regression_guard"] = {
            "against": before.get("started"),
            "moved": [c.key for c in guard if c.moved]}
    path = report.write(results, args.out)
    print(report.table(results))
    if "apps" in results:
        print(apps_phase.table(results["apps"]))
    if before is not None:
        print(compare.table(before, results))
    print(f"bench: results in {path} (and {args.out / 'latest.json'}); "
          f"{results['total_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
