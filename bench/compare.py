"""Regression guard: this run against the previous results file, figure by figure.

Every {median, min, max} summary present in both runs is compared (ratios to no agent, BPF ns
per event, roxd CPU per event, READY seconds, ...). The noise of a figure is what its own
repetitions spread over: half of (max - min), the larger of the two runs'. A change of the
median beyond that noise is flagged ("MOVED"); within it, it is printed as noise. With one
repetition there is no spread to measure: such figures are printed, never flagged."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SKIP = ("programs", "workload_s", "settings", "machine")  # detail, not figures to guard


@dataclass(frozen=True)
class Change:
    key: str
    old: float
    new: float
    noise: float
    moved: bool

    @property
    def relative(self) -> float:
        return (self.new - self.old) / self.old if self.old else 0.0

    def line(self) -> str:
        flag = "MOVED" if self.moved else "noise" if self.noise else "n/a  "
        return (f"{flag} {self.key:60} {self.old:>10.4g} -> {self.new:<10.4g} "
                f"({self.relative:+.1%}; noise ±{self.noise:.3g})")


def summaries(d: Any, prefix: str = "") -> dict[str, dict[str, float]]:
    """Flat key -> summary dict for every {median, min, max} in a results tree."""
    out: dict[str, dict[str, float]] = {}
    if isinstance(d, dict):
        if {"median", "min", "max"} <= d.keys():
            return {prefix: d}
        for k, v in d.items():
            if k in SKIP:
                continue
            out.update(summaries(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def compare(old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    a, b = summaries(old), summaries(new)
    changes = []
    for key in sorted(a.keys() & b.keys()):
        o, n = a[key], b[key]
        noise = max((o["max"] - o["min"]) / 2, (n["max"] - n["min"]) / 2)
        moved = noise > 0 and abs(n["median"] - o["median"]) > noise
        changes.append(Change(key, o["median"], n["median"], noise, moved))
    return changes


def previous(out_dir: Path) -> dict[str, Any] | None:
    """The latest results in out_dir before this run writes its own, if any."""
    path = out_dir / "latest.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def table(old: dict[str, Any], new: dict[str, Any]) -> str:
    changes = compare(old, new)
    if not changes:
        return "regression guard: no figure in common with the previous results"
    moved = [c for c in changes if c.moved]
    lines = [f"regression guard: {len(changes)} figures compared with the previous run "
             f"({old.get('started', '?')}, commit {str(old.get('roxd_commit', '?'))[:10]}); "
             f"{len(moved)} moved beyond their noise"]
    lines += [c.line() for c in changes]
    return "\n".join(lines)
