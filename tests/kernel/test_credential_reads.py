"""Issue 21 on the real kernel: credential reads that no exec names. A shell builtin or any
program reading another process's environment (/proc/PID/environ) or an SSH private key in a
real container raises the shipped file rules; the kernel's basename gate lets these reads
through while a read of /proc/PID/status (not watched) makes no file event."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import RoxdProcess

pytestmark = pytest.mark.kernel


def _alert(rp: RoxdProcess, rule_id: str, container: Any) -> dict[str, Any]:
    return rp.wait_for(lambda o: o.get("type") == "alert" and o["rule"]["id"] == rule_id
                       and (o.get("container") or {}).get("id") == container.id,
                       timeout=20, message=f"{rule_id} alert")


def test_environment_and_private_key_reads_alert(shared_roxd: RoxdProcess,
                                                 run_container: Any) -> None:
    c = run_container("read -r env < /proc/1/environ; cat /proc/1/status >/dev/null; "
                      "mkdir -p /root/.ssh && echo key > /root/.ssh/id_ed25519 && "
                      "cat /root/.ssh/id_ed25519 >/dev/null; sleep 5")
    env = _alert(shared_roxd, "privilege_escalation.process-environment-read", c)
    file = env["event"]["file"]
    assert file["path"] == "/proc/1/environ" and file["access"] == ["read"]
    assert env["process"]["comm"] == "sh"  # the shell's own open: no tool to name
    assert env["rule"]["phase"] == "privilege_escalation"
    key = _alert(shared_roxd, "privilege_escalation.ssh-private-key-read", c)
    assert key["event"]["file"]["path"] == "/root/.ssh/id_ed25519"
    assert key["event"]["file"]["access"] == ["read"]
    assert key["process"]["comm"] == "cat"
    # the write that made the key is no read; /proc/1/status is not watched at all
    assert not shared_roxd.matching(
        lambda o: o.get("type") == "file" and (o.get("container") or {}).get("id") == c.id
        and o["file"]["path"].endswith("/status"))
    reads = [o for o in shared_roxd.matching(
        lambda o: o.get("type") == "alert" and (o.get("container") or {}).get("id") == c.id
        and o["rule"]["id"] == "privilege_escalation.ssh-private-key-read")]
    assert all(a["event"]["file"]["access"] == ["read"] for a in reads)
