"""The dashboard's listener over real sockets with the API's fake port: who gets in (login
tickets once, sessions, roles), what a change needs (CSRF token, same origin), that /api/ is the
socket API's own router, and the [dashboard] settings. The browser test is
tests/system/test_dashboard.py."""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from roxd.api.client import ApiClient, ApiFailure
from roxd.api.server import ApiServer
from roxd.api.settings import ApiSettings
from roxd.ui.server import Dashboard
from roxd.ui.settings import DashboardSettings
from roxd.ui.tokens import TokenSigner, load_or_create_secret
from tests.unit.test_api_unit import FakePort

pytestmark = pytest.mark.unit


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def dash(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str, int]]:
    tmp = tmp_path_factory.mktemp("dash")
    port = _free_port()
    dashboard = Dashboard(DashboardSettings(enabled=True, listen=f"127.0.0.1:{port}"), tmp)
    server = ApiServer(FakePort(), str(tmp / "roxd.sock"), ApiSettings(), dashboard=dashboard)
    server.start()
    try:
        yield dashboard, str(tmp / "roxd.sock"), port
    finally:
        server.close()


def call(port: int, method: str, path: str, *, cookie: str | None = None,
         headers: dict[str, str] | None = None, body: Any = None) -> tuple[int, Any, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        h = dict(headers or {})
        if cookie:
            h["Cookie"] = f"roxd_session={cookie}"
        conn.request(method, path, body=None if body is None else json.dumps(body), headers=h)
        resp = conn.getresponse()
        return resp.status, resp, resp.read()
    finally:
        conn.close()


def login(port: int, sock: str) -> str:
    with ApiClient(sock) as c:
        link = c.post("/v1/dashboard/login")
    assert link["role"] == "admin"  # the test runs as root
    status, resp, _ = call(port, "GET", link["url"].split(str(port), 1)[1])
    assert status == 303 and resp.getheader("Location") == "/"
    cookie = resp.getheader("Set-Cookie")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    return str(cookie.split(";")[0].split("=", 1)[1])


def test_without_a_session_everything_is_401(dash: Any) -> None:
    _d, _sock, port = dash
    for path in ("/", "/static/app.js", "/api/v1/status", "/session", "/login"):
        assert call(port, "GET", path)[0] == 401, path
    assert call(port, "POST", "/api/v1/rules/reload")[0] == 401
    assert call(port, "GET", "/api/v1/status", cookie="session.admin.9999999999.00.ff")[0] == 401


def test_a_ticket_logs_in_once_and_the_api_is_the_sockets(dash: Any) -> None:
    _d, sock, port = dash
    with ApiClient(sock) as c:
        url = c.post("/v1/dashboard/login")["url"]
        over_socket = c.get("/v1/containers")
    path = url.split(str(port), 1)[1]
    status, resp, _ = call(port, "GET", path)
    cookie = resp.getheader("Set-Cookie").split(";")[0].split("=", 1)[1]
    assert status == 303
    assert call(port, "GET", path)[0] == 401  # used
    status, _r, body = call(port, "GET", "/api/v1/containers", cookie=cookie)
    assert status == 200 and json.loads(body) == over_socket
    with ApiClient(sock) as c:
        dashboard = c.get("/v1/status")["dashboard"]
    assert dashboard["url"] == f"http://127.0.0.1:{port}/" and dashboard["requests"] >= 3
    status, resp, body = call(port, "GET", "/", cookie=cookie)
    assert status == 200 and b"/static/app.js" in body
    assert "script-src 'self'" in resp.getheader("Content-Security-Policy")
    assert call(port, "GET", "/static/../server.py", cookie=cookie)[0] == 404
    assert call(port, "GET", "/static/core.js", cookie=cookie)[0] == 200
    # the dashboard's own session cannot mint login links
    status, _r, _b = call(port, "POST", "/api/v1/dashboard/login", cookie=cookie,
                          headers=_csrf(port, cookie))
    assert status == 403


def _csrf(port: int, cookie: str) -> dict[str, str]:
    status, _r, body = call(port, "GET", "/session", cookie=cookie)
    assert status == 200
    return {"X-Roxd-Csrf": json.loads(body)["csrf"]}


def test_a_change_needs_the_csrf_token_and_the_same_origin(dash: Any) -> None:
    _d, _sock, port = dash
    cookie = login(port, _sock)
    rule = "foothold.exec-from-tmp"
    body = {"ids": [rule]}
    status, _r, reason = call(port, "POST", "/api/v1/rules/disable", cookie=cookie, body=body)
    assert status == 403 and b"X-Roxd-Csrf" in reason
    csrf = _csrf(port, cookie)
    status, _r, _b = call(port, "POST", "/api/v1/rules/disable", cookie=cookie, body=body,
                          headers={**csrf, "Origin": "http://evil.example"})
    assert status == 403
    status, _r, answer = call(port, "POST", "/api/v1/rules/disable", cookie=cookie, body=body,
                              headers={**csrf, "Origin": f"http://127.0.0.1:{port}"})
    assert status == 200 and json.loads(answer)["changed"] == [rule]
    status, _r, _b = call(port, "POST", "/api/v1/rules/enable", cookie=cookie, body=body,
                          headers=csrf)
    assert status == 200


def test_a_read_session_reads_and_cannot_change(dash: Any) -> None:
    dashboard, _sock, port = dash
    cookie = dashboard.signer.session("read")
    assert call(port, "GET", "/api/v1/rules", cookie=cookie)[0] == 200
    status, _r, reason = call(port, "POST", "/api/v1/rules/reload", cookie=cookie,
                              headers=_csrf(port, cookie))
    assert status == 403 and b"admin session" in reason


def test_only_loopback_host_names_are_answered(dash: Any) -> None:
    _d, _sock, port = dash
    status, _r, body = call(port, "GET", "/api/v1/health",
                            headers={"Host": f"attacker.example:{port}"})
    assert status == 400 and b"Host" in body


def test_the_socket_says_how_to_turn_it_on_when_off(tmp_path: Path) -> None:
    server = ApiServer(FakePort(), str(tmp_path / "s.sock"), ApiSettings())
    server.start()
    try:
        with ApiClient(str(tmp_path / "s.sock")) as c, pytest.raises(ApiFailure) as err:
            c.post("/v1/dashboard/login")
        assert err.value.status == 501 and "[dashboard] enabled = true" in err.value.reason
        with ApiClient(str(tmp_path / "s.sock")) as c:
            assert c.get("/v1/status")["dashboard"] == {"enabled": False}
    finally:
        server.close()


def test_tickets_expire_and_cannot_be_forged(tmp_path: Path) -> None:
    now = [1000.0]
    secret = load_or_create_secret(tmp_path / "d")
    assert (tmp_path / "d/token").stat().st_mode & 0o777 == 0o600
    assert load_or_create_secret(tmp_path / "d") == secret  # kept across restarts
    signer = TokenSigner(secret, 3600.0, clock=lambda: now[0])
    ticket = signer.ticket("read")
    forged = ticket.replace("ticket.read.", "ticket.admin.")
    assert signer.redeem(forged) is None
    now[0] += 61
    assert signer.redeem(ticket) is None  # expired
    session = signer.session("admin")
    assert signer.check_session(session).role == "admin"
    assert signer.check_session(signer.ticket("admin")) is None  # a ticket is no session
    assert signer.check_csrf(session, signer.csrf(session))
    assert not signer.check_csrf(session, signer.csrf(signer.session("admin")))
    assert signer.redeem(secret).role == "admin"  # root's way in: the state dir's token
    now[0] += 3600
    assert signer.check_session(session) is None


@pytest.mark.parametrize(("listen", "remote", "problem"), [
    ("127.0.0.1:7466", False, None),
    ("[::1]:7466", False, None),
    ("localhost:80", False, None),
    ("0.0.0.0:7466", False, "not a loopback address"),
    ("0.0.0.0:7466", True, None),
    ("127.0.0.1", False, "host:port"),
    ("127.0.0.1:99999", False, "out of range"),
    ("dash.example:80", True, "not an IP address"),
])
def test_settings_keep_the_dashboard_on_loopback(listen: str, remote: bool,
                                                 problem: str | None) -> None:
    problems = DashboardSettings(listen=listen, allow_remote=remote).check()
    if problem is None:
        assert problems == []
    else:
        assert len(problems) == 1 and problem in problems[0]


def test_roxctl_ui_prints_the_link(dash: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from roxd import ctl

    _d, sock, port = dash
    assert ctl.main(["--socket", sock, "ui"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"http://127.0.0.1:{port}/login?ticket=ticket.admin.")
    assert "valid 60 s and once" in err
    assert call(port, "GET", out.strip().split(str(port), 1)[1])[0] == 303


def test_roxd_toml_refuses_a_remote_dashboard_unless_asked() -> None:
    from roxd.config import parse_config
    from roxd.errors import ConfigError

    assert parse_config({}, "t.toml").dashboard.enabled is False  # off by default
    with pytest.raises(ConfigError, match="not a loopback address"):
        parse_config({"dashboard": {"enabled": True, "listen": "0.0.0.0:7466"}}, "t.toml")
    with pytest.raises(ConfigError, match="unknown key dashboard.port"):
        parse_config({"dashboard": {"port": 1}}, "t.toml")
    remote = parse_config({"dashboard": {"listen": "0.0.0.0:7466", "allow_remote": True}},
                          "t.toml")
    assert remote.dashboard.address() == ("0.0.0.0", 7466)


def test_log_out_clears_the_cookie(dash: Any) -> None:
    _d, sock, port = dash
    cookie = login(port, sock)
    assert call(port, "POST", "/logout", cookie=cookie)[0] == 403  # without CSRF: refused
    status, resp, _ = call(port, "POST", "/logout", cookie=cookie, headers=_csrf(port, cookie))
    assert status == 200
    assert resp.getheader("Set-Cookie").startswith("roxd_session=; Path=/; Max-Age=0;")


def test_a_timed_out_dashboard_request_leaves_nothing_behind(tmp_path: Path) -> None:
    """The reaper answers 408 to a request that never completes; once that connection is over
    the dashboard server must forget it (its reaped set grew by one per timeout before)."""
    port = _free_port()
    dashboard = Dashboard(DashboardSettings(enabled=True, listen=f"127.0.0.1:{port}"), tmp_path)
    server = ApiServer(FakePort(), str(tmp_path / "roxd.sock"),
                       ApiSettings(idle_timeout_s=5.0, request_timeout_s=0.5), dashboard=dashboard)
    server.start()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\n")  # never finished
            answer = conn.recv(4096)
        assert b" 408 " in answer.split(b"\r\n", 1)[0] + b" ", answer
        tcp = dashboard._server
        assert tcp is not None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with tcp.stats.lock:
                if not tcp._reaped and not tcp._reading and tcp.stats.open == 0:
                    break
            time.sleep(0.05)
        with tcp.stats.lock:
            assert (tcp._reaped, tcp._reading, tcp.stats.open) == (set(), {}, 0)
        assert tcp.stats.timed_out == 1
    finally:
        server.close()
