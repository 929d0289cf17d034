"""A small HTTP/1.1 server on a Unix socket: one thread per connection, JSON in and out.

Why threads (socketserver.ThreadingMixIn over UnixStreamServer) rather than asyncio: the
daemon's event loop is a blocking poll loop, not an asyncio loop, and the API must never run
on it. API threads only read snapshots (thread-safe stages, lock-guarded queues) and hand
mutations to the loop with `daemon.call_in_loop`; a live stream is a blocking read of its own
bounded queue. The cost of a thread per connection is capped by `max_connections` (503
beyond, decided at accept time) and idle connections are closed after `idle_timeout_s`.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import logging
import socket
import socketserver
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from roxd import __version__
from roxd.api.auth import PeerCred, peer_cred
from roxd.api.settings import ApiSettings
from roxd.errors import ApiError
from roxd.text import json_dumps

log = logging.getLogger(__name__)

ROOT_RESERVED_CONNECTIONS = 8


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Any  # email.message.Message
    body: bytes
    peer: PeerCred

    def json(self) -> Any:
        if not self.body.strip():
            return None
        try:
            return json.loads(self.body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ApiError(400, f"malformed JSON body: {exc}") from None


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()  # more headers (the dashboard: cookies, CSP)

    @classmethod
    def json(cls, obj: Any, status: int = 200) -> Response:
        return cls(status, json_dumps(obj, separators=(",", ":")).encode() + b"\n")

    @classmethod
    def error(cls, status: int, reason: str, **extra: Any) -> Response:
        return cls.json({"error": reason, "status": status, **extra}, status)


@dataclass(frozen=True)
class StreamResponse:
    """A chunked response: `chunks` yields bytes to send, or None as a keep-alive tick."""

    content_type: str
    chunks: Iterator[bytes | None]
    heartbeat: bytes = b"\n"


Dispatch = Callable[[Request], "Response | StreamResponse"]


@dataclass
class ConnectionStats:
    open: int = 0
    accepted: int = 0
    refused: int = 0
    requests: int = 0
    denied: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count_status(self, status: int) -> None:
        with self.lock:
            self.requests += 1
            self.by_status[status] = self.by_status.get(status, 0) + 1


class UnixHttpServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 256
    allow_reuse_address = False

    def __init__(self, path: str, dispatch: Dispatch, settings: ApiSettings) -> None:
        self.dispatch = dispatch
        self.settings = settings
        self.stats = ConnectionStats()
        self.closing = threading.Event()
        handler = type("_BoundHandler", (_Handler,), {"timeout": settings.idle_timeout_s})
        super().__init__(path, handler)

    # Connections are admitted (or refused with 503) at accept time, with the peer's
    # credentials handed to the handler as its "client address".
    def process_request(self, request: Any, client_address: Any) -> None:
        try:
            peer = peer_cred(request)
        except OSError:
            self.shutdown_request(request)
            return
        limit = self.settings.max_connections
        if peer.uid == 0:
            limit += ROOT_RESERVED_CONNECTIONS
        with self.stats.lock:
            admitted = self.stats.open < limit and not self.closing.is_set()
            if admitted:
                self.stats.open += 1
                self.stats.accepted += 1
            else:
                self.stats.refused += 1
        if not admitted:
            _refuse(request, self.settings.max_connections)
            self.shutdown_request(request)
            return
        super().process_request(request, peer)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self.stats.lock:
                self.stats.open -= 1

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception("API connection error (%s)", getattr(client_address, "describe",
                                                          lambda: "?")())


def _refuse(sock: socket.socket, limit: int) -> None:
    body = json.dumps({"error": f"too many connections (limit {limit}); try again",
                       "status": 503}).encode()
    head = (f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    with contextlib.suppress(OSError):
        sock.settimeout(0.2)
        sock.sendall(head + body)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = f"roxd/{__version__}"
    sys_version = ""
    server: UnixHttpServer
    client_address: PeerCred  # type: ignore[assignment]

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("api %s: " + format, self.client_address.describe(), *args)

    def send_error(self, code: int, message: str | None = None,
                   explain: str | None = None) -> None:
        # Errors of the request line / headers, raised by the base class: JSON, then close.
        self.close_connection = True
        if self.request_version == "HTTP/0.9":  # an unparsable request line: answer 1.1
            self.request_version = "HTTP/1.1"
        reason = message or HTTPStatus(code).phrase
        self._send(Response.error(code, reason))

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_GET

    def _handle(self) -> None:
        try:
            request = self._read_request()
            result = self.server.dispatch(request)
        except ApiError as exc:
            result = Response.error(exc.status, exc.reason, **getattr(exc, "extra", {}))
        except TimeoutError:
            self.close_connection = True
            result = Response.error(408, "request body not received in time")
        except Exception:
            log.exception("API handler failed for %s %s", self.command, self.path)
            result = Response.error(500, "internal error (logged by roxd)")
        if isinstance(result, StreamResponse):
            self._stream(result)
        else:
            self._send(result)

    def _read_request(self) -> Request:
        url = urlsplit(self.path)
        length_header = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise ApiError(411, "chunked request bodies are not accepted: send Content-Length")
        body = b""
        if length_header is not None:
            try:
                length = int(length_header)
                if length < 0:
                    raise ValueError
            except ValueError:
                self.close_connection = True
                raise ApiError(400, "bad Content-Length") from None
            if length > self.server.settings.max_body_bytes:
                self.close_connection = True
                raise ApiError(413, f"request body of {length} bytes is over the limit of "
                                    f"{self.server.settings.max_body_bytes}")
            body = self.rfile.read(length)
            if len(body) < length:
                self.close_connection = True
                raise ApiError(400, "request body shorter than Content-Length")
        try:
            query = parse_qs(url.query, keep_blank_values=True, strict_parsing=False,
                             max_num_fields=100)
        except ValueError as exc:
            raise ApiError(400, f"bad query string: {exc}") from None
        return Request(self.command, url.path, query, self.headers, body, self.client_address)

    def _send(self, response: Response) -> None:
        self.server.stats.count_status(response.status)
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            for name, value in response.headers:
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(response.body)
        except OSError:
            self.close_connection = True

    def _stream(self, response: StreamResponse) -> None:
        self.server.stats.count_status(200)
        self.close_connection = True
        chunks = response.chunks
        try:
            self.send_response(200)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.flush()
            for chunk in chunks:
                if self.server.closing.is_set():
                    break
                data = response.heartbeat if chunk is None else chunk
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:
            pass  # the reader went away
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
