"""Phase 3: enforcement latency.

Rules: the shipped pack plus bench/rules/bench.toml, whose names no other roxd on a shared
machine knows (so the no-agent control run is a real control).

- in kernel: `bench.forbidden-marker` kills /bench/forbidden-marker at exec. It is a static
  no-libc binary whose first instructions append a byte to /bench-out/hits: the file stays
  empty only if no forbidden exec ran a single user-space instruction.
- userspace: `bench.kill-by-argument` (a `roxd-bench-kill-me` argument) is decided by
  roxd after the event crosses the ring buffer; /bench/sleeper would sleep 5 s, and the time
  from just before execve to waitpid's return in the parent is the exec-to-death latency.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.containers import run_json
from bench.env import Env, log
from bench.stats import percentile

SLEEP_MS = "5000"


def _hits(env: Env) -> int:
    path = env.containers.out_dir / "hits"
    return path.stat().st_size if path.exists() else 0


def _reset_hits(env: Env) -> None:
    Path(env.containers.out_dir / "hits").unlink(missing_ok=True)


def _lat(out: dict[str, Any]) -> dict[str, float]:
    values = [v / 1e6 for v in out.pop("latency_ns")]
    return {"p50_ms": round(percentile(values, 50), 3), "p99_ms": round(percentile(values, 99), 3),
            "max_ms": round(max(values), 3)}


def run(env: Env, worker: Any) -> dict[str, Any]:
    s = env.settings
    res: dict[str, Any] = {}
    # the marker really runs when nothing stops it (else "0 hits" would prove nothing)
    _reset_hits(env)
    control = run_json(worker, ["/bench/killrun", "/bench/forbidden-marker", "3"])
    res["marker_control_hits_without_agent"] = _hits(env)
    if control["exited"] != 3 or _hits(env) != 3:
        env.note(f"marker control run did not write its marker: {control}, hits {_hits(env)}")
    natural = run_json(worker, ["/bench/killrun", "/bench/tiny", str(s.kill_execs)])
    res["exec_to_exit_no_agent"] = _lat(natural)
    with env.roxd("roxd", bench_rules=True) as roxd:
        log(f"latency: {s.kill_execs} forbidden execs (in-kernel kill rule)")
        _reset_hits(env)
        before = roxd.kernel_counters().get("exec_killed", 0)
        out = run_json(worker, ["/bench/killrun", "/bench/forbidden-marker", str(s.kill_execs)])
        res["kernel_kill"] = {
            "execs": out["n"], "killed": out["killed"], "ran_an_instruction": _hits(env),
            "killed_before_first_instruction": out["killed"] - min(out["killed"], _hits(env)),
            "exec_killed_counter": roxd.kernel_counters().get("exec_killed", 0) - before,
            "exec_to_death": _lat(out),
        }
        log("latency: userspace-decided kills (argv rule)")
        probe = run_json(worker, ["/bench/killrun", "/bench/sleeper", "3", SLEEP_MS,
                                  "@KILLME"])
        if probe["killed"] == 0:
            env.note("userspace kill rule killed none of 3 probes: latency not measured")
            res["userspace_kill"] = {"execs": 3, "killed": 0}
        else:
            out = run_json(worker, ["/bench/killrun", "/bench/sleeper", str(s.userspace_kills),
                                    SLEEP_MS, "@KILLME"])
            res["userspace_kill"] = {"execs": out["n"], "killed": out["killed"],
                                     "survived": out["exited"], "exec_to_death": _lat(out)}
        res["roxd_warnings"] = roxd.warnings()[-5:]
    _reset_hits(env)
    return res
