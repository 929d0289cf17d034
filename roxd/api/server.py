"""Control API on a Unix socket (placeholder until the API lands)."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


class ApiServer:
    def __init__(self, daemon: Any, socket_path: str) -> None:
        self.daemon = daemon
        self.socket_path = socket_path

    def start(self) -> None:
        log.info("control API not available in this build (socket %s unused)", self.socket_path)

    def close(self) -> None:
        pass
