"""sd_notify: READY, STATUS, STOPPING and watchdog pings when run under systemd.

Uses systemd-python (python3-systemd) when present; without NOTIFY_SOCKET every call is a
no-op, so the same daemon code runs in a terminal and under Type=notify.
"""

from __future__ import annotations

import logging
import os
import time

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self) -> None:
        self._enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self._notify = None
        if self._enabled:
            try:
                from systemd import daemon  # python3-systemd

                self._notify = daemon.notify
            except ImportError:
                log.warning("NOTIFY_SOCKET is set but python3-systemd is missing: "
                            "systemd will not see READY")
                self._enabled = False
        usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
        # ping at a quarter of the watchdog period: a missed ping or two is not a restart
        self._watchdog_every = usec / 4e6 if usec else 0.0
        self._next_ping = 0.0

    def _send(self, message: str) -> None:
        if self._notify is not None:
            self._notify(message)

    def ready(self, status: str) -> None:
        self._send(f"READY=1\nSTATUS={status}")

    def status(self, status: str) -> None:
        self._send(f"STATUS={status}")

    def stopping(self) -> None:
        self._send("STOPPING=1")

    def reloading(self) -> None:
        self._send("RELOADING=1")

    def watchdog(self) -> None:
        if not self._watchdog_every:
            return
        now = time.monotonic()
        if now >= self._next_ping:
            self._send("WATCHDOG=1")
            self._next_ping = now + self._watchdog_every
