"""bench/pipeline_cpu.py drives the real pipeline with the shipped pack: its storms do what the
profile phase's do (a distinct-argument exec raises nothing; an exec of a binary dropped in
/tmp raises two alerts: exec-from-tmp and drift), or its figures would measure something
else. No time is asserted."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import pipeline_cpu

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]


def test_the_storms_raise_what_the_profile_phase_storms_raise() -> None:
    assert pipeline_cpu.child(REPO, "distinct", 10)["alerts"] == 0
    alert = pipeline_cpu.child(REPO, "alert", 10)
    assert alert["alerts"] == 20 and alert["n"] == 10 and alert["us_per_exec"] > 0
