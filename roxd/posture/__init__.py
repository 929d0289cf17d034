"""CIS Docker Benchmark posture: the checks a host daemon can automate (sections 1, 2, 3 and 5).

    facts = gather(runtime)                 # engine info, inspect data, files, audit rules
    report = run_checks(facts)              # one Finding per check, in benchmark order
    docker_bench_document(report)           # the same results in docker-bench-security's JSON

Facts are gathered once (slow I/O: the engine, /proc, stat); every check is a pure function of
them, so each decision is unit-tested with recorded inspect data. docs/posture.md lists every
check, how it is decided and what it cannot see.
"""

from roxd.posture.checks import CHECKS, run_checks
from roxd.posture.facts import PostureFacts, gather
from roxd.posture.model import Check, Finding, Outcome, Report, Result

__all__ = ["CHECKS", "Check", "Finding", "Outcome", "PostureFacts", "Report", "Result",
           "gather", "run_checks"]
