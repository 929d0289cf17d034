"""Per-tactic and overall scores of a run, the stdout table and the JSON document."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from bench.detection.runner import Result
from bench.detection.tactics import TACTICS


@dataclass
class Score:
    executed: int = 0
    alerted: int = 0
    in_phase: int = 0

    def add(self, r: Result) -> None:
        self.executed += 1
        self.alerted += r.any_alert
        self.in_phase += r.in_phase

    def to_dict(self) -> dict[str, Any]:
        def pct(n: int) -> float | None:
            return round(100.0 * n / self.executed, 1) if self.executed else None
        return {"executed": self.executed, "alerted": self.alerted, "in_phase": self.in_phase,
                "alerted_pct": pct(self.alerted), "in_phase_pct": pct(self.in_phase)}


def pure_discovery(r: Result) -> bool:
    """Discovery of this host only: reported apart, outside the overall score (issue 21)."""
    return all(p == "discovery" for p in r.phases)


def score(results: list[Result]) -> dict[str, Any]:
    per_tactic: dict[str, Score] = {}
    overall, discovery = Score(), Score()
    skipped: Counter[str] = Counter()
    for r in results:
        if r.status != "executed":
            skipped[r.skip_reason.split(":")[0]] += 1
            continue
        per_tactic.setdefault(r.tactic, Score()).add(r)
        (discovery if pure_discovery(r) else overall).add(r)
    order = [t for t in TACTICS if t in per_tactic]
    return {
        "overall": overall.to_dict(),
        "discovery_apart": discovery.to_dict(),
        "per_tactic": {t: per_tactic[t].to_dict() for t in order},
        "tests": len(results),
        "executed": sum(r.status == "executed" for r in results),
        "skipped": dict(skipped.most_common()),
    }


def table(summary: dict[str, Any]) -> str:
    rows = [("tactic", "executed", "alert", "alert %", "in phase", "phase %")]

    def row(name: str, s: dict[str, Any]) -> None:
        rows.append((name, str(s["executed"]), str(s["alerted"]),
                     "-" if s["alerted_pct"] is None else f"{s['alerted_pct']:.1f}",
                     str(s["in_phase"]),
                     "-" if s["in_phase_pct"] is None else f"{s['in_phase_pct']:.1f}"))
    for tactic, s in summary["per_tactic"].items():
        row(tactic, s)
    row("OVERALL (without pure discovery)", summary["overall"])
    row("pure discovery (apart)", summary["discovery_apart"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(r, widths, strict=True))) for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines.insert(len(lines) - 2, "-" * len(lines[0]))
    skipped = ", ".join(f"{k}: {v}" for k, v in summary["skipped"].items()) or "none"
    lines.append(f"tests {summary['tests']}, executed {summary['executed']}; skipped: {skipped}")
    return "\n".join(lines)
