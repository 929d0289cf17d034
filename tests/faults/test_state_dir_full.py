"""A real roxd whose state dir is a small filesystem (tmpfs, size=8m, made and removed here)
filled to the last byte: roxd keeps watching, /v1/health says `degraded` and names the alert
store and why, every alert raised meanwhile is stored once space is back, health is ok again."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DEFAULT_TEST_CONFIG, NOISE_OFF_CONFIG, start_roxd, wait_until
from tests.faults.conftest import fill

pytestmark = [pytest.mark.faults, pytest.mark.kernel]

MARK_RULE = """
[[rule]]
id = "test.disk-mark"
name = "Disk fault marker"
description = "Test rule: a host command line with the marker."
phase = "foothold"
severity = "warning"
mitre = ["T1059"]
event = "exec"
actions = ["alert"]
[rule.when]
cmdline = { contains = ["roxd-disk-mark-"] }
"""

CONFIG = DEFAULT_TEST_CONFIG + NOISE_OFF_CONFIG


@pytest.fixture
def state_fs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "state-fs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,mode=0755", "roxd-faults",
                    str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def get(sock: Path, path: str) -> Any:
    out = subprocess.run(["curl", "-s", "--max-time", "10", "--unix-socket", str(sock),
                          f"http://roxd{path}"], capture_output=True, text=True, timeout=20)
    return json.loads(out.stdout)


def stored(sock: Path) -> set[str]:
    out = subprocess.run([sys.executable, "-m", "roxd.ctl", "--socket", str(sock), "--json",
                          "alerts", "list", "--rule", "test.disk-mark", "--limit", "1000"],
                         capture_output=True, text=True, timeout=30)
    doc = json.loads(out.stdout)
    return {a["id"] for a in (doc["items"] if isinstance(doc, dict) else doc)}


def stored_incident_alerts(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(db, timeout=5)) as conn:
        return int(conn.execute("SELECT TOTAL(alerts) FROM incidents").fetchone()[0])


def test_a_full_state_dir_degrades_health_and_loses_no_alert(tmp_path: Path,
                                                            state_fs: Path) -> None:
    workdir = tmp_path / "roxd"
    workdir.mkdir()
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "mark.toml").write_text(MARK_RULE)
    sock = workdir / "roxd.sock"
    roxd = start_roxd(workdir, "--state-dir", str(state_fs / "state"), config=CONFIG,
                      rules=[rules])
    try:
        roxd.wait_ready()
        assert get(sock, "/v1/health")["status"] == "ok"
        filler = fill(state_fs)
        big = "B" * 3000  # pages must be added to the store: it cannot take them
        for i in range(20):
            subprocess.run(["/bin/sh", "-c", f": roxd-disk-mark-{i} {big}"], check=True)
        wait_until(lambda: len(roxd.matching(lambda o: o.get("type") == "alert")) >= 20, 30,
                   message="the alerts raised while the disk is full")
        health = wait_until(
            lambda: (h := get(sock, "/v1/health"))["status"] == "degraded"
            and any(p.startswith("incident sink: incident store:") for p in h["degraded"])
            and h, 30, message="health to say degraded, naming the alert and incident stores")
        assert health["ok"] is True  # still watching: 200, not 503
        assert any(p.startswith("alert sink store:") and "full" in p
                   for p in health["degraded"]), health
        # the incidents of these alerts wait in memory too (was: the batch dropped, unsaid)
        assert any(p.startswith("incident sink: incident store:") and "full" in p
                   for p in health["degraded"]), health
        assert get(sock, "/v1/status")["degraded"] == health["degraded"]
        filler.unlink()
        wait_until(lambda: len(stored(sock)) == 20, 30, message="all 20 alerts stored")
        # the incident store's file (not the tracker's memory) holds every alert's incident
        db = state_fs / "state" / "incidents" / "incidents.db"
        wait_until(lambda: stored_incident_alerts(db) == 20, 30,
                   message="the incidents of all 20 alerts in the incident store")
        wait_until(lambda: get(sock, "/v1/health")["status"] == "ok", 30,
                   message="health ok again")
    finally:
        roxd.stop()
