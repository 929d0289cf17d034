"""`python -m bench.detection [--only T1059.004,...]`: Atomic Red Team's Linux tests against
roxd; JSON under bench/results/detection-<timestamp>.json, a table on stdout."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.detection import atomics as art
from bench.detection.misses import miss_reason
from bench.detection.roxd import REPO, Roxd
from bench.detection.runner import IMAGE, LABEL, Result, Runner, attribute, new_result
from bench.detection.score import score, table
from bench.detection.tactics import UnknownTechnique


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.detection", description=__doc__)
    p.add_argument("--atomics", type=Path, default=None,
                   help="Atomic Red Team checkout or its atomics/ folder (default: $ROXD_ATOMICS,"
                   " else ../shared/atomic-red-team beside the repository)")
    p.add_argument("--only", help="comma list of techniques (T1059.004; a parent takes its "
                   "sub-techniques) or tests (T1053.003-2)")
    p.add_argument("--timeout", type=float, default=20.0, help="seconds per test (default 20)")
    p.add_argument("--parallel", type=int, default=2, help="tests at once, 1 or 2 (default 2)")
    p.add_argument("--config", type=Path, default=REPO / "config/roxd.toml",
                   help="roxd config (default the shipped config/roxd.toml)")
    p.add_argument("--rules", type=Path, action="append",
                   help="rule file or directory, repeatable (default the shipped rules/)")
    p.add_argument("--enforce", action="store_true", help="let rules' kill/isolate actions act "
                   "(default --monitor: a kill would cut a test short and hide later detections)")
    p.add_argument("--out", type=Path, default=REPO / "bench/results",
                   help="results directory (default bench/results)")
    args = p.parse_args(argv)
    if args.parallel not in (1, 2):
        p.error("--parallel must be 1 or 2 (a 2-core machine)")
    if args.timeout <= 0:
        p.error("--timeout must be positive")
    return args


def log(text: str) -> None:
    print(f"detection: {text}", file=sys.stderr, flush=True)


def ensure_engine_and_image() -> bool:
    """An engine that answers and the atomic image; True when the engine was started here."""
    started = subprocess.run([REPO / "scripts/dockerd.sh", "status"]).returncode != 0
    if started:
        subprocess.run([REPO / "scripts/dockerd.sh", "start"], check=True)
    subprocess.run([REPO / "scripts/test-images-atomic.sh"], check=True)
    return started


def select(tests: list[art.AtomicTest], only: str | None) -> tuple[list[art.AtomicTest],
                                                                   list[Result]]:
    """The tests to run, and the Linux tests that will not run with their reason."""
    linux = art.only(art.linux_tests(tests), only)
    run, skipped = [], []
    for t in linux:
        reason = t.static_skip
        if reason is None:
            run.append(t)
            continue
        r = new_result(t)
        r.skip_reason = reason
        skipped.append(r)
    return run, skipped


def remove_leftovers(client: Any, older_than_s: float = 900.0) -> None:
    """Containers of an earlier run that was killed hard. Only old ones: a test's container
    lives under a minute, and another run going on now (a smoke test beside a full run) must
    keep its own."""
    now = datetime.now(UTC)
    for c in client.containers.list(all=True, filters={"label": LABEL}):
        created = datetime.fromisoformat(c.attrs["Created"][:26].rstrip("Z") + "+00:00")
        if (now - created).total_seconds() > older_than_s:
            with contextlib.suppress(Exception):  # gone meanwhile
                c.remove(force=True)


def _interrupt(_signum: int, _frame: Any) -> None:
    """SIGTERM unwinds like Ctrl-C: run_all's finally stops roxd and removes the containers."""
    raise KeyboardInterrupt


def run_all(tests: list[art.AtomicTest], args: argparse.Namespace,
            folder: Path) -> tuple[list[Result], dict[str, Any]]:
    import docker

    engine_started = ensure_engine_and_image()
    client = docker.DockerClient(base_url="unix:///var/run/docker.sock", timeout=60)
    remove_leftovers(client)
    workdir = Path(tempfile.mkdtemp(prefix="roxd-detection-"))
    signal.signal(signal.SIGTERM, _interrupt)
    rules = args.rules or [REPO / "rules"]
    roxd = Roxd(workdir, args.config, rules, monitor=not args.enforce)
    run_id = uuid.uuid4().hex[:6]
    runner = Runner(client, roxd, folder, run_id, timeout_s=args.timeout)
    results: list[Result] = []
    began = time.monotonic()
    try:
        log(f"starting roxd ({args.config}, rules {', '.join(map(str, rules))})")
        roxd.start()
        with ThreadPoolExecutor(max_workers=args.parallel) as pool:
            for i, r in enumerate(pool.map(runner.run, tests), start=1):
                results.append(r)
                attribute(r, roxd)  # provisional: the final count is made at the end
                mark = ("ALERT+PHASE" if r.in_phase else "alert" if r.any_alert else "-") \
                    if r.status == "executed" else f"skip ({r.skip_reason[:60]})"
                log(f"[{i}/{len(tests)}] {r.key} {r.name[:50]}: {mark}")
                r.alerts, r.any_alert, r.in_phase = [], False, False
                if not roxd.alive():
                    raise RuntimeError("roxd died during the run:\n" + roxd.stderr()[-3000:])
        # events still queued in roxd (a loaded machine): give them time before attributing
        time.sleep(3.0)
        for r in results:
            attribute(r, roxd)
        meta = {"seconds": round(time.monotonic() - began, 1), "host_alerts": roxd.host_alerts,
                "roxd_log_tail": roxd.stderr()[-2000:]}
    finally:
        roxd.stop()
        shutil.rmtree(workdir, ignore_errors=True)  # roxd's state, socket and log of this run
        for c in client.containers.list(all=True, filters={"label": f"{LABEL}={run_id}"}):
            c.remove(force=True)
        client.close()
        if engine_started:  # leave the machine as it was
            subprocess.run([REPO / "scripts/dockerd.sh", "stop"])
    return results, meta


def git_rev() -> str:
    out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "rules"],
                           capture_output=True, text=True).stdout.strip()
    return out.stdout.strip() + ("+dirty-rules" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        folder = art.atomics_dir(args.atomics or art.default_atomics(REPO))
        tests = art.load(folder)
        to_run, static_skips = select(tests, args.only)
    except (art.AtomicsError, UnknownTechnique) as exc:
        print(f"detection: {exc}", file=sys.stderr)
        return 2
    log(f"{len(to_run)} Linux sh/bash tests to run, {len(static_skips)} Linux tests skipped "
        f"before running; atomics {folder}")
    results, meta = run_all(to_run, args, folder)
    for r in results:
        if r.status == "executed" and not r.in_phase:
            r.miss_reason = miss_reason(r.key, r.technique)
    all_results = sorted(results + static_skips, key=lambda r: (r.technique, r.number))
    summary = score(all_results)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    doc = {"kind": "detection-bench", "time": stamp, "roxd_rev": git_rev(),
           "atomics": str(folder), "image": IMAGE, "only": args.only,
           "rules": [str(r) for r in (args.rules or [REPO / "rules"])],
           "timeout_s": args.timeout, "monitor": not args.enforce, **meta,
           "summary": summary, "results": [r.to_dict() for r in all_results]}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"detection-{stamp}.json"
    path.write_text(json.dumps(doc, indent=1) + "\n")
    print(table(summary))
    print(f"results: {os.path.relpath(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
