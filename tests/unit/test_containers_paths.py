"""cgroup path -> (runtime, container id, pod uid): the shapes runtimes create on real hosts."""

from __future__ import annotations

import pytest

from roxd.containers.paths import ContainerRef, parse_cgroup_path

pytestmark = pytest.mark.unit

ID = "3c79270d70136d5d3f9916700ee58f8f50872c19d77f622a21dcbb64778ff218"
ID2 = "9f2d1c5e8a7b6c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d"
POD = "0d5f2b4e-7c1a-4f8e-9b3d-2a6c8e1f4b7d"
POD_US = POD.replace("-", "_")
STATIC_POD = "6f8e2c1d4b7a9e3f5c2d8b1a4e7f9c3d"  # static pods: a 32-hex hash, not a UUID

CASES: list[tuple[str, str, ContainerRef | None]] = [
    # --- docker, cgroupfs driver
    ("docker cgroupfs", f"/docker/{ID}", ContainerRef("docker", ID)),
    ("docker cgroupfs trailing slash", f"/docker/{ID}/", ContainerRef("docker", ID)),
    ("docker cgroupfs sub-cgroup", f"/docker/{ID}/init.scope", ContainerRef("docker", ID)),
    ("docker cgroupfs deep sub-cgroup", f"/docker/{ID}/system.slice/cron.service",
     ContainerRef("docker", ID)),
    ("docker-in-docker: outermost wins", f"/docker/{ID}/docker/{ID2}", ContainerRef("docker", ID)),
    ("docker with no leading slash", f"docker/{ID}", ContainerRef("docker", ID)),
    # --- docker, systemd driver
    ("docker systemd", f"/system.slice/docker-{ID}.scope", ContainerRef("docker", ID)),
    ("docker systemd sub-cgroup", f"/system.slice/docker-{ID}.scope/init.scope",
     ContainerRef("docker", ID)),
    ("rootless docker",
     f"/user.slice/user-1000.slice/user@1000.service/user.slice/docker-{ID}.scope",
     ContainerRef("docker", ID)),
    # --- containerd / CRI
    ("cri-containerd scope", f"/system.slice/cri-containerd-{ID}.scope",
     ContainerRef("containerd", ID)),
    ("kubepods cgroupfs burstable", f"/kubepods/burstable/pod{POD}/{ID}",
     ContainerRef("containerd", ID, POD)),
    ("kubepods cgroupfs besteffort", f"/kubepods/besteffort/pod{POD}/{ID}",
     ContainerRef("containerd", ID, POD)),
    ("kubepods cgroupfs guaranteed", f"/kubepods/pod{POD}/{ID}",
     ContainerRef("containerd", ID, POD)),
    ("kubepods cgroupfs static pod", f"/kubepods/burstable/pod{STATIC_POD}/{ID}",
     ContainerRef("containerd", ID, STATIC_POD)),
    ("kubepods systemd burstable",
     f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{POD_US}.slice/"
     f"cri-containerd-{ID}.scope", ContainerRef("containerd", ID, POD)),
    ("kubepods systemd besteffort",
     f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{POD_US}.slice/"
     f"cri-containerd-{ID}.scope", ContainerRef("containerd", ID, POD)),
    ("kubepods systemd guaranteed",
     f"/kubepods.slice/kubepods-pod{POD_US}.slice/cri-containerd-{ID}.scope",
     ContainerRef("containerd", ID, POD)),
    ("kubepods systemd docker (cri-dockerd)",
     f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{POD_US}.slice/"
     f"docker-{ID}.scope", ContainerRef("docker", ID, POD)),
    ("kind/k3s node: kubepods under a docker container", f"/docker/{ID2}/kubepods/pod{POD}/{ID}",
     ContainerRef("docker", ID2)),
    ("nerdctl systemd", f"/system.slice/nerdctl-{ID}.scope", ContainerRef("containerd", ID)),
    ("kubepods systemd cri-containerd, hybrid host (same path under unified)",
     f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{POD_US}.slice/"
     f"cri-containerd-{ID}.scope/", ContainerRef("containerd", ID, POD)),
    ("k3s cgroupfs under kubepods with the burstable class",
     f"/kubepods/burstable/pod{POD}/{ID}/", ContainerRef("containerd", ID, POD)),
    # --- CRI-O
    ("crio scope", f"/system.slice/crio-{ID}.scope", ContainerRef("cri-o", ID)),
    ("crio kubepods systemd",
     f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{POD_US}.slice/"
     f"crio-{ID}.scope", ContainerRef("cri-o", ID, POD)),
    ("crio kubepods cgroupfs", f"/kubepods/burstable/pod{POD}/crio-{ID}",
     ContainerRef("cri-o", ID, POD)),
    ("crio container sub-cgroup", f"/kubepods.slice/kubepods-pod{POD_US}.slice/crio-{ID}.scope/"
     "container", ContainerRef("cri-o", ID, POD)),
    # --- podman
    ("podman systemd", f"/machine.slice/libpod-{ID}.scope", ContainerRef("podman", ID)),
    ("podman container sub-cgroup", f"/machine.slice/libpod-{ID}.scope/container",
     ContainerRef("podman", ID)),
    ("podman cgroupfs", f"/libpod_parent/libpod-{ID}", ContainerRef("podman", ID)),
    ("rootless podman",
     f"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container",
     ContainerRef("podman", ID)),
    # --- the host, and runtime helpers that are not containers
    ("root", "/", None),
    ("empty", "", None),
    ("dockerd itself", "/system.slice/docker.service", None),
    ("containerd itself", "/system.slice/containerd.service", None),
    ("a login session", "/user.slice/user-1000.slice/session-3.scope", None),
    ("init scope", "/init.scope", None),
    ("docker parent with no container", "/docker", None),
    ("docker short id", "/docker/3c79270d7013", None),
    ("docker uppercase id", f"/docker/{ID.upper()}", None),
    ("docker id too long", f"/docker/{ID}0", None),
    ("docker buildkit", "/docker/buildx/abcdef", None),
    ("docker-compose unit, not a container", "/system.slice/docker-compose@web.service", None),
    ("docker scope with a short id", "/system.slice/docker-3c79270d7013.scope", None),
    ("crio conmon is the monitor", f"/system.slice/crio-conmon-{ID}.scope", None),
    ("crio conmon in kubepods",
     f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{POD_US}.slice/"
     f"crio-conmon-{ID}.scope", None),
    ("podman conmon is the monitor", f"/machine.slice/libpod-conmon-{ID}.scope", None),
    ("pod cgroup without a container", f"/kubepods/burstable/pod{POD}", None),
    ("pod slice without a container",
     f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{POD_US}.slice", None),
    ("bare id outside kubepods (ctr default namespace) is ambiguous", f"/default/{ID}", None),
    ("ctr with a name as id: claimed by containerd, not parsed", "/default/web", None),
    ("nerdctl scope with a short id", "/system.slice/nerdctl-3c79270d7013.scope", None),
    ("libvirt machine", "/machine.slice/machine-qemu\\x2d1\\x2dvm.scope", None),
    ("lxc", "/lxc.payload.web", None),
    ("this sandbox's own cgroup", "/process_api/e21bbe4b3a1d49b723d1599f2998410a", None),
]


@pytest.mark.parametrize(("path", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_parse_cgroup_path(path: str, expected: ContainerRef | None) -> None:
    assert parse_cgroup_path(path) == expected


def test_table_is_large_and_has_negatives() -> None:
    assert len(CASES) >= 25
    assert sum(1 for c in CASES if c[2] is None) >= 10
