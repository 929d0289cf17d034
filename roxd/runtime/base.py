"""What roxd needs from a container runtime, as one typed port.

Attribution (names, images, labels and the event stream), enforcement (pid of the init
process, kill / stop / pause) and seccomp (inspect, image ids, recreate with a profile) all
talk to a runtime through `ContainerRuntime`; only the adapters (`roxd.runtime.docker_engine`)
import a runtime's SDK. `NoRuntime` stands in when none is configured, so callers never test
for None: its methods raise `RuntimeUnavailableError` with the reason, or answer "cannot tell".
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from roxd.errors import RoxdError

if TYPE_CHECKING:
    from roxd.seccomp.apply import ApplyResult


class RuntimeControlError(RoxdError):
    """The runtime refused or failed an operation; the message says which and why."""


class RuntimeUnavailableError(RuntimeControlError):
    """No runtime is configured, or the configured one cannot be reached now."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ContainerMetadata:
    """What a runtime knows about a container beyond its cgroup path (one inspect)."""

    id: str
    name: str | None = None
    image: str | None = None  # the human reference the container was created from ("nginx:1.25")
    image_id: str | None = None  # "sha256:..."
    labels: Mapping[str, str] = field(default_factory=dict)
    pid: int | None = None  # host pid of the container's init process while it runs
    # Kubernetes, from the labels and annotations the CRI plugin sets (roxd.runtime.kubernetes),
    # or a podman pod (pod name only): None when the container is not in a pod.
    pod: str | None = None  # pod name
    pod_uid: str | None = None
    namespace: str | None = None  # the Kubernetes namespace of the pod
    pod_labels: Mapping[str, str] = field(default_factory=dict)  # the pod's own labels
    annotations: Mapping[str, str] = field(default_factory=dict)  # OCI annotations
    # The runtime's own namespace: containerd's ("k8s.io", "default", "moby"); None elsewhere.
    runtime_namespace: str | None = None
    # Where the runtime put the container's cgroup (relative to the cgroup2 root), when it says:
    # lets the resolver claim cgroup paths that do not name a runtime ("/default/web").
    cgroup_path: str | None = None
    healthcheck: tuple[str, ...] = ()  # the argv of its health check as the runtime runs it
    build_step: bool = False  # made by an image builder for one build step

    @property
    def running(self) -> bool:
        return self.pid is not None

    @property
    def display_name(self) -> str:
        """The name, or the short id when the runtime reported none."""
        return self.name or self.id[:12]


@dataclass(frozen=True, slots=True)
class RuntimeEvent:
    """One lifecycle event of a container: "start", "die", "destroy", "rename", ..."""

    action: str
    container_id: str


class EventStream(Protocol):
    """The runtime's event stream: iterate to block for events; `close()` (from another
    thread) ends the iteration."""

    def __iter__(self) -> Iterator[RuntimeEvent]: ...

    def close(self) -> None: ...


@runtime_checkable
class ContainerRuntime(Protocol):
    """One container runtime (one client, shared by every stage). Thread-safe.

    Errors: `RuntimeUnavailableError` when the runtime is not configured or not reachable,
    `RuntimeControlError` when it refused; "no such container" is an answer (None / False),
    not an error, except for the actions (kill, stop, pause, apply_seccomp).
    """

    name: str  # the runtime as cgroup paths name it (ContainerRef.runtime): "docker"
    label: str  # for people: "Docker" (in "killed through the Docker API")
    url: str  # where it is reached; "" when not configured
    configured: bool  # False only for NoRuntime

    def ping(self) -> None:
        """Return when the runtime answers; RuntimeUnavailableError otherwise."""
        ...

    def version(self) -> str:
        """The runtime's version string (raises like ping)."""
        ...

    # ------------------------------------------------------------------ metadata

    def inspect(self, container: str) -> ContainerMetadata | None:
        """Metadata of a container by id or name, None when the runtime does not know it."""
        ...

    def running_ids(self) -> list[str]:
        """Ids of the running containers."""
        ...

    def events(self, since: int | None = None, actions: Sequence[str] = ()) -> EventStream:
        """Follow container lifecycle events (only `actions` when given), replaying from
        `since` (epoch seconds)."""
        ...

    def image_id(self, image: str) -> str | None:
        """The image id ("sha256:...") of an image reference or id; None when unknown."""
        ...

    # ------------------------------------------------------------------ control

    def exists(self, container_id: str) -> bool:
        """Does the runtime still know the container? True when it cannot tell (unreachable):
        callers must never forget state because the engine is down."""
        ...

    def pid_of(self, container_id: str) -> int | None:
        """Host pid of the container's init process; None when not running or unknown."""
        ...

    def kill(self, container_id: str) -> None: ...

    def stop(self, container_id: str) -> None: ...

    def pause(self, container_id: str) -> None: ...

    def apply_seccomp(self, container: str, profile_json: str, *,
                      settle_s: float = 1.0) -> ApplyResult:
        """Recreate the container with this seccomp profile, rolling back on any failure
        (roxd.seccomp.errors.ApplyError / SeccompTargetError)."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class EngineInventory(Protocol):
    """What the posture scan and the inventory read from an engine, beside ContainerRuntime
    (a separate port: runtimes that only attribute and act need not provide it). Raw engine
    documents (the engine's own JSON), read-only, never a pull. Errors like ContainerRuntime."""

    def info(self) -> dict[str, Any]:
        """The engine's `docker info` document (GET /info)."""
        ...

    def inspect_raw(self, container: str) -> dict[str, Any] | None:
        """The container's inspect document; None when the engine does not know it."""
        ...

    def container_ids(self, all_states: bool = False) -> list[str]:
        """Ids of the running containers (every container with all_states)."""
        ...

    def images_raw(self) -> list[dict[str, Any]]:
        """The images present on the host (GET /images/json summaries)."""
        ...

    def inspect_image_raw(self, image: str) -> dict[str, Any] | None:
        """The image's inspect document; None when unknown."""
        ...

    def inspect_exec_raw(self, exec_id: str) -> dict[str, Any] | None:
        """An exec instance's inspect document (GET /exec/<id>/json); None when gone."""
        ...


CONTAINER_ACTIONS = ("kill", "stop", "pause")


def container_action(runtime: ContainerRuntime, verb: str, container_id: str) -> None:
    """runtime.kill / stop / pause by name (configuration says which); ValueError otherwise."""
    if verb == "kill":
        runtime.kill(container_id)
    elif verb == "stop":
        runtime.stop(container_id)
    elif verb == "pause":
        runtime.pause(container_id)
    else:
        raise ValueError(f"not a container action: {verb!r} (one of {CONTAINER_ACTIONS})")
