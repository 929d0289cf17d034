"""Attribution beyond Docker, pure parts: the protobuf wire codec, containerd's container
message -> ContainerMetadata (CRI pods, plain namespaces), systemd cgroup paths, the pod facts
of CRI labels/annotations, and the resolver's claims and `unattributed` counter."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from roxd.containers.cgroups import CgroupIndex
from roxd.containers.metadata import ContainerMetadata, MetadataListener
from roxd.containers.paths import looks_like_container
from roxd.containers.resolver import ContainerResolver
from roxd.runtime import kubernetes as k8s
from roxd.runtime.containerd import metadata_from_container, systemd_cgroup_path
from roxd.runtime.protowire import (
    Message,
    WireError,
    encode_bytes_field,
    encode_message,
    encode_varint_field,
)

pytestmark = pytest.mark.unit

ID = "3c79270d70136d5d3f9916700ee58f8f50872c19d77f622a21dcbb64778ff218"
SANDBOX = "9f2d1c5e8a7b6c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d"
POD_UID = "0d5f2b4e-7c1a-4f8e-9b3d-2a6c8e1f4b7d"


def _map(number: int, items: dict[str, str]) -> bytes:
    return b"".join(encode_bytes_field(number, encode_message(
        encode_bytes_field(1, k), encode_bytes_field(2, v))) for k, v in items.items())


def container_message(cid: str, labels: dict[str, str], image: str,
                      spec: dict[str, object]) -> Message:
    any_spec = encode_message(
        encode_bytes_field(1, "types.containerd.io/opencontainers/runtime-spec/1/Spec"),
        encode_bytes_field(2, json.dumps(spec)))
    return Message(encode_message(
        encode_bytes_field(1, cid), _map(2, labels), encode_bytes_field(3, image),
        encode_bytes_field(5, any_spec),
        encode_varint_field(99, 7)))  # an unknown field, as a newer containerd might send


# ---------------------------------------------------------------------- protowire


def test_wire_round_trip_and_unknown_fields() -> None:
    raw = encode_message(encode_varint_field(3, 300), encode_bytes_field(1, "héllo"),
                         encode_varint_field(4, -1), _map(2, {"a": "1", "b": "2"}))
    msg = Message(raw)
    assert (msg.int(3), msg.str(1), msg.string_map(2)) == (300, "héllo", {"a": "1", "b": "2"})
    assert msg.int(4) == (1 << 64) - 1  # negative ints travel as 10-byte two's complement
    assert msg.str(42) == "" and msg.int(42) == 0 and not msg.has(42)


@pytest.mark.parametrize("raw", [b"\x0a\x05ab", b"\x08", b"\x08\xff\xff\xff\xff\xff\xff\xff\xff"
                                 b"\xff\xff\x01", b"\x0b", b"\x00\x01"])
def test_wire_rejects_malformed_bytes(raw: bytes) -> None:
    with pytest.raises(WireError):
        Message(raw)


# ---------------------------------------------------------------------- containerd

CRI_LABELS = {
    k8s.POD_NAME: "web-7d9f8b6c5d-x2x9q", k8s.POD_NAMESPACE: "shop", k8s.POD_UID: POD_UID,
    k8s.CONTAINER_NAME: "nginx", k8s.CRI_KIND: "container",
}
CRI_ANNOTATIONS = {k8s.CONTAINER_TYPE: "container", k8s.SANDBOX_ID: SANDBOX,
                   k8s.SANDBOX_NAME: "web-7d9f8b6c5d-x2x9q", k8s.SANDBOX_NAMESPACE: "shop"}


def test_cri_container_gets_pod_namespace_uid_name_and_pod_labels() -> None:
    cgroups = f"kubepods-besteffort-pod{POD_UID.replace('-', '_')}.slice:cri-containerd:{ID}"
    msg = container_message(ID, CRI_LABELS, "docker.io/library/nginx:1.25",
                            {"annotations": CRI_ANNOTATIONS, "linux": {"cgroupsPath": cgroups}})
    sandbox_labels = {"app": "web", "pod-template-hash": "7d9f8b6c5d", k8s.POD_NAME: "x",
                      k8s.CRI_KIND: "sandbox", "io.kubernetes.container.name": "POD"}
    meta = metadata_from_container(msg, "k8s.io", sandbox_labels, pid=4242)
    assert (meta.id, meta.name, meta.image, meta.pid) == (
        ID, "nginx", "docker.io/library/nginx:1.25", 4242)
    assert (meta.pod, meta.namespace, meta.pod_uid, meta.runtime_namespace) == (
        "web-7d9f8b6c5d-x2x9q", "shop", POD_UID, "k8s.io")
    assert meta.pod_labels == {"app": "web", "pod-template-hash": "7d9f8b6c5d"}
    assert meta.annotations[k8s.SANDBOX_ID] == SANDBOX
    assert meta.cgroup_path == (
        "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod"
        f"{POD_UID.replace('-', '_')}.slice/cri-containerd-{ID}.scope")


def test_pod_facts_fall_back_to_annotations() -> None:
    facts = k8s.pod_facts({}, {**CRI_ANNOTATIONS, k8s.SANDBOX_UID: POD_UID,
                               k8s.ANN_CONTAINER_NAME: "nginx"})
    assert (facts.pod, facts.namespace, facts.pod_uid, facts.container_name, facts.sandbox_id) \
        == ("web-7d9f8b6c5d-x2x9q", "shop", POD_UID, "nginx", SANDBOX)
    sandbox = k8s.pod_facts({k8s.CRI_KIND: "sandbox", k8s.POD_NAME: "p"}, {})
    assert sandbox.sandbox and sandbox.sandbox_id is None
    assert not k8s.pod_facts({"team": "blue"}, {}).in_pod


def test_plain_containerd_namespace_container() -> None:
    msg = container_message("web", {"team": "blue"}, "docker.io/library/busybox:latest",
                            {"linux": {"cgroupsPath": "/default/web"}})
    meta = metadata_from_container(msg, "default")
    assert (meta.name, meta.runtime_namespace, meta.cgroup_path) == ("web", "default",
                                                                      "/default/web")
    assert (meta.pod, meta.namespace, meta.pod_labels) == (None, None, {})
    assert meta.labels == {"team": "blue"}


def test_malformed_spec_is_no_spec() -> None:
    msg = Message(encode_message(encode_bytes_field(1, "x"), encode_bytes_field(
        5, encode_message(encode_bytes_field(2, b"{not json")))))
    meta = metadata_from_container(msg, "default")
    assert meta.annotations == {} and meta.cgroup_path is None


@pytest.mark.parametrize(("spec", "path"), [
    (f"system.slice:cri-containerd:{ID}", f"/system.slice/cri-containerd-{ID}.scope"),
    (f"kubepods-burstable-pod1_2.slice:cri-containerd:{ID}",
     "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1_2.slice/"
     f"cri-containerd-{ID}.scope"),
    (f"system.slice:docker:{ID}", f"/system.slice/docker-{ID}.scope"),
    (f"/kubepods/besteffort/pod{POD_UID}/{ID}", f"/kubepods/besteffort/pod{POD_UID}/{ID}"),
    ("/default/web", "/default/web"),
])
def test_systemd_cgroup_paths(spec: str, path: str) -> None:
    assert systemd_cgroup_path(spec) == path


# ---------------------------------------------------------------------- resolver claims


class ClaimingSource:
    """A runtime that reports cgroup paths (containerd): claims paths that name no runtime."""

    runtime = "containerd"

    def __init__(self) -> None:
        self.meta: dict[str, ContainerMetadata] = {}
        self.listeners: list[MetadataListener] = []

    def get(self, container_id: str) -> ContainerMetadata | None:
        return self.meta.get(container_id)

    def add_listener(self, listener: MetadataListener) -> None:
        self.listeners.append(listener)

    def claim(self, path: str) -> str | None:
        for meta in self.meta.values():
            if meta.cgroup_path and (path == meta.cgroup_path
                                     or path.startswith(meta.cgroup_path + "/")):
                return meta.id
        return None


def test_plain_namespace_path_is_claimed_and_unknown_ones_are_counted(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    (root / "default" / "web").mkdir(parents=True)
    (root / "default" / ID).mkdir(parents=True)
    (root / "system.slice" / "cron.service").mkdir(parents=True)
    source = ClaimingSource()
    source.meta["web"] = ContainerMetadata(id="web", name="web", image="busybox",
                                           runtime_namespace="default",
                                           cgroup_path="/default/web")
    resolver = ContainerResolver(CgroupIndex(str(root)), [source])
    web = resolver.resolve(os.stat(root / "default" / "web").st_ino)
    assert web is not None and (web.runtime, web.id, web.runtime_namespace) == (
        "containerd", "web", "default")
    assert resolver.resolve(os.stat(root / "system.slice" / "cron.service").st_ino) is None
    assert resolver.stats()["unattributed"] == 0
    # a 64-hex id nobody claims: the host's answer, but counted, for every event
    unknown = os.stat(root / "default" / ID).st_ino
    assert resolver.resolve(unknown) is None
    assert resolver.resolve(unknown) is None
    assert resolver.stats()["unattributed"] == 2


def test_container_without_runtime_metadata_is_unattributed(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    (root / "machine.slice" / f"libpod-{ID}.scope").mkdir(parents=True)
    resolver = ContainerResolver(CgroupIndex(str(root)), [])  # podman not reachable
    c = resolver.resolve(os.stat(root / "machine.slice" / f"libpod-{ID}.scope").st_ino)
    assert c is not None and (c.runtime, c.name) == ("podman", None)
    assert resolver.stats()["unattributed"] == 1


@pytest.mark.parametrize(("path", "looks"), [
    (f"/default/{ID}", True),
    (f"/nerdctl.slice/mystery-{ID}.scope", True),
    (f"/machine.slice/libpod-conmon-{ID}.scope", False),  # the monitor, not a container
    ("/system.slice/cron.service", False),
    ("/process_api/e21bbe4b3a1d49b723d1599f2998410a", False),  # 32 hex: not a runtime id
    (f"/x/{ID}0", False),  # 65 hex
])
def test_looks_like_container(path: str, looks: bool) -> None:
    assert looks_like_container(path) is looks


def test_attribution_runtimes_follow_the_config_and_implement_the_port() -> None:
    from roxd.config import ContainersSection
    from roxd.runtime import (
        ContainerdRuntime,
        ContainerRuntime,
        PodmanRuntime,
        RuntimeUnavailableError,
        connect_attribution_runtimes,
    )

    default = connect_attribution_runtimes(ContainersSection())
    assert [type(r) for r in default] == [ContainerdRuntime, PodmanRuntime]
    assert all(isinstance(r, ContainerRuntime) for r in default)
    assert default[0].url == "unix:///run/containerd/containerd.sock"
    assert connect_attribution_runtimes(ContainersSection(containerd_address="",
                                                          podman_url="")) == []
    # nothing there: "not reachable", with the reason, never a hang or a traceback
    gone = ContainerdRuntime("/nonexistent/containerd.sock", timeout=2)
    with pytest.raises(RuntimeUnavailableError, match="not reachable"):
        gone.ping()
    assert gone.exists("x") is True and gone.pid_of("x") is None  # cannot tell
    with pytest.raises(Exception, match="not supported on containerd"):
        gone.apply_seccomp("x", "{}")
    gone.close()
