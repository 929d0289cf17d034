"""NATS JetStream export against a real nats-server (-js, loopback, temp store): publish with
acknowledgements and node identity, de-duplication by alert id, an outage with a roxd restart
in the middle under a steady alert stream, a lost acknowledgement after the duplicate window,
and bad configuration that is one log line and counters."""

from __future__ import annotations

import logging
import ssl
import time
from pathlib import Path

import pytest

from roxd.alerts.jetstream import JetStreamSink
from roxd.alerts.node import NodeIdentity
from roxd.alerts.record import encode_record, export_record
from roxd.alerts.settings import NatsSettings
from tests.conftest import wait_until
from tests.system.alerts_factory import make_alert
from tests.system.conftest import TlsFiles
from tests.system.natsd import NatsServer, nats_server, running_nats_server, start_nats_server
from tests.system.sink_scenarios import (
    deliver,
    outage_with_a_restart,
    refused,
    warning_messages,
)

pytestmark = pytest.mark.system
__all__ = ["nats_server"]  # the fixture, imported for pytest

NODE = NodeIdentity(hostname="node-1.example.org", machine_id="0123456789abcdef0123456789abcdef",
                    kubernetes_node="")
SUBJECT = "roxd.node-1_example_org.alerts"


def settings(server: NatsServer, **kw: object) -> NatsSettings:
    base: dict[str, object] = {"backoff_max_s": 0.5, "connect_timeout_s": 2.0,
                               "ack_timeout_s": 2.0}
    return NatsSettings(servers=(server.url,), **{**base, **kw})  # type: ignore[arg-type]


def test_publishes_acknowledged_records_with_node_identity(
        nats_server: NatsServer, tmp_path: Path) -> None:
    sink = JetStreamSink(settings(nats_server), tmp_path / "state", NODE)
    alerts = [make_alert(args=("sh", "-c", f"echo {i}\nfake line\x85\u2028")) for i in range(3)]
    deliver(sink, alerts)
    stats = sink.stats()
    assert (stats["sent"], stats["queued"], stats["failed"], stats["dropped"]) == (3, 0, 0, 0)
    stored = nats_server.messages()
    assert [m.msg_id for m in stored] == [a.id for a in alerts]
    assert {m.subject for m in stored} == {SUBJECT}
    first = stored[0].record
    assert first["node"] == NODE.to_dict()
    assert first["id"] == alerts[0].id and first["kind"] == "match"
    assert first["process"]["args"] == ["sh", "-c", "echo 0\nfake line\x85\u2028"]


def test_the_same_alert_twice_is_stored_once(nats_server: NatsServer, tmp_path: Path) -> None:
    sink = JetStreamSink(settings(nats_server), tmp_path / "state", NODE)
    a, b = make_alert(), make_alert()
    deliver(sink, (a, a, b, a))
    assert [m.msg_id for m in nats_server.messages()] == [a.id, b.id]
    assert sink.stats()["sent"] == 4 and sink.stats()["duplicates"] == 2


def test_outage_and_restart_under_a_steady_stream_lose_and_repeat_nothing(
        nats_server: NatsServer, tmp_path: Path) -> None:
    emitted, sink = outage_with_a_restart(
        lambda: JetStreamSink(settings(nats_server), tmp_path / "state", NODE), nats_server)
    stored = nats_server.messages()
    ids = [m.msg_id for m in stored]
    assert len(ids) == len(set(ids)), "a duplicate in the stream"
    assert ids == [a.id for a in emitted], (len(ids), len(emitted))
    assert [m.record["process"]["args"][1] for m in stored] == [str(i) for i in
                                                                range(len(emitted))]
    assert sink.stats()["dropped"] == 0


def test_a_lost_acknowledgement_is_not_sent_again_after_the_duplicate_window(
        nats_server: NatsServer, tmp_path: Path) -> None:
    state = tmp_path / "state"
    cfg = settings(nats_server, duplicate_window_s=1.0)
    sink = JetStreamSink(cfg, state, NODE)  # creates the stream (1 s duplicate window)
    first = make_alert()
    try:
        sink.emit(first)
        assert sink.flush(20)
        nats_server.stop()
        queued = [make_alert(args=("x", str(i))) for i in range(5)]
        for a in queued:
            sink.emit(a)
        wait_until(lambda: sink.stats()["queued"] == 5 and sink.stats()["failed"] >= 1, 20,
                   message="5 queued")
    finally:
        sink.close(1)
    # the server had stored the first two but the acknowledgements never came back
    nats_server.start()
    for a in queued[:2]:
        nats_server.publish(SUBJECT, encode_record(export_record(a, NODE)), a.id)
    time.sleep(1.5)  # past the stream's duplicate window: only the last-message check helps
    sink = JetStreamSink(cfg, state, NODE)
    deliver(sink)
    assert [m.msg_id for m in nats_server.messages()] == [first.id] + [a.id for a in queued]


def test_unreachable_server_is_one_warning_and_counters(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    server = start_nats_server(tmp_path / "nats")
    server.stop()  # a port where nothing listens
    caplog.set_level(logging.INFO, logger="roxd.alerts.nats")
    sink = JetStreamSink(settings(server, backoff_max_s=0.2), tmp_path / "state", NODE)
    try:
        t0 = time.monotonic()
        sink.emit(make_alert())
        assert time.monotonic() - t0 < 0.1  # emit never waits on the network
        wait_until(lambda: sink.stats()["failed"] >= 3, 20, message="three failed attempts")
    finally:
        sink.close(0.5)
    assert sink.stats()["queued"] == 1 and sink.stats()["sent"] == 0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "ConnectionRefusedError" in warnings[0].getMessage()


def test_bad_credentials_are_one_warning_then_delivery_when_fixed(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with running_nats_server(
            tmp_path / "nats", 'authorization { user: roxd, password: "right" }\n') as server:
        caplog.set_level(logging.INFO, logger="roxd.alerts.nats")
        state = tmp_path / "state"
        sink = JetStreamSink(settings(server, user="roxd", password="wrong"), state, NODE)
        a = make_alert()
        refused(sink, a, 2, "refused connects")
        warnings = warning_messages(caplog)
        assert len(warnings) == 1 and "Authorization Violation" in warnings[0], warnings
        sink = JetStreamSink(settings(server, user="roxd", password="right"), state, NODE)
        deliver(sink)
        assert [m.msg_id for m in server.messages(user="roxd", password="right")] == [a.id]


def test_a_missing_stream_without_create_stream_is_one_warning(
        nats_server: NatsServer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="roxd.alerts.nats")
    sink = JetStreamSink(settings(nats_server, create_stream=False), tmp_path / "state", NODE)
    refused(sink, make_alert(), 2, "failed attempts")
    warnings = warning_messages(caplog)
    assert len(warnings) == 1 and "ROXD_ALERTS does not exist" in warnings[0], warnings
    assert sink.stats()["queued"] == 1 and nats_server.messages() == []


def test_tls_with_client_certificates_and_a_checked_server_name(
        tmp_path: Path, tls_files: TlsFiles, caplog: pytest.LogCaptureFixture) -> None:
    with running_nats_server(tmp_path / "nats", (
            f'tls {{ cert_file: "{tls_files.server_cert}", key_file: "{tls_files.server_key}", '
            f'ca_file: "{tls_files.ca}", verify: true }}\n')) as server:
        caplog.set_level(logging.INFO, logger="roxd.alerts.nats")
        tls = {"ca": str(tls_files.ca), "cert": str(tls_files.client_cert),
               "key": str(tls_files.client_key)}
        url = f"tls://127.0.0.1:{server.port}"
        wrong = JetStreamSink(NatsSettings(servers=(url,), server_name="someone-else.roxd.test",
                                           backoff_max_s=0.2, name="wrong", **tls),
                              tmp_path / "state", NODE)
        refused(wrong, make_alert(), 2, "refused handshakes")
        warnings = warning_messages(caplog)
        assert len(warnings) == 1 and "certificate" in warnings[0].lower(), warnings

        a = make_alert()
        sink = JetStreamSink(NatsSettings(servers=(url,), server_name=tls_files.server_name,
                                          **tls), tmp_path / "state", NODE)
        deliver(sink, [a])
        ctx = ssl.create_default_context(cafile=str(tls_files.ca))
        ctx.load_cert_chain(str(tls_files.client_cert), str(tls_files.client_key))
        stored = server.messages(url=url, tls=ctx, tls_hostname=tls_files.server_name)
        assert [m.msg_id for m in stored] == [a.id]


def test_an_unreachable_server_is_one_warning_at_start_before_any_alert(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    server = start_nats_server(tmp_path / "nats")
    server.stop()
    caplog.set_level(logging.INFO, logger="roxd.alerts.nats")
    sink = JetStreamSink(settings(server, heartbeat_s=0.2), tmp_path / "state", NODE)
    try:  # no alert at all: the first heartbeat finds out
        wait_until(lambda: sink.stats()["heartbeat_failed"] >= 2, 20,
                   message="failed heartbeats")
    finally:
        sink.close(0.5)
    warnings = warning_messages(caplog)
    assert len(warnings) == 1 and "ConnectionRefusedError" in warnings[0], warnings
    assert sink.stats()["queued"] == 0


def test_heartbeats_carry_the_node_and_what_it_exported(
        nats_server: NatsServer, tmp_path: Path) -> None:
    import asyncio
    import json

    import nats

    sink = JetStreamSink(settings(nats_server, heartbeat_s=0.2), tmp_path / "state", NODE)
    try:
        sink.emit(make_alert())
        assert sink.flush(20)
        wait_until(lambda: sink.stats()["heartbeats"] >= 3, 20, message="heartbeats")
    finally:
        sink.close(5)

    async def read() -> dict[str, object]:
        nc = await nats.connect(servers=[nats_server.url])
        try:
            kv = await nc.jetstream().key_value("ROXD_NODES")
            return json.loads((await kv.get("node-1_example_org")).value)
        finally:
            await nc.close()

    beat = asyncio.run(read())
    assert beat["node"] == NODE.to_dict() and beat["name"] == "node-1.example.org"
    assert beat["alerts"] == {"total": 1, "by_severity": {"warning": 1}}
    assert beat["subjects"] == {"alerts": SUBJECT,
                                "incidents": "roxd.node-1_example_org.incidents"}


def test_a_sink_started_during_an_outage_heartbeats_while_idle_once_the_server_is_back(
        nats_server: NatsServer, tmp_path: Path) -> None:
    """Issue 19's stale node, as the two-machine test runs it: records queued, roxd restarted
    while the server is down, the server back, then nothing to send. The heartbeats must go on
    (a fresh one in the bucket every interval), not stop after the backlog went out."""
    import asyncio
    import json

    import nats

    state = tmp_path / "state"
    cfg = settings(nats_server, heartbeat_s=0.5, backoff_max_s=0.3)
    sink = JetStreamSink(cfg, state, NODE)
    try:
        sink.emit(make_alert())
        assert sink.flush(20)
        nats_server.stop()
        for _ in range(3):
            sink.emit(make_alert())
        wait_until(lambda: sink.stats()["failed"] >= 1, 20, message="a failed publish")
    finally:
        sink.close(0.5)
    sink = JetStreamSink(cfg, state, NODE)  # restarted during the outage
    try:
        wait_until(lambda: sink.stats()["heartbeat_failed"] >= 1, 20,
                   message="a failed heartbeat during the outage")
        nats_server.start()
        assert sink.flush(30), sink.stats()

        async def beat_time() -> int:
            nc = await nats.connect(servers=[nats_server.url])
            try:
                kv = await nc.jetstream().key_value("ROXD_NODES")
                return int(json.loads((await kv.get("node-1_example_org")).value)["time_ns"])
            finally:
                await nc.close()

        seen = {asyncio.run(beat_time())}
        wait_until(lambda: seen.add(asyncio.run(beat_time())) or len(seen) >= 5, 20,
                   interval=0.2, message="fresh heartbeats in the bucket while idle")
        assert sink.stats()["restarts"] == 0 and sink.problems() == []
    finally:
        sink.close(5)
    assert len(nats_server.messages()) == 4


# ---------------------------------------------------------------------------- delivery stalls
# Issue 19's two-machine delivery stall: the ways a queued record waited longer than needed
# (docs/fleet.md "The delivery stall"). Each test failed before its change.


def test_a_sender_in_backoff_sends_as_soon_as_a_heartbeat_reaches_the_server(
        nats_server: NatsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a long outage the sender's backoff is at backoff_max_s (30 s by default): the
    server back, the heartbeat task reconnects within its interval, and the sender must not
    sleep out the rest of its backoff before sending the backlog."""
    from roxd.alerts import queued

    cfg = settings(nats_server, heartbeat_s=0.3, backoff_max_s=120.0)
    sink = JetStreamSink(cfg, tmp_path / "state", NODE)
    first = make_alert()
    try:
        sink.emit(first)
        assert sink.flush(20)
        # fault injection: the backoff an outage of several minutes leaves behind, at once
        # (the sender reads the start value after each delivered window)
        monkeypatch.setattr(queued, "BACKOFF_START_S", 60.0)
        sink.emit(make_alert())
        assert sink.flush(20)
        nats_server.stop()
        backlog = [make_alert(args=("x", str(i))) for i in range(3)]
        for a in backlog:
            sink.emit(a)
        wait_until(lambda: sink.stats()["failed"] >= 1 and sink.stats()["queued"] == 3, 20,
                   message="a failed publish, 3 queued")
        nats_server.start()
        # well under the 60 s backoff: only a sender woken by the heartbeat gets there
        assert sink.flush(20), sink.stats()
    finally:
        sink.close(5)
    assert [m.msg_id for m in nats_server.messages()][-3:] == [a.id for a in backlog]


class _SlowEveryOtherPut:
    """A key-value handle whose every other put outlasts the ack timeout (a loaded server):
    fault injection around the real handle."""

    def __init__(self, kv: object, delay_s: float) -> None:
        self._kv = kv
        self._delay_s = delay_s
        self.puts = 0

    async def put(self, key: str, value: bytes) -> int:
        import asyncio

        self.puts += 1
        if self.puts % 2 == 0:
            await asyncio.sleep(self._delay_s)
        return await self._kv.put(key, value)  # type: ignore[attr-defined, no-any-return]


def test_a_heartbeat_that_times_out_does_not_close_the_senders_connection(
        nats_server: NatsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A heartbeat put that timed out on a connection still up used to close it, taking the
    sender's publishes in flight with it (their acknowledgements lost, a reconnection, the
    stream and last-message checks again) once per heartbeat on a loaded host."""
    slow: list[_SlowEveryOtherPut] = []
    real_bucket = JetStreamSink._heartbeat_bucket

    async def bucket(self: JetStreamSink, js: object) -> object:
        slow.append(_SlowEveryOtherPut(await real_bucket(self, js), delay_s=1.5))
        return slow[-1]

    monkeypatch.setattr(JetStreamSink, "_heartbeat_bucket", bucket)
    cfg = settings(nats_server, heartbeat_s=0.2, ack_timeout_s=1.0)
    sink = JetStreamSink(cfg, tmp_path / "state", NODE)
    emitted = []
    try:
        end = time.monotonic() + 4.0
        while time.monotonic() < end or sink.stats()["heartbeat_failed"] < 2:
            a = make_alert(args=("x", str(len(emitted))))
            emitted.append(a)
            sink.emit(a)
            time.sleep(0.01)
        assert sink.flush(20), sink.stats()
        stats = sink.stats()
    finally:
        sink.close(5)
    assert stats["heartbeat_failed"] >= 2 and stats["heartbeats"] >= 2, stats
    assert stats["reconnects"] == 0, stats  # the connection stayed up throughout
    assert [m.msg_id for m in nats_server.messages()] == [a.id for a in emitted]


def test_a_connection_closed_under_a_window_in_flight_is_left_at_once(
        nats_server: NatsServer, tmp_path: Path) -> None:
    """The server frozen (SIGSTOP) with publishes awaiting their acknowledgement, then killed:
    the connection closes, and the sender must notice then, not after ack_timeout_s (nats-py
    leaves the futures of a closed connection pending)."""
    import signal

    cfg = settings(nats_server, ack_timeout_s=60.0, heartbeat_s=0.3)
    sink = JetStreamSink(cfg, tmp_path / "state", NODE)
    emitted = []
    try:
        sink.emit(first := make_alert())
        emitted.append(first)
        assert sink.flush(20)
        proc = nats_server.proc
        assert proc is not None
        proc.send_signal(signal.SIGSTOP)  # our own nats-server: acknowledgements stop
        for i in range(5):
            emitted.append(make_alert(args=("x", str(i))))
            sink.emit(emitted[-1])
        time.sleep(0.5)  # published, waiting for acknowledgements that do not come
        proc.kill()  # the kernel resets the connection: nats-py closes it
        proc.wait(10)
        nats_server.start()
        # well under the 60 s ack timeout the sender used to sit out
        assert sink.flush(25), sink.stats()
    finally:
        sink.close(5)
    ids = [m.msg_id for m in nats_server.messages()]
    assert ids == [a.id for a in emitted], (len(ids), len(emitted))


def test_a_sender_stuck_in_an_await_that_never_returns_is_restarted(
        nats_server: NatsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A publish that never returns (nats-py waits for ever on its publish slots or a flush
    when nobody completes them) used to hold every record back for good while the heartbeats
    kept the node `up`: the watchdog now restarts a sender stuck in one send attempt."""
    import asyncio

    from nats.js.client import JetStreamContext

    real = JetStreamContext.publish_async
    hung: list[int] = []

    async def publish_async(self: JetStreamContext, *args: object, **kw: object) -> object:
        if not hung:  # fault injection: the first publish never returns
            hung.append(1)
            await asyncio.Event().wait()
        return await real(self, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(JetStreamContext, "publish_async", publish_async)
    sink = JetStreamSink(settings(nats_server, heartbeat_s=0.5), tmp_path / "state", NODE)
    alerts = [make_alert(args=("x", str(i))) for i in range(3)]
    try:
        for a in alerts:
            sink.emit(a)
        wait_until(lambda: any("send attempt" in p for p in sink.problems()), 60,
                   message="health naming the stuck sender")
        assert sink.flush(60), sink.stats()
        assert sink.stats()["restarts"] == 1
        assert any("sender task crashed" in p for p in sink.problems())
    finally:
        sink.close(5)
    assert [m.msg_id for m in nats_server.messages()] == [a.id for a in alerts]


def test_a_record_queued_twice_does_not_make_what_lies_between_look_stored(
        nats_server: NatsServer, tmp_path: Path) -> None:
    """The last-message check after a reconnection forgot everything up to the LAST queued
    copy of the stream's last message id: with the same record queued twice, what lay
    between the copies was never sent."""
    state = tmp_path / "state"
    cfg = settings(nats_server)
    first, a, b = make_alert(), make_alert(), make_alert()
    sink = JetStreamSink(cfg, state, NODE)
    try:
        sink.emit(first)  # the stream is made
        assert sink.flush(20)
        nats_server.stop()
        for x in (a, b, a):
            sink.emit(x)
        wait_until(lambda: sink.stats()["queued"] == 3 and sink.stats()["failed"] >= 1, 20,
                   message="3 queued")
    finally:
        sink.close(0.5)
    nats_server.start()
    # the stream got the first copy of a, its acknowledgement was lost (fault injection)
    nats_server.publish(SUBJECT, encode_record(export_record(a, NODE)), a.id)
    sink = JetStreamSink(cfg, state, NODE)
    deliver(sink)
    assert [m.msg_id for m in nats_server.messages()] == [first.id, a.id, b.id]
