"""The dashboard's secret and what is signed with it: login tickets, sessions, CSRF tokens.

One random secret lives in `<state_dir>/dashboard/token` (0600, directory 0700), made at the
first start and kept, so sessions survive a restart; delete it (and restart) to end every
session. Everything else is an HMAC-SHA256 over a small payload, checked in constant time:

- a *ticket* (`roxctl ui` gets one over the socket): role, 60 s of life, used once;
- a *session* (the HttpOnly cookie a ticket is exchanged for): role, `session_ttl_s`;
- a *CSRF token* per session: the page sends it as a header with every change.

The raw secret also logs in (as admin): root can read it from the state dir.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from roxd.errors import RoxdError

ROLES = ("read", "admin")
TICKET_TTL_S = 60.0
TOKEN_FILE = "token"


@dataclass(frozen=True)
class Grant:
    role: str  # "read" | "admin"
    expires: float  # time.time()


def load_or_create_secret(directory: Path) -> str:
    """The secret in directory/token, made (0600, directory 0700) when missing."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        path = directory / TOKEN_FILE
        try:
            text = path.read_text().strip()
        except FileNotFoundError:
            text = ""
        if len(text) >= 32:
            os.chmod(path, 0o600)
            return text
        text = secrets.token_hex(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text + "\n")
        os.chmod(path, 0o600)
        return text
    except OSError as exc:
        raise RoxdError(f"dashboard: cannot keep its token in {directory}: "
                        f"{exc.strerror}") from exc


class TokenSigner:
    def __init__(self, secret: str, session_ttl_s: float,
                 clock: Callable[[], float] = time.time) -> None:
        self._key = secret.encode()
        self.secret = secret
        self.session_ttl_s = session_ttl_s
        self._now = clock
        self._used: dict[str, float] = {}  # ticket nonces already exchanged -> expiry
        self._lock = threading.Lock()

    def _sign(self, payload: str) -> str:
        return hmac.new(self._key, payload.encode(), hashlib.sha256).hexdigest()

    def _make(self, kind: str, role: str, ttl: float) -> str:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        payload = f"{kind}.{role}.{int(self._now() + ttl)}.{secrets.token_hex(8)}"
        return f"{payload}.{self._sign(payload)}"

    def _open(self, kind: str, value: str) -> tuple[Grant, str] | None:
        parts = value.split(".")
        if len(parts) != 5:
            return None
        payload, sig = ".".join(parts[:4]), parts[4]
        if not hmac.compare_digest(self._sign(payload), sig):
            return None
        got_kind, role, expires, nonce = parts[:4]
        if got_kind != kind or role not in ROLES or not expires.isdigit():
            return None
        if int(expires) <= self._now():
            return None
        return Grant(role, float(expires)), nonce

    def ticket(self, role: str) -> str:
        return self._make("ticket", role, TICKET_TTL_S)

    def redeem(self, ticket: str) -> Grant | None:
        """The ticket's grant, once: a second use, a forged or an expired ticket is None.
        The raw secret redeems as admin."""
        if hmac.compare_digest(ticket.encode(), self._key):
            return Grant("admin", self._now() + self.session_ttl_s)
        opened = self._open("ticket", ticket)
        if opened is None:
            return None
        grant, nonce = opened
        with self._lock:
            now = self._now()
            for n, exp in list(self._used.items()):
                if exp <= now:
                    del self._used[n]
            if nonce in self._used:
                return None
            self._used[nonce] = grant.expires
        return grant

    def session(self, role: str) -> str:
        return self._make("session", role, self.session_ttl_s)

    def check_session(self, value: str | None) -> Grant | None:
        if not value:
            return None
        opened = self._open("session", value)
        return opened[0] if opened else None

    def csrf(self, session: str) -> str:
        return self._sign("csrf:" + session)

    def check_csrf(self, session: str, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(self.csrf(session), token or "")
