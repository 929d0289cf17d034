"""The scripted attack the incident tests (tests/kernel/test_incidents_live.py) and the
dashboard test (tests/system/test_dashboard.py) run in a busybox container: a shell from a
binary dropped in /tmp whose children climb the five phases as the shipped pack sees them.

The foothold is a shell run from a binary dropped in /tmp (the docker exec'd shell itself is a
foothold only when roxd cannot see its parent is runc: not deterministic). Absolute paths:
busybox's sh runs applets named without a path in-process (no exec to see)."""

from __future__ import annotations

from typing import Any

from tests.conftest import RoxdProcess

DROP = "/bin/cp /bin/busybox /tmp/busybox; /tmp/busybox sh -c '{script}'"
ATTACK = [
    ("foothold.exec-from-tmp", ""),
    ("privilege_escalation.read-shadow", "/bin/cat /etc/shadow"),
    ("persistence.cron-file-write", "/bin/cp /etc/passwd /etc/cron.d/roxd-{m}"),
    ("lateral_movement.ssh-connect-from-container", "/bin/nc -w 1 127.0.0.1 22 </dev/null"),
    ("objectives.log-wipe", "/bin/rm -f /var/log/roxd-{m}.log"),
]


def wait_named(rp: RoxdProcess, name: str) -> None:
    """roxd knows the container by name (its entrypoint's exec)."""
    rp.wait_for(lambda o: o.get("type") == "exec"
                and (o.get("container") or {}).get("name") == name,
                timeout=20, message=f"the entrypoint of {name}")


def wait_alert(rp: RoxdProcess, rule: str, cid: str, where: str = "") -> dict[str, Any]:
    return rp.wait_for(lambda o: o.get("type") == "alert" and o["rule"]["id"] == rule
                       and (o.get("container") or {}).get("id") == cid,
                       timeout=20, message=f"alert {rule} in {where or cid[:12]}")


def climb_the_phases(rp: RoxdProcess, victim: Any, name: str, marker: str) -> None:
    """Once roxd knows `victim` (a docker container named `name`), the attack in it (files
    named after `marker`), and each phase's alert on it."""
    wait_named(rp, name)
    script = "; ".join(cmd.format(m=marker) for _, cmd in ATTACK if cmd)
    victim.exec_run(["sh", "-c", DROP.format(script=script)])
    for rule, _ in ATTACK:
        wait_alert(rp, rule, victim.id, name)
