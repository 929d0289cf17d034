"""Docker as a ContainerRuntime: the one module that imports the Docker SDK (python3-docker,
5.0 API), with exactly one `docker.DockerClient` per configured engine.

The client is built on first use (`version="auto"` asks the engine for its API version: that
is the reachability check) and rebuilt on a later call when the engine was down at that time.
The SDK's client is thread-safe enough for roxd's use: the event thread holds one streaming
connection of its pool, the loop and the API threads use the others.

Images are never pulled here: only ping, list, inspect, events, and the low-level create of
the seccomp recreate (which does not pull).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from roxd.runtime import kubernetes
from roxd.runtime.base import (
    ContainerMetadata,
    RuntimeControlError,
    RuntimeEvent,
    RuntimeUnavailableError,
)

if TYPE_CHECKING:
    from roxd.seccomp.apply import ApplyResult

try:  # the dependency is declared, but a missing SDK must degrade like a missing engine
    import docker
    import docker.errors
    import requests.exceptions
except ImportError:  # pragma: no cover - depends on the installation
    docker = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

DEFAULT_DOCKER_URL = "unix:///var/run/docker.sock"


def healthcheck_argv(test: tuple[str, ...], shell: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The argv dockerd runs for a HEALTHCHECK `Test` list (docker inspect's
    Config.Healthcheck.Test): CMD-SHELL through the image's shell, CMD as given."""
    if not test or test[0] == "NONE":
        return ()
    if test[0] == "CMD-SHELL":
        return (*(shell or ("/bin/sh", "-c")), *test[1:])
    if test[0] == "CMD":
        return tuple(test[1:])
    return ()


def metadata_from_inspect(attrs: Mapping[str, Any]) -> ContainerMetadata:
    """ContainerMetadata from `docker inspect` output (GET /containers/<id>/json)."""
    config = attrs.get("Config") or {}
    state = attrs.get("State") or {}
    name = attrs.get("Name") or None
    pid = state.get("Pid") or None
    labels = dict(config.get("Labels") or {})
    # Kubernetes through cri-dockerd: the kubelet's io.kubernetes.* labels name the pod
    pod = kubernetes.pod_facts(labels, {})
    test = tuple((config.get("Healthcheck") or {}).get("Test") or ())
    return ContainerMetadata(
        id=attrs["Id"],
        name=name.lstrip("/") if name else None,
        image=config.get("Image") or None,
        image_id=attrs.get("Image") or None,
        labels=labels,
        pid=pid if state.get("Running") else None,
        pod=pod.pod,
        pod_uid=pod.pod_uid,
        namespace=pod.namespace,
        healthcheck=healthcheck_argv(test, tuple(config.get("Shell") or ())),
        build_step=is_build_step(config),
    )


def is_build_step(config: Mapping[str, Any]) -> bool:
    """Docker's classic builder runs each RUN instruction in a container created from the
    previous step's image id, with the image's health check switched off (daemon/builder:
    Healthcheck.Test = ["NONE"]). Someone with the Docker API could start such a container
    by hand; they would already own the host."""
    test = tuple((config.get("Healthcheck") or {}).get("Test") or ())
    image = str(config.get("Image") or "")
    return test == ("NONE",) and image.startswith("sha256:")


def error_reason(exc: BaseException) -> str:
    """A one-line cause: the innermost OSError's message when there is one."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.strerror:
            return cur.strerror
        for arg in cur.args:
            if isinstance(arg, BaseException):
                inner = error_reason(arg)
                if inner:
                    return inner
        cur = cur.__cause__ or cur.__context__
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]


def _is_unreachable(exc: BaseException) -> bool:
    return docker is not None and isinstance(exc, requests.exceptions.ConnectionError)


class _DockerEvents:
    """The engine's event stream as RuntimeEvents."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[RuntimeEvent]:
        for event in self._stream:
            action = event.get("Action") or event.get("status") or ""
            actor = event.get("Actor") or {}
            cid = actor.get("ID") or event.get("id")
            if cid and action:
                yield RuntimeEvent(action, cid)

    def close(self) -> None:
        self._stream.close()  # unblocks the thread reading the stream


class DockerRuntime:
    """The Docker engine at `base_url`. Thread-safe."""

    name = "docker"
    label = "Docker"
    configured = True

    def __init__(self, base_url: str = DEFAULT_DOCKER_URL, timeout: float = 10.0) -> None:
        self.url = base_url
        self.timeout = timeout
        self._client: Any = None
        self._owns_client = True
        self._lock = threading.Lock()

    @classmethod
    def from_client(cls, client: Any, base_url: str | None = None) -> DockerRuntime:
        """Wrap an SDK client built elsewhere (tests, the seccomp CLI); close() leaves it open."""
        rt = cls(base_url or "the docker client given")
        rt._client = client
        rt._owns_client = False
        return rt

    # ------------------------------------------------------------------ the one client

    def client(self) -> Any:
        """The SDK client (built on first use); RuntimeUnavailableError when the engine
        cannot be reached or the SDK is missing."""
        with self._lock:
            if self._client is not None:
                return self._client
            if docker is None:
                raise RuntimeUnavailableError("the python docker SDK is not installed")
            try:
                self._client = docker.DockerClient(base_url=self.url, version="auto",
                                                   timeout=self.timeout)
            except Exception as exc:  # DockerException, requests errors, ...
                raise RuntimeUnavailableError(
                    f"docker not reachable at {self.url}: {error_reason(exc)}") from exc
            return self._client

    def _failed(self, what: str, exc: BaseException) -> RuntimeControlError:
        if _is_unreachable(exc):
            err: RuntimeControlError = RuntimeUnavailableError(
                f"docker not reachable at {self.url}: {error_reason(exc)}")
        else:
            err = RuntimeControlError(f"docker {what}: {error_reason(exc)}")
        return err

    def ping(self) -> None:
        try:
            self.client().ping()
        except RuntimeControlError:
            raise
        except Exception as exc:
            raise self._failed("ping", exc) from exc

    def version(self) -> str:
        try:
            return str(self.client().version().get("Version", "?"))
        except RuntimeControlError:
            raise
        except Exception as exc:
            raise self._failed("version", exc) from exc

    # ------------------------------------------------------------------ metadata

    def inspect_raw(self, container: str) -> dict[str, Any] | None:
        """`docker inspect` output, None when the engine does not know the container."""
        client = self.client()
        try:
            return client.api.inspect_container(container)
        except docker.errors.NotFound:
            return None
        except Exception as exc:
            raise self._failed(f"inspect {container[:12]}", exc) from exc

    def inspect(self, container: str) -> ContainerMetadata | None:
        attrs = self.inspect_raw(container)
        if attrs is None:
            return None
        try:
            return metadata_from_inspect(attrs)
        except (KeyError, TypeError, AttributeError) as exc:
            raise RuntimeControlError(
                f"docker inspect {container[:12]}: unexpected shape: {exc!r}") from exc

    def running_ids(self) -> list[str]:
        client = self.client()
        try:
            return [summary["Id"] for summary in client.api.containers(quiet=True)]
        except Exception as exc:
            raise self._failed("list containers", exc) from exc

    def events(self, since: int | None = None, actions: Sequence[str] = ()) -> _DockerEvents:
        client = self.client()
        filters: dict[str, Any] = {"type": "container"}
        if actions:
            filters["event"] = list(actions)
        try:
            return _DockerEvents(client.events(since=since, decode=True, filters=filters))
        except Exception as exc:
            raise self._failed("events", exc) from exc

    # ------------------------------------------------------------------ inventory (read-only)

    def info(self) -> dict[str, Any]:
        try:
            return dict(self.client().info())
        except RuntimeControlError:
            raise
        except Exception as exc:
            raise self._failed("info", exc) from exc

    def container_ids(self, all_states: bool = False) -> list[str]:
        client = self.client()
        try:
            return [s["Id"] for s in client.api.containers(all=all_states, quiet=True)]
        except Exception as exc:
            raise self._failed("list containers", exc) from exc

    def images_raw(self) -> list[dict[str, Any]]:
        client = self.client()
        try:
            return list(client.api.images(all=False))
        except Exception as exc:
            raise self._failed("list images", exc) from exc

    def inspect_image_raw(self, image: str) -> dict[str, Any] | None:
        client = self.client()
        try:
            return dict(client.api.inspect_image(image))
        except docker.errors.NotFound:
            return None
        except Exception as exc:
            raise self._failed(f"inspect image {image[:40]}", exc) from exc

    def inspect_exec_raw(self, exec_id: str) -> dict[str, Any] | None:
        client = self.client()
        try:
            return dict(client.api.exec_inspect(exec_id))
        except docker.errors.NotFound:
            return None
        except Exception as exc:
            raise self._failed(f"inspect exec {exec_id[:12]}", exc) from exc

    def image_id(self, image: str) -> str | None:
        client = self.client()
        try:
            return client.api.inspect_image(image)["Id"]
        except docker.errors.NotFound:
            return None
        except Exception as exc:
            raise self._failed(f"inspect image {image}", exc) from exc

    # ------------------------------------------------------------------ control

    def exists(self, container_id: str) -> bool:
        try:
            return self.inspect_raw(container_id) is not None
        except RuntimeControlError:
            return True  # cannot tell: never forget state because the engine is down

    def pid_of(self, container_id: str) -> int | None:
        try:
            attrs = self.inspect_raw(container_id)
        except RuntimeControlError:
            return None
        if attrs is None:
            return None
        state = attrs.get("State") or {}
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
        if self.inspect_raw(container_id) is None:
            raise RuntimeControlError(f"container {container_id[:12]} no longer exists")
        try:
            getattr(self.client().api, verb)(container_id)
        except Exception as exc:
            raise self._failed(f"{verb} {container_id[:12]}", exc) from exc

    def apply_seccomp(self, container: str, profile_json: str, *,
                      settle_s: float = 1.0) -> ApplyResult:
        from roxd.seccomp.apply import apply_profile

        return apply_profile(self.client(), container, profile_json, settle_s=settle_s)

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None and self._owns_client:
            try:
                client.close()
            except Exception as exc:
                log.debug("closing the docker client: %s", exc)

    def __repr__(self) -> str:
        return f"DockerRuntime({self.url!r})"
