"""Container-level actions through the Docker engine: who is its init process, does it still
exist, pause / kill / stop it. Used by quarantine (namespace of the init pid), by the
host-network fallback, and by container-wide kill actions."""

from __future__ import annotations

import logging
import threading
from typing import Any

log = logging.getLogger(__name__)


class RuntimeControlError(Exception):
    pass


class DockerControl:
    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        self._base_url = base_url
        self._timeout = timeout
        self._client: Any = None
        self._lock = threading.Lock()

    def _docker(self) -> Any:
        with self._lock:
            if self._client is None:
                import docker

                self._client = docker.DockerClient(base_url=self._base_url, version="auto",
                                                   timeout=self._timeout)
            return self._client

    def _get(self, container_id: str) -> Any | None:
        import docker.errors

        try:
            return self._docker().containers.get(container_id)
        except docker.errors.NotFound:
            return None
        except docker.errors.DockerException as exc:
            raise RuntimeControlError(f"docker unreachable: {exc}") from exc

    def exists(self, container_id: str) -> bool:
        try:
            return self._get(container_id) is not None
        except RuntimeControlError:
            return True  # cannot tell: never forget state because the engine is down

    def pid_of(self, container_id: str) -> int | None:
        try:
            c = self._get(container_id)
        except RuntimeControlError:
            return None
        if c is None:
            return None
        state = c.attrs.get("State", {})
        if not state.get("Running"):
            return None
        return int(state.get("Pid") or 0) or None

    def pause(self, container_id: str) -> None:
        self._act(container_id, "pause")

    def kill(self, container_id: str) -> None:
        self._act(container_id, "kill")

    def stop(self, container_id: str) -> None:
        self._act(container_id, "stop")

    def _act(self, container_id: str, verb: str) -> None:
        import docker.errors

        c = self._get(container_id)
        if c is None:
            raise RuntimeControlError(f"container {container_id[:12]} no longer exists")
        try:
            getattr(c, verb)()
        except docker.errors.DockerException as exc:
            raise RuntimeControlError(f"docker {verb} {container_id[:12]}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
