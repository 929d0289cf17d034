"""The cgroup v2 hierarchy: where it is mounted, and cgroup id -> path.

`bpf_get_current_cgroup_id()` is the kernfs id of the task's cgroup v2 directory, which is the
directory's inode number (st_ino, and d_ino in readdir). `CgroupIndex` maps those ids back to
paths relative to the cgroup2 root ("/docker/<id>", "/system.slice/docker-<id>.scope", ...), the
form /proc/<pid>/cgroup uses, so `paths.parse_cgroup_path` can turn them into containers.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from roxd.errors import CgroupError

log = logging.getLogger(__name__)

MOUNTINFO = "/proc/self/mountinfo"
# Preferred mount points, in order: a pure v2 host, then a hybrid (v1 controllers + unified).
_PREFERRED = ("/sys/fs/cgroup", "/sys/fs/cgroup/unified")


@dataclass(frozen=True, slots=True)
class Cgroup2Mount:
    mount_point: str  # where the hierarchy is mounted, e.g. /sys/fs/cgroup/unified
    root: str  # the hierarchy path mounted there, "/" unless inside a cgroup namespace


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo octal."""
    if "\\" not in field:
        return field
    out: list[str] = []
    i = 0
    while i < len(field):
        chunk = field[i : i + 4]
        if len(chunk) == 4 and chunk[0] == "\\" and chunk[1:].isdigit():
            out.append(chr(int(chunk[1:], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(lines: Iterable[str]) -> list[Cgroup2Mount]:
    """Every cgroup2 mount listed in mountinfo text, in the order given."""
    mounts: list[Cgroup2Mount] = []
    for line in lines:
        fields = line.split()
        try:
            sep = fields.index("-")
        except ValueError:
            continue
        if sep < 5 or len(fields) < sep + 2:
            continue
        if fields[sep + 1] != "cgroup2":
            continue
        mounts.append(Cgroup2Mount(mount_point=_unescape(fields[4]), root=_unescape(fields[3])))
    return mounts


def choose_cgroup2_mount(lines: Iterable[str], source: str = MOUNTINFO) -> Cgroup2Mount:
    """The cgroup2 mount to use; CgroupError when the host has none."""
    mounts = parse_mountinfo(lines)
    if not mounts:
        raise CgroupError(
            f"no cgroup2 filesystem is mounted (looked in {source}); roxd needs the cgroup v2 "
            "hierarchy (/sys/fs/cgroup on v2 hosts, /sys/fs/cgroup/unified on hybrid hosts) to "
            "attribute events to containers: mount it with "
            "'mount -t cgroup2 none /sys/fs/cgroup/unified' or boot with "
            "systemd.unified_cgroup_hierarchy=1"
        )
    by_point = {m.mount_point: m for m in mounts}
    for preferred in _PREFERRED:
        if preferred in by_point:
            return by_point[preferred]
    return mounts[0]


def find_cgroup2_mount(mountinfo: str = MOUNTINFO) -> Cgroup2Mount:
    try:
        with open(mountinfo, encoding="utf-8", errors="replace") as f:
            return choose_cgroup2_mount(f, source=mountinfo)
    except OSError as exc:
        raise CgroupError(f"cannot read {mountinfo}: {exc.strerror or exc}") from None


def read_proc_cgroup_path(pid: int, proc: str = "/proc") -> str | None:
    """The cgroup v2 path of a process (its `0::` line in /proc/<pid>/cgroup), None if gone."""
    try:
        with open(f"{proc}/{pid}/cgroup", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("0::"):
                    path = line[3:].rstrip("\n")
                    # " (deleted)" marks a cgroup removed while the process still sat in it.
                    return path.removesuffix(" (deleted)") or "/"
    except OSError:
        return None
    return None


class CgroupIndex:
    """cgroup id (directory inode) -> path relative to the cgroup2 root.

    Built by walking the hierarchy; an unknown id triggers a new walk, but at most one every
    `min_refresh_interval` seconds, so a flood of unknown ids cannot keep the daemon walking.
    Container paths that are known by name (from the runtime, or from /proc/<pid>/cgroup) are
    added with a single stat through `lookup_path` / `lookup_pid`, with no walk at all.
    Thread-safe.
    """

    def __init__(
        self,
        root: str,
        *,
        max_depth: int = 16,
        max_entries: int = 200_000,
        min_refresh_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        proc: str = "/proc",
    ) -> None:
        self.root = root.rstrip("/") or "/"
        self.max_depth = max_depth
        self.max_entries = max_entries
        self.min_refresh_interval = min_refresh_interval
        self._clock = clock
        self._proc = proc
        self._lock = threading.Lock()
        self._paths: dict[int, str] = {}
        self._last_walk: float | None = None
        self.walks = 0  # how many full walks were made (for stats and tests)

    @classmethod
    def from_host(cls, mountinfo: str = MOUNTINFO, **kwargs: object) -> CgroupIndex:
        mount = find_cgroup2_mount(mountinfo)
        log.info(
            "cgroup2 hierarchy at %s",
            mount.mount_point,
            extra={"cgroup2_mount": mount.mount_point, "cgroup2_root": mount.root},
        )
        return cls(mount.mount_point, **kwargs)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ lookups

    def path_of(self, cgroup_id: int) -> str | None:
        """The path of a cgroup id; walks again (rate-limited) when the id is unknown."""
        with self._lock:
            path = self._paths.get(cgroup_id)
        if path is not None:
            return path
        if self.refresh(force=False):
            with self._lock:
                return self._paths.get(cgroup_id)
        return None

    def known_path_of(self, cgroup_id: int) -> str | None:
        """The path of a cgroup id if already indexed; never walks."""
        with self._lock:
            return self._paths.get(cgroup_id)

    def lookup_path(self, path: str) -> int | None:
        """The id of a cgroup path (relative to the root), by one stat; None if it doesn't exist.

        The id is remembered, so a later `path_of` finds it without a walk.
        """
        rel = "/" + path.strip("/")
        try:
            st = os.stat(self._abs(rel))
        except OSError:
            return None
        with self._lock:
            self._remember(st.st_ino, rel)
        return st.st_ino

    def lookup_pid(self, pid: int, expected_id: int | None = None) -> int | None:
        """The cgroup id of a live process, from /proc/<pid>/cgroup and one stat.

        With `expected_id`, the answer only counts (and is only remembered) when it matches:
        the process may have moved, or the pid been reused, since the event was recorded.
        """
        rel = read_proc_cgroup_path(pid, self._proc)
        if rel is None:
            return None
        try:
            st = os.stat(self._abs(rel))
        except OSError:
            return None
        if expected_id is not None and st.st_ino != expected_id:
            return None
        with self._lock:
            self._remember(st.st_ino, "/" + rel.strip("/"))
        return st.st_ino

    def snapshot(self) -> list[tuple[int, str]]:
        """Every (cgroup id, path) indexed now."""
        with self._lock:
            return list(self._paths.items())

    def known_ids(self) -> list[int]:
        """Every cgroup id the index knows (from its walks and single lookups)."""
        with self._lock:
            return list(self._paths)

    def __len__(self) -> int:
        with self._lock:
            return len(self._paths)

    # ------------------------------------------------------------------ walking

    def refresh(self, force: bool = True) -> bool:
        """Walk the hierarchy again. Without `force`, only when the last walk is old enough.

        Returns True when a walk was made.
        """
        now = self._clock()
        with self._lock:
            if (
                not force
                and self._last_walk is not None
                and now - self._last_walk < self.min_refresh_interval
            ):
                return False
            self._last_walk = now
        paths = self._walk()
        with self._lock:
            self._paths = paths
            self.walks += 1
        log.debug("cgroup index: %d cgroups under %s", len(paths), self.root)
        return True

    def _walk(self) -> dict[int, str]:
        paths: dict[int, str] = {}
        try:
            paths[os.stat(self.root).st_ino] = "/"
        except OSError as exc:
            log.warning(
                "cannot stat the cgroup2 root %s: %s", self.root, exc.strerror or exc,
                extra={"cgroup2_mount": self.root},
            )
            return paths
        stack: list[tuple[str, str, int]] = [(self.root, "", 0)]
        truncated = False
        while stack:
            directory, rel, depth = stack.pop()
            try:
                with os.scandir(directory) as it:
                    for entry in it:
                        try:
                            if not entry.is_dir(follow_symlinks=False):
                                continue
                            ino = entry.inode()
                        except OSError:  # vanished between readdir and the check
                            continue
                        child_rel = f"{rel}/{entry.name}"
                        if len(paths) >= self.max_entries:
                            truncated = True
                            break
                        paths[ino] = child_rel
                        if depth + 1 < self.max_depth:
                            stack.append((entry.path, child_rel, depth + 1))
            except (FileNotFoundError, NotADirectoryError, PermissionError):
                continue  # removed mid-walk (a container that just stopped), or not ours
            except OSError as exc:
                log.debug("cgroup walk: skipping %s: %s", directory, exc)
                continue
            if truncated:
                break
        if truncated:
            log.warning(
                "cgroup index: more than %d cgroups under %s; the rest are not indexed",
                self.max_entries, self.root,
            )
        return paths

    def _abs(self, rel: str) -> str:
        rel = rel.strip("/")
        return f"{self.root}/{rel}" if rel else self.root

    def _remember(self, cgroup_id: int, rel: str) -> None:
        if len(self._paths) < self.max_entries or cgroup_id in self._paths:
            self._paths[cgroup_id] = rel
