"""Parse a cgroup v2 path into the container it belongs to.

Pure: no file system, no runtime. The shapes the container runtimes create:

    docker, cgroupfs driver     /docker/<id>                     (+ sub-cgroups below it)
    docker, systemd driver      /system.slice/docker-<id>.scope
    containerd (CRI), systemd   .../cri-containerd-<id>.scope
    nerdctl, systemd            /system.slice/nerdctl-<id>.scope
    containerd (ctr), cgroupfs  /<namespace>/<id>                (names no runtime: the
                                                                  resolver asks containerd)
    kubelet, cgroupfs driver    /kubepods/burstable/pod<uid>/<id>
    kubelet, systemd driver     /kubepods.slice/kubepods-burstable.slice/
                                    kubepods-burstable-pod<uid_with_underscores>.slice/
                                    cri-containerd-<id>.scope
    CRI-O                       .../crio-<id>.scope              (crio-conmon-<id>: the monitor)
    podman                      /machine.slice/libpod-<id>.scope (+ /container sub-cgroup;
                                                                  libpod-conmon-<id>: the monitor)

Anything else is the host (None). When containers nest (docker-in-docker, a container running
systemd in its own sub-cgroups) the outermost container wins: it is the one the host's runtime
knows, and everything nested inside it is inside its trust boundary.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DOCKER = "docker"
CONTAINERD = "containerd"
CRIO = "cri-o"
PODMAN = "podman"

_HEX64 = r"[0-9a-f]{64}"
_ID = re.compile(_HEX64)

# One cgroup directory name each: (pattern with an `id` group, runtime). The .scope suffix is
# the systemd driver; without it, the cgroupfs driver of the same runtime.
_SCOPES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(rf"docker-(?P<id>{_HEX64})\.scope"), DOCKER),
    (re.compile(rf"cri-containerd-(?P<id>{_HEX64})(?:\.scope)?"), CONTAINERD),
    (re.compile(rf"nerdctl-(?P<id>{_HEX64})\.scope"), CONTAINERD),
    (re.compile(rf"crio-(?P<id>{_HEX64})(?:\.scope)?"), CRIO),
    (re.compile(rf"libpod-(?P<id>{_HEX64})(?:\.scope)?"), PODMAN),
)
# The kubelet's pod cgroup: "pod<uid>" (cgroupfs) or "kubepods[-<qos>]-pod<uid>.slice" (systemd,
# with the uid's dashes turned into underscores). Static pods have a 32-hex uid, not a UUID.
_POD_CGROUPFS = re.compile(r"pod(?P<uid>[0-9a-f][0-9a-f-]{7,63})")
_POD_SYSTEMD = re.compile(r"kubepods(?:-[a-z]+)?-pod(?P<uid>[0-9a-f][0-9a-f_]{7,63})\.slice")


@dataclass(frozen=True, slots=True)
class ContainerRef:
    """What a cgroup path alone says about a container."""

    runtime: str  # "docker" | "containerd" | "cri-o" | "podman"
    container_id: str
    pod_uid: str | None = None  # Kubernetes pod uid, dashed form


def parse_cgroup_path(path: str) -> ContainerRef | None:
    """The container a cgroup v2 path belongs to, or None for the host.

    e.g. "/docker/<64 hex>/init.scope" -> ContainerRef("docker", "<64 hex>", None).
    """
    parts = [p for p in path.split("/") if p]
    in_kubepods = False
    pod_uid: str | None = None
    for i, name in enumerate(parts):
        if name.startswith("kubepods"):
            in_kubepods = True
        if in_kubepods and pod_uid is None:
            m = _POD_SYSTEMD.fullmatch(name) or _POD_CGROUPFS.fullmatch(name)
            if m:
                pod_uid = m.group("uid").replace("_", "-")
                continue
        for pattern, runtime in _SCOPES:
            m = pattern.fullmatch(name)
            if m:
                return ContainerRef(runtime, m.group("id"), pod_uid if in_kubepods else None)
        # cgroupfs docker: the "docker" directory, then the bare id.
        if name == "docker" and i + 1 < len(parts) and _ID.fullmatch(parts[i + 1]):
            return ContainerRef(DOCKER, parts[i + 1], None)
        # cgroupfs kubelet: a bare id directly below the pod cgroup. The path does not say which
        # CRI runtime made it (containerd, or docker through cri-dockerd); containerd is the
        # common one.
        if pod_uid is not None and _ID.fullmatch(name):
            return ContainerRef(CONTAINERD, name, pod_uid)
    return None


_HEX_RUN = re.compile(rf"(?<![0-9a-f]){_HEX64}(?![0-9a-f])")


def looks_like_container(path: str) -> bool:
    """A path `parse_cgroup_path` does not recognise, but that names a 64-hex id the way
    container runtimes do ("/default/<id>" from `ctr run` with a hex id, an unknown runtime's
    "<prefix>-<id>.scope"): counted as unattributed when no runtime claims it. The runtimes'
    monitor processes (conmon) are not containers."""
    return any(_HEX_RUN.search(part) and "conmon" not in part
               for part in path.split("/") if part)
