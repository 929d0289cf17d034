"""containerd as a ContainerRuntime, through its own gRPC API (the socket kubelet, ctr and
nerdctl use): names, images, labels, annotations and pods for containers of every containerd
namespace, including the ones kubelet creates through the CRI plugin (namespace `k8s.io`).

Why the API and not containerd's files: the container's labels (where the CRI plugin keeps
pod name, namespace, uid and container name, and the pod's own labels on the sandbox) live
only in containerd's metadata database (bbolt, `meta.db`, held open and rewritten by
containerd); the OCI bundle's config.json under the task state directory carries only the
annotations, and only while a task runs. The API answers both, consistently, in one call.
grpcio (Debian's python3-grpcio) carries raw bytes; `protowire` encodes the few messages.

Ids: containerd ids are unique per containerd namespace only. roxd keys containers by the bare
id (what a cgroup path names) and remembers which namespace it was found in; the same id in
two namespaces (only possible for hand-named `ctr` containers, never for CRI's 64-hex ids) is
attributed to the first namespace listed.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from roxd.runtime import kubernetes as k8s
from roxd.runtime.base import (
    ContainerMetadata,
    RuntimeControlError,
    RuntimeEvent,
    RuntimeUnavailableError,
)
from roxd.runtime.protowire import (
    Message,
    WireError,
    encode_bytes_field,
    encode_message,
    encode_varint_field,
)

if TYPE_CHECKING:
    from roxd.seccomp.apply import ApplyResult

try:  # declared in setup.sh (python3-grpcio); missing, containerd degrades like a down socket
    import grpc
except ImportError:  # pragma: no cover - depends on the installation
    grpc = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

DEFAULT_CONTAINERD_ADDRESS = "/run/containerd/containerd.sock"
# Docker's own containers live in containerd's "moby" namespace (when dockerd uses the system
# containerd): they are Docker's to attribute, with Docker's names.
SKIPPED_NAMESPACES = frozenset({"moby"})
_NS_HEADER = "containerd-namespace"

# Task status (containerd.v1.types.Status)
_RUNNING, _PAUSED, _PAUSING = 2, 4, 5

# containerd event topics -> the lifecycle words the metadata source follows
_TOPICS = {
    "/tasks/start": "start",
    "/tasks/exit": "die",
    "/tasks/delete": "die",
    "/containers/delete": "destroy",
    "/containers/update": "update",
}


def systemd_cgroup_path(spec_path: str) -> str:
    """A runc cgroupsPath in the systemd driver's "slice:prefix:name" form as the directory
    systemd creates ("kubepods-besteffort-pod1.slice:cri-containerd:ab" ->
    "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/
    cri-containerd-ab.scope"); a cgroupfs path is returned as is."""
    if ":" not in spec_path or spec_path.startswith("/"):
        return spec_path
    slice_name, prefix, name = [*spec_path.split(":"), "", ""][:3]
    parts: list[str] = []
    if slice_name and slice_name != "-.slice":
        stem = slice_name.removesuffix(".slice")
        words = stem.split("-")
        for i in range(1, len(words) + 1):  # a-b-c.slice lives in a.slice/a-b.slice/
            parts.append("-".join(words[:i]) + ".slice")
    unit = name if name.endswith((".scope", ".slice")) else f"{prefix}-{name}.scope" if prefix \
        else f"{name}.scope"
    return "/" + "/".join([*parts, unit])


def metadata_from_container(msg: Message, namespace: str,
                            sandbox_labels: dict[str, str] | None = None,
                            pid: int | None = None) -> ContainerMetadata:
    """ContainerMetadata from a containerd.services.containers.v1.Container message."""
    cid = msg.str(1)
    labels = msg.string_map(2)
    image = msg.str(3) or None
    spec: dict[str, Any] = {}
    any_spec = msg.message(5)
    if any_spec.bytes(2):
        try:
            loaded = json.loads(any_spec.bytes(2))
            spec = loaded if isinstance(loaded, dict) else {}
        except ValueError:
            spec = {}
    annotations = spec.get("annotations") or {}
    if not isinstance(annotations, dict):
        annotations = {}
    annotations = {str(k): str(v) for k, v in annotations.items()}
    linux = spec.get("linux") or {}
    cgroups_path = linux.get("cgroupsPath") if isinstance(linux, dict) else None
    facts = k8s.pod_facts(labels, annotations)
    pod_labels = k8s.pod_labels_of(sandbox_labels if sandbox_labels is not None
                                   else labels if facts.sandbox else {})
    return ContainerMetadata(
        id=cid,
        name=facts.container_name or cid,
        image=image or facts.image,
        image_id=None,
        labels=labels,
        pid=pid,
        pod=facts.pod,
        pod_uid=facts.pod_uid,
        namespace=facts.namespace,
        pod_labels=pod_labels if facts.in_pod else {},
        annotations=annotations,
        runtime_namespace=namespace,
        cgroup_path=systemd_cgroup_path(cgroups_path) if isinstance(cgroups_path, str)
        and cgroups_path else None,
    )


class _ContainerdEvents:
    """containerd's event stream (Events/Subscribe) as RuntimeEvents."""

    def __init__(self, call: Any, owner: ContainerdRuntime) -> None:
        self._call = call
        self._owner = owner

    def __iter__(self) -> Iterator[RuntimeEvent]:
        try:
            for raw in self._call:
                envelope = Message(raw)
                action = _TOPICS.get(envelope.str(3))
                if action is None:
                    continue
                namespace = envelope.str(2)
                if namespace in SKIPPED_NAMESPACES:
                    continue
                body = Message(envelope.message(4).bytes(2))
                cid = body.str(1)  # TaskStart/TaskExit/TaskDelete/ContainerDelete: id = 1
                if not cid:
                    continue
                self._owner._learn_namespace(cid, namespace, forget=action == "destroy")
                yield RuntimeEvent("start" if action == "update" else action, cid)
        except Exception as exc:
            if grpc is not None and isinstance(exc, grpc.RpcError) \
                    and exc.code() == grpc.StatusCode.CANCELLED:
                return  # close() from another thread
            raise

    def close(self) -> None:
        self._call.cancel()


class ContainerdRuntime:
    """containerd at `address` (its gRPC socket). Thread-safe: one grpc channel."""

    name = "containerd"
    label = "containerd"
    configured = True

    def __init__(self, address: str = DEFAULT_CONTAINERD_ADDRESS, timeout: float = 5.0) -> None:
        self.address = address.removeprefix("unix://")
        self.url = f"unix://{self.address}"
        self.timeout = timeout
        self._lock = threading.Lock()
        self._channel: Any = None
        self._ns_of: dict[str, str] = {}  # container id -> the containerd namespace it is in
        self._known_ns: frozenset[str] = frozenset()

    # ------------------------------------------------------------------ transport

    def _rpc(self, method: str, request: bytes, namespace: str | None = None) -> Message:
        channel = self._chan()
        call = channel.unary_unary(method)
        metadata = ((_NS_HEADER, namespace),) if namespace else None
        try:
            raw = call(request, timeout=self.timeout, metadata=metadata)
        except grpc.RpcError as exc:
            raise self._error(method, exc) from exc
        try:
            return Message(raw)
        except WireError as exc:
            raise RuntimeControlError(f"containerd {method}: malformed reply: {exc}") from exc

    def _chan(self) -> Any:
        if grpc is None:
            raise RuntimeUnavailableError("the python grpc module is not installed "
                                          "(Debian: python3-grpcio)")
        with self._lock:
            if self._channel is None:
                # bytes in, bytes out: no generated stubs (see the module doc)
                self._channel = grpc.insecure_channel(f"unix:{self.address}")
            return self._channel

    def _error(self, method: str, exc: Any) -> RuntimeControlError:
        code = exc.code() if hasattr(exc, "code") else None
        detail = exc.details() if hasattr(exc, "details") else str(exc)
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            # grpc's "failed to connect to all addresses; last error: UNKNOWN: unix:/x: No
            # such file or directory": the cause is the last part
            cause = detail.rsplit(": ", 1)[-1] if "last error" in detail else detail
            return RuntimeUnavailableError(f"containerd not reachable at {self.address}: {cause}")
        return RuntimeControlError(f"containerd {method.rsplit('/', 1)[-1]}: {detail}")

    @staticmethod
    def _not_found(exc: RuntimeControlError) -> bool:
        cause = exc.__cause__
        return (grpc is not None and isinstance(cause, grpc.RpcError)
                and cause.code() == grpc.StatusCode.NOT_FOUND)

    # ------------------------------------------------------------------ port

    def ping(self) -> None:
        self.version()

    def version(self) -> str:
        reply = self._rpc("/containerd.services.version.v1.Version/Version", b"")
        return reply.str(1) or "?"

    def namespaces(self) -> list[str]:
        """containerd's namespaces, Docker's own ("moby") left out."""
        reply = self._rpc("/containerd.services.namespaces.v1.Namespaces/List", b"")
        names = [ns.str(1) for ns in reply.messages(1) if ns.str(1) not in SKIPPED_NAMESPACES]
        with self._lock:
            self._known_ns = frozenset(names)
        return names

    def id_for_cgroup(self, path: str) -> str | None:
        """The container id a cgroup path would have when `ctr`/containerd's default spec
        made it ("/<namespace>/<id>"), for a namespace seen before; None otherwise."""
        parts = [p for p in path.split("/") if p]
        with self._lock:
            known = self._known_ns
        if len(parts) >= 2 and parts[0] in known:
            return parts[1]
        return None

    def _learn_namespace(self, cid: str, namespace: str, forget: bool = False) -> None:
        with self._lock:
            if forget:
                self._ns_of.pop(cid, None)
            elif namespace:
                self._ns_of[cid] = namespace

    def _split(self, container: str) -> tuple[str | None, str]:
        """"ns/id" or a bare id (its namespace as last seen, else to be searched)."""
        if "/" in container:
            ns, _, cid = container.partition("/")
            return ns, cid
        with self._lock:
            return self._ns_of.get(container), container

    def _get(self, namespace: str, cid: str) -> Message | None:
        try:
            reply = self._rpc("/containerd.services.containers.v1.Containers/Get",
                              encode_bytes_field(1, cid), namespace)
        except RuntimeControlError as exc:
            if self._not_found(exc):
                return None
            raise
        return reply.message(1)

    def _find(self, container: str) -> tuple[str, Message] | None:
        namespace, cid = self._split(container)
        search = [namespace] if namespace else []
        for ns in search + [n for n in self.namespaces() if n not in search]:
            msg = self._get(ns, cid)
            if msg is not None:
                self._learn_namespace(cid, ns)
                return ns, msg
            if namespace and ns == namespace and "/" in container:
                return None  # the caller named the namespace: do not look elsewhere
        return None

    def _task(self, namespace: str, cid: str) -> tuple[int, int] | None:
        """(pid, status) of a container's task; None when it has none."""
        try:
            reply = self._rpc("/containerd.services.tasks.v1.Tasks/Get",
                              encode_bytes_field(1, cid), namespace)
        except RuntimeControlError as exc:
            if self._not_found(exc):
                return None
            raise
        process = reply.message(1)
        return process.int(3), process.int(4)

    def inspect(self, container: str) -> ContainerMetadata | None:
        found = self._find(container)
        if found is None:
            return None
        namespace, msg = found
        cid = msg.str(1)
        task = self._task(namespace, cid)
        pid = task[0] if task and task[1] in (_RUNNING, _PAUSED, _PAUSING) and task[0] else None
        first = metadata_from_container(msg, namespace)
        sandbox_labels = None
        sandbox_id = k8s.pod_facts(first.labels, first.annotations).sandbox_id
        if sandbox_id:
            sandbox = self._get(namespace, sandbox_id)
            sandbox_labels = sandbox.string_map(2) if sandbox is not None else {}
        return metadata_from_container(msg, namespace, sandbox_labels, pid)

    def running_ids(self) -> list[str]:
        ids: list[str] = []
        for ns in self.namespaces():
            reply = self._rpc("/containerd.services.tasks.v1.Tasks/List", b"", ns)
            for process in reply.messages(1):
                if process.int(4) in (_RUNNING, _PAUSED, _PAUSING):
                    # a task's id is its container's (container_id, field 1, is left empty)
                    cid = process.str(2) or process.str(1)
                    self._learn_namespace(cid, ns)
                    ids.append(cid)
        return ids

    def events(self, since: int | None = None, actions: Sequence[str] = ()) -> _ContainerdEvents:
        # containerd replays nothing: the metadata source scans after subscribing is not
        # possible either, so it scans first and follows from then (a start between the two
        # is caught by the inspect on the first event of the new cgroup).
        channel = self._chan()
        call = channel.unary_stream("/containerd.services.events.v1.Events/Subscribe")
        filters = encode_message(*(encode_bytes_field(1, f'topic=="{t}"') for t in _TOPICS))
        return _ContainerdEvents(call(filters), self)

    def image_id(self, image: str) -> str | None:
        return None  # images are attributed by reference; content digests are not looked up

    def exists(self, container_id: str) -> bool:
        try:
            return self._find(container_id) is not None
        except RuntimeControlError:
            return True  # cannot tell: never forget state because containerd is down

    def pid_of(self, container_id: str) -> int | None:
        try:
            meta = self.inspect(container_id)
        except RuntimeControlError:
            return None
        return meta.pid if meta is not None else None

    def _signal(self, container_id: str, signo: int, verb: str) -> None:
        found = self._find(container_id)
        if found is None:
            raise RuntimeControlError(f"container {container_id[:12]} no longer exists")
        namespace, msg = found
        request = encode_message(encode_bytes_field(1, msg.str(1)),
                                 encode_varint_field(3, signo), encode_varint_field(4, 1))
        try:
            self._rpc("/containerd.services.tasks.v1.Tasks/Kill", request, namespace)
        except RuntimeControlError as exc:
            raise RuntimeControlError(f"containerd {verb} {container_id[:12]}: {exc}") from exc

    def kill(self, container_id: str) -> None:
        self._signal(container_id, signal.SIGKILL, "kill")

    def stop(self, container_id: str) -> None:
        self._signal(container_id, signal.SIGTERM, "stop")

    def pause(self, container_id: str) -> None:
        found = self._find(container_id)
        if found is None:
            raise RuntimeControlError(f"container {container_id[:12]} no longer exists")
        namespace, msg = found
        self._rpc("/containerd.services.tasks.v1.Tasks/Pause",
                  encode_bytes_field(1, msg.str(1)), namespace)

    def apply_seccomp(self, container: str, profile_json: str, *,
                      settle_s: float = 1.0) -> ApplyResult:
        raise RuntimeControlError(
            "seccomp apply is not supported on containerd: a container's profile is fixed "
            "in its OCI spec when it is created (set it in the pod's securityContext)")

    def close(self) -> None:
        with self._lock:
            channel, self._channel = self._channel, None
        if channel is not None:
            channel.close()

    def __repr__(self) -> str:
        return f"ContainerdRuntime({self.address!r})"
