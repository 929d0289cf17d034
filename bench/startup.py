"""Phase "startup": time from process start to "roxd is watching" (READY), how much of it the
eBPF compile took ("eBPF programs attached in X s", timed around bcc's compile+load), the
process's CPU seconds at READY (every thread; read with psutil as soon as READY is seen), and,
from a roxd that logs them ("start-up stages: {...}", roxd/startup_timing.py), the wall and
CPU seconds of each stage. With --against REV the other roxd is started in alternation with
this one (A, B, A, B, ...) so both see the same machine. CPU seconds say more than wall
seconds on a busy host: prefer them when the load average is high."""

from __future__ import annotations

import json
import re
from typing import Any

import psutil

from bench.env import Env, log
from bench.stats import Summary

COMPILE = re.compile(r"eBPF programs attached in ([0-9.]+)s")
STAGES = re.compile(r"start-up stages: (\{.*\})$", re.MULTILINE)


def _one(env: Env, variant: str, source: Any) -> dict[str, Any]:
    with env.roxd(variant, source=source) as roxd:
        try:
            times = psutil.Process(roxd.pid).cpu_times()
            cpu: float | None = times.user + times.system
        except psutil.Error:
            cpu = None
        text = roxd.stderr_path.read_text(errors="replace")
        found = COMPILE.search(text)
        stages = STAGES.search(text)
        return {"ready_s": roxd.ready_s, "compile_s": float(found.group(1)) if found else None,
                "cpu_s": cpu, "stages": json.loads(stages.group(1)) if stages else None}


def _summary(values: list[float]) -> dict[str, Any] | None:
    return Summary.of(values).to_dict(3) if values else None  # type: ignore[arg-type]


def _stage_table(runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Per stage (in the order of the first run): median [min-max] of wall and CPU seconds."""
    logged = [r["stages"] for r in runs if r["stages"]]
    if not logged:
        return None
    names = [s["name"] for s in logged[0]["stages"]]
    table: dict[str, Any] = {}
    for name in names:
        rows = [s for run in logged for s in run["stages"] if s["name"] == name]
        table[name] = {"thread": rows[0]["thread"],
                       "wall_s": _summary([s["wall_s"] for s in rows]),
                       "cpu_s": _summary([s["cpu_s"] for s in rows])}
    return {"ready_s_logged": _summary([r["ready_s"] for r in logged if r["ready_s"]]),
            "process_cpu_s_logged": _summary([r["process_cpu_s"] for r in logged
                                              if r["process_cpu_s"] is not None]),
            "stages": table}


def run(env: Env) -> dict[str, Any]:
    variants = [("roxd", None)]
    if env.against_source is not None:
        variants.append(("against", env.against_source))
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v, _ in variants}
    for rep in range(env.settings.reps):
        for variant, source in variants:
            log(f"startup: {variant} (repetition {rep + 1})")
            runs[variant].append(_one(env, variant, source))
    try:
        load = list(psutil.getloadavg())
    except OSError:
        load = []
    out: dict[str, Any] = {"loadavg_at_end": load}
    for variant, _ in variants:
        got = runs[variant]
        out[variant] = {
            "ready_s": _summary([r["ready_s"] for r in got]),
            "compile_s": _summary([r["compile_s"] for r in got if r["compile_s"] is not None]),
            "cpu_at_ready_s": _summary([r["cpu_s"] for r in got if r["cpu_s"] is not None]),
            "stages": _stage_table(got),
        }
    return out
