"""Phase "startup": time from process start to "roxd is watching" (READY), and how much of it
the eBPF compile took ("eBPF programs attached in X s", timed around bcc's compile+load).
With --against REV the other roxd is started in alternation with this one (A, B, A, B, ...)
so both see the same machine."""

from __future__ import annotations

import re
from typing import Any

from bench.env import Env, log
from bench.stats import Summary

COMPILE = re.compile(r"eBPF programs attached in ([0-9.]+)s")


def _one(env: Env, variant: str, source: Any) -> tuple[float, float | None]:
    with env.roxd(variant, source=source) as roxd:
        found = COMPILE.search(roxd.stderr_path.read_text(errors="replace"))
        return roxd.ready_s, float(found.group(1)) if found else None


def run(env: Env) -> dict[str, Any]:
    variants = [("roxd", None)]
    if env.against_source is not None:
        variants.append(("against", env.against_source))
    ready: dict[str, list[float]] = {v: [] for v, _ in variants}
    compile_s: dict[str, list[float]] = {v: [] for v, _ in variants}
    for rep in range(env.settings.reps):
        for variant, source in variants:
            log(f"startup: {variant} (repetition {rep + 1})")
            r, c = _one(env, variant, source)
            ready[variant].append(r)
            if c is not None:
                compile_s[variant].append(c)
    out: dict[str, Any] = {}
    for variant, _ in variants:
        out[variant] = {"ready_s": Summary.of(ready[variant]).to_dict(3),  # type: ignore
                        "compile_s": (Summary.of(compile_s[variant]).to_dict(3)  # type: ignore
                                      if compile_s[variant] else None)}
    return out
