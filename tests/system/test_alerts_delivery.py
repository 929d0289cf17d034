"""All sinks wired as the daemon wires them: noise control in front of a real rsyslog, the
store and a webhook receiver."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from roxd.alerts.delivery import AlertDelivery
from roxd.alerts.settings import (
    AlertsSettings,
    JournaldSettings,
    NoiseSettings,
    SyslogCollector,
    WebhookSettings,
)
from roxd.alerts.store import AlertQuery
from tests.conftest import wait_until
from tests.system.alerts_factory import make_alert
from tests.system.conftest import Rsyslog

pytestmark = pytest.mark.system


@pytest.fixture
def hook() -> Iterator[tuple[str, list[dict[str, object]]]]:
    bodies: list[dict[str, object]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", bodies
    finally:
        server.shutdown()
        server.server_close()


def test_ten_thousand_identical_alerts_arrive_as_two_with_the_right_count(
        rsyslog: Rsyslog, hook: tuple[str, list[dict[str, object]]], tmp_path: Path) -> None:
    url, bodies = hook
    settings = AlertsSettings(
        journald=JournaldSettings(enabled=False),
        noise=NoiseSettings(fold_window_s=600, per_container_per_minute=100),
        syslog=(SyslogCollector(address="127.0.0.1", port=rsyslog.tcp, protocol="tcp"),),
        webhooks=(WebhookSettings(url=url, min_severity="info"),),
    )
    delivery = AlertDelivery.from_settings(settings, tmp_path / "state")
    assert delivery.store is not None
    try:
        for _ in range(10_000):
            delivery.emit(make_alert())
        wait_until(lambda: len(rsyslog.lines()) == 1 and len(bodies) == 1, 20,
                   message="the first alert at once, at every sink")
    finally:
        delivery.close(10)  # closes the fold window: the summary goes out
    store = type(delivery.store)(tmp_path / "state")  # reopen, as after a restart
    try:
        items = store.query(AlertQuery()).items
    finally:
        store.close()
    assert sorted(i.data["count"] for i in items) == [1, 9999]
    assert {i.data["kind"] for i in items} == {"match", "folded"}
    wait_until(lambda: len(rsyslog.lines()) == 2, 20, message="the summary at rsyslog")
    assert len(bodies) == 2 and sorted(b["count"] for b in bodies) == [1, 9999]  # type: ignore[type-var]
    stats = delivery.stats()
    assert stats["noise.received"] == 10_000 and stats["noise.folded"] == 9_999
    assert stats[f"syslog.tcp-127.0.0.1-{rsyslog.tcp}.sent"] == 2
    assert stats["store.sent"] == 2 and stats["webhook0.generic.sent"] == 2
