"""Processes roxd never kills, and whether it kills on the host at all.

A rule that matches an operator's `grep -r cryptonight /var/log`, or a bug in a rule, must not
turn roxd against the host it guards. Every userspace kill (process, process-tree, the API's
kill) asks `ProtectedProcesses.reason(pid)` after the pidfd is open and before any signal:

- by pid, everywhere: pid 1 (the host's init), roxd itself and each of its ancestors;
- by name, host processes only: the container runtime daemons (dockerd, containerd,
  containerd-shim*, runc, crio, conmon, podman), sshd, systemd*, plus the operator's
  `[enforce] protected_comms` (shell patterns on /proc/<pid>/comm) and `protected_exes`
  (shell patterns on the /proc/<pid>/exe link).

Names protect host processes only: in a container a process may call itself anything, and a
miner named "sshd" must still die. On the host a name is weak too (any user may rename a
process): the strong protection on the host is `KillGuard.host_kills`, off by default, which
keeps every rule's kill (in the kernel and in userspace) to containers.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from roxd.containers.paths import parse_cgroup_path

BUILTIN_PROTECTED_COMMS = ("dockerd", "containerd", "containerd-shim*", "runc", "crio",
                           "conmon", "podman", "sshd", "sshd-session", "systemd*")


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def _ppid(pid: int, proc: str) -> int | None:
    stat = _read(f"{proc}/{pid}/stat")
    if stat is None:
        return None
    try:
        return int(stat.rpartition(")")[2].split()[1])
    except (IndexError, ValueError):
        return None


def in_container(pid: int, proc: str = "/proc") -> bool | None:
    """Whether the process's cgroup is a container's (None: it is gone)."""
    text = _read(f"{proc}/{pid}/cgroup")
    if text is None:
        return None
    for line in text.splitlines():
        if line.startswith("0::"):
            return parse_cgroup_path(line[3:]) is not None
    return False


@dataclass(frozen=True)
class ProtectedProcesses:
    comms: tuple[str, ...] = BUILTIN_PROTECTED_COMMS
    exes: tuple[str, ...] = ()
    proc: str = "/proc"

    @classmethod
    def with_extra(cls, comms: Iterable[str] = (), exes: Iterable[str] = ()) -> ProtectedProcesses:
        """The built-in list plus the operator's ([enforce] protected_comms / protected_exes)."""
        return cls(comms=(*BUILTIN_PROTECTED_COMMS, *comms), exes=tuple(exes))

    def ancestors_of_roxd(self) -> list[int]:
        found, pid = [], os.getpid()
        for _ in range(64):
            parent = _ppid(pid, self.proc)
            if not parent or parent in found:
                break
            found.append(parent)
            pid = parent
        return found

    def reason(self, pid: int, *, container: bool | None = None) -> str | None:
        """Why `pid` must not be killed, or None. `container`: whether it runs in a
        container (None: read from its cgroup)."""
        if pid == 1:
            return "pid 1, the host's init"
        if pid == os.getpid():
            return "roxd itself"
        if pid in self.ancestors_of_roxd():
            return "an ancestor of roxd"
        if container is None:
            container = bool(in_container(pid, self.proc))
        if container:
            return None
        comm = (_read(f"{self.proc}/{pid}/comm") or "").rstrip("\n")
        for pattern in self.comms:
            if comm and fnmatch.fnmatchcase(comm, pattern):
                return f"host process {comm!r}: comm matches protected {pattern!r}"
        if self.exes:
            try:
                exe = os.readlink(f"{self.proc}/{pid}/exe").removesuffix(" (deleted)")
            except OSError:
                exe = ""
            for pattern in self.exes:
                if exe and fnmatch.fnmatchcase(exe, pattern):
                    return f"host process {exe}: exe matches protected {pattern!r}"
        return None


@dataclass(frozen=True)
class KillGuard:
    """What rule-driven kills may hit. host_kills: kill host processes too (opt-in,
    [enforce] host_kills); off, a rule's kill applies in containers only."""

    host_kills: bool = False
    protected: ProtectedProcesses = field(default_factory=ProtectedProcesses)


HOST_KILLS_OFF = "host process: host kills off ([enforce] host_kills = false), alerted only"
