"""Incidents on the real kernel: a scripted attack in one busybox container, through all five
phases as the shipped pack sees them, is exactly one incident with the phases in the order they
happened; a benign container started alongside has none; the incident survives a restart."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest

from roxd.api.client import ApiClient
from tests.attack_script import DROP, climb_the_phases, wait_alert, wait_named
from tests.conftest import RoxdProcess, start_roxd, wait_until

pytestmark = pytest.mark.kernel

PHASES = ["foothold", "privilege_escalation", "persistence", "lateral_movement", "objectives"]
CONFIG = "[daemon]\nstats_interval_s = 1.0\n[incidents]\nquiet_window_s = 600.0\n"
def _alerts_of(rp: RoxdProcess, cid: str) -> list[dict[str, Any]]:
    return rp.matching(lambda o: o.get("type") == "alert"
                       and (o.get("container") or {}).get("id") == cid)


def _incidents(sock: str, **params: Any) -> list[dict[str, Any]]:
    with ApiClient(sock) as c:
        items: list[dict[str, Any]] = c.get("/v1/incidents", params)["items"]
        return items


def test_a_scripted_attack_is_one_incident_and_survives_a_restart(
        docker_engine: Any, run_container: Any) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="roxd-incidents-"))
    sock = str(workdir / "roxd.sock")
    marker = uuid.uuid4().hex[:8]
    attacked, benign = f"roxd-inc-a-{marker}", f"roxd-inc-b-{marker}"
    started: list[RoxdProcess] = []
    try:
        rp = start_roxd(workdir, config=CONFIG)
        started.append(rp)
        rp.wait_ready()
        victim = run_container("sleep 600", name=attacked)
        other = run_container("while true; do ls / >/dev/null; sleep 1; done", name=benign)
        # roxd knows the container by name before the attack, whose shell's children climb
        # the phases
        climb_the_phases(rp, victim, attacked, marker)
        alert_ids = {a["id"] for a in _alerts_of(rp, victim.id)}

        def one_incident() -> Any:
            found = _incidents(sock, container=victim.id)
            return found if found and found[0]["alerts"] >= len(alert_ids) else None

        [incident] = wait_until(one_incident, 15, message="the incident with every alert")
        assert [p["phase"] for p in incident["phases"]] == PHASES
        firsts = [p["first_ns"] for p in incident["phases"]]
        assert firsts == sorted(firsts)  # reached in the order they happened
        assert {e["alert_id"] for e in incident["timeline"]} == alert_ids
        assert [c["id"] for c in incident["containers"]] == [victim.id]
        assert incident["state"] == "open" and incident["severity"] == "alert"
        assert {e["link"] for e in incident["timeline"][1:]} <= {"ancestry", "window"}
        assert "ancestry" in {e["link"] for e in incident["timeline"]}
        assert not _alerts_of(rp, other.id)
        assert _incidents(sock, container=other.id) == []

        shown = subprocess.run([sys.executable, "-m", "roxd.ctl", "--socket", sock,
                                "incidents", "show", incident["id"][:10]],
                               capture_output=True, text=True, timeout=60, cwd="/")
        assert shown.returncode == 0, shown.stderr
        assert all(f"== {p} " in shown.stdout for p in PHASES)
        # risk: the attacked container first, every reason adding up to its score
        with ApiClient(sock) as c:
            risk = {x["id"]: x["risk"] for x in c.get("/v1/containers")}
            reasons = c.get(f"/v1/containers/{victim.id}/risk")
        assert risk[victim.id] > risk[other.id]
        assert reasons["score"] == sum(r["points"] for r in reasons["reasons"]) == risk[victim.id]
        assert reasons["config"] == "known"  # docker inspect: root_user for busybox
        assert {r["factor"] for r in reasons["reasons"]} >= {"alerts", "phases", "root_user"}

        # a restart: the incident is still there, still open, with its whole timeline
        assert rp.stop() == 0
        rp = start_roxd(workdir, config=CONFIG)
        started.append(rp)
        rp.wait_ready()
        with ApiClient(sock) as c:
            again = c.get(f"/v1/incidents/{incident['id']}")
        assert again["state"] == "open"
        assert [p["phase"] for p in again["phases"]] == PHASES
        assert {e["alert_id"] for e in again["timeline"]} == alert_ids
        assert [i["id"] for i in _incidents(sock, container=victim.id)] == [incident["id"]]
    finally:
        for p in started:
            p.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def test_an_attack_that_moves_to_another_container_is_one_incident_naming_both(
        shared_roxd: RoxdProcess, run_container: Any) -> None:
    """A connects to B's SSH port (refused: B listens on nothing), then B is attacked: one
    incident with A and B; C, attacked at the same time but never reached, is its own.
    (The session's shared roxd: its quiet window, 30 min by default, outlasts the test; its
    other incidents are other containers', and only A's, B's and C's are read.)"""
    rp = shared_roxd
    sock = rp.stderr_path.parent / "roxd.sock"
    marker = uuid.uuid4().hex[:8]
    names = [f"roxd-inc-{x}-{marker}" for x in "abc"]
    a, b, c = (run_container("sleep 600", name=n) for n in names)
    for n in names:
        wait_named(rp, n)
    b.reload()
    b_ip = b.attrs["NetworkSettings"]["IPAddress"]
    if not b_ip:
        pytest.skip("containers have no bridge address on this engine")
    a.exec_run(["sh", "-c", DROP.format(script=f"/bin/nc -w 1 {b_ip} 22 </dev/null")])
    wait_alert(rp, "lateral_movement.ssh-connect-from-container", a.id)
    for target in (b, c):
        target.exec_run(["sh", "-c", DROP.format(script="/bin/cat /etc/shadow")])
    for target in (b, c):
        wait_alert(rp, "privilege_escalation.read-shadow", target.id)

    def settled() -> Any:
        """Every alert of the three in an incident: A's and B's in one, C's in another."""
        printed = {x.id: {al["id"] for al in _alerts_of(rp, x.id)} for x in (a, b, c)}
        ours = {a.id, b.id, c.id}  # other tests' containers may have incidents too
        found = {i["id"]: i for x in (a, b, c) for i in _incidents(str(sock), container=x.id)}
        items = [i for i in found.values() if ours & {x["id"] for x in i["containers"]}]
        by_containers = {tuple(x["id"] for x in i["containers"]): i for i in items}
        both, alone = by_containers.get((a.id, b.id)), by_containers.get((c.id,))
        if len(items) != 2 or not both or not alone:
            return None
        in_both = {e["alert_id"] for e in both["timeline"]}
        in_alone = {e["alert_id"] for e in alone["timeline"]}
        if printed[a.id] | printed[b.id] <= in_both and printed[c.id] <= in_alone:
            return both, alone
        return None

    both, alone = wait_until(settled, 15, message="one incident for A and B, one for C")
    first_in_b = next(e for e in both["timeline"] if e["container"] == b.id)
    assert first_in_b["link"] == "network"
    assert [p["phase"] for p in both["phases"]] == [
        "foothold", "privilege_escalation", "lateral_movement"]
    assert [p["phase"] for p in alone["phases"]] == ["foothold", "privilege_escalation"]
