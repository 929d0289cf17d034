"""bench/report.py's results writers: the one place bench modules write their JSON files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bench import report


def test_write_and_show_writes_a_utc_stamped_file_and_shows_the_document(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = {"time": "2026-11-30T03:00:00Z", "figures": {"ns": 59.7, "runs": [1, 2]}}
    out = tmp_path / "made" / "here"  # a missing folder is made
    path = report.write_and_show(doc, out, "netenf")
    assert path.parent == out
    assert re.fullmatch(r"netenf-\d{8}T\d{6}Z\.json", path.name), path.name
    text = path.read_text()
    assert text.endswith("}\n") and json.loads(text) == doc
    shown = capsys.readouterr()
    assert json.loads(shown.out) == doc
    assert shown.err.strip() == f"written: {path}"


def test_write_keeps_the_run_and_the_same_text_as_latest(tmp_path: Path) -> None:
    results = {"machine": {"cpus": 2}, "overhead": {"exec_storm.roxd.ratio": 1.04}}
    path = report.write(results, tmp_path)
    assert re.fullmatch(r"bench-\d{8}T\d{6}\.json", path.name), path.name
    assert json.loads(path.read_text()) == results
    assert (tmp_path / "latest.json").read_text() == path.read_text()
