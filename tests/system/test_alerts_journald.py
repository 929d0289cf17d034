"""journald: a real systemd-journald (private mount namespace) receives one entry per alert."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from roxd.alerts.kinds import MESSAGE_IDS
from tests.conftest import wait_until
from tests.system.conftest import Journald, python_in

pytestmark = pytest.mark.system

SENDER = Path(__file__).with_name("alerts_journald_send.py")


def entries(j: Journald, *matches: str) -> list[dict[str, object]]:
    res = j.journalctl("-o", "json", "SYSLOG_IDENTIFIER=roxd", *matches)
    return [json.loads(line) for line in res.stdout.splitlines() if line.strip()]


def test_alerts_reach_journald_with_every_field(journald: Journald) -> None:
    res = python_in(journald.nsenter, SENDER)
    assert res.returncode == 0, res.stderr
    *sent, status = [json.loads(line) for line in res.stdout.splitlines()]
    assert status["flushed"] and status["stats"]["sent"] == 2 and status["stats"]["failed"] == 0

    got = wait_until(lambda: len(e := entries(journald)) == 2 and e, 20,
                     message="two roxd entries in the journal")
    by_id = {e["ROXD_ALERT_ID"]: e for e in got}
    cron, shell = (by_id[a["id"]] for a in sent)

    assert cron["MESSAGE"].startswith("[persistence] Rule persistence.cron_write")
    assert cron["PRIORITY"] == "3"  # error
    assert cron["MESSAGE_ID"] == MESSAGE_IDS["match"]
    assert cron["ROXD_RULE_ID"] == "persistence.cron_write"
    assert cron["ROXD_PHASE"] == "persistence"
    assert cron["ROXD_MITRE"] == ["T1053.003", "T1059"]  # a repeated field
    assert cron["ROXD_CONTAINER_ID"] == sent[0]["container"]["id"]
    assert cron["ROXD_CONTAINER_NAME"] == "web"
    assert cron["ROXD_CONTAINER_IMAGE"] == "nginx:1.25"
    assert cron["ROXD_PID"] == str(sent[0]["process"]["pid"])
    assert cron["ROXD_EXE"] == "/usr/bin/crontab"
    assert cron["ROXD_ACTIONS"] == "alert:done,kill:done"
    assert cron["ROXD_ACTION_KILL"] == "done"

    assert shell["PRIORITY"] == "2"  # critical
    assert shell["ROXD_MITRE"] == "T1059.004"
    assert shell["ROXD_CONTAINER_ID"] == "host"
    assert shell["ROXD_DPORT"] == "4444"
    assert shell["ROXD_ACTIONS"] == "kill:failed"

    # journalctl's own field matching works on the ROXD_* fields
    assert [e["ROXD_ALERT_ID"] for e in entries(journald, "ROXD_PHASE=persistence")] == [
        sent[0]["id"]]
    assert len(entries(journald, "ROXD_MITRE=T1059")) == 1
    assert len(entries(journald, f"MESSAGE_ID={MESSAGE_IDS['match']}")) == 2


def test_no_journald_counts_failures(tmp_path: Path) -> None:
    """Outside the namespace there may be no journald at all: the sink counts, never raises."""
    from roxd.alerts.journald import JournaldSink
    from tests.system.alerts_factory import make_alert

    def refuse(*fields: str) -> None:
        raise FileNotFoundError(2, "No such file or directory")

    sink = JournaldSink(sendv=refuse)
    sink.emit(make_alert())
    assert sink.flush(5)
    sink.close()
    assert sink.stats()["failed"] == 1


def test_hostile_bytes_reach_journald_escaped_and_the_next_alerts_too(
        journald: Journald) -> None:
    """A non-UTF-8 exe path, ESC sequences, newlines, NUL in argv, and a child whose parent
    is that path: every alert is an entry, every field text (journalctl -o json shows a
    field with control characters or bad UTF-8 as an array of bytes), nothing lost."""
    res = python_in(journald.nsenter, SENDER, "--hostile")
    assert res.returncode == 0, res.stderr
    *sent, status = [json.loads(line) for line in res.stdout.splitlines()]
    assert status["flushed"] and status["stats"]["failed"] == 0, status
    assert status["stats"]["sent"] == 3

    got = wait_until(lambda: len(e := entries(journald)) == 3 and e, 20,
                     message="three roxd entries in the journal")
    by_id = {e["ROXD_ALERT_ID"]: e for e in got}
    bad, child, plain = (by_id[a["id"]] for a in sent)
    for entry in (bad, child, plain):
        for key, value in entry.items():
            if key.startswith(("ROXD_", "MESSAGE")):
                assert isinstance(value, str | list) and all(
                    isinstance(v, str) for v in (value if isinstance(value, list) else [value])
                ), (key, value)
                assert "\x1b" not in str(value) and "\n" not in str(value), (key, value)
    assert bad["ROXD_EXE"] == "/tmp/\\xff\\xfe/sh"
    assert bad["ROXD_PARENT_EXE"] == child["ROXD_PARENT_EXE"] == "/tmp/\\xff\\xfe/parent\\x0a"
    assert "line1\\x0aline2\\x0d<13>1 - forged" in bad["ROXD_ARGS"]
    assert "\\x1b[2J\\x1b]0;pwned\\x07" in bad["ROXD_ARGS"]
    assert "nul\\x00byte\\x7f" in bad["ROXD_ARGS"]
    assert len(bad["ROXD_ARGS"]) <= 4096
    assert child["ROXD_EXE"] == "/bin/cat"
    # journalctl's field matching finds the escaped value
    assert [e["ROXD_ALERT_ID"] for e in entries(journald, "ROXD_EXE=/tmp/\\xff\\xfe/sh")] == [
        sent[0]["id"]]
