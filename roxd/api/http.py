"""A small HTTP/1.1 server on a Unix socket: one thread per connection, JSON in and out.

Why threads (socketserver.ThreadingMixIn over UnixStreamServer) rather than asyncio: the
daemon's event loop is a blocking poll loop, not an asyncio loop, and the API must never run
on it. API threads only read snapshots (thread-safe stages, lock-guarded queues) and hand
mutations to the loop with `daemon.call_in_loop`; a live stream is a blocking read of its own
bounded queue. The cost of a thread per connection is capped by `max_connections` (503
beyond, decided at accept time) and by `max_connections_per_uid` for each non-root user (429
beyond), and idle connections are closed after `idle_timeout_s`. A whole request (line,
headers, body) must arrive within `request_timeout_s`: a reaper thread answers 408 and shuts
the socket of a request still being read after that, so a client dripping one byte at a time
(each recv well within the idle timeout) cannot hold a slot for ever.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import logging
import re
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from roxd import __version__
from roxd.api.auth import PeerCred, peer_cred
from roxd.api.port import CallTimeout
from roxd.api.settings import ApiSettings
from roxd.errors import ApiError
from roxd.text import json_dumps

log = logging.getLogger(__name__)

ROOT_RESERVED_CONNECTIONS = 8
REAP_INTERVAL_S = 0.25
# JSON bodies nested deeper than this are refused (400) before they are parsed
MAX_JSON_DEPTH = 64


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
        depth = json_depth(self.body)
        if depth > MAX_JSON_DEPTH:
            raise ApiError(400, f"JSON body nested {depth} levels deep (the limit is "
                                f"{MAX_JSON_DEPTH})")
        try:
            return json.loads(self.body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ApiError(400, f"malformed JSON body: {exc}") from None
        except (ValueError, RecursionError) as exc:  # a 5000-digit integer; deep nesting
            raise ApiError(400, f"JSON body not accepted: {exc}") from None


_BRACKETS = re.compile(rb'[\[\]{}]|"(?:[^"\\]|\\.)*"')


def json_depth(body: bytes) -> int:
    """How deep brackets nest in a JSON text (strings skipped): one linear scan, so a body of
    a million '[' is refused without recursing a million times."""
    depth = deepest = 0
    for m in _BRACKETS.finditer(body):
        c = m.group()
        if c in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        elif c in (b"]", b"}"):
            depth -= 1
    return deepest


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
    refused_per_uid: int = 0  # 429: one user's connection cap
    timed_out: int = 0  # 408: a request not complete within request_timeout_s
    requests: int = 0
    denied: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    by_uid: dict[int, int] = field(default_factory=dict)  # open connections per uid
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count_status(self, status: int) -> None:
        with self.lock:
            self.requests += 1
            self.by_status[status] = self.by_status.get(status, 0) + 1


class RequestDeadlines:
    """A whole request (line, headers, body) must arrive within request_timeout_s: a reaper
    thread enforces it from outside the handler, whose recv() would otherwise be reset by
    every byte a slow-drip client sends. Mixed into the Unix socket server and the
    dashboard's TCP server, whose socketserver base it initialises (`listen`)."""

    stats: ConnectionStats
    settings: Any
    closing: threading.Event

    def listen(self, address: Any, dispatch: Dispatch, settings: Any, *, handler_name: str,
               reaper_name: str) -> None:
        """Bind and listen on `address` with a _Handler whose idle timeout is the settings',
        then start the reaper: the servers' shared __init__."""
        self.dispatch = dispatch
        self.settings = settings
        self.stats = ConnectionStats()
        self.closing = threading.Event()
        handler = type(handler_name, (_Handler,), {"timeout": settings.idle_timeout_s})
        super().__init__(address, handler)  # type: ignore[call-arg]  # the socketserver base
        self.start_deadlines(reaper_name)

    def start_deadlines(self, name: str) -> None:
        # sockets whose request is being read -> deadline; the reaper's to watch
        self._reading: dict[socket.socket, float] = {}
        self._reaped: set[socket.socket] = set()
        threading.Thread(target=self._reap, name=name, daemon=True).start()

    def reading(self, sock: socket.socket) -> None:
        with self.stats.lock:
            self._reading[sock] = time.monotonic() + self.settings.request_timeout_s

    def read_done(self, sock: socket.socket) -> bool:
        """The request is in; False when the reaper already answered it (408)."""
        with self.stats.lock:
            self._reading.pop(sock, None)
            return sock not in self._reaped

    def forget(self, sock: socket.socket) -> None:
        """The connection is over: drop it from the reaper's books (call under stats.lock).
        A reaped socket stays in _reaped until then, so each server must call this or leak
        one entry per timed-out request."""
        self._reading.pop(sock, None)
        self._reaped.discard(sock)

    def _reap(self) -> None:
        while not self.closing.wait(REAP_INTERVAL_S):
            now = time.monotonic()
            with self.stats.lock:
                late = [s for s, deadline in self._reading.items() if deadline <= now]
                for sock in late:
                    del self._reading[sock]
                    self._reaped.add(sock)
                    self.stats.timed_out += 1
            for sock in late:
                _answer(sock, 408, f"request not complete within "
                                   f"{self.settings.request_timeout_s:g}s (line, headers and "
                                   "body); closing")
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)



class UnixHttpServer(RequestDeadlines, socketserver.ThreadingMixIn,
                     socketserver.UnixStreamServer):
    daemon_threads = True
    block_on_close = False
    # the listen backlog: a burst of clients waits to be accepted (and answered, or refused
    # with 503/429) instead of getting EAGAIN from a full queue (measured: 1,000 at once)
    request_queue_size = 1024
    allow_reuse_address = False

    def __init__(self, path: str, dispatch: Dispatch, settings: ApiSettings) -> None:
        self.listen(path, dispatch, settings, handler_name="_BoundHandler",
                    reaper_name="roxd-api-reaper")

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
        per_uid = self.settings.max_connections_per_uid
        refusal: tuple[int, str] | None = None
        with self.stats.lock:
            mine = self.stats.by_uid.get(peer.uid, 0)
            if self.closing.is_set() or self.stats.open >= limit:
                self.stats.refused += 1
                refusal = (503, f"too many connections (limit {self.settings.max_connections})"
                                "; try again")
            elif peer.uid != 0 and mine >= per_uid:
                self.stats.refused += 1
                self.stats.refused_per_uid += 1
                refusal = (429, f"too many connections from uid {peer.uid} (limit {per_uid} "
                                "per user); close some or try again")
            else:
                self.stats.open += 1
                self.stats.accepted += 1
                self.stats.by_uid[peer.uid] = mine + 1
        if refusal is not None:
            _answer(request, *refusal)
            self.shutdown_request(request)
            return
        super().process_request(request, peer)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self.stats.lock:
                self.stats.open -= 1
                left = self.stats.by_uid.get(client_address.uid, 1) - 1
                if left > 0:
                    self.stats.by_uid[client_address.uid] = left
                else:
                    self.stats.by_uid.pop(client_address.uid, None)
                self.forget(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception("API connection error (%s)", getattr(client_address, "describe",
                                                          lambda: "?")())


def _answer(sock: socket.socket, status: int, reason: str) -> None:
    """A whole error response written straight to a socket no handler is writing to (refused
    at accept, or reaped while its request was being read), then the caller closes it."""
    body = json.dumps({"error": reason, "status": status}).encode()
    head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: "
            f"application/json\r\nContent-Length: {len(body)}\r\nConnection: close"
            "\r\n\r\n").encode()
    with contextlib.suppress(OSError):
        # never block the accepting thread on a client that does not read
        sock.sendall(head + body, socket.MSG_DONTWAIT)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = f"roxd/{__version__}"
    sys_version = ""
    server: UnixHttpServer
    client_address: PeerCred  # type: ignore[assignment]

    def handle_one_request(self) -> None:
        # Wait for the request's first byte under the idle timeout (an idle keep-alive
        # connection is closed quietly), then the whole request is on request_timeout_s.
        try:
            if not self.rfile.peek(1):
                self.close_connection = True
                return
        except OSError:  # TimeoutError: idle; or the peer went away
            self.close_connection = True
            return
        self.server.reading(self.request)
        try:
            super().handle_one_request()
        finally:
            self.server.read_done(self.request)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("api %s: " + format, self.client_address.describe(), *args)

    def send_error(self, code: int, message: str | None = None,
                   explain: str | None = None) -> None:
        # Errors of the request line / headers, raised by the base class: JSON, then close.
        self.close_connection = True
        if not self.server.read_done(self.request):
            return  # the reaper answered it already (408)
        if self.request_version == "HTTP/0.9":  # an unparsable request line: answer 1.1
            self.request_version = "HTTP/1.1"
        reason = message or HTTPStatus(code).phrase
        self._send(Response.error(code, reason))

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_GET

    def _handle(self) -> None:
        result: Response | StreamResponse
        try:
            request = self._read_request()
        except ApiError as exc:
            request = None
            result = Response.error(exc.status, exc.reason)
        if not self.server.read_done(self.request):  # the reaper answered 408, shut it
            self.close_connection = True
            return
        if request is not None:
            result = self._dispatch(request)
        if isinstance(result, StreamResponse):
            self._stream(result)
        else:
            self._send(result)

    def _dispatch(self, request: Request) -> Response | StreamResponse:
        try:
            return self.server.dispatch(request)
        except ApiError as exc:
            return Response.error(exc.status, exc.reason, **getattr(exc, "extra", {}))
        except CallTimeout as exc:  # roxd's loop: say what happened to the change
            return Response.error(504 if exc.started else 503, str(exc))
        except TimeoutError as exc:  # something the handler waited for (never the body)
            log.warning("API %s %s timed out: %s", self.command, self.path, exc)
            return Response.error(504, f"timed out: {exc or 'no answer in time'}")
        except Exception:
            log.exception("API handler failed for %s %s", self.command, self.path)
            return Response.error(500, "internal error (logged by roxd)")

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
            try:
                body = self.rfile.read(length)
            except TimeoutError:
                self.close_connection = True
                raise ApiError(408, f"request body not received in time (idle for "
                                    f"{self.server.settings.idle_timeout_s:g}s)") from None
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
