"""Issue 16 on real parts: an attack in container D, then D connects to server B whose network
baseline is locked. B's `baseline.new-inbound-peer` (the kernel's accept, bpf/inbound.bpf.c)
carries D's address, and B joins D's incident (link `network`), as an alerted connect from D
to B would have done. The client A that B learned stays out of it."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest

from roxd.api.client import ApiClient
from tests.conftest import start_roxd, wait_until
from tests.kernel.test_inbound import (  # noqa: F401
    CONFIG,
    _fetch,
    _name,
    _serving_pair,
    network,
)

pytestmark = pytest.mark.kernel

# as tests/kernel/test_incidents_live.py: a shell from a binary dropped in /tmp, then a read
# of /etc/shadow (foothold, privilege escalation)
ATTACK = "/bin/cp /bin/busybox /tmp/busybox; /tmp/busybox sh -c '/bin/cat /etc/shadow'"


def test_an_alerted_accept_joins_the_attackers_incident(run_container: Any,
                                                        network: str) -> None:  # noqa: F811
    workdir = Path(tempfile.mkdtemp(prefix="roxd-incident-inbound-"))
    sock = str(workdir / "roxd.sock")
    rp = start_roxd(workdir, config=CONFIG + "[incidents]\nquiet_window_s = 600.0\n")
    try:
        rp.wait_ready()
        server, client, ip = _serving_pair(run_container, network, grace_s=1.5)
        with ApiClient(sock) as api:
            def locked() -> bool:
                _fetch(client, ip)
                for b in api.get("/v1/baselines")["baselines"]:
                    shown = api.get("/v1/baselines/show", {"workload": b["workload"]})
                    if (shown["state"] == "locked" and any(
                            p.startswith("inbound tcp/8080 workload:") and p.endswith(client.name)
                            for p in shown["peers"])):
                        return True
                return False

            wait_until(locked, 45, interval=1.0, message="B's baseline locked with A learned")
            attacker = run_container("sleep 600", network=network, name=_name("attacker"))
            attacker.exec_run(["sh", "-c", ATTACK])

            def attackers_incident() -> dict[str, Any] | None:
                items = api.get("/v1/incidents", {"container": attacker.id})["items"]
                return items[0] if items else None

            first = wait_until(attackers_incident, 30, message="D's incident")
            assert [c["id"] for c in first["containers"]] == [attacker.id]

            def joined() -> dict[str, Any] | None:
                _fetch(attacker, ip)
                inc = api.get(f"/v1/incidents/{first['id']}")
                return inc if server.id in {c["id"] for c in inc["containers"]} else None

            inc = wait_until(joined, 45, interval=1.0, message="B joins D's incident")
            entry = next(e for e in inc["timeline"] if e["container"] == server.id)
            assert entry["rule"] == "baseline.new-inbound-peer" and entry["link"] == "network"
            assert "lateral_movement" in {p["phase"] for p in inc["phases"]}
            assert client.id not in {c["id"] for c in inc["containers"]}
    finally:
        rp.stop()
