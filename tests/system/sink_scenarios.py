"""What the NATS and the OTLP system tests do alike with an exporter, against their real
receiving end.

The outage scenario (outage_with_a_restart): a steady stream of numbered alerts, the
receiving end taken away while alerts keep coming, roxd stopped and started again during the
outage (its queue waits on disk for the new exporter), the receiving end back while the stream
goes on. Each test then checks its own store for every alert exactly once, in order."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Protocol

import pytest

from roxd.alerts.queued import QueuedExporter
from roxd.model import Alert
from tests.conftest import wait_until
from tests.system.alerts_factory import make_alert


class ReceivingEnd(Protocol):
    """What the scenario takes away and brings back (NatsServer, OtlpReceiver)."""

    def stop(self) -> None: ...

    def start(self) -> None: ...


def stream_for(sink: QueuedExporter, seconds: float, emitted: list[Alert]) -> None:
    """Alerts numbered on from len(emitted) ("x", "<n>"), one about every 4 ms."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        a = make_alert(args=("x", str(len(emitted))))
        emitted.append(a)
        sink.emit(a)
        time.sleep(0.004)


def outage_with_a_restart(new_sink: Callable[[], QueuedExporter],
                          end: ReceivingEnd) -> tuple[list[Alert], QueuedExporter]:
    """Runs the scenario with exporters made by new_sink (the same state dir each time);
    returns what was emitted, in order, and the second exporter (closed, its backlog gone)."""
    emitted: list[Alert] = []
    sink = new_sink()
    try:
        stream_for(sink, 1.0, emitted)
        wait_until(lambda: sink.stats()["sent"] >= 50, 20, message="alerts flowing")
        end.stop()  # the receiving end goes away while alerts keep coming
        stream_for(sink, 1.5, emitted)
        wait_until(lambda: sink.stats()["failed"] >= 1, 20, message="a failed delivery")
    finally:
        sink.close(1)  # roxd stops during the outage
    queued_at_stop = sink.stats()["queued"]
    assert queued_at_stop > 0 and sink.stats()["dropped"] == 0

    sink = new_sink()  # roxd starts, the receiving end still down
    try:
        assert sink.stats()["queued"] == queued_at_stop
        stream_for(sink, 1.0, emitted)
        end.start()
        stream_for(sink, 1.0, emitted)  # and the stream goes on while the backlog drains
        assert sink.flush(60), sink.stats()
    finally:
        sink.close(5)
    return emitted, sink


def deliver(sink: QueuedExporter, alerts: Iterable[Alert] = ()) -> None:
    """Emit `alerts`, wait (20 s at most) until nothing is left to send, close the exporter:
    fails, with its counters, when something was left."""
    try:
        for a in alerts:
            sink.emit(a)
        assert sink.flush(20), sink.stats()
    finally:
        sink.close(5)


def refused(sink: QueuedExporter, alert: Alert, failures: int, what: str) -> None:
    """Emit `alert`, wait (20 s at most) for `failures` failed attempts, close the exporter
    quickly (the alert stays queued on disk)."""
    try:
        sink.emit(alert)
        wait_until(lambda: sink.stats()["failed"] >= failures, 20, message=what)
    finally:
        sink.close(0.5)


def warning_messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What was logged at WARNING (a bad setting or an unreachable end: one line, not one per
    attempt)."""
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
