"""Phase 2: capacity. Two generators in two containers run exec (or connect) storms as fast as
they can, side by side; the rate is all their events over the longer of their two times, and
roxd's kernel counters say how many events were emitted, folded and dropped.

Variants: identical command lines (folded in the kernel once roxd saw one and no rule matched),
distinct command lines (folding cannot help), execs that raise an alert (never folded),
connects; then fold_window_s = 0; then a small ring buffer, where a ladder of paced rates looks
for the highest rate without drops and a third container checks that the in-kernel kill still
holds while events are being dropped."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from bench.agents import RoxdAgent
from bench.containers import run_json
from bench.env import Env, log


@dataclass(frozen=True)
class Storm:
    name: str
    family: str  # exec | connect
    argv: tuple[str, ...]


def storms(env: Env) -> dict[str, Storm]:
    n = str(env.settings.capacity_iters)
    nc = str(env.settings.capacity_iters * 5)
    return {s.name: s for s in (
        Storm("exec_same_args", "exec", ("/bench/execstorm", "/bench/tiny", n, "0")),
        Storm("exec_distinct_args", "exec", ("/bench/execstorm", "/bench/tiny", n, "1")),
        Storm("exec_alerting", "exec", ("/bench/execstorm", "/tmp/tiny", n, "0")),
        Storm("connect_same", "connect", ("/bench/connstorm", nc, "0")),
        Storm("connect_distinct", "connect", ("/bench/connstorm", nc, "1")),
    )}


def _parallel(gens: list[Any], argv: list[str]) -> list[dict[str, Any]]:
    results: list[dict[str, Any] | BaseException] = [RuntimeError("not run")] * len(gens)

    def one(i: int) -> None:
        try:
            results[i] = run_json(gens[i], argv)
        except BaseException as exc:  # reported below, on the main thread
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(gens))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return results  # type: ignore[return-value]


def measure(roxd: RoxdAgent, gens: list[Any], storm: Storm, rate: float = 0.0,
            extra: Any = None) -> dict[str, Any]:
    """One step: both generators (paced at rate per generator when > 0); returns the figure."""
    argv = list(storm.argv)
    if rate > 0:  # the pacing argument follows the distinct flag
        argv = argv[: 4 if storm.family == "exec" else 3] + [f"{rate:.1f}"]
    k0, s0, cpu0 = roxd.kernel_counters(), roxd.status(), roxd.cpu_s() or 0.0
    side: dict[str, Any] = {}
    side_thread = None
    if extra is not None:
        side_thread = threading.Thread(target=lambda: side.update(extra()))
        side_thread.start()
    outs = _parallel(gens, argv)
    if side_thread is not None:
        side_thread.join()
    wall = max(o["elapsed_ns"] for o in outs) / 1e9
    cpu1 = roxd.cpu_s() or 0.0
    time.sleep(1.0)  # let roxd drain what was emitted before reading what it handled
    k1, s1 = roxd.kernel_counters(), roxd.status()
    f = storm.family

    def delta(key: str) -> int:
        return k1.get(key, 0) - k0.get(key, 0)

    events = sum(o["n"] for o in outs)
    step = {
        "storm": storm.name, "paced_rate_per_generator": rate or None,
        "events": events, "seconds": round(wall, 3), "rate_per_s": round(events / wall, 1),
        "seen": delta(f"{f}_seen"), "emitted": delta(f"{f}_emitted"),
        "folded": delta(f"{f}_folded"), "dropped": delta(f"{f}_dropped"),
        "handled_by_roxd": s1["events"]["total"] - s0["events"]["total"],
        "alerts": s1["alerts"]["total"] - s0["alerts"]["total"],
        "roxd_cpu_s": round(cpu1 - cpu0, 3),
        "failed": sum(o.get("failed", 0) for o in outs),
    }
    if side:
        step["kill_during_step"] = side
    log(f"capacity: {storm.name}{f' @{rate:.0f}/s/gen' if rate else ''}: "
        f"{step['rate_per_s']:.0f}/s, emitted {step['emitted']}, folded {step['folded']}, "
        f"dropped {step['dropped']}, roxd cpu {step['roxd_cpu_s']}s")
    return step


def run(env: Env) -> dict[str, Any]:
    gens = [env.containers.start(f"gen-{i}") for i in range(2)]
    for g in gens:
        g.exec_run(["cp", "/bench/tiny", "/tmp/tiny"])
    st = storms(env)
    res: dict[str, Any] = {}
    with env.roxd("roxd") as roxd:
        time.sleep(1.0)
        res["default"] = {name: measure(roxd, gens, storm) for name, storm in st.items()}
    with env.roxd("roxd-fold0", fold_window_s=0.0) as roxd:
        time.sleep(1.0)
        res["fold_window_0"] = {name: measure(roxd, gens, st[name])
                                for name in ("exec_same_args", "connect_same")}
    pages = env.settings.capacity_small_ringbuf_pages
    with env.roxd("roxd-smallrb", bench_rules=True, ringbuf_pages=pages,
                  fold_window_s=0.0) as roxd:
        time.sleep(1.0)
        res[f"ringbuf_{pages}_pages"] = _ladder(env, roxd, gens, st["exec_distinct_args"])
    return res


def _ladder(env: Env, roxd: RoxdAgent, gens: list[Any], storm: Storm) -> dict[str, Any]:
    killer = env.containers.start("killer")
    n_kill = 200

    def kill_check() -> dict[str, Any]:
        hits = env.containers.out_dir / "hits"
        hits.unlink(missing_ok=True)
        out = run_json(killer, ["/bench/killrun", "/bench/forbidden-marker", str(n_kill)])
        out.pop("latency_ns", None)
        return {"execs": out["n"], "killed": out["killed"],
                "ran_an_instruction": hits.stat().st_size if hits.exists() else 0}

    full = measure(roxd, gens, storm, extra=kill_check)
    steps = [full]
    best: dict[str, Any] | None = full if full["dropped"] == 0 else None
    if best is None:
        max_per_gen = full["rate_per_s"] / len(gens)
        for frac in env.settings.ladder:
            step = measure(roxd, gens, storm, rate=frac * max_per_gen)
            steps.append(step)
            if step["dropped"] == 0:
                best = step
                break
    return {"steps": steps,
            "highest_rate_without_drops": best["rate_per_s"] if best else None,
            "enforcement_while_overloaded": full.get("kill_during_step")}
