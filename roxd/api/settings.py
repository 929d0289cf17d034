"""The `[api]` configuration section: who may use the control socket and how much it takes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ApiSettings:
    # Group that owns the socket (mode 0660): its members may read (GET). When the group does
    # not exist (a dev machine), the socket is root:root and only root connects.
    read_group: str = "roxd"
    # Members of this group may also change state (POST: reload, enable, kill, isolate, ...).
    # Empty: only root (uid 0) may.
    admin_group: str = ""
    max_body_bytes: int = 1_048_576
    # A connection that sends nothing (or reads nothing) for this long is closed.
    idle_timeout_s: float = 10.0
    # A whole request (its line, headers and body) must arrive within this many seconds of
    # the connection being ready for it, or it is answered 408 and closed: a client dripping
    # a byte at a time cannot hold a connection.
    request_timeout_s: float = 10.0
    # Concurrent connections, streams included; more are answered 503 and closed. Root has a
    # few reserved slots on top, so unprivileged readers cannot lock an operator out.
    max_connections: int = 64
    # Concurrent connections of one non-root user (SO_PEERCRED uid); more are answered 429,
    # so one user cannot take every slot from the others.
    max_connections_per_uid: int = 16
    # Items a live stream may queue for a slow reader before it starts missing some (and is
    # told how many).
    stream_queue: int = 10_000
    # Alerts kept in memory for GET /v1/alerts while no alert store is configured.
    recent_alerts: int = 5_000

    def check(self) -> list[str]:
        """Problems with the values, as messages naming the key (empty when fine)."""
        problems = []
        if self.max_body_bytes < 1024:
            problems.append("api.max_body_bytes must be at least 1024")
        if self.idle_timeout_s <= 0:
            problems.append("api.idle_timeout_s must be positive")
        if self.request_timeout_s <= 0:
            problems.append("api.request_timeout_s must be positive")
        if self.max_connections < 1:
            problems.append("api.max_connections must be at least 1")
        if self.max_connections_per_uid < 1:
            problems.append("api.max_connections_per_uid must be at least 1")
        if self.stream_queue < 1 or self.recent_alerts < 1:
            problems.append("api.stream_queue and api.recent_alerts must be at least 1")
        return problems
