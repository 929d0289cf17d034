"""podman as a ContainerRuntime, through its Docker-compatible API service (rootful:
`podman system service`, socket /run/podman/podman.sock, socket-activated by podman.socket on
systemd hosts).

The compatible API answers inspect, list, events, kill, stop and pause exactly like Docker's,
so this is DockerRuntime with podman's name; the one thing it lacks is the pod a container
belongs to, read from podman's own (libpod) API on the same socket: the container's `Pod` id,
then the pod's name and labels.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from roxd.runtime.base import ContainerMetadata, RuntimeControlError
from roxd.runtime.docker_engine import DockerRuntime, error_reason

if TYPE_CHECKING:
    from roxd.seccomp.apply import ApplyResult

log = logging.getLogger(__name__)

DEFAULT_PODMAN_URL = "unix:///run/podman/podman.sock"
_LIBPOD = "/v4.0.0/libpod"  # libpod's own API; any 4.x prefix is served by podman >= 4


class PodmanRuntime(DockerRuntime):
    name = "podman"
    label = "Podman"

    def __init__(self, base_url: str = DEFAULT_PODMAN_URL, timeout: float = 10.0) -> None:
        super().__init__(base_url, timeout)

    def _libpod(self, path: str) -> dict[str, Any] | None:
        api = self.client().api
        try:
            response = api._get(api.base_url + _LIBPOD + path)
        except Exception as exc:
            raise self._failed(f"libpod {path}", exc) from exc
        if response.status_code == 404:
            return None
        if response.status_code >= 400:
            raise RuntimeControlError(f"podman {path}: HTTP {response.status_code}")
        try:
            doc = response.json()
        except ValueError as exc:
            raise RuntimeControlError(f"podman {path}: not JSON: {error_reason(exc)}") from exc
        return doc if isinstance(doc, dict) else None

    def inspect(self, container: str) -> ContainerMetadata | None:
        meta = super().inspect(container)
        if meta is None:
            return None
        try:
            pod_id = (self._libpod(f"/containers/{meta.id}/json") or {}).get("Pod") or ""
            pod = self._libpod(f"/pods/{pod_id}/json") if pod_id else None
        except RuntimeControlError as exc:
            log.debug("podman pod of %s: %s", meta.id[:12], exc)
            return meta  # the container's own facts still hold
        if not pod:
            return meta
        from dataclasses import replace

        return replace(meta, pod=pod.get("Name") or None,
                       pod_labels=dict(pod.get("Labels") or {}))

    def apply_seccomp(self, container: str, profile_json: str, *,
                      settle_s: float = 1.0) -> ApplyResult:
        raise RuntimeControlError(
            "seccomp apply through roxd is not supported on podman yet (its compatible API "
            "does not recreate containers like Docker's); run the container with "
            "`podman run --security-opt seccomp=<profile.json>`")

    def __repr__(self) -> str:
        return f"PodmanRuntime({self.url!r})"
