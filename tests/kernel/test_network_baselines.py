"""Network baselines on real parts (issue 15): a client container learns that it talks to a
server container on port 8080; after the (short) window locks its baseline, the same connect
raises nothing and a connect to a new port raises baseline.new-network-peer with the element
it judged; `roxctl baselines show` lists what was learned."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import start_roxd, wait_until
from tests.kernel.netbase import wait_learned_then_locked

pytestmark = pytest.mark.kernel

CONFIG = """
[daemon]
stats_interval_s = 1.0
[baselines]
window_s = 8.0
startup_grace_s = 1.0
"""


def test_a_new_peer_after_the_lock_is_an_anomaly(run_container: Any) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="roxd-netbase-"))
    sock = str(workdir / "roxd.sock")
    rp = start_roxd(workdir, "--print-alerts", config=CONFIG)
    try:
        rp.wait_ready()
        server = run_container("while true; do nc -l -p 8080 -e /bin/echo hello; done")
        server.reload()
        ip = server.attrs["NetworkSettings"]["IPAddress"]
        client = run_container("sleep 600")

        def talk(port: int) -> bytes:
            return client.exec_run(["sh", "-c", f"nc -w 1 {ip} {port} </dev/null"]).output

        # learning: reach the server on 8080 (once roxd knows the server's address, the peer
        # is the server's workload, not its /24)
        time.sleep(1.5)  # past the client's startup grace
        wait_until(lambda: b"hello" in talk(8080), 20, message="the server answers")
        workload = wait_learned_then_locked(rp, sock, client.id, timeout=20)
        time.sleep(1.0)
        talk(8080)  # learned: nothing
        talk(9)  # new port on a known peer: an anomaly
        alert = rp.wait_for(lambda o: o.get("type") == "alert"
                            and o["rule"]["id"] == "baseline.new-network-peer"
                            and (o.get("container") or {}).get("id") == client.id,
                            timeout=20, message="the network anomaly")
        assert alert["event"]["baseline"]["element"].startswith("outbound tcp/9 workload:")
        assert alert["rule"]["phase"] == "lateral_movement"
        assert [a["outcome"] for a in alert["actions"]] == ["done"]  # alerted, not blocked
        learned_again = rp.matching(lambda o: o.get("type") == "alert"
                                    and o["rule"]["id"] == "baseline.new-network-peer"
                                    and "tcp/8080" in o["event"]["baseline"]["element"])
        assert learned_again == []
        assert alert["event"]["baseline"]["workload"] == workload
        shown = subprocess.run([sys.executable, "-m", "roxd.ctl", "--socket", sock,
                                "baselines", "show", workload], capture_output=True,
                               text=True, timeout=30, cwd="/")
        assert shown.returncode == 0 and "outbound tcp/8080 workload:" in shown.stdout
    finally:
        rp.stop()
