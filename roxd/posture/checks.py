"""Every check, registered by its section module, run over one host's facts."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from roxd.posture import containers, daemon, files, host  # noqa: F401  (they register)
from roxd.posture.facts import PostureFacts
from roxd.posture.model import Finding, Outcome, Report, Result
from roxd.posture.registry import CHECKS

log = logging.getLogger(__name__)


def _key(cis_id: str) -> tuple[int, ...]:
    return tuple(int(p) for p in cis_id.split("."))


CHECKS.sort(key=lambda c: _key(c.id))


def run_checks(facts: PostureFacts, *, started: float | None = None,
               host_facts: Mapping[str, Any] | None = None) -> Report:
    """One finding per check; a check that raises is a NOTE with the error (never lost)."""
    t0 = started if started is not None else time.time()
    findings = []
    for c in CHECKS:
        try:
            outcome = c.decide(facts)
        except Exception as exc:  # a check's bug must not hide the others
            log.exception("posture check %s failed", c.id)
            outcome = Outcome(Result.NOTE, f"the check failed: {type(exc).__name__}: {exc}")
        findings.append(Finding(c, outcome))
    return Report(t0, time.time(), tuple(findings), dict(host_facts or {}))
