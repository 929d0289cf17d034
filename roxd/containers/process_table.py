"""pid -> what the process runs, fed by exec/exit events and /proc; gives each event its ancestry.

Bounded: least recently used entries go first past `capacity`. An exited process stays for
`exit_grace` seconds, so a late event of a process that just exited still resolves. An exec for
a pid replaces its entry (PID reuse, or a process exec'ing again). A process never seen in an
exec event (started before roxd, or its exec folded in the kernel) is read from /proc/<pid>;
a forked child that has not exec'd reads there as its parent's exe, as it should.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from roxd.model import Ancestor, ExecEvent, ExitEvent
from roxd.text import from_bytes

log = logging.getLogger(__name__)

MAX_ANCESTORS = 8
_ARG_CUT_LEN = 255  # bpf/common.h ARG_CHUNK - 1: an argument this long was cut in the kernel
_CMDLINE_LIMIT = 4096  # bytes of /proc/<pid>/cmdline read for a process seen only in /proc
# /proc start times count clock ticks (10 ms at USER_HZ 100): closer than this is "the same"
_START_SLACK_NS = 10_000_000


@dataclass(slots=True, eq=False)
class ProcessInfo:
    """One table entry. Not frozen: the table marks an entry exited in place (under its lock;
    a copy per exit cost µs), and `exited_at` is the only field that ever changes, so what
    any holder reads of the process itself stays as it was. Compared by identity."""

    pid: int
    ppid: int  # 0 = unknown
    exe: str
    args: tuple[str, ...]
    uid: int  # -1 = unknown
    cgroup_id: int  # 0 = unknown
    comm: str = ""
    start_time_ns: int | None = None  # fork time (wall clock), from /proc; None if unknown
    exec_time_ns: int | None = None  # from the exec event; None when read from /proc
    args_truncated: bool = False
    exited_at: float | None = None  # monotonic time of the exit event
    # this entry as its children's ancestor, built once (pid, exe and args never change)
    _ancestor: Ancestor | None = field(default=None, init=False, repr=False)

    def as_ancestor(self) -> Ancestor:
        ancestor = self._ancestor
        if ancestor is None:
            ancestor = self._ancestor = Ancestor(self.pid, self.exe, self.args)
        return ancestor


class ProcReader:
    """Reads what roxd needs from /proc/<pid>. Every method returns None once the pid is gone."""

    def __init__(self, proc: str = "/proc") -> None:
        self.proc = proc
        self._ticks = os.sysconf("SC_CLK_TCK")
        self._btime_ns = self._boot_time_ns()

    def _boot_time_ns(self) -> int:
        try:
            with open(f"{self.proc}/stat", encoding="ascii", errors="replace") as f:
                for line in f:
                    if line.startswith("btime "):
                        return int(line.split()[1]) * 1_000_000_000
        except (OSError, ValueError):
            pass
        return int((time.time() - time.monotonic()) * 1e9)

    def exe(self, pid: int) -> str | None:
        try:
            # bytes: a name with a non-UTF-8 byte is text with \xNN, not a surrogate
            return from_bytes(os.readlink(os.fsencode(f"{self.proc}/{pid}/exe")))
        except OSError:  # gone, a kernel thread, or a zombie
            return None

    def stat(self, pid: int) -> tuple[str, int, int] | None:
        """(comm, ppid, start time in wall-clock ns) from /proc/<pid>/stat."""
        try:
            with open(f"{self.proc}/{pid}/stat", "rb") as f:
                data = f.read()
        except OSError:
            return None
        try:
            lpar, rpar = data.index(b"("), data.rindex(b")")
            comm = from_bytes(data[lpar + 1 : rpar])
            fields = data[rpar + 2 :].split()
            ppid = int(fields[1])
            start = self._btime_ns + int(fields[19]) * 1_000_000_000 // self._ticks
        except (ValueError, IndexError):
            return None
        return comm, ppid, start

    def cmdline(self, pid: int) -> tuple[tuple[str, ...], bool] | None:
        try:
            with open(f"{self.proc}/{pid}/cmdline", "rb") as f:
                data = f.read(_CMDLINE_LIMIT + 1)
        except OSError:
            return None
        truncated = len(data) > _CMDLINE_LIMIT
        data = data[:_CMDLINE_LIMIT]
        parts = data.split(b"\0")
        if parts and parts[-1] == b"":
            parts.pop()
        return tuple(from_bytes(p) for p in parts), truncated

    def vpid(self, pid: int) -> int | None:
        """The pid as the process's own pid namespace numbers it (last NSpid field)."""
        try:
            with open(f"{self.proc}/{pid}/status", "rb") as f:
                data = f.read()
            start = data.index(b"\nNSpid:") + 7
            return int(data[start : data.index(b"\n", start)].split()[-1])
        except (OSError, ValueError, IndexError):
            return None

    def uid(self, pid: int) -> int | None:
        try:
            with open(f"{self.proc}/{pid}/status", encoding="utf-8", errors="replace") as f:
                for line in f:
                    if line.startswith("Uid:"):
                        return int(line.split()[1])
        except (OSError, ValueError, IndexError):
            return None
        return None


class ProcessTable:
    def __init__(
        self,
        *,
        capacity: int = 32768,
        exit_grace: float = 10.0,
        proc: str = "/proc",
        cgroup_id_of_pid: Callable[[int], int | None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity = capacity
        self.exit_grace = exit_grace
        self._proc = ProcReader(proc)
        self._cgroup_id_of_pid = cgroup_id_of_pid
        self._clock = clock
        self._lock = threading.RLock()
        self._table: OrderedDict[int, ProcessInfo] = OrderedDict()
        self._exited: deque[tuple[float, int]] = deque()

    def __len__(self) -> int:
        with self._lock:
            return len(self._table)

    # ------------------------------------------------------------------ feeding

    def _inherited_exe(self, event: ExecEvent, fallback: str) -> str:
        """/proc/self/exe re-exec of a process gone before we looked: its image was the one
        it inherited at fork, its parent's. The parent's own kernel link first (busybox sh
        started as /bin/sh runs the image /bin/busybox: the applet's name comes from argv[0]
        only with the image's), then the path the parent was started by."""
        if event.filename == "/proc/self/exe" and event.ppid:
            parent = self._table.get(event.ppid)
            if parent is not None and parent.exe:
                # the parent's image now is the one it forked with unless it exec'd since:
                # an exec of the parent after this one would be a later event
                # (and an exited parent's pid may already be someone else's)
                unchanged = parent.exited_at is None and (
                    parent.exec_time_ns is None or parent.exec_time_ns <= event.time_ns)
                live = self._proc.exe(event.ppid) if unchanged else None
                return live or parent.exe
        return fallback

    def on_exec(self, event: ExecEvent) -> ProcessInfo:
        """Record an exec: a new image for event.pid, replacing whatever the pid ran before."""
        exe = event.filename
        if not exe.startswith("/") or exe.startswith(("/proc/", "/dev/fd/")):  # _is_indirect
            # /proc/self/exe (busybox re-exec'ing an applet), /proc/<pid>/fd/N or /dev/fd/N
            # (fd-based exec, e.g. of a memfd) name no file of their own: the kernel's link
            # from /proc/<pid>/exe does.
            # Relative to the process's cwd; /proc/<pid>/exe has the resolved path as seen in
            # the process's own mount namespace (inside its container).
            exe = self._proc.exe(event.pid) or self._inherited_exe(event, exe)
        ppid = event.ppid
        start = None
        if not ppid:
            # the kernel did not see this process's fork (it predates roxd): ask /proc. When
            # the kernel knows the parent, skip the read: it was a fifth of the per-event cost.
            stat = self._proc.stat(event.pid)
            if stat is not None:
                _, ppid, start = stat
        args, truncated = tuple(event.args), event.args_truncated
        if not args or event.args_unreadable:
            # argv not captured in the kernel (exec began before roxd attached, or the
            # sys_enter_execve probe missed it): /proc still has it while the process lives
            from_proc = self._proc.cmdline(event.pid)
            if from_proc is not None:
                args, truncated = from_proc
        elif truncated and any(len(a) >= _ARG_CUT_LEN for a in args):
            # the kernel keeps 255 bytes of each argument: a `sh -c` script padded past that
            # hid its end from every command-line rule. /proc has the rest while the process
            # lives; it is taken only when it extends what the kernel saw at exec (a process
            # may rewrite its argv later, and that must not replace the truth). Only for an
            # argument cut short: argv past 32 arguments or 2048 bytes stays bounded
            from_proc = self._proc.cmdline(event.pid)
            if from_proc is not None and _extends(args, from_proc[0]):
                args, truncated = from_proc
        # positional, in the field order (keyword arguments cost about 0.5 µs more per exec)
        info = ProcessInfo(event.pid, ppid, exe, args, event.uid, event.cgroup_id, event.comm,
                           start, event.time_ns, truncated)
        with self._lock:
            self._put(info)
            self._prune()
        return info

    def on_exit(self, event: ExitEvent) -> ProcessInfo | None:
        """Mark a process exited; it stays `exit_grace` seconds for late events. Returns its
        entry, now marked (None: not in the table)."""
        now = self._clock()
        with self._lock:
            info = self._table.get(event.pid)
            if info is None:
                return None
            if info.exited_at is not None and now - info.exited_at > self.exit_grace:
                del self._table[event.pid]  # an old exit's entry (as get() would drop it)
                return None
            info.exited_at = now  # in place (see ProcessInfo)
            self._exited.append((now, event.pid))
            self._prune()
        return info

    # ------------------------------------------------------------------ reading

    @property
    def proc_root(self) -> str:
        return self._proc.proc

    def vpid(self, pid: int) -> int | None:
        """pid inside the process's pid namespace (1: a container's init), from /proc."""
        return self._proc.vpid(pid)

    def get(self, pid: int) -> ProcessInfo | None:
        """What pid runs: from the table, else from /proc (and then remembered)."""
        if pid <= 0:
            return None
        with self._lock:
            info = self._table.get(pid)
            if info is not None:
                if info.exited_at is not None and self._clock() - info.exited_at > self.exit_grace:
                    del self._table[pid]
                else:
                    self._table.move_to_end(pid)
                    return info
        info = self.read_proc(pid)
        if info is not None:
            with self._lock:
                current = self._table.get(pid)
                if current is not None:  # an exec event arrived meanwhile; it knows better
                    return current
                self._put(info)
        return info

    def read_proc(self, pid: int) -> ProcessInfo | None:
        """A ProcessInfo from /proc/<pid> alone (not remembered); None if the pid is gone."""
        stat = self._proc.stat(pid)
        if stat is None:
            return None
        comm, ppid, start = stat
        cmd = self._proc.cmdline(pid)
        args, truncated = cmd if cmd is not None else ((), False)
        # A kernel thread has no exe; a zombie neither: report what is known, exe "".
        exe = self._proc.exe(pid) or ""
        uid = self._proc.uid(pid)
        cgroup_id = self._cgroup_id_of_pid(pid) if self._cgroup_id_of_pid else None
        return ProcessInfo(
            pid=pid,
            ppid=ppid,
            exe=exe,
            args=args,
            uid=uid if uid is not None else -1,
            cgroup_id=cgroup_id or 0,
            comm=comm,
            start_time_ns=start,
            args_truncated=truncated,
        )

    def ancestry(self, pid: int, limit: int = MAX_ANCESTORS) -> tuple[Ancestor, ...]:
        """Up to `limit` ancestors of pid, nearest (the parent) first."""
        child = self.get(pid)
        if child is None:
            return ()
        return self.ancestry_of(child, limit)

    def ancestry_of(self, child: ProcessInfo, limit: int = MAX_ANCESTORS) -> tuple[Ancestor, ...]:
        out: list[Ancestor] = []
        seen = {child.pid}
        while len(out) < limit and child.ppid > 0 and child.ppid not in seen:
            parent = self.get(child.ppid)
            if parent is None:
                # The parent we knew has died and the child was re-parented (a container's
                # init outlives the runc that forked it; the shim adopts it). Without this
                # every event of the container re-read /proc for the dead pid, twice.
                child = self._reparented(child)
                if child is None or child.ppid in seen:
                    break
                parent = self.get(child.ppid)
                if parent is None:
                    break
            if (
                parent.start_time_ns is not None
                and child.start_time_ns is not None
                and parent.start_time_ns > child.start_time_ns + _START_SLACK_NS
            ):
                # The pid was reused: this process started after its supposed child.
                break
            out.append(parent.as_ancestor())
            seen.add(parent.pid)
            child = parent
        return tuple(out)

    def _reparented(self, child: ProcessInfo) -> ProcessInfo | None:
        """child with its current parent from /proc, remembered; None if it is gone or its
        parent did not change."""
        stat = self._proc.stat(child.pid)
        if stat is None or stat[1] == child.ppid or stat[1] <= 0:
            return None
        if child.start_time_ns is not None and abs(stat[2] - child.start_time_ns) > _START_SLACK_NS:
            return None  # the pid now belongs to another process
        updated = replace(child, ppid=stat[1])
        with self._lock:
            if self._table.get(child.pid) is child:
                self._table[child.pid] = updated
        return updated

    # ------------------------------------------------------------------ internals (lock held)

    def _put(self, info: ProcessInfo) -> None:
        self._table[info.pid] = info
        self._table.move_to_end(info.pid)
        while len(self._table) > self.capacity:
            self._table.popitem(last=False)

    def _prune(self) -> None:
        now = self._clock()
        while self._exited and now - self._exited[0][0] > self.exit_grace:
            _, pid = self._exited.popleft()
            info = self._table.get(pid)
            if info is not None and info.exited_at is not None and (
                now - info.exited_at > self.exit_grace
            ):
                del self._table[pid]


def _is_indirect(path: str) -> bool:
    return path.startswith(("/proc/", "/dev/fd/"))


def _extends(captured: tuple[str, ...], full: tuple[str, ...]) -> bool:
    """True when `full` holds every captured argument, each one as a prefix (the kernel may
    have cut the last one it read), and is longer somewhere."""
    if len(full) < len(captured) or full == captured:
        return False
    return all(f.startswith(c) for c, f in zip(captured, full, strict=False))
