"""An OTLP/HTTP logs receiver for the tests: decodes what a collector's otlp receiver decodes
(POST /v1/logs, application/x-protobuf, optionally gzip), with the OpenTelemetry project's own
protobuf definitions, and answers an ExportLogsServiceResponse.

It listens on 127.0.0.1 only, can be stopped and started again on the same port (an outage),
answer the next requests with an error status (and a Retry-After), and require a bearer token.
"""

from __future__ import annotations

import contextlib
import gzip
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)

from tests.system.conftest import free_port


def attributes(kvs: Any) -> dict[str, Any]:
    """OTLP KeyValues as a dict of Python values (arrays as lists)."""
    return {kv.key: any_value(kv.value) for kv in kvs}


def any_value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind is None:
        return None
    return getattr(v, kind)


@dataclass(frozen=True)
class Received:
    resource: dict[str, Any]
    scope: str
    record: Any  # the LogRecord

    @property
    def attrs(self) -> dict[str, Any]:
        return attributes(self.record.attributes)

    @property
    def uid(self) -> str:
        return str(self.attrs.get("log.record.uid", ""))


@dataclass
class OtlpReceiver:
    port: int
    token: str = ""
    tls: ssl.SSLContext | None = None
    records: list[Received] = field(default_factory=list)
    requests: int = 0
    failures: list[tuple[int, str]] = field(default_factory=list)  # (status, Retry-After)
    partial_reject: int = 0  # the next 2xx says this many were rejected
    lock: threading.Lock = field(default_factory=threading.Lock)
    _conns: set[Any] = field(default_factory=set)  # kept-alive client connections
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}/v1/logs"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                with receiver.lock:
                    receiver._conns.add(self.request)

            def finish(self) -> None:
                with receiver.lock:
                    receiver._conns.discard(self.request)
                super().finish()

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    receiver.requests += 1
                    if self.path != "/v1/logs":
                        return self._answer(404, b"no such path")
                    if receiver.token and self.headers.get(
                            "Authorization") != f"Bearer {receiver.token}":
                        return self._answer(401, b"bad token")
                    if receiver.failures:
                        status, retry_after = receiver.failures.pop(0)
                        return self._answer(status, b"busy", retry_after)
                    if self.headers.get("Content-Type") != "application/x-protobuf":
                        return self._answer(415, b"want protobuf")
                    if self.headers.get("Content-Encoding") == "gzip":
                        body = gzip.decompress(body)
                    req = ExportLogsServiceRequest.FromString(body)
                    for rl in req.resource_logs:
                        res = attributes(rl.resource.attributes)
                        for sl in rl.scope_logs:
                            for rec in sl.log_records:
                                receiver.records.append(Received(res, sl.scope.name, rec))
                    resp = ExportLogsServiceResponse()
                    if receiver.partial_reject:
                        resp.partial_success.rejected_log_records = receiver.partial_reject
                        resp.partial_success.error_message = "test rejection"
                        receiver.partial_reject = 0
                    self._answer(200, resp.SerializeToString())

            def _answer(self, status: int, body: bytes, retry_after: str = "") -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(body)))
                if retry_after:
                    self.send_header("Retry-After", retry_after)
                self.end_headers()
                self.wfile.write(body)

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        if self.tls is not None:
            server.socket = self.tls.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={
            "poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        with self.lock:  # kept-alive connections die with the "collector" too
            conns = list(self._conns)
        for sock in conns:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(5)

    def uids(self) -> list[str]:
        with self.lock:
            return [r.uid for r in self.records]


def start_receiver(port: int | None = None, **kw: Any) -> OtlpReceiver:
    r = OtlpReceiver(port or free_port(), **kw)
    r.start()
    return r


@pytest.fixture
def otlp_receiver() -> Iterator[OtlpReceiver]:
    r = start_receiver()
    try:
        yield r
    finally:
        r.stop()


def server_tls(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    return ctx
