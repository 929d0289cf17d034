"""What the network-baseline kernel tests (test_network_baselines.py, test_network_enforce.py)
wait for alike before they test a locked baseline."""

from __future__ import annotations

from roxd.api.client import ApiClient
from tests.conftest import RoxdProcess, wait_until

LEARNED_8080 = "outbound tcp/8080 workload:"  # the server's workload, not its /24


def wait_learned_then_locked(rp: RoxdProcess, sock: str, client_id: str,
                             timeout: float) -> str:
    """The client container's connect to the server on 8080 learned against the server's
    workload (within `timeout` s), then the client's baseline locked by its window (30 s at
    most): returns the client's workload key."""
    learned = rp.wait_for(lambda o: o.get("type") == "connect"
                          and (o.get("container") or {}).get("id") == client_id
                          and (o.get("baseline") or {}).get("element", "").startswith(
                              LEARNED_8080), timeout=timeout,
                          message="the 8080 connect learned against the server's workload")
    workload: str = learned["baseline"]["workload"]

    def locked() -> bool:
        with ApiClient(sock) as api:
            return api.get("/v1/baselines/show", {"workload": workload})["state"] == "locked"

    wait_until(locked, 30, message="the client's baseline locked by its window")
    return workload
