"""File baselines on real parts (issue 15): the kernel's file program (bpf/file.bpf.c) reports
the writes below [baselines] file_trees; a container that writes /var/log/app while learning
raises nothing for it after the (short) window locks; a write into /etc/cron.d after the lock
raises baseline.new-file-write-dir-persistence (phase persistence) with the evidence; in
enforce mode the write is alerted and not blocked (the file is there); a restarted roxd keeps
the file baseline and judges with it; a malformed import entry is refused with the reason and
changes nothing."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from roxd.api.client import ApiClient
from tests.conftest import RoxdProcess, start_roxd, wait_until

pytestmark = pytest.mark.kernel

GRACE_S = 1.5
CONFIG = """
[daemon]
stats_interval_s = 1.0
[baselines]
window_s = 6.0
startup_grace_s = 1.5
"""


def roxctl(sock: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "roxd.ctl", "--socket", sock, *args],
                          capture_output=True, text=True, timeout=30, cwd="/", input=stdin)


def sh(container: Any, script: str) -> str:
    result = container.exec_run(["/bin/sh", "-c", script])
    assert result.exit_code == 0, result.output
    return result.output.decode()


def file_event(rp: RoxdProcess, cid: str, element: str, verdict: str) -> dict[str, Any]:
    return rp.wait_for(lambda o: o.get("type") == "file"
                       and (o.get("container") or {}).get("id") == cid
                       and (o.get("baseline") or {}).get("element") == element
                       and o["baseline"]["verdict"] == verdict, timeout=20,
                       message=f"{element} judged {verdict}")


def file_alert(rp: RoxdProcess, cid: str, element: str) -> dict[str, Any]:
    return rp.wait_for(lambda o: o.get("type") == "alert"
                       and o["rule"]["id"].startswith("baseline.new-file-write-dir")
                       and (o.get("container") or {}).get("id") == cid
                       and o["event"]["baseline"]["element"] == element, timeout=20,
                       message=f"the file baseline alert for {element}")


def dir_alerts(rp: RoxdProcess, cid: str, element: str) -> list[dict[str, Any]]:
    return rp.matching(lambda o: o.get("type") == "alert"
                       and o["rule"]["id"].startswith("baseline.new-file-write-dir")
                       and (o.get("container") or {}).get("id") == cid
                       and o["event"]["baseline"]["element"] == element)


def test_written_directories_learned_locked_judged_and_kept(run_container: Any) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="roxd-filebase-"))  # short: the socket's path
    try:
        final = scenario(workdir, run_container)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    # the scenario asserts at every step; what it leaves: the accepted directory is learned
    assert "/etc/profile.d" in final["file_dirs"] and final["state"] == "locked"


def scenario(workdir: Path, run_container: Any) -> dict[str, Any]:
    sock = str(workdir / "roxd.sock")
    rp = start_roxd(workdir, config=CONFIG)
    try:
        rp.wait_ready()
        c = run_container("sleep 600")
        time.sleep(GRACE_S + 0.5)  # past the container's startup grace: learned by the window
        sh(c, "mkdir -p /var/log/app /etc/cron.d /usr/local/bin /etc/profile.d; "
              "echo start >> /var/log/app/app.log")
        learned = file_event(rp, c.id, "write /var/log/app", "learning")
        workload = learned["baseline"]["workload"]

        def show() -> dict[str, Any]:
            with ApiClient(sock) as api:
                return api.get("/v1/baselines/show", {"workload": workload})

        wait_until(lambda: show()["state"] == "locked", 30, 0.2,
                   message="the baseline locked by its window")
        assert "/var/log/app" in show()["file_dirs"]

        # after the lock: the learned directory is quiet, a new file name in it too
        sh(c, "echo again >> /var/log/app/app.log; echo new > /var/log/app/other.log")
        file_event(rp, c.id, "write /var/log/app", "learned")
        # a cron job dropped: an anomaly, phase persistence, with the evidence
        sh(c, "echo '* * * * * root /tmp/x' > /etc/cron.d/backdoor")
        alert = file_alert(rp, c.id, "write /etc/cron.d")
        assert alert["rule"]["id"] == "baseline.new-file-write-dir-persistence"
        assert alert["rule"]["phase"] == "persistence"
        evidence = alert["event"]["baseline"]
        assert evidence["verdict"] == "anomaly" and evidence["workload"] == workload
        assert evidence["locked_at"] and evidence["learning_since"]
        assert evidence["learned"] >= 1
        assert alert["event"]["file"]["path"] == "/etc/cron.d/backdoor"
        assert [a["outcome"] for a in alert["actions"]] == ["done"]  # alerted, nothing else
        assert dir_alerts(rp, c.id, "write /var/log/app") == []

        # enforce mode: file anomalies are alerted, never blocked (the file is written)
        assert roxctl(sock, "baselines", "mode", workload, "enforce").returncode == 0
        sh(c, "echo kit > /usr/local/bin/kit")
        alert = file_alert(rp, c.id, "write /usr/local/bin")
        assert alert["rule"]["id"] == "baseline.new-file-write-dir-binaries"
        assert alert["event"]["baseline"]["mode"] == "enforce"
        assert [a["action"] for a in alert["actions"]] == ["alert"]
        assert sh(c, "read l < /usr/local/bin/kit; echo $l").strip() == "kit"
        assert roxctl(sock, "baselines", "mode", workload, "monitor").returncode == 0
        before = show()
        assert "/etc/cron.d" not in before["file_dirs"]
    finally:
        rp.stop()

    # restart: the file baseline is kept and judges from the restarted roxd's first event
    rp = start_roxd(workdir, config=CONFIG)
    try:
        rp.wait_ready()
        kept = show()
        assert kept["state"] == "locked" and kept["file_dirs"] == before["file_dirs"]
        shown = roxctl(sock, "baselines", "show", workload)
        assert shown.returncode == 0 and "write /var/log/app" in shown.stdout
        sh(c, "true")  # the restarted roxd's first sight of the cgroup starts its grace
        time.sleep(GRACE_S + 0.5)
        sh(c, "echo after-restart >> /var/log/app/app.log")
        file_event(rp, c.id, "write /var/log/app", "learned")
        sh(c, "echo 'echo hi' > /etc/profile.d/evil.sh")
        alert = file_alert(rp, c.id, "write /etc/profile.d")
        assert alert["rule"]["phase"] == "persistence"

        # a malformed import entry: exit 1 with the reason, nothing changed
        kept = show()
        doc = json.loads(roxctl(sock, "baselines", "export", workload).stdout)
        doc["baselines"][0]["file_dirs"]["var/tmp"] = {"first_ns": 1, "last_ns": 1,
                                                       "count": 1}
        doc["baselines"][0]["processes"] = {}
        bad = roxctl(sock, "baselines", "import", "-", stdin=json.dumps(doc))
        assert bad.returncode == 1
        assert "baselines[0]: file_dirs['var/tmp']: 'var/tmp' is not an absolute directory" \
            in bad.stderr
        after = show()
        assert after["processes"] == kept["processes"]
        assert after["file_dirs"] == kept["file_dirs"] and "var/tmp" not in after["file_dirs"]
        # accept the anomaly's directory: the next write there is learned
        assert roxctl(sock, "baselines", "accept", workload,
                      "write /etc/profile.d").returncode == 0
        sh(c, "echo 'echo hi' > /etc/profile.d/evil2.sh")
        file_event(rp, c.id, "write /etc/profile.d", "learned")
        return show()
    finally:
        rp.stop()
