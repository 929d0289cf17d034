"""Drift on the real kernel (issue 15): in a real container, an image program runs with no
drift alert; a binary copied in after the container started and executed is reported as new
(drift.binary-not-in-image); an image program replaced and executed is reported as modified
(drift.image-binary-modified). No learning is involved."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, RoxdProcess, start_roxd

pytestmark = pytest.mark.kernel

CONFIG = "[daemon]\nstats_interval_s = 1.0\n"


def _drift_alerts(rp: RoxdProcess, cid: str) -> list[dict[str, Any]]:
    return rp.matching(lambda o: o.get("type") == "alert"
                       and o["rule"]["id"].startswith("drift.")
                       and (o.get("container") or {}).get("id") == cid)


def test_a_copied_in_binary_is_new_and_a_replaced_one_is_modified(run_container: Any) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="roxd-drift-"))
    rp = start_roxd(workdir, "--print-alerts", config=CONFIG)
    try:
        rp.wait_ready()
        c = run_container("sleep 600")
        # the image's own programs: no drift
        c.exec_run(["sh", "-c", "/bin/ls / >/dev/null; /bin/cat /etc/hostname >/dev/null"])
        rp.wait_for(lambda o: o.get("type") == "exec" and o.get("process", {}).get("exe")
                    == "/bin/cat" and (o.get("container") or {}).get("id") == c.id,
                    timeout=20, message="the image's cat exec")
        assert _drift_alerts(rp, c.id) == []
        # a tool dropped after the container started (not in /tmp: no other rule helps)
        c.exec_run(["sh", "-c", "mkdir -p /opt/x && cp /bin/busybox /opt/x/tool && "
                                "/opt/x/tool true"])
        new = rp.wait_for(lambda o: o.get("type") == "alert"
                          and o["rule"]["id"] == "drift.binary-not-in-image"
                          and (o.get("container") or {}).get("id") == c.id,
                          timeout=20, message="drift alert for /opt/x/tool")
        assert new["process"]["exe"] == "/opt/x/tool" and new["event"]["drift"] == "new"
        assert new["rule"]["phase"] == "foothold"
        # an image program replaced by another binary, then run
        c.exec_run(["sh", "-c", "cp /bin/busybox /tmp/b && mv /tmp/b /bin/sleep && "
                                "/bin/sleep 0"])
        modified = rp.wait_for(lambda o: o.get("type") == "alert"
                               and o["rule"]["id"] == "drift.image-binary-modified"
                               and (o.get("container") or {}).get("id") == c.id,
                               timeout=20, message="drift alert for the replaced /bin/sleep")
        assert modified["process"]["exe"] == "/bin/sleep"
        assert modified["event"]["drift"] == "modified"
        assert {a["rule"]["id"] for a in _drift_alerts(rp, c.id)} == {
            "drift.binary-not-in-image", "drift.image-binary-modified"}
    finally:
        rp.stop()


def test_a_script_dropped_after_the_start_and_run_by_an_interpreter_is_new(
        run_container: Any) -> None:
    """Issue 21: `sh x.sh` runs the image's own shell, so binary drift says none; the script
    itself is new (script_drift), by absolute path and relative to the working directory, and
    the shipped foothold.script-not-in-image alerts. Inline code (`sh -c`) gets no verdict."""
    workdir = Path(tempfile.mkdtemp(prefix="roxd-drift-"))
    rp = start_roxd(workdir, "--print-alerts", config=CONFIG, rules=[REPO / "rules"])
    try:
        rp.wait_ready()
        c = run_container("sleep 600")
        c.exec_run(["sh", "-c", "true; exit 0"])  # inline code: no operand
        c.exec_run(["sh", "-c", "mkdir -p /opt/j && printf 'echo one\\n' > /opt/j/abs.sh && "
                                "sh /opt/j/abs.sh; true"])
        c.exec_run(["sh", "-c", "cd /root 2>/dev/null || cd /; printf 'sleep 1\\n' > rel.sh "
                                "&& sh rel.sh; true"])

        def script_exec(name: str) -> Any:
            return rp.wait_for(
                lambda o: o.get("type") == "exec"
                and (o.get("container") or {}).get("id") == c.id
                and o["process"]["args"][-1:] == [name],
                timeout=20, message=f"the exec of sh {name}")

        for name in ("/opt/j/abs.sh", "rel.sh"):
            event = script_exec(name)
            assert event["script_drift"] == "new", event
            assert event.get("drift") == "none"  # the shell itself is the image's
            rp.wait_for(lambda o, n=name: o.get("type") == "alert"
                        and o["rule"]["id"] == "foothold.script-not-in-image"
                        and o["process"]["args"][-1:] == [n]
                        and (o.get("container") or {}).get("id") == c.id,
                        timeout=20, message=f"foothold.script-not-in-image for {name}")
        inline = [o for o in rp.lines if o.get("type") == "exec"
                  and (o.get("container") or {}).get("id") == c.id
                  and o["process"]["args"][:2] == ["sh", "-c"]]
        assert inline and all("script_drift" not in o for o in inline)
    finally:
        rp.stop()
