"""Userspace kill by pidfd, for rules decided after the event reached Python.

A PID seen in an event may have been reused by the time roxd acts. pidfd_open pins whatever
process holds the PID now; roxd then checks that it is the process of the event (same comm,
same cgroup) before pidfd_send_signal, so a reused PID is never hit.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass


@dataclass(frozen=True)
class KillOutcome:
    killed: bool
    reason: str


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _cgroup_inode(pid: int, cgroup2_root: str) -> int | None:
    text = _read(f"/proc/{pid}/cgroup")
    if text is None:
        return None
    for line in text.splitlines():
        if line.startswith("0::"):
            try:
                return os.stat(cgroup2_root + line[3:].rstrip("\n")).st_ino
            except OSError:
                return None
    return None


def kill_pid(
    pid: int,
    *,
    expect_comm: str | None = None,
    expect_cgroup_id: int | None = None,
    cgroup2_root: str | None = None,
    sig: int = signal.SIGKILL,
) -> KillOutcome:
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return KillOutcome(False, f"pid {pid} already exited")
    except OSError as exc:
        return KillOutcome(False, f"pidfd_open({pid}): {exc.strerror}")
    try:
        if expect_comm is not None:
            comm = (_read(f"/proc/{pid}/comm") or "").rstrip("\n")
            if comm != expect_comm[:15]:
                return KillOutcome(False, f"pid {pid} is now {comm!r}, not {expect_comm!r}: "
                                          "reused, not killed")
        if expect_cgroup_id is not None and cgroup2_root is not None:
            cg = _cgroup_inode(pid, cgroup2_root)
            if cg is not None and cg != expect_cgroup_id:
                return KillOutcome(False, f"pid {pid} moved to another cgroup: reused, not killed")
        try:
            signal.pidfd_send_signal(pidfd, sig)
        except ProcessLookupError:
            return KillOutcome(False, f"pid {pid} exited before the signal")
        except OSError as exc:
            return KillOutcome(False, f"pidfd_send_signal: {exc.strerror}")
        return KillOutcome(True, f"signal {signal.Signals(sig).name} sent by pidfd")
    finally:
        os.close(pidfd)
