"""Container runtimes behind one typed port (`ContainerRuntime`), one client per runtime.

    runtime = connect_runtime(config.containers)    # DockerRuntime, or NoRuntime(reason)
    meta = runtime.inspect("web-1")                  # ContainerMetadata | None
    runtime.kill(meta.id)                            # RuntimeControlError when refused
"""

from __future__ import annotations

from typing import Any, Protocol

from roxd.runtime.base import (
    CONTAINER_ACTIONS,
    ContainerMetadata,
    ContainerRuntime,
    EngineInventory,
    EventStream,
    RuntimeControlError,
    RuntimeEvent,
    RuntimeUnavailableError,
    container_action,
)
from roxd.runtime.containerd import DEFAULT_CONTAINERD_ADDRESS, ContainerdRuntime
from roxd.runtime.docker_engine import DEFAULT_DOCKER_URL, DockerRuntime
from roxd.runtime.null import NOT_CONFIGURED, NoRuntime
from roxd.runtime.podman import DEFAULT_PODMAN_URL, PodmanRuntime

__all__ = [
    "CONTAINER_ACTIONS",
    "DEFAULT_CONTAINERD_ADDRESS",
    "DEFAULT_DOCKER_URL",
    "DEFAULT_PODMAN_URL",
    "NOT_CONFIGURED",
    "ContainerMetadata",
    "ContainerRuntime",
    "ContainerdRuntime",
    "DockerRuntime",
    "EngineInventory",
    "EventStream",
    "NoRuntime",
    "PodmanRuntime",
    "RuntimeControlError",
    "RuntimeEvent",
    "RuntimeUnavailableError",
    "as_runtime",
    "connect_attribution_runtimes",
    "connect_runtime",
    "container_action",
]


class RuntimeSettings(Protocol):
    """The part of config.ContainersSection the factory reads."""

    docker_url: str
    docker_timeout_s: float


def connect_runtime(containers: RuntimeSettings) -> ContainerRuntime:
    """The configured runtime: DockerRuntime for `containers.docker_url`, NoRuntime when it is
    empty. Never connects here: the client is built on first use, so a daemon starts while
    the engine is down and uses it once it is up."""
    if not containers.docker_url:
        return NoRuntime()
    return DockerRuntime(containers.docker_url, timeout=containers.docker_timeout_s)


def connect_attribution_runtimes(containers: object) -> list[ContainerRuntime]:
    """The runtimes roxd attributes containers from besides the main one: containerd at
    `containers.containerd_address` and podman's service at `containers.podman_url` (each
    left out when empty). Never connects here: each metadata source connects, and reconnects,
    in its own thread, so a runtime that starts after roxd is picked up."""
    out: list[ContainerRuntime] = []
    timeout = float(getattr(containers, "docker_timeout_s", 5.0))
    address = getattr(containers, "containerd_address", DEFAULT_CONTAINERD_ADDRESS)
    if address:
        out.append(ContainerdRuntime(address, timeout=timeout))
    podman = getattr(containers, "podman_url", DEFAULT_PODMAN_URL)
    if podman:
        out.append(PodmanRuntime(podman, timeout=timeout))
    return out


def as_runtime(runtime_or_client: ContainerRuntime | Any) -> ContainerRuntime:
    """A ContainerRuntime as is; a docker SDK client (the old signatures) wrapped once."""
    if isinstance(runtime_or_client, ContainerRuntime):
        return runtime_or_client
    return DockerRuntime.from_client(runtime_or_client)
