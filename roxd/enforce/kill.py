"""Userspace kill by pidfd, for rules decided after the event reached Python.

A PID seen in an event may have been reused by the time roxd acts. pidfd_open pins whatever
process holds the PID now; roxd then checks that it is the process of the event before
pidfd_send_signal, so a reused PID is never hit. Identity is the process's start time
(/proc/<pid>/stat field 22, clock ticks since boot), never its name: a process may rename
itself at any moment (prctl PR_SET_NAME, /proc/self/comm), a reused PID may bear the same name.

- `started_by_ns`: the wall-clock time of the event. The process of the event existed then, so
  it started no later; a process that holds the PID now but started after the event is
  another one (the PID was reused). Sound because a PID has one holder at a time.
- `expect_start_ticks`: the exact start time, when roxd read it earlier (a process-tree kill
  reads each descendant's before stopping it).
- `expect_cgroup_id`: the cgroup of the event (a reused PID in another cgroup).
- `protect`: processes never to signal (roxd.enforce.protect), checked after identity.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from roxd.enforce.protect import ProtectedProcesses

_TICK_NS = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
# The event's wall-clock time comes from CLOCK_MONOTONIC plus an offset the sensor re-samples;
# converting it to time since boot may be off by this much. A PID reused this soon after the
# event would pass for the process of the event: a whole PID space cannot wrap in 2 ms.
CLOCK_SLACK_NS = 2_000_000


@dataclass(frozen=True)
class KillOutcome:
    killed: bool
    reason: str


def _read(path: str) -> str | None:
    """A /proc file as text. surrogateescape: a process puts any bytes it likes in its comm
    (inside /proc/<pid>/stat too); a strict read raised on them and lost the kill."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            return f.read()
    except OSError:
        return None


def start_ticks(pid: int) -> int | None:
    """/proc/<pid>/stat field 22: when the process started, in clock ticks since boot."""
    stat = _read(f"/proc/{pid}/stat")
    if stat is None:
        return None
    try:
        return int(stat.rpartition(")")[2].split()[19])  # fields after "(comm)" start at 3
    except (IndexError, ValueError):
        return None


def boot_relative_ns(wall_ns: int) -> int:
    """A wall-clock time as nanoseconds since boot (CLOCK_BOOTTIME, /proc's start times)."""
    return wall_ns - (time.time_ns() - time.clock_gettime_ns(time.CLOCK_BOOTTIME))


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
    started_by_ns: int | None = None,
    expect_start_ticks: int | None = None,
    expect_cgroup_id: int | None = None,
    cgroup2_root: str | None = None,
    sig: int = signal.SIGKILL,
    protect: ProtectedProcesses | None = None,
    container: bool | None = None,
) -> KillOutcome:
    """`container`: whether the process runs in a container, for `protect` (None: read)."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return KillOutcome(False, f"pid {pid} already exited")
    except OSError as exc:
        return KillOutcome(False, f"pidfd_open({pid}): {exc.strerror}")
    try:
        if started_by_ns is not None or expect_start_ticks is not None:
            ticks = start_ticks(pid)  # read after the pidfd pinned the process
            if ticks is None:
                return KillOutcome(False, f"pid {pid} already exited")
            if expect_start_ticks is not None and ticks != expect_start_ticks:
                return KillOutcome(False, f"pid {pid} is another process now (started at "
                                          f"tick {ticks}, not {expect_start_ticks}): reused, "
                                          "not killed")
            if (started_by_ns is not None
                    and ticks * _TICK_NS > boot_relative_ns(started_by_ns) + CLOCK_SLACK_NS):
                return KillOutcome(False, f"pid {pid} is another process now (it started after "
                                          "the event): reused, not killed")
        if expect_cgroup_id is not None and cgroup2_root is not None:
            cg = _cgroup_inode(pid, cgroup2_root)
            if cg is not None and cg != expect_cgroup_id:
                return KillOutcome(False, f"pid {pid} moved to another cgroup: reused, not killed")
        if protect is not None:
            why = protect.reason(pid, container=container)
            if why is not None:
                return KillOutcome(False, f"protected process {pid} ({why}): not killed")
        try:
            signal.pidfd_send_signal(pidfd, sig)
        except ProcessLookupError:
            return KillOutcome(False, f"pid {pid} exited before the signal")
        except OSError as exc:
            return KillOutcome(False, f"pidfd_send_signal: {exc.strerror}")
        return KillOutcome(True, f"signal {signal.Signals(sig).name} sent by pidfd")
    finally:
        os.close(pidfd)
