"""The opt-in TCP listener for Prometheus: GET /metrics, nothing else.

    [metrics]
    listen = ""                 # off (default): /v1/metrics on the control socket only
    listen = "9560"             # 127.0.0.1:9560 (a bare port is loopback)
    listen = "0.0.0.0:9560"     # every interface: for a Prometheus server on another host

    listener = MetricsListener.start(parse_listen("9560"), render)   # render() -> str
    listener.address -> ("127.0.0.1", 9560); listener.close()

It serves the same text as GET /v1/metrics on the control socket (`render`), read-only and
unauthenticated, as Prometheus' own exporters do: bind it to loopback or to a network only the
Prometheus server reaches. A request is answered on the listener's own threads; the render
reads snapshots, never a lock on roxd's event loop. Any other path is 404, any other method 405.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from roxd.api.metrics import CONTENT_TYPE

log = logging.getLogger("roxd.metrics")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9560  # next to node_exporter's 9100 range, not in the registry's taken list


@dataclass(frozen=True)
class ListenAddress:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_listen(value: str) -> ListenAddress | None:
    """"" -> None (off); "9560" or ":9560" -> loopback; "host:port"; "[v6]:port".
    ValueError names what is wrong."""
    value = value.strip()
    if not value:
        return None
    host, port_text = DEFAULT_HOST, value
    if value.startswith("["):
        end = value.find("]")
        if end < 0 or not value[end + 1:].startswith(":"):
            raise ValueError(f"{value!r}: an IPv6 address is written [address]:port")
        host, port_text = value[1:end], value[end + 2:]
    elif ":" in value:
        host, _, port_text = value.rpartition(":")
        host = host or DEFAULT_HOST
        if ":" in host:
            raise ValueError(f"{value!r}: an IPv6 address is written [address]:port")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{value!r}: the port must be 1..65535")
    return ListenAddress(host, int(port_text))


class MetricsListener:
    def __init__(self, server: ThreadingHTTPServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        self.scrapes = 0

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @classmethod
    def start(cls, where: ListenAddress, render: Callable[[], str]) -> MetricsListener:
        """Bind and serve; OSError (address in use, not local) goes to the caller."""
        holder: dict[str, MetricsListener] = {}

        class Handler(BaseHTTPRequestHandler):
            server_version = "roxd"
            sys_version = ""

            def log_message(self, *_: Any) -> None:  # a scrape every 15 s: no log line each
                pass

            def do_GET(self) -> None:
                self._serve(with_body=True)

            def do_HEAD(self) -> None:
                self._serve(with_body=False)

            def _serve(self, with_body: bool) -> None:
                if self.path.split("?", 1)[0] != "/metrics":
                    return self._answer(404, b"roxd: metrics are at /metrics\n", with_body)
                try:
                    body = render().encode()
                except Exception:
                    log.exception("metrics: render failed")
                    return self._answer(500, b"roxd: metrics unavailable\n", with_body)
                holder["self"].scrapes += 1
                self._answer(200, body, with_body, CONTENT_TYPE)

            def _refuse(self) -> None:
                self.send_response(405)
                self.send_header("Allow", "GET, HEAD")
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = do_PUT = do_DELETE = do_PATCH = _refuse

            def _answer(self, status: int, body: bytes, with_body: bool,
                        content_type: str = "text/plain; charset=utf-8") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if with_body:
                    self.wfile.write(body)

        server_cls = _V6Server if ":" in where.host else ThreadingHTTPServer
        server = server_cls((where.host, where.port), Handler)
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.25},
                                  name="roxd-metrics", daemon=True)
        listener = cls(server, thread)
        holder["self"] = listener
        thread.start()
        log.info("Prometheus metrics on http://%s/metrics", where)
        return listener

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(2.0)


class _V6Server(ThreadingHTTPServer):
    import socket as _socket

    address_family = _socket.AF_INET6


class NoMetricsListener:
    """[metrics] listen = "", or a listener that could not bind: nothing to close."""

    scrapes = 0

    def close(self) -> None:
        return


def start_metrics_listener(listen: str, render: Callable[[], str]
                           ) -> MetricsListener | NoMetricsListener:
    """The listener, or the "off" object: an address that cannot be bound is one error line,
    and roxd runs on without it (the control socket still has /v1/metrics)."""
    where = parse_listen(listen)  # checked when the config was loaded
    if where is None:
        return NoMetricsListener()
    try:
        return MetricsListener.start(where, render)
    except OSError as exc:
        log.error("metrics listener on %s not started: %s; /v1/metrics on the control socket "
                  "still works", where, exc.strerror or exc)
        return NoMetricsListener()
