"""Issue 16: the incident response policy on real parts. An attack in a real container climbs
two phases; with `[incidents] response = "isolate"` and `response_min_phases = 2`, roxd
quarantines that container (nftables in its network namespace: it can no longer reach a
server it reached before), once, and the incident records the action and its outcome. A
container whose alerts stay in one phase is left alone."""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest

from roxd.api.client import ApiClient
from tests.conftest import RoxdProcess, start_roxd, wait_until

pytestmark = pytest.mark.kernel

CONFIG = """
[daemon]
stats_interval_s = 1.0
[incidents]
quiet_window_s = 600.0
response = "isolate"
response_min_phases = 2
response_on_phases = []
"""
# a dropped binary runs a shell (foothold) that reads /etc/shadow (privilege escalation);
# absolute paths: busybox's sh runs applets named without one in-process
ATTACK = "/bin/cp /bin/busybox /tmp/busybox; /tmp/busybox sh -c '/bin/cat /etc/shadow'"


def _reach(container: Any, ip: str) -> bool:
    result = container.exec_run(["sh", "-c", f"nc -w 2 {ip} 8080 </dev/null"])
    return result.exit_code == 0 and b"hello" in result.output


def _incident_of(sock: str, cid: str) -> dict[str, Any] | None:
    with ApiClient(sock) as c:
        items = c.get("/v1/incidents", {"container": cid})["items"]
        return c.get(f"/v1/incidents/{items[0]['id']}") if items else None


def test_an_incident_reaching_two_phases_quarantines_its_container(run_container: Any) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="roxd-incresp-"))
    sock = str(workdir / "roxd.sock")
    marker = uuid.uuid4().hex[:8]
    rp: RoxdProcess | None = None
    victim = None
    try:
        server = run_container("while true; do nc -l -p 8080 -e /bin/echo hello; done",
                               name=f"roxd-incresp-srv-{marker}")
        victim = run_container("sleep 600", name=f"roxd-incresp-v-{marker}")
        bystander = run_container("sleep 600", name=f"roxd-incresp-b-{marker}")
        server.reload()
        ip = server.attrs["NetworkSettings"]["IPAddress"]
        wait_until(lambda: _reach(victim, ip), 20, message="server reachable before")
        rp = start_roxd(workdir, config=CONFIG)
        rp.wait_ready()
        # one phase only in the bystander: a dropped binary, nothing more
        bystander.exec_run(["sh", "-c", "/bin/cp /bin/busybox /tmp/bb; /tmp/bb true"])
        victim.exec_run(["sh", "-c", ATTACK])
        for rule in ("foothold.exec-from-tmp", "privilege_escalation.read-shadow"):
            rp.wait_for(lambda o, rule=rule: o.get("type") == "alert"
                        and o["rule"]["id"] == rule
                        and (o.get("container") or {}).get("id") == victim.id,
                        timeout=20, message=f"alert {rule}")

        def isolated() -> dict[str, Any] | None:
            inc = _incident_of(sock, victim.id)
            return inc if inc and inc["actions"] else None

        incident = wait_until(isolated, 20, message="the incident's isolate action")
        [action] = incident["actions"]
        assert action["action"] == "isolate" and action["outcome"] == "done", action
        assert action["by"] == "incident-policy" and action["container"] == victim.id
        assert "2 phases" in action["trigger"]
        assert not _reach(victim, ip), "the quarantined container still reaches the server"
        assert _reach(bystander, ip), "a one-phase incident must not isolate"
        with ApiClient(sock) as c:
            listed = {x["id"]: x for x in c.get("/v1/containers")}
            assert listed[victim.id]["mode"] == "quarantined"
            c.post(f"/v1/containers/{victim.id}/release")
        assert _reach(victim, ip)
    finally:
        if rp is not None:
            rp.stop()
