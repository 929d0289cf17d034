"""The words of a posture scan: a check, its outcome on one host, the report."""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from roxd.posture.facts import PostureFacts

BENCHMARK = "CIS Docker Benchmark v1.6.0 (numbering as docker-bench-security 1.6.0)"

SECTIONS: Mapping[str, str] = {
    "1": "Host Configuration",
    "2": "Docker daemon configuration",
    "3": "Docker daemon configuration files",
    "5": "Container Runtime",
}


class Result(enum.StrEnum):
    PASS = "PASS"  # the benchmark's recommendation holds
    WARN = "WARN"  # it does not: the items say where
    INFO = "INFO"  # a fact to review by hand (the benchmark marks the check manual)
    NOTE = "NOTE"  # could not be decided here: the reason says why (never a silent pass)


CONCERNS = ("host", "daemon", "files", "containers")


@dataclass(frozen=True)
class Outcome:
    result: Result
    reason: str
    items: tuple[str, ...] = ()  # the containers or files concerned


@dataclass(frozen=True)
class Check:
    id: str  # CIS id, e.g. "5.5"
    title: str
    concerns: str  # one of CONCERNS
    automated: bool  # the benchmark's "Automated" (scored) versus "Manual"
    remediation: str
    decide: Callable[[PostureFacts], Outcome]
    impact: str = ""

    @property
    def section(self) -> str:
        return self.id.split(".", 1)[0]


@dataclass(frozen=True)
class Finding:
    check: Check
    outcome: Outcome

    def to_dict(self) -> dict[str, Any]:
        c, o = self.check, self.outcome
        return {"id": c.id, "title": c.title, "section": c.section, "concerns": c.concerns,
                "automated": c.automated, "result": str(o.result), "reason": o.reason,
                "items": list(o.items), "remediation": c.remediation,
                "remediation_impact": c.impact}


@dataclass(frozen=True)
class Report:
    started: float  # time.time()
    finished: float
    findings: tuple[Finding, ...]
    host: Mapping[str, Any] = field(default_factory=dict)  # hostname, engine version, ...

    def counts(self) -> dict[str, int]:
        out = {str(r): 0 for r in Result}
        for f in self.findings:
            out[str(f.outcome.result)] += 1
        return out

    def score(self) -> int:
        """docker-bench-security's score: +1 per passing scored check, -1 per warning."""
        score = 0
        for f in self.findings:
            if f.check.automated and f.outcome.result is Result.PASS:
                score += 1
            elif f.check.automated and f.outcome.result is Result.WARN:
                score -= 1
        return score

    def results(self) -> dict[str, str]:
        return {f.check.id: str(f.outcome.result) for f in self.findings}

    def to_dict(self) -> dict[str, Any]:
        return {"benchmark": BENCHMARK, "started": self.started, "finished": self.finished,
                "host": dict(self.host), "counts": self.counts(), "score": self.score(),
                "checks": [f.to_dict() for f in self.findings]}
