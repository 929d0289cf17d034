"""A report as docker-bench-security's own JSON log (functions/output_lib.sh of 1.6.0), so
tools that read docker-bench-security.log.json read roxd's scan:

    {"dockerbenchsecurity": "1.6.0", "start": epoch, "tests": [{"id": "1", "desc": "...",
      "results": [{"id": "1.1.1", "desc": "... (Automated)", "result": "WARN",
                   "details": "...", "items": [...], "remediation": "...",
                   "remediation-impact": "..."}]}],
     "checks": N, "score": S, "end": epoch}

As in docker-bench-security: details (and items) only when there is something to say beyond
the result, remediation only on results other than PASS, score +1 per passing and -1 per
warning automated check. Extra keys (`generator`, `benchmark`) say the document is roxd's.
"""

from __future__ import annotations

from typing import Any

from roxd import __version__
from roxd.posture.model import BENCHMARK, SECTIONS, Report, Result

DOCKER_BENCH_VERSION = "1.6.0"  # the release whose output format and numbering roxd follows


def docker_bench_document(report: Report) -> dict[str, Any]:
    tests = []
    for section, desc in SECTIONS.items():
        results = []
        for f in report.findings:
            if f.check.section != section:
                continue
            c, o = f.check, f.outcome
            item: dict[str, Any] = {
                "id": c.id, "desc": f"{c.title} ({'Automated' if c.automated else 'Manual'})",
                "result": str(o.result)}
            if o.result is not Result.PASS or o.items:
                item["details"] = o.reason + (": " + " ".join(o.items) if o.items and
                                              o.result is Result.WARN else "")
            if o.items and o.result is not Result.PASS:
                item["items"] = list(o.items)
            if o.result is not Result.PASS:
                item["remediation"] = c.remediation
                if c.impact:
                    item["remediation-impact"] = c.impact
            results.append(item)
        tests.append({"id": section, "desc": desc, "results": results})
    return {"dockerbenchsecurity": DOCKER_BENCH_VERSION, "start": int(report.started),
            "tests": tests, "checks": len(report.findings), "score": report.score(),
            "end": int(report.finished), "generator": f"roxd {__version__}",
            "benchmark": BENCHMARK}
