"""Run benign workloads under a real roxd and count the alerts each one caused.

roxd runs with the shipped configuration (config/roxd.toml) and the shipped rule pack; only
its state directory and socket are private to the run. Alerts are read from its
`--print-alerts` stream, the raw tap before noise control: every alert as raised, unfolded and
unthrottled, so nothing a rate limit would hide is missed. Each alert is attributed to the
workload that made its container (by container id, including the containers a `docker build`
ran its RUN steps in); alerts of other containers (other users of the same engine) are ignored,
and host alerts are reported apart.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.benign.harness import Ctx, WorkloadFailed
from bench.benign.workloads import Workload

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Roxd:
    """A roxd process with the shipped config, its alerts collected by a reader thread."""

    workdir: Path
    proc: subprocess.Popen[str]
    alerts: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def start(cls, workdir: Path, python: str = sys.executable,
              tree: Path = REPO) -> Roxd:
        """roxd from `tree` (a checkout: this one, or another to compare with), with that
        tree's shipped config and rules."""
        cfg = workdir / "roxd.toml"
        shutil.copy(tree / "config" / "roxd.toml", cfg)
        err = (workdir / "stderr.log").open("w")
        env = {**os.environ, "PYTHONPATH": str(tree)}
        proc = subprocess.Popen(
            [python, "-m", "roxd", "--config", str(cfg), "--state-dir", str(workdir / "state"),
             "--socket", str(workdir / "roxd.sock"), "--print-alerts"],
            stdout=subprocess.PIPE, stderr=err, text=True, cwd=tree, env=env)
        rx = cls(workdir, proc)
        threading.Thread(target=rx._read, daemon=True).start()
        deadline = time.monotonic() + 120
        while "roxd is watching" not in rx.stderr():
            if proc.poll() is not None or time.monotonic() > deadline:
                rx.stop()
                raise RuntimeError(f"roxd did not start:\n{rx.stderr()[-3000:]}")
            time.sleep(0.2)
        return rx

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            if obj.get("type") == "alert":
                with self.lock:
                    self.alerts.append(obj)

    def stderr(self) -> str:
        return (self.workdir / "stderr.log").read_text(errors="replace")

    def snapshot(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.alerts)

    def settle(self, quiet_s: float = 2.0, timeout: float = 20.0) -> None:
        """Wait until no new alert arrived for quiet_s (roxd caught up with the ring buffer)."""
        deadline = time.monotonic() + timeout
        n, since = len(self.snapshot()), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.25)
            m = len(self.snapshot())
            if m != n:
                n, since = m, time.monotonic()
            elif time.monotonic() - since >= quiet_s:
                return

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class Result:
    workload: Workload
    ok: bool = False
    error: str = ""
    seconds: float = 0.0
    container_ids: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        rules = Counter(a["rule"]["id"] for a in self.alerts)
        return {
            "name": self.workload.name, "category": self.workload.category,
            "description": self.workload.description, "ran": self.ok, "error": self.error,
            "seconds": round(self.seconds, 1), "containers": len(self.container_ids),
            "alerts": len(self.alerts), "rules": dict(sorted(rules.items())),
            "notes": self.notes,
            "samples": [{"rule": a["rule"]["id"], "exe": a["process"]["exe"],
                         "comm": a["process"].get("comm"),
                         "event": {k: v for k, v in (a.get("event") or {}).items()
                                   if k in ("type", "file", "syscall", "connect")},
                         "args": a["process"]["args"][:8],
                         "parent": (a["process"]["ancestors"][0]["exe"]
                                    if a["process"].get("ancestors") else None),
                         "session": a["process"].get("session")}
                        for a in self.alerts[:5]],
        }


def run_workloads(workloads: list[Workload], roxd: Roxd,
                  log=lambda msg: print(msg, file=sys.stderr)) -> list[Result]:
    """Run each workload (background ones are finished at the end), then attribute alerts."""
    results: list[Result] = []
    ctxs: list[tuple[Result, Ctx]] = []
    ordered = sorted(workloads, key=lambda w: w.finish is None)  # background ones first
    for w in ordered:
        res, ctx = Result(w), Ctx(w.name)
        results.append(res)
        ctxs.append((res, ctx))
        log(f"benign: {w.name} ...")
        t0 = time.monotonic()
        try:
            w.start(ctx)
            res.ok = w.finish is None
        except (WorkloadFailed, subprocess.TimeoutExpired, OSError) as exc:
            res.error = str(exc)[-600:]
        except Exception as exc:  # a bug in a workload: report it, run the others
            res.error = f"{type(exc).__name__}: {exc}; {traceback.format_exc()[-600:]}"
        res.seconds = time.monotonic() - t0
        if w.finish is None:
            ctx.cleanup()
    for res, ctx in ctxs:
        if res.workload.finish is not None:
            t0 = time.monotonic()
            if not res.error:
                try:
                    res.workload.finish(ctx)
                    res.ok = True
                except (WorkloadFailed, subprocess.TimeoutExpired, OSError) as exc:
                    res.error = str(exc)[-600:]
            res.seconds += time.monotonic() - t0
            ctx.cleanup()
    roxd.settle()
    alerts = roxd.snapshot()
    claimed: set[str] = set()
    for res, ctx in ctxs:
        # a container belongs to one workload: the first that recorded it
        ctx.container_ids -= claimed
        claimed |= ctx.container_ids
        res.container_ids = ctx.container_ids
        res.notes = ctx.notes
        res.alerts = [a for a in alerts if (a.get("container") or {}).get("id")
                      in ctx.container_ids]
    return results


def host_alerts(roxd: Roxd) -> list[dict[str, Any]]:
    return [a for a in roxd.snapshot() if not a.get("container")]


def format_table(results: list[Result]) -> str:
    rows = [("WORKLOAD", "CATEGORY", "RAN", "ALERTS", "RULES")]
    for r in results:
        d = r.to_dict()
        rules = ", ".join(f"{k} x{v}" for k, v in d["rules"].items()) or "-"
        rows.append((d["name"], d["category"], "yes" if d["ran"] else "NO", str(d["alerts"]),
                     rules))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(widths[i]) for i, c in enumerate(row[:4])) + "  " + row[4]
             for row in rows]
    total = sum(len(r.alerts) for r in results)
    quiet = sum(1 for r in results if r.ok and not r.alerts)
    ran = sum(1 for r in results if r.ok)
    lines.append(f"\n{ran}/{len(results)} workloads ran; {quiet} quiet; {total} alerts in all "
                 "(target: 0)")
    for r in results:
        if r.error:
            lines.append(f"  {r.workload.name} did not run: {r.error.splitlines()[0][:300]}")
    return "\n".join(lines)


def tempdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="roxd-benign-"))
