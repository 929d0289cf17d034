"""A container's processes and its network namespace, found from its cgroup: any runtime.

Enforcement must not need the runtime's API: a Kubernetes node runs containerd (or CRI-O) and
no dockerd, and a runtime may be down when roxd must act. The cgroup v2 hierarchy is the one
thing every runtime shares: the container's cgroup (`parse_cgroup_path` names it) lists its
processes in `cgroup.procs`, and each process's `/proc/<pid>/ns/net` is the container's network
namespace. `cgroup.kill` (Linux 5.14+) SIGKILLs every process of a cgroup and of its
sub-cgroups, in the kernel, with no race against forks.

A container's cgroup is the outermost directory that parses as that container: a container
running systemd (or a runtime's `init.scope`) has sub-cgroups, and processes in cgroup v2 live
only in leaves, so processes are read from the whole subtree.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from roxd.containers.cgroups import CgroupError, find_cgroup2_mount
from roxd.containers.paths import parse_cgroup_path
from roxd.enforce.kill import start_ticks
from roxd.enforce.protect import ProtectedProcesses

log = logging.getLogger(__name__)

MAX_DEPTH = 12  # kubepods.slice/kubepods-burstable.slice/...-pod.slice/cri-containerd.scope/..


class CgroupKillError(Exception):
    """cgroup.kill could not be used; the message says why (the caller may fall back)."""


@dataclass(frozen=True)
class CgroupKill:
    """What cgroup.kill did: how many processes it signalled, whether the cgroup emptied."""

    path: str
    processes: int
    emptied: bool


@dataclass
class ContainerCgroups:
    """Container id -> cgroup directory, processes, network namespace; cgroup.kill.

    `root`: the cgroup2 mount point (``/sys/fs/cgroup``, or ``/sys/fs/cgroup/unified`` on a
    hybrid host). The hierarchy is walked on demand (a quarantine, a kill, a reconcile: rare)
    and stops descending at each container's cgroup; found paths are cached and re-checked.
    """

    root: str
    proc: str = "/proc"
    _paths: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_host(cls) -> ContainerCgroups | None:
        """The host's cgroup2 hierarchy; None (logged) when there is none."""
        try:
            return cls(find_cgroup2_mount().mount_point)
        except CgroupError as exc:
            log.warning("no cgroup2 hierarchy (%s): container processes are found only "
                        "through the runtime's API", exc)
            return None

    # ------------------------------------------------------------------ lookups

    def containers(self) -> dict[str, str]:
        """Every container cgroup in the hierarchy: container id -> absolute directory."""
        found: dict[str, str] = {}
        root = self.root.rstrip("/")
        stack: list[tuple[str, int]] = [(root, 0)]
        while stack:
            path, depth = stack.pop()
            try:
                entries = list(os.scandir(path))
            except OSError:
                continue  # removed while walking
            for entry in entries:
                if not entry.is_dir(follow_symlinks=False):
                    continue
                ref = parse_cgroup_path(entry.path[len(root):])
                if ref is not None:
                    found.setdefault(ref.container_id, entry.path)  # outermost wins
                elif depth < MAX_DEPTH:
                    stack.append((entry.path, depth + 1))
        self._paths = dict(found)
        return found

    def path_of(self, container_id: str) -> str | None:
        """The container's cgroup directory (absolute), None when it has none now."""
        cached = self._paths.get(container_id)
        if cached is not None and os.path.isdir(cached):
            return cached
        return self.containers().get(container_id)

    def exists(self, container_id: str) -> bool:
        return self.path_of(container_id) is not None

    def pids(self, container_id: str) -> list[int]:
        path = self.path_of(container_id)
        return list(_subtree_pids(path)) if path is not None else []

    def init_pid(self, container_id: str) -> int | None:
        """The container's first process (earliest start): its init, whose network namespace
        is the container's. A process that later entered a namespace of its own
        (unshare) is not the container's namespace holder."""
        best: tuple[int, int] | None = None
        for pid in self.pids(container_id):
            ticks = start_ticks(pid)
            if ticks is not None and (best is None or (ticks, pid) < best):
                best = (ticks, pid)
        return best[1] if best is not None else None

    def netns_of(self, container_id: str) -> int | None:
        """Inode of the container's network namespace (its init's), None when not running."""
        pid = self.init_pid(container_id)
        if pid is None:
            return None
        try:
            return os.stat(f"{self.proc}/{pid}/ns/net").st_ino
        except OSError:
            return None

    def sharing_netns(self, inode: int) -> list[str]:
        """Ids of every running container whose network namespace is `inode` (a pod's
        containers and its sandbox, docker --network container:X)."""
        out = []
        for cid in sorted(self.containers()):
            if self.netns_of(cid) == inode:
                out.append(cid)
        return out

    def escaped_netns(self, container_id: str, inode: int) -> list[int]:
        """Processes of the container in another network namespace than `inode`: a process
        that made a namespace of its own is outside the container's quarantine."""
        out = []
        for pid in self.pids(container_id):
            try:
                if os.stat(f"{self.proc}/{pid}/ns/net").st_ino != inode:
                    out.append(pid)
            except OSError:
                continue
        return out

    # ------------------------------------------------------------------ kill

    def kill(self, container_id: str, protect: ProtectedProcesses,
             wait_s: float = 2.0) -> CgroupKill:
        """SIGKILL every process of the container through cgroup.kill. Refused (CgroupKillError)
        when the kernel has no cgroup.kill, the container has no cgroup, or a protected
        process (roxd itself, an ancestor of roxd, pid 1) sits in it: roxd deployed as a
        container must never kill its own container."""
        path = self.path_of(container_id)
        if path is None:
            raise CgroupKillError(f"no cgroup for container {container_id[:12]} (not running)")
        kill_file = os.path.join(path, "cgroup.kill")
        if not os.path.exists(kill_file):
            raise CgroupKillError("cgroup.kill is not available (Linux 5.14+, cgroup v2)")
        pids = list(_subtree_pids(path))
        for pid in pids:
            why = protect.reason(pid, container=True)
            if why is not None:
                raise CgroupKillError(f"protected process {pid} ({why}) in the container's "
                                      "cgroup: not killed")
        try:
            with open(kill_file, "w") as f:
                f.write("1")
        except OSError as exc:
            raise CgroupKillError(f"writing {kill_file}: {exc.strerror or exc}") from None
        deadline = time.monotonic() + wait_s
        while True:
            emptied = not _populated(path)
            if emptied or time.monotonic() >= deadline:
                return CgroupKill(path, len(pids), emptied)
            time.sleep(0.02)


def _subtree_pids(path: str) -> Iterator[int]:
    for dirpath, _dirs, files in os.walk(path):
        if "cgroup.procs" not in files:
            continue
        try:
            with open(os.path.join(dirpath, "cgroup.procs")) as f:
                for line in f:
                    if line.strip():
                        yield int(line)
        except (OSError, ValueError):
            continue  # removed while reading


def _populated(path: str) -> bool:
    """cgroup.events' `populated`: any live process in the cgroup or below."""
    try:
        with open(os.path.join(path, "cgroup.events")) as f:
            for line in f:
                key, _, value = line.partition(" ")
                if key == "populated":
                    return value.strip() == "1"
    except OSError:
        return False  # the cgroup is gone: nothing left in it
    return any(True for _ in _subtree_pids(path))
