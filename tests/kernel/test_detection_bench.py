"""The detection benchmark end to end (issue 21): three Atomic Red Team tests through
`python -m bench.detection --only ...` with a real roxd, real containers and the shipped rules;
each must have executed and raised an alert in its ATT&CK tactic's phase."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.detection.atomics import default_atomics
from tests.conftest import REPO

pytestmark = pytest.mark.kernel

# a file written by shell redirection (file rule), a file tool on a history file (exec rule),
# a shadow read (exec and file rules): three phases, three event paths
CHOSEN = ("T1053.003-3", "T1070.003-1", "T1003.008-1")


def test_chosen_atomic_tests_execute_and_alert_in_phase(docker_engine: Any,
                                                        tmp_path: Path) -> None:
    atomics = default_atomics(REPO)
    if not (atomics / "atomics").is_dir() and not atomics.is_dir():
        pytest.skip(f"no Atomic Red Team checkout at {atomics} (set ROXD_ATOMICS)")
    out = subprocess.run(
        [sys.executable, "-m", "bench.detection", "--only", ",".join(CHOSEN), "--out",
         str(tmp_path), "--timeout", "15"],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
        timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "OVERALL" in out.stdout
    (result_file,) = tmp_path.glob("detection-*.json")
    doc = json.loads(result_file.read_text())
    results = {r["key"]: r for r in doc["results"]}
    assert set(results) == set(CHOSEN)
    for key in CHOSEN:
        r = results[key]
        assert r["status"] == "executed", (key, r["skip_reason"], r["output_tail"])
        assert r["any_alert"] and r["in_phase"], (key, r["phases"], r["alerts"])
        assert {a["phase"] for a in r["alerts"]} & set(r["phases"])
    assert doc["summary"]["overall"]["executed"] == 3
    assert doc["summary"]["overall"]["in_phase"] == 3
