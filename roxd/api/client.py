"""A client for roxd's control socket: stdlib only, imports nothing of the engine, so roxctl
(and tests, and scripts) can use it on a host where the engine's dependencies are absent.

    with ApiClient("/run/roxd/roxd.sock") as api:
        status = api.get("/v1/status")
        for item in api.stream("/v1/events/stream", {"type": "exec"}): ...
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

DEFAULT_SOCKET = "/run/roxd/roxd.sock"


def default_socket() -> str:
    return os.environ.get("ROXD_SOCKET") or DEFAULT_SOCKET


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a Unix stream socket (the Host header says `roxd`)."""

    def __init__(self, path: str, timeout: float | None = 30.0) -> None:
        super().__init__("roxd", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class Unreachable(Exception):
    """No roxd answers on the socket."""

    def __init__(self, path: str, cause: OSError) -> None:
        self.path = path
        self.cause = cause
        super().__init__(self.message())

    def message(self) -> str:
        if isinstance(self.cause, FileNotFoundError):
            what = f"no socket at {self.path}"
        elif isinstance(self.cause, PermissionError):
            return (f"permission denied on {self.path}: roxctl needs root or membership of "
                    "the socket's group (roxd)")
        else:
            what = f"{self.path}: {self.cause.strerror or self.cause}"
        return (f"roxd is not running ({what}): start it with `systemctl start roxd` or "
                "`make run`, or point roxctl at its socket with --socket or $ROXD_SOCKET")


@dataclass(eq=False)  # not frozen: raising sets __traceback__ (a frozen one raised through a
class ApiFailure(Exception):  # `with` block became FrozenInstanceError and hid the failure)
    status: int
    reason: str
    body: Any = None

    def __str__(self) -> str:
        return f"{self.status}: {self.reason}"


def path_of(*parts: str) -> str:
    return "/".join(quote(p, safe="") if i else p for i, p in enumerate(parts))


class ApiClient:
    def __init__(self, socket_path: str | None = None, timeout: float | None = 30.0) -> None:
        self.socket_path = socket_path or default_socket()
        self.timeout = timeout
        self._conn: UnixHTTPConnection | None = None

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _open(self, timeout: float | None) -> UnixHTTPConnection:
        conn = UnixHTTPConnection(self.socket_path, timeout)
        try:
            conn.connect()
        except OSError as exc:
            raise Unreachable(self.socket_path, exc) from None
        return conn

    def request_raw(self, method: str, path: str, params: Mapping[str, Any] | None = None,
                    body: Any = None) -> tuple[int, str, bytes]:
        """(status, content type, body bytes). Reuses one keep-alive connection."""
        url = path + ("?" + urlencode(_query(params)) if params else "")
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        for _attempt in (0, 1):
            reused = self._conn is not None
            if self._conn is None:
                self._conn = self._open(self.timeout)
            try:
                self._conn.request(method, url, body=payload, headers=headers)
                resp = self._conn.getresponse()
                data = resp.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()
                if not reused:
                    raise
                continue  # the server closed an idle keep-alive connection: retry once
                continue
            if resp.getheader("Connection", "").lower() == "close":
                self.close()
            return resp.status, resp.getheader("Content-Type", ""), data
        raise AssertionError("unreachable")

    def request(self, method: str, path: str, params: Mapping[str, Any] | None = None,
                body: Any = None) -> Any:
        status, ctype, data = self.request_raw(method, path, params, body)
        decoded: Any = data.decode(errors="replace")
        if "json" in ctype:
            with contextlib.suppress(json.JSONDecodeError):
                decoded = json.loads(data)
        if status >= 400:
            reason = decoded.get("error") if isinstance(decoded, dict) else str(decoded)
            raise ApiFailure(status, reason or f"HTTP {status}", decoded)
        return decoded

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        return self.request("GET", path, params)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, body=body)

    def stream(self, path: str, params: Mapping[str, Any] | None = None
               ) -> Iterator[dict[str, Any]]:
        """Items of an ndjson stream, until the server ends it (or the caller stops)."""
        conn = self._open(None)
        try:
            url = path + ("?" + urlencode(_query(params)) if params else "")
            conn.request("GET", url, headers={"Accept": "application/x-ndjson"})
            resp = conn.getresponse()
            if resp.status >= 400:
                data = resp.read()
                try:
                    body = json.loads(data)
                except json.JSONDecodeError:
                    body = data.decode(errors="replace")
                reason = body.get("error") if isinstance(body, dict) else str(body)
                raise ApiFailure(resp.status, reason, body)
            while True:
                line = resp.readline()
                if not line:
                    return
                if line.strip():
                    yield json.loads(line)
        finally:
            conn.close()


def _query(params: Mapping[str, Any] | None) -> dict[str, str]:
    out = {}
    for k, v in (params or {}).items():
        if v is None:
            continue
        out[k] = ("true" if v else "false") if isinstance(v, bool) else str(v)
    return out
