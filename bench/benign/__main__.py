"""`python -m bench.benign`: run the benign suite under roxd; JSON in bench/results/, a table
on stdout. The target is zero alerts. See docs/benign.md."""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.benign import image
from bench.benign.runner import REPO, Roxd, format_table, host_alerts, run_workloads, tempdir
from bench.benign.workloads import WORKLOADS, by_name, remove_images


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.benign", description=__doc__)
    p.add_argument("--only", help="comma list of workload names (default: all)")
    p.add_argument("--quick", action="store_true", help="only the quick subset")
    p.add_argument("--list", action="store_true", help="list the workloads and exit")
    p.add_argument("--rebuild-image", action="store_true", help="rebuild the base image")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results",
                   help="results directory (default bench/results)")
    p.add_argument("--roxd-from", type=Path, default=REPO, metavar="DIR",
                   help="run roxd (with its shipped config and rules) from this checkout, "
                   "e.g. an older one to compare with (default: this one)")
    p.add_argument("--fail-on-alerts", action="store_true",
                   help="exit 1 when any workload alerted or did not run")
    return p.parse_args(argv)


def _commit(tree: Path) -> str:
    out = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(tree), "status", "--porcelain", "--",
                            "roxd", "rules", "config"], capture_output=True, text=True).stdout
    return out.stdout.strip() + ("+dirty" if dirty.strip() else "")


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.list:
        for w in WORKLOADS:
            print(f"{w.name:32} {w.category:14} {w.description}")
        return 0
    chosen = list(WORKLOADS)
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in by_name()]
        if unknown:
            print(f"unknown workload(s): {', '.join(unknown)} (see --list)", file=sys.stderr)
            return 2
        chosen = [by_name()[n] for n in names]
    elif args.quick:
        chosen = [w for w in WORKLOADS if w.quick]
    if subprocess.run(["docker", "version"], capture_output=True).returncode != 0:
        print("no Docker engine answers (scripts/dockerd.sh start)", file=sys.stderr)
        return 2
    image.build(force=args.rebuild_image)
    work = tempdir()
    started = time.time()
    tree = args.roxd_from.resolve()
    if not (tree / "roxd" / "__main__.py").exists():
        print(f"--roxd-from {tree}: not a roxd checkout (no roxd/__main__.py)", file=sys.stderr)
        return 2
    roxd = Roxd.start(work, tree=tree)
    try:
        results = run_workloads(chosen, roxd)
        host = host_alerts(roxd)
    finally:
        roxd.stop()
        remove_images()
    rules_version = ""
    for line in roxd.stderr().splitlines():
        if "rules" in line and "version" in line:
            rules_version = line.strip()[-120:]
            break
    report = {
        "suite": "benign", "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(time.time() - started, 1), "kernel": platform.release(),
        "roxd_config": "config/roxd.toml (shipped), shipped rule pack", "rules": rules_version,
        "roxd_from": str(tree), "roxd_commit": _commit(tree),
        "alert_source": "--print-alerts (raw, before noise control)",
        "workloads": [r.to_dict() for r in results],
        "totals": {"workloads": len(results), "ran": sum(r.ok for r in results),
                   "quiet": sum(1 for r in results if r.ok and not r.alerts),
                   "alerts": sum(len(r.alerts) for r in results)},
        "host_alerts_during_run": len(host),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"benign-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(started))}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(format_table(results))
    print(f"\nresults: {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")
    shutil.rmtree(work, ignore_errors=True)
    if args.fail_on_alerts and (report["totals"]["alerts"] or
                                report["totals"]["ran"] < len(results)):
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
