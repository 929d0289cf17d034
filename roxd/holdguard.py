"""Held execs never stay stopped when roxd dies: a guardian process continues them.

With the exec hold on, the eBPF program stops (SIGSTOP) the first exec of a cgroup roxd has
not classified yet, before its first instruction; roxd reads the record, decides, and
continues or kills it. The hold is a lease roxd renews every second (roxd/policy/kernel.py),
so a dead roxd stops holding *new* execs within HOLD_LEASE_S. But the execs held before it
died, and those held during the last lease, have nobody left to continue them: a container's
entrypoint would stay in state T for good.

`HoldGuard` starts `python -m roxd.holdguard --watch PID` next to roxd. The guardian waits
for roxd to end (a pidfd: SIGKILL, a crash, a clean exit alike; or SIGTERM from systemd
stopping the unit's cgroup), waits out the lease when roxd did not say it stopped cleanly,
then continues every process stopped on its way out of execve: `release_exec_stops()`. roxd
also calls it at start, before the sensor loads, for whatever a guardian could not release
(it was SIGKILLed too).

Which processes: state T whose /proc/<pid>/syscall shows it is still inside execve (x86-64
syscall 59, or execveat 322) - stopped before its first user instruction, which only the
hold does. A shell job stopped with Ctrl-Z is stopped in a read or in user mode, a traced
process is in state t: neither is touched.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)

EXEC_SYSCALLS = {"59", "322"}  # x86-64 execve, execveat
HOLD_LEASE_S = 5.0  # roxd/policy/kernel.py KernelPolicy.HOLD_LEASE_S
CLEAN_EXIT = b"clean\n"


def stopped_in_exec(pid: int, proc: str = "/proc") -> bool:
    """Stopped (T) and still inside execve: held before its first instruction."""
    try:
        stat = Path(f"{proc}/{pid}/stat").read_text()
        state = stat[stat.rindex(")") + 2:].split(" ", 1)[0]
        if state != "T":
            return False
        syscall = Path(f"{proc}/{pid}/syscall").read_text().split(" ", 1)[0]
    except (OSError, ValueError, IndexError):
        return False
    return syscall.strip() in EXEC_SYSCALLS


def release_exec_stops(proc: str = "/proc") -> list[int]:
    """SIGCONT every process stopped inside execve; the pids continued."""
    released = []
    for entry in os.scandir(proc):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if stopped_in_exec(pid, proc):
            try:
                os.kill(pid, signal.SIGCONT)
            except OSError:
                continue
            released.append(pid)
    if released:
        log.warning("continued %d processes left stopped at exec by a previous hold: %s",
                    len(released), ", ".join(map(str, released[:20])))
    return released


class HoldGuard:
    """roxd's side: start the guardian, tell it about a clean stop."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "roxd.holdguard", "--watch", str(os.getpid())],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=None,
                close_fds=True, start_new_session=True)  # its own session: no terminal signals
        except OSError as exc:
            log.warning("held-exec guardian not started (%s): execs held when roxd dies "
                        "are continued at its next start only", exc)

    def close(self, timeout: float = 5.0) -> None:
        """roxd stops cleanly, its programs detached: release now, no lease to wait out."""
        proc = self._proc
        if proc is None:
            return
        self._proc = None
        with contextlib.suppress(OSError):
            assert proc.stdin is not None
            proc.stdin.write(CLEAN_EXIT)
            proc.stdin.close()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _guard(watch: int) -> int:
    """The guardian: wait for roxd to end, then release what the hold left stopped."""
    terminated = False

    def on_term(_signum: int, _frame: object) -> None:
        nonlocal terminated
        terminated = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        pidfd = os.pidfd_open(watch)
    except OSError:
        pidfd = None  # already gone
    clean = False
    stdin = sys.stdin.buffer
    poller = select.poll()
    if pidfd is not None:
        poller.register(pidfd, select.POLLIN)
    poller.register(stdin.fileno(), select.POLLIN | select.POLLHUP)
    while pidfd is not None and not terminated:
        events = dict(poller.poll(500))
        if pidfd in events:
            break
        if stdin.fileno() in events:
            line = stdin.readline()
            if line == CLEAN_EXIT:
                clean = True
                break
            if not line:  # roxd's end of the pipe closed: it is ending
                poller.unregister(stdin.fileno())
    if not clean:
        # a dead or dying roxd: the kernel may still hold new execs until the lease ends
        time.sleep(HOLD_LEASE_S + 0.5)
    release_exec_stops()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="roxd.holdguard", description=__doc__.split("\n")[0])
    parser.add_argument("--watch", type=int, required=True, help="roxd's pid")
    parser.add_argument("--now", action="store_true", help="release now and exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="roxd-holdguard: %(message)s")
    if args.now:
        release_exec_stops()
        return 0
    return _guard(args.watch)


if __name__ == "__main__":
    sys.exit(main())
