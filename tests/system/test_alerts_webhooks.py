"""Webhooks against a real HTTP server on 127.0.0.1: payload shapes, retries, timeouts,
and the bounded queue."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from roxd.alerts.settings import WebhookSettings
from roxd.alerts.webhooks import WebhookSink
from roxd.model import Severity
from tests.conftest import wait_until
from tests.system.alerts_factory import make_alert, rule

pytestmark = pytest.mark.system


@dataclass
class Receiver:
    url: str
    fail_first: int = 0  # answer HTTP 500 to this many requests first
    hang: threading.Event | None = None  # requests wait for it (at most 10 s)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    attempts: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with state.lock:
                state.attempts += 1
                failing = state.attempts <= state.fail_first
            if state.hang is not None:
                state.hang.wait(10)
            if failing:
                self.send_response(500)
                self.end_headers()
                return
            assert self.headers["Content-Type"] == "application/json"
            with state.lock:
                state.bodies.append(json.loads(body))
            self.send_response(202)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook/secret-token"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        if state.hang is not None:
            state.hang.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def sink(r: Receiver, **kw: Any) -> WebhookSink:
    return WebhookSink(WebhookSettings(url=r.url, **{"backoff_s": 0.05, **kw}), source="node-1")


@pytest.mark.parametrize("kind", ["generic", "slack", "pagerduty"])
def test_payload_shapes(kind: str, receiver: Receiver) -> None:
    s = sink(receiver, kind=kind, routing_key="R0UT1NG", min_severity="info")
    a = make_alert(rule_ref=rule(severity=Severity.CRITICAL))
    s.emit(a)
    assert s.flush(20)
    s.close()
    [body] = receiver.bodies
    if kind == "generic":
        assert body["id"] == a.id and body["rule"]["id"] == a.rule.id
        assert body["container"]["name"] == "web" and body["kind"] == "match"
    elif kind == "slack":
        assert a.rule.id in body["text"] and body["blocks"][0]["type"] == "header"
    else:
        assert body["routing_key"] == "R0UT1NG" and body["event_action"] == "trigger"
        assert body["payload"]["severity"] == "critical"
        assert body["payload"]["source"] == "node-1"
        assert body["payload"]["component"] == "web"
        assert body["payload"]["custom_details"]["id"] == a.id
        assert body["dedup_key"]
    assert s.stats()["sent"] == 1


def test_failing_server_gets_retries_then_succeeds(receiver: Receiver) -> None:
    receiver.fail_first = 3
    s = sink(receiver, retries=5)
    a = make_alert()
    s.emit(a)
    assert s.flush(30)
    s.close()
    assert receiver.attempts == 4
    assert [b["id"] for b in receiver.bodies] == [a.id]
    assert s.stats()["retried"] == 3 and s.stats()["sent"] == 1 and s.stats()["failed"] == 0


def test_gives_up_after_the_retries(receiver: Receiver) -> None:
    receiver.fail_first = 100
    s = sink(receiver, retries=2)
    s.emit(make_alert())
    assert s.flush(30)
    s.close()
    assert receiver.attempts == 3 and s.stats()["failed"] == 1


def test_slow_server_times_out_and_overflow_is_counted_not_blocking(receiver: Receiver) -> None:
    receiver.hang = threading.Event()  # never set until teardown: every request hangs
    s = sink(receiver, timeout_s=0.3, retries=0, queue_max=5)
    for _ in range(20):
        s.emit(make_alert())  # returns at once although the server hangs
    stats = s.stats()
    assert stats["dropped"] >= 14  # one in flight, at most 5 queued
    wait_until(lambda: s.stats()["failed"] >= 1, 20, message="a timed-out request")
    s.close(1)
