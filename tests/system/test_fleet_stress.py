"""The two-machine test's delivery path on this host alone, cheap enough to loop (issue 19's
delivery stall): two node processes (tests/system/fleet_node.py: roxd's NATS exporter, its
disk queue, heartbeats and incident changes; no sensor) publish to one nats-server. As in
test_fleet_nspawn.py: markers, the server stopped, more markers (queued on disk), node a's
process restarted during the outage (SIGTERM-like close, a new process on the same queue),
the server started, more markers. Then every marker of each node must be in the stream once,
in order, within a bound; on failure the message says which node, which marker numbers are
missing, and each node's counters, problems and log.

Busy loops (`ROXD_FLEET_STRESS_BUSY`, default 2: one per core of this machine) run during each
cycle, so the exporter runs on a loaded host as in the runs that stalled. `ROXD_FLEET_STRESS_
CYCLES` (default 1) repeats the cycle with a fresh server and fresh queues.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO
from tests.system.natsd import NatsServer, running_nats_server

pytestmark = pytest.mark.system

PER_PHASE = 5
DELIVERY_BOUND_S = 90.0  # what the two-machine test waits
RESTART_GAP_S = float(os.environ.get("ROXD_FLEET_STRESS_RESTART_S", "1"))
SETTINGS = {"heartbeat_s": 1.0, "backoff_max_s": 0.5, "connect_timeout_s": 2.0,
            "ack_timeout_s": 2.0,
            "gil_hog": float(os.environ.get("ROXD_FLEET_STRESS_GIL", "0.9"))}


class NodeProc:
    """One fleet_node process; restartable on the same state dir."""

    def __init__(self, workdir: Path, hostname: str, url: str) -> None:
        self.workdir = workdir
        self.hostname = hostname
        self.settings = json.dumps({**SETTINGS, "servers": [url]})
        self.proc: subprocess.Popen[str] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = (self.workdir / f"{self.hostname}.log").open("a")
        log.write(f"==== start {self.starts} at {time.time():.3f}\n")
        log.flush()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.system.fleet_node",
             str(self.workdir / f"state-{self.hostname}"), self.hostname, self.settings],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)})
        log.close()

    def ask(self, line: str) -> str:
        assert self.proc is not None and self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        assert answer, f"{self.hostname} exited:\n{self.log()[-3000:]}"
        return answer.strip()

    def stats(self) -> dict[str, Any]:
        return json.loads(self.ask("stats"))

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                self.ask("quit")
                self.proc.wait(15)
            except (AssertionError, OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def log(self) -> str:
        path = self.workdir / f"{self.hostname}.log"
        return path.read_text(errors="replace") if path.exists() else ""


@contextmanager
def busy_loops(n: int) -> Iterator[None]:
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait(5)


def markers_in_stream(server: NatsServer, hostname: str) -> list[int]:
    """The marker numbers of the node's alerts in the stream, in stream order."""
    out = []
    for m in server.messages():
        if m.subject == f"roxd.{hostname}.alerts":
            out.append(int(m.record["process"]["args"][-1].split()[-1]))
    return out


def one_cycle(workdir: Path, cycle: int) -> dict[str, Any]:
    with running_nats_server(workdir / "nats") as server:  # stopped after the nodes
        return _cycle(server, workdir, cycle)


def _cycle(server: NatsServer, workdir: Path, cycle: int) -> dict[str, Any]:
    nodes = [NodeProc(workdir, f"stress-{x}-{cycle}", server.url) for x in ("a", "b")]
    try:
        for n in nodes:
            n.start()

        def markers(first: int) -> None:
            for n in nodes:
                assert n.ask(f"emit {first} {PER_PHASE}") == "ok"

        markers(0)
        time.sleep(1.0)
        server.stop()
        markers(PER_PHASE)
        time.sleep(1.0)
        a = nodes[0]
        a.stop()
        time.sleep(RESTART_GAP_S)  # roxd's start (BPF compile) takes a while on a busy host
        a.start()
        time.sleep(1.0)
        server.start()
        markers(2 * PER_PHASE)
        total = 3 * PER_PHASE
        start = time.monotonic()
        waited: dict[str, float] = {}
        got: dict[str, list[int]] = {}
        while time.monotonic() - start < DELIVERY_BOUND_S:
            for n in nodes:
                if n.hostname not in waited:
                    got[n.hostname] = markers_in_stream(server, n.hostname)
                    if len(got[n.hostname]) >= total:
                        waited[n.hostname] = time.monotonic() - start
            if len(waited) == len(nodes):
                break
            time.sleep(0.2)
        report = {n.hostname: {"delivered_after_s": waited.get(n.hostname),
                               "markers": got.get(n.hostname),
                               **n.stats()} for n in nodes}
        missing = {h: sorted(set(range(total)) - set(r["markers"] or []))
                   for h, r in report.items()}
        if any(missing.values()) or any(r["markers"] != list(range(total))
                                         for r in report.values()):
            logs = "\n".join(f"==== {n.hostname} log\n{n.log()[-6000:]}" for n in nodes)
            raise AssertionError(
                f"cycle {cycle}: missing markers {missing} after {DELIVERY_BOUND_S}s\n"
                f"{json.dumps(report, indent=1)}\n{logs}\n==== nats-server\n"
                f"{server.log()[-3000:]}")
        return report
    finally:
        for n in nodes:
            n.stop()


def test_two_nodes_deliver_everything_across_a_server_restart_under_load(
        tmp_path: Path) -> None:
    cycles = int(os.environ.get("ROXD_FLEET_STRESS_CYCLES", "1"))
    busy = int(os.environ.get("ROXD_FLEET_STRESS_BUSY", "2"))
    with busy_loops(busy):
        for cycle in range(cycles):
            report = one_cycle(tmp_path / f"c{cycle}", cycle)
            print(json.dumps({h: (r["delivered_after_s"], r["stats"]) for h, r in
                              report.items()}), flush=True)
            for r in report.values():
                assert r["stats"]["dropped"] == 0
