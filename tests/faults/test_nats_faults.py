"""The NATS JetStream exporter under faults, against a real nats-server: its queue file on a
real full filesystem (the 2 MiB tmpfs of tests/faults, filled to the last byte) and its
sender's tasks crashing. It keeps what it has, counts, says why in health, delivers, and
recovers when space is back; it never stops sending."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from roxd.alerts.diskqueue import DiskQueue
from roxd.alerts.jetstream import JetStreamSink
from roxd.alerts.node import NodeIdentity
from roxd.alerts.settings import NatsSettings
from roxd.model import Alert
from tests.conftest import REPO, wait_until
from tests.faults.conftest import fill
from tests.faults.test_sink_faults import Faulty
from tests.system.alerts_factory import make_alert
from tests.system.natsd import NatsServer, nats_server

pytestmark = pytest.mark.faults
__all__ = ["nats_server"]  # the fixture, imported for pytest

NODE = NodeIdentity(hostname="node-f", machine_id="f" * 32, kubernetes_node="")


def settings(server: NatsServer, **kw: object) -> NatsSettings:
    base: dict[str, object] = {"backoff_max_s": 0.3, "connect_timeout_s": 2.0,
                               "ack_timeout_s": 2.0, "heartbeat_s": 0.5}
    return NatsSettings(servers=(server.url,), **{**base, **kw})  # type: ignore[arg-type]


def roxctl_fleet_nodes(server: NatsServer, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "roxd.ctl", *args, "fleet", "nodes",
                          "--server", server.url], capture_output=True, text=True, timeout=60,
                         cwd=REPO, check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout


def fleet_node(server: NatsServer) -> dict[str, Any]:
    nodes = json.loads(roxctl_fleet_nodes(server, "--json"))
    return {n["name"]: n for n in nodes}["node-f"]


def stream_ids(server: NatsServer) -> list[str]:
    return [m.msg_id for m in server.messages() if m.subject.endswith(".alerts")]


def test_a_full_disk_under_the_queue_file_keeps_every_alert_and_recovers(
        nats_server: NatsServer, small_fs: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="roxd.alerts.nats")
    sink = JetStreamSink(settings(nats_server), small_fs / "state", NODE)
    emitted: list[Alert] = []

    def emit(alerts: list[Alert]) -> None:
        for a in alerts:
            emitted.append(a)
            sink.emit(a)

    try:
        emit([make_alert()])
        assert sink.flush(20), sink.stats()
        nats_server.stop()  # what follows must wait in the queue file
        emit([make_alert(args=("x", str(i))) for i in range(5)])
        wait_until(lambda: sink.stats()["queued"] == 5 and sink.stats()["failed"] >= 1, 20,
                   message="5 records in the queue file")
        filler = fill(small_fs)
        big = tuple("x" * 900 for _ in range(40))  # ~36 KiB a record: the file must grow
        emit([make_alert(args=(*big, str(i))) for i in range(30)])
        wait_until(lambda: sink.stats()["storage_errors"] >= 1, 20,
                   message="the queue file refusing a write")
        problems = sink.problems()
        assert any("full" in p and str(sink.queue_path) in p for p in problems), problems
        assert sink.stats()["queued"] == 35  # 5 in the file, 30 held in memory
        assert sink._thread.is_alive()
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and "full" in errors[0], errors

        nats_server.start()  # the disk is still full: the file's 5, then memory's 30
        wait_until(lambda: len(stream_ids(nats_server)) == 36, 30,
                   message="every alert in the stream while the disk is full")
        assert sink.stats()["queued"] == 0
        # the fleet view shows the node up, with its problem (from its heartbeat)
        wait_until(lambda: any("full" in p for p in fleet_node(nats_server)["problems"]), 20,
                   message="the problem in the node's heartbeat")
        table = roxctl_fleet_nodes(nats_server)
        assert "node-f: its queue file" in table and "PROBLEMS" in table, table

        filler.unlink()  # space is back: the file works again
        emit([make_alert() for _ in range(10)])
        assert sink.flush(20), sink.stats()
        wait_until(lambda: not sink.problems(), 20, message="the problem to clear")
        assert any("works again" in r.getMessage() for r in caplog.records)
    finally:
        sink.close(5)
    assert stream_ids(nats_server) == [a.id for a in emitted]  # each once, in order
    stats = sink.stats()
    assert stats["dropped"] == 0 and stats["restarts"] == 0 and stats["queued"] == 0


def test_a_sink_started_on_a_full_disk_delivers_and_opens_its_queue_file_later(
        nats_server: NatsServer, small_fs: Path) -> None:
    """roxd (re)started with the state dir full: the queue file cannot even be created. The
    exporter starts anyway (it used to be left out until the next restart), delivers from
    memory, says why in health, and makes the file once there is room."""
    filler = fill(small_fs)
    sink = JetStreamSink(settings(nats_server), small_fs / "state", NODE)
    emitted = [make_alert() for _ in range(5)]
    try:
        assert any(str(sink.queue_path) in p for p in sink.problems()), sink.problems()
        for a in emitted[:3]:
            sink.emit(a)
        assert sink.flush(20), sink.stats()
        assert sink.stats()["storage_errors"] >= 1
        filler.unlink()
        wait_until(lambda: not sink.problems(), 30, message="the queue file opened")
        assert isinstance(sink._disk, DiskQueue)
        for a in emitted[3:]:
            sink.emit(a)
        assert sink.flush(20), sink.stats()
    finally:
        sink.close(5)
    assert stream_ids(nats_server) == [a.id for a in emitted]
    assert sink.stats()["dropped"] == 0


def test_records_held_in_memory_stay_in_order_behind_the_file(
        nats_server: NatsServer, tmp_path: Path) -> None:
    """The queue file fails (injected: an I/O error) while the server is down and comes back
    before the server: what memory held moves to the file behind what it had."""
    nats_server.stop()
    sink = JetStreamSink(settings(nats_server), tmp_path / "state", NODE)
    emitted = [make_alert(args=("x", str(i))) for i in range(20)]
    try:
        for a in emitted[:5]:
            sink.emit(a)
        wait_until(lambda: len(sink._disk) == 5, 20, message="5 in the queue file")
        import sqlite3
        fault = Faulty(sink._disk, "push", sqlite3.OperationalError("disk I/O error"))
        Faulty(sink._disk, "probe", sqlite3.OperationalError("disk I/O error"))
        for a in emitted[5:]:
            sink.emit(a)
        wait_until(lambda: fault.raised >= 1 and sink.stats()["queued"] == 20, 20,
                   message="15 held in memory")
        assert "disk I/O error" in " ".join(sink.problems())
        fault.on = False
        sink._disk.probe.on = False  # type: ignore[attr-defined]
        wait_until(lambda: not sink.problems() and len(sink._disk) == 20, 20,
                   message="memory's records moved to the file")
        nats_server.start()
        assert sink.flush(30), sink.stats()
    finally:
        sink.close(5)
    assert stream_ids(nats_server) == [a.id for a in emitted]


@pytest.mark.parametrize("error", [RuntimeError("a bug"), asyncio.CancelledError()],
                         ids=["exception", "stray-cancellation"])
def test_a_crashed_sender_task_is_logged_once_counted_restarted_and_in_health(
        nats_server: NatsServer, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        error: BaseException) -> None:
    """An exception out of the sender task, or a CancelledError nobody asked for (what a
    library future cancelled under an await raises): the task starts again and delivers,
    heartbeats never stop, one error line, a counter, a health problem."""
    caplog.set_level(logging.INFO, logger="roxd.alerts.nats")
    sink = JetStreamSink(settings(nats_server), tmp_path / "state", NODE)
    try:
        wait_until(lambda: sink.stats()["heartbeats"] >= 1, 20, message="a first heartbeat")
        fault = Faulty(sink, "_send_window", error, times=3)  # type: ignore[arg-type]
        a = make_alert()
        sink.emit(a)
        wait_until(lambda: fault.raised >= 3 and sink.stats()["restarts"] >= 3, 30,
                   message="three crashes")
        beats = sink.stats()["heartbeats"]
        assert sink.flush(20), sink.stats()
        wait_until(lambda: sink.stats()["heartbeats"] >= beats + 2, 20,
                   message="heartbeats after the restarts")
        problems = sink.problems()
        assert any("sender task crashed 3 times" in p for p in problems), problems
    finally:
        sink.close(5)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "sender task crashed" in errors[0].getMessage(), errors
    assert errors[0].exc_info is not None  # with its traceback, once
    assert stream_ids(nats_server) == [a.id]


class Stuck:
    """The first call never returns and swallows every cancellation (as nats-py's
    `_flush_pending` swallows CancelledError): an await no timeout can end. Later calls are
    the real method."""

    def __init__(self, target: object, name: str) -> None:
        self.real = getattr(target, name)
        self.calls = 0
        setattr(target, name, self)

    async def __call__(self, *args: object, **kw: object) -> object:
        self.calls += 1
        if self.calls == 1:
            while True:
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.sleep(3600)
        return await self.real(*args, **kw)


@pytest.mark.parametrize("fault", ["stray-cancellation", "stuck-await"])
def test_heartbeats_go_on_after_their_task_died_or_got_stuck_while_idle(
        nats_server: NatsServer, tmp_path: Path, fault: str) -> None:
    """Issue 19's stale node: heartbeats that stop on an idle node while it still works. The
    heartbeat path died (a CancelledError nobody asked for escaped it) or hung in an await
    that swallows cancellation (so even a timeout around it never returns): before, either
    took the whole sender with it, silently while idle. Now the heartbeat task is supervised
    and watched: it is restarted, counted and shown in health, and alerts never wait for it."""
    cfg = settings(nats_server, heartbeat_s=0.3, connect_timeout_s=0.5, ack_timeout_s=0.5)
    state = tmp_path / "state"
    if fault == "stray-cancellation":
        sink = JetStreamSink(cfg, state, NODE)
        wait_until(lambda: sink.stats()["heartbeats"] >= 1, 20, message="a first heartbeat")
        Faulty(sink, "heartbeat", asyncio.CancelledError(), times=2)
    else:  # stuck in the very first heartbeat's bucket lookup, from start
        sink = JetStreamSink.__new__(JetStreamSink)
        Stuck(sink, "_heartbeat_bucket")
        sink.__init__(cfg, state, NODE)  # type: ignore[misc]
    try:
        a = make_alert()
        sink.emit(a)
        assert sink.flush(20), sink.stats()  # alerts never wait for heartbeats
        beats = sink.stats()["heartbeats"]
        wait_until(lambda: sink.stats()["heartbeats"] >= beats + 3, 30,
                   message="heartbeats going on while idle")
        assert sink.stats()["restarts"] >= 1
        assert any("heartbeat task" in p for p in sink.problems()), sink.problems()
    finally:
        sink.close(5)
    assert stream_ids(nats_server) == [a.id]
