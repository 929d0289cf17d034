"""What runs on this host and what it is made of, from the engine's inspect data (through the
runtime adapter): one typed record per container, one per image.

    containers = container_inventory(runtime)     # list[ContainerRecord], running first
    images = image_inventory(runtime)             # list[ImageRecord]

Slow (one inspect per container and image): call it off the event loop.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from roxd.runtime.base import EngineInventory


@dataclass(frozen=True)
class MountRecord:
    type: str  # bind, volume, tmpfs, npipe
    source: str
    destination: str
    rw: bool
    writable_host_path: bool  # a bind mount of a host path the container may write
    propagation: str = ""


@dataclass(frozen=True)
class PortRecord:
    container_port: int
    protocol: str
    host_ip: str
    host_port: int | None  # None: exposed, not published


@dataclass(frozen=True)
class ContainerRecord:
    id: str
    name: str
    state: str
    image: str  # the reference it was created from
    image_id: str
    image_created: str | None
    command: list[str]
    user: str  # "" = the image's default (root unless the image says otherwise)
    privileged: bool
    cap_add: list[str]
    cap_drop: list[str]
    mounts: list[MountRecord]
    host_namespaces: dict[str, bool]  # network, pid, ipc, uts, userns shared with the host
    network_mode: str
    ports: list[PortRecord]
    seccomp: str  # "default", "unconfined" or the profile given
    apparmor: str  # "" when none
    no_new_privileges: bool
    readonly_rootfs: bool
    runtime: str
    labels: dict[str, str]
    created: str
    started_at: str | None
    pid: int | None
    restart_policy: str
    warnings: list[str] = field(default_factory=list)  # short flags for tables
    # listening sockets observed (roxd/netmap/listeners.py): protocol, address, port, pid,
    # process, since, source (kernel | proc); `listening_observed` says how they were seen
    listening: list[dict[str, Any]] = field(default_factory=list)
    listening_observed: str = "not observed"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ImageRecord:
    id: str
    tags: list[str]
    digests: list[str]
    created: str
    size: int
    containers: int  # containers (any state) created from it
    user: str
    entrypoint: list[str]
    cmd: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _time(value: Any) -> str | None:
    if not value or str(value).startswith("0001-01-01"):
        return None
    if isinstance(value, int | float):
        return dt.datetime.fromtimestamp(value, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return str(value)


def _seccomp(opts: list[str], privileged: bool) -> str:
    for o in opts:
        key, _, value = o.replace(":", "=", 1).partition("=")
        if key == "seccomp":
            return "unconfined" if value == "unconfined" else (
                "custom" if value.startswith("{") else value)
    return "unconfined (privileged)" if privileged else "default"


def container_record(attrs: Mapping[str, Any],
                     image_created: str | None = None) -> ContainerRecord:
    """One record from the engine's inspect document."""
    config = attrs.get("Config") or {}
    hc = attrs.get("HostConfig") or {}
    state = attrs.get("State") or {}
    net = attrs.get("NetworkSettings") or {}
    mounts = [MountRecord(str(m.get("Type") or ""), str(m.get("Source") or ""),
                          str(m.get("Destination") or ""), bool(m.get("RW")),
                          m.get("Type") == "bind" and bool(m.get("RW")),
                          str(m.get("Propagation") or ""))
              for m in attrs.get("Mounts") or []]
    ports = []
    for key, bindings in (net.get("Ports") or {}).items():
        num, _, proto = key.partition("/")
        for b in bindings or [None]:
            ports.append(PortRecord(int(num), proto or "tcp",
                                    str((b or {}).get("HostIp") or "") if b else "",
                                    int(b["HostPort"]) if b and str(b.get("HostPort") or
                                                                    "").isdigit() else None))
    opts = [str(o) for o in hc.get("SecurityOpt") or []]
    privileged = bool(hc.get("Privileged"))
    namespaces = {"network": str(hc.get("NetworkMode") or "") == "host",
                  "pid": str(hc.get("PidMode") or "") == "host",
                  "ipc": str(hc.get("IpcMode") or "") == "host",
                  "uts": str(hc.get("UTSMode") or "") == "host",
                  "userns": str(hc.get("UsernsMode") or "") == "host"}
    warnings = []
    if privileged:
        warnings.append("privileged")
    warnings += [f"host-{k}" for k, v in namespaces.items() if v]
    if any(m.writable_host_path for m in mounts):
        warnings.append("writable-host-mount")
    if any(m.source.endswith("docker.sock") for m in mounts):
        warnings.append("docker-socket")
    restart = hc.get("RestartPolicy") or {}
    command = [str(x) for x in (config.get("Entrypoint") or [])] + \
        [str(x) for x in (config.get("Cmd") or [])]
    return ContainerRecord(
        id=str(attrs.get("Id") or ""), name=str(attrs.get("Name") or "").lstrip("/"),
        state=str(state.get("Status") or ""), image=str(config.get("Image") or ""),
        image_id=str(attrs.get("Image") or ""), image_created=image_created,
        command=command, user=str(config.get("User") or ""), privileged=privileged,
        cap_add=sorted(str(c) for c in hc.get("CapAdd") or []),
        cap_drop=sorted(str(c) for c in hc.get("CapDrop") or []), mounts=mounts,
        host_namespaces=namespaces, network_mode=str(hc.get("NetworkMode") or ""),
        ports=ports, seccomp=_seccomp(opts, privileged),
        apparmor=str(attrs.get("AppArmorProfile") or ""),
        no_new_privileges=any(o.replace("=", ":") in ("no-new-privileges",
                                                      "no-new-privileges:true") for o in opts),
        readonly_rootfs=bool(hc.get("ReadonlyRootfs")),
        runtime=str(hc.get("Runtime") or "runc"), labels=dict(config.get("Labels") or {}),
        created=str(attrs.get("Created") or ""), started_at=_time(state.get("StartedAt"))
        if state.get("Running") else None,
        pid=int(state.get("Pid") or 0) or None if state.get("Running") else None,
        restart_policy=str(restart.get("Name") or "no"), warnings=warnings)


# container id -> its listening sockets as ListenerTable.of() gives them
ListeningOf = Callable[[str], list[dict[str, Any]]]


def container_inventory(engine: EngineInventory, all_states: bool = False,
                        listening_of: ListeningOf | None = None, observed: str = "not observed"
                        ) -> list[ContainerRecord]:
    """`listening_of`: the observed listening sockets of a running container; `observed`
    says how (kernel programs, /proc fallback) for every record."""
    created: dict[str, str | None] = {}
    out = []
    for cid in engine.container_ids(all_states):
        attrs = engine.inspect_raw(cid)
        if attrs is None:
            continue  # removed since the listing
        image_id = str(attrs.get("Image") or "")
        if image_id not in created:
            image = engine.inspect_image_raw(image_id) if image_id else None
            created[image_id] = _time((image or {}).get("Created"))
        record = container_record(attrs, created[image_id])
        if listening_of is not None and record.state == "running":
            record = replace(record, listening=listening_of(record.id),
                             listening_observed=observed)
        out.append(record)
    out.sort(key=lambda r: (r.state != "running", r.name))
    return out


def image_inventory(engine: EngineInventory) -> list[ImageRecord]:
    users: dict[str, int] = {}
    for cid in engine.container_ids(True):
        attrs = engine.inspect_raw(cid)
        if attrs is not None:
            users[str(attrs.get("Image"))] = users.get(str(attrs.get("Image")), 0) + 1
    out = []
    for summary in engine.images_raw():
        image_id = str(summary.get("Id") or "")
        doc = engine.inspect_image_raw(image_id) or {}
        config = doc.get("Config") or {}
        out.append(ImageRecord(
            id=image_id, tags=[t for t in summary.get("RepoTags") or [] if t != "<none>:<none>"],
            digests=list(summary.get("RepoDigests") or []),
            created=_time(summary.get("Created")) or "", size=int(summary.get("Size") or 0),
            containers=users.get(image_id, 0), user=str(config.get("User") or ""),
            entrypoint=[str(x) for x in config.get("Entrypoint") or []],
            cmd=[str(x) for x in config.get("Cmd") or []]))
    out.sort(key=lambda r: (r.tags[0] if r.tags else "~", r.id))
    return out
