"""The communication map on real parts (issue 17): a client container talks to a server
container on the default bridge; `roxctl netmap` shows the edge between the two by name, with
its port, protocol and results, a refused port as a failed edge, the client's own loopback,
and a DOT rendering that Graphviz draws."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import start_roxd, wait_until

pytestmark = pytest.mark.kernel

CONFIG = "[daemon]\nstats_interval_s = 1.0\n"


def _roxctl(sock: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "roxd.ctl", "--socket", sock, *args],
                          capture_output=True, text=True, timeout=60, cwd="/")


def test_roxctl_netmap_shows_who_talks_to_whom(run_container: Any) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="roxd-netmap-"))
    sock = str(workdir / "roxd.sock")
    rp = start_roxd(workdir, config=CONFIG)
    try:
        rp.wait_ready()
        server = run_container("while true; do nc -l -p 8080 -e /bin/echo hello; done")
        client = run_container("sleep 600")
        server.reload()
        ip = server.attrs["NetworkSettings"]["IPAddress"]

        def talk() -> bool:
            out = client.exec_run(["sh", "-c", f"nc -w 2 {ip} 8080 </dev/null"]).output
            return b"hello" in out

        wait_until(talk, 20, message="the client reaches the server")

        def edges() -> dict[tuple[str, str, int], dict[str, Any]] | None:
            # roxd learns a new container's address within a second of seeing it: connects
            # before that count as external; the next ones land on the container's edge
            talk()
            client.exec_run(["sh", "-c", f"nc -w 1 {ip} 9 </dev/null; "
                                         "nc -w 1 127.0.0.1 1 </dev/null; true"])
            shown = _roxctl(sock, "netmap", "--container", client.name, "--format", "json")
            assert shown.returncode == 0, shown.stderr
            items = json.loads(shown.stdout)["items"]
            found = {(f["destination"]["kind"], f["destination"].get("name") or
                      f["destination"]["id"], f["port"]): f for f in items}
            wanted = {("container", server.name, 8080), ("container", server.name, 9),
                      ("loopback", "loopback", 1)}
            return found if wanted <= set(found) else None

        found = wait_until(edges, 20, message="the client's three edges in the map")
        web = found[("container", server.name, 8080)]
        assert web["source"]["name"] == client.name and web["source"]["kind"] == "container"
        assert web["protocol"] == "tcp" and web["succeeded"] >= 1 and web["count"] >= 1
        assert web["destination"]["id"] == server.id and ip in web["addresses"]
        refused = found[("container", server.name, 9)]
        assert refused["failed"] >= 1 and refused["succeeded"] == 0
        assert found[("loopback", "loopback", 1)]["failed"] >= 1

        table = _roxctl(sock, "netmap", "--container", client.name)
        assert table.returncode == 0 and "tcp/8080" in table.stdout
        assert server.name in table.stdout
        dot = _roxctl(sock, "netmap", "--format", "dot")
        assert dot.returncode == 0 and dot.stdout.startswith("digraph")
        svg = subprocess.run(["dot", "-Tsvg"], input=dot.stdout, capture_output=True,
                             text=True, check=True).stdout
        assert "<svg" in svg
        # Graphviz's plain output names each node's label as drawn (SVG escapes '-')
        plain = subprocess.run(["dot", "-Tplain"], input=dot.stdout, capture_output=True,
                               text=True, check=True).stdout
        assert server.name in plain and client.name in plain
        bad = _roxctl(sock, "netmap", "--since", "yesterday-ish")
        assert bad.returncode == 2 and "since" in bad.stderr  # HTTP 400: a usage error
    finally:
        rp.stop()
