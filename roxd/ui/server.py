"""The dashboard's listener: plain HTTP on loopback (by default), one thread per connection.

What it serves, and to whom:

    GET  /login?ticket=T     a ticket from `roxctl ui` (or ?token=<the state dir's secret>):
                             sets the HttpOnly, SameSite=Strict session cookie, 303 to /
    GET  /, /static/*        the single-page UI (files shipped in roxd/ui/static)
    GET  /session            the session's role and its CSRF token (for the page's changes)
    POST /logout             clears the cookie
    *    /api/v1/...         the control API's own router and handlers (the same Endpoints
                             object the Unix socket serves), with the session's role in
                             place of the socket peer's credentials

Everything but /login needs the session cookie: 401 without it. A change (any method but
GET and HEAD) also needs the X-Roxd-Csrf header and, when the browser sends one, a same-origin
Origin. The Host header must name a loopback address while listening on loopback (a page on
another site that rebinds its DNS name to 127.0.0.1 is refused).
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.cookies
import logging
import socket
import socketserver
import threading
from pathlib import Path
from typing import Any

from roxd.api.auth import Authorizer, PeerCred
from roxd.api.endpoints import Endpoints
from roxd.api.http import (
    Request,
    RequestDeadlines,
    Response,
    StreamResponse,
)
from roxd.api.routes import Router
from roxd.api.settings import ApiSettings
from roxd.errors import ApiError, RoxdError
from roxd.text import json_dumps
from roxd.ui.off import DashboardOff, DashboardPart
from roxd.ui.settings import DashboardSettings
from roxd.ui.tokens import TICKET_TTL_S, Grant, TokenSigner, load_or_create_secret

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).with_name("static")
COOKIE = "roxd_session"
CSRF_HEADER = "X-Roxd-Csrf"
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
                 ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml",
                 ".png": "image/png", ".txt": "text/plain; charset=utf-8"}
# Nothing from elsewhere, nothing inline: every script and style is a file of static/.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; "
       "form-action 'self'")
PAGE_HEADERS = (("Content-Security-Policy", CSP), ("X-Content-Type-Options", "nosniff"),
                ("X-Frame-Options", "DENY"), ("Referrer-Policy", "no-referrer"),
                ("Cache-Control", "no-store"))
NOT_LOGGED_IN = (b"<!doctype html><meta charset=utf-8><title>roxd: log in</title>"
                 b"<h1>Not logged in</h1><p>Run <code>roxctl ui</code> on this host: it prints "
                 b"a login link (valid for 60 seconds, once).</p>\n")


@dataclasses.dataclass(frozen=True)
class SessionPeer(PeerCred):
    """A browser session standing where the socket's peer credentials stand."""

    role: str = "none"  # "read" | "admin" | "none" (not logged in)
    remote: str = ""

    def describe(self) -> str:
        return f"dashboard session ({self.role}) from {self.remote}"


@dataclasses.dataclass(frozen=True)
class SessionAuthorizer(Authorizer):
    """The API's two roles, from the session instead of the socket peer's groups."""

    def may_read(self, peer: PeerCred) -> bool:
        return getattr(peer, "role", "none") in ("read", "admin")

    def may_change(self, peer: PeerCred) -> bool:
        return getattr(peer, "role", "none") == "admin"

    def denial(self, peer: PeerCred, access: str) -> str | None:
        if access == "admin":
            return None if self.may_change(peer) else (
                "changing roxd's state needs an admin session: `roxctl ui` run by root or a "
                "member of api.admin_group; this session may only read")
        return None if self.may_read(peer) else "not logged in: run `roxctl ui`"


class TcpHttpServer(RequestDeadlines, socketserver.ThreadingMixIn, socketserver.TCPServer):
    """The control API's request handler (roxd.api.http's, reused rather than copied: the same
    body limits, JSON errors and chunked streams) on TCP: a connection's "client address" is
    an anonymous SessionPeer until its cookie says who it is."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], dispatch: Any, settings: ApiSettings) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.listen(address, dispatch, settings, handler_name="_DashboardHandler",
                    reaper_name="roxd-dashboard-reaper")

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.stats.lock:
            admitted = (self.stats.open < self.settings.max_connections
                        and not self.closing.is_set())
            if admitted:
                self.stats.open += 1
                self.stats.accepted += 1
            else:
                self.stats.refused += 1
        if not admitted:
            self.shutdown_request(request)
            return
        peer = SessionPeer(0, -1, -1, remote=f"{client_address[0]}:{client_address[1]}")
        super().process_request(request, peer)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self.stats.lock:
                self.stats.open -= 1
                self.forget(request)  # a timed-out request's socket leaked here before

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception("dashboard connection error (%s)", client_address)


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


class Dashboard:
    def __init__(self, settings: DashboardSettings, state_dir: Path) -> None:
        self.settings = settings
        self.state_dir = state_dir
        self.host, self.port = settings.address()
        self.base_url = f"http://{_url_host(self.host)}:{self.port}"
        self.signer: TokenSigner | None = None
        self.authorizer: Authorizer | None = None
        self.router: Router | None = None
        self._server: TcpHttpServer | None = None
        self._thread: threading.Thread | None = None
        if not (STATIC_DIR / "index.html").is_file():
            raise RoxdError(f"dashboard: its page is missing from {STATIC_DIR} (a broken "
                            "install: reinstall roxd, or set [dashboard] enabled = false)")
        self._static = {p.name: p for p in STATIC_DIR.iterdir() if p.is_file()}
        self._hosts = ({f"{h}:{self.port}" for h in ("127.0.0.1", "localhost", "[::1]",
                                                     _url_host(self.host))}
                       if settings.is_loopback() else None)  # None: any Host (remote)

    # ------------------------------------------------------------------ lifecycle

    def start(self, endpoints: Endpoints, authorizer: Authorizer, api: ApiSettings) -> None:
        self.signer = TokenSigner(load_or_create_secret(self.state_dir / "dashboard"),
                                  self.settings.session_ttl_s)
        self.authorizer = authorizer
        # the same handlers (and the same alert feed, streams and stats) as the socket's
        self.router = Router(endpoints.handlers(), SessionAuthorizer(None, None))
        try:
            self._server = TcpHttpServer((self.host, self.port), self.dispatch, api)
        except OSError as exc:
            raise RoxdError(f"dashboard cannot listen on {self.settings.listen}: "
                            f"{exc.strerror} (dashboard.listen in roxd.toml)") from exc
        server = self._server
        self._thread = threading.Thread(target=lambda: server.serve_forever(0.25),
                                        name="roxd-dashboard", daemon=True)
        self._thread.start()
        log.info("dashboard listening on %s/ (`roxctl ui` prints a login link)", self.base_url)

    def close(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.closing.set()
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(2.0)

    def describe(self) -> dict[str, Any]:
        server = self._server
        stats = server.stats if server is not None else None
        return {"enabled": True, "url": f"{self.base_url}/",
                "connections": {"open": stats.open, "accepted": stats.accepted,
                                "refused": stats.refused} if stats else {},
                "requests": stats.requests if stats else 0}

    # ------------------------------------------------------------------ socket side

    def login(self, peer: PeerCred) -> dict[str, Any]:
        """POST /v1/dashboard/login on the socket: a one-time login link for the peer's role."""
        if isinstance(peer, SessionPeer) or self.signer is None or self.authorizer is None:
            raise ApiError(403, "login links are given on roxd's Unix socket (roxctl ui)")
        role = "admin" if self.authorizer.may_change(peer) else "read"
        ticket = self.signer.ticket(role)
        log.info("dashboard login link (%s) for %s", role, peer.describe())
        return {"url": f"{self.base_url}/login?ticket={ticket}", "role": role,
                "expires_in_s": TICKET_TTL_S, "base_url": self.base_url}

    # ------------------------------------------------------------------ browser side

    def dispatch(self, request: Request) -> Response | StreamResponse:
        assert self.signer is not None and self.router is not None
        host = request.headers.get("Host") or ""
        if self._hosts is not None and host not in self._hosts:
            raise ApiError(400, f"unexpected Host header {host!r}: open the dashboard as "
                                f"{self.base_url}/")
        if request.path == "/login" and request.method == "GET":
            return self._login(request)
        cookie = _cookie(request)
        grant = self.signer.check_session(cookie)
        if grant is None or cookie is None:
            if request.path.startswith("/api/"):
                return Response.error(401, "not logged in: run `roxctl ui` for a login link")
            return Response(401, NOT_LOGGED_IN, CONTENT_TYPES[".html"], PAGE_HEADERS)
        if request.method not in ("GET", "HEAD"):
            self._check_change(request, cookie)
        if request.path.startswith("/api/"):
            return self._api(request, grant)
        if request.path == "/session":
            return _json({"role": grant.role, "csrf": self.signer.csrf(cookie),
                          "expires": grant.expires})
        if request.path == "/logout" and request.method == "POST":
            return _json({"logged_out": True}, headers=(("Set-Cookie", _set_cookie("", 0)),))
        return self._file(request)

    def _login(self, request: Request) -> Response:
        assert self.signer is not None
        ticket = (request.query.get("ticket") or request.query.get("token") or [""])[0]
        grant = self.signer.redeem(ticket) if ticket else None
        if grant is None:
            log.warning("dashboard: refused a login from %s (ticket unknown, expired or used)",
                        request.peer.describe())
            return Response(401, NOT_LOGGED_IN.replace(
                b"<h1>Not logged in</h1>",
                b"<h1>This login link is expired or was used</h1>"),
                CONTENT_TYPES[".html"], PAGE_HEADERS)
        session = self.signer.session(grant.role)
        log.info("dashboard: %s session opened from %s", grant.role, request.peer.describe())
        # 303 to the page: the ticket does not stay in the address bar
        return Response(303, b"", CONTENT_TYPES[".html"], (
            *PAGE_HEADERS, ("Location", "/"),
            ("Set-Cookie", _set_cookie(session, int(self.settings.session_ttl_s)))))

    def _check_change(self, request: Request, cookie: str) -> None:
        assert self.signer is not None
        origin = request.headers.get("Origin")
        host = request.headers.get("Host")
        if origin is not None and origin not in (f"http://{host}", f"https://{host}"):
            raise ApiError(403, f"cross-origin change refused (Origin {origin!r})")
        if not self.signer.check_csrf(cookie, request.headers.get(CSRF_HEADER)):
            raise ApiError(403, f"a change needs the session's {CSRF_HEADER} header "
                                "(reload the page)")

    def _api(self, request: Request, grant: Grant) -> Response | StreamResponse:
        assert self.router is not None
        peer = dataclasses.replace(request.peer, role=grant.role) if isinstance(
            request.peer, SessionPeer) else request.peer
        routed = dataclasses.replace(request, path=request.path[len("/api"):], peer=peer)
        result = self.router(routed)
        if isinstance(result, Response):
            return dataclasses.replace(result, headers=(*result.headers, *PAGE_HEADERS))
        return result

    def _file(self, request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            raise ApiError(405, f"{request.method} is not allowed on {request.path}")
        name = "index.html" if request.path in ("/", "/index.html") else (
            request.path.removeprefix("/static/") if request.path.startswith("/static/")
            else None)
        path = self._static.get(name or "")  # only the shipped files: no path to traverse
        if path is None:
            raise ApiError(404, f"no such page: {request.path}")
        return Response(200, path.read_bytes(),
                        CONTENT_TYPES.get(path.suffix, "application/octet-stream"),
                        PAGE_HEADERS)


def make_dashboard(settings: DashboardSettings, state_dir: Path) -> DashboardPart:
    """The dashboard when [dashboard] enabled = true, else the "off" one."""
    return Dashboard(settings, state_dir) if settings.enabled else DashboardOff()


def _cookie(request: Request) -> str | None:
    raw = request.headers.get("Cookie")
    if not raw:
        return None
    jar: http.cookies.SimpleCookie = http.cookies.SimpleCookie()
    with contextlib.suppress(http.cookies.CookieError):
        jar.load(raw)
    morsel = jar.get(COOKIE)
    return morsel.value if morsel is not None else None


def _set_cookie(value: str, max_age: int) -> str:
    return f"{COOKIE}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict"


def _json(obj: Any, status: int = 200, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    return Response(status, json_dumps(obj, separators=(",", ":")).encode() + b"\n",
                    "application/json", (*PAGE_HEADERS, *headers))
