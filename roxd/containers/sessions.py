"""Which session a container process belongs to: its entrypoint, a health check, or an exec
session (interactive with a terminal, or not). Decided once, at the exec of the session's first
process, and inherited by everything that process starts.

A container process's tree starts either at the container's init (pid 1 in its namespace: the
entrypoint and all it runs) or at a process the runtime started beside it (`docker exec`,
`kubectl exec`, a Docker HEALTHCHECK, a kubelet exec probe): the first process of a session is
the one whose parent is outside the container (runc, the shim) or unknown. That first process
is classified:

- `healthcheck`: its argv is the container's HEALTHCHECK command as the runtime runs it
  (`CMD-SHELL x` → `/bin/sh -c x`, or the image's SHELL; `CMD a b` → `a b`);
- `interactive`: its stdin is a terminal (`docker exec -it`, `kubectl exec -it`): a person;
- `exec`: its stdin is not a terminal: a script, an orchestrator's probe, an operator's
  one-off command;
- `unknown`: it exited before roxd could look at its stdin.

Whether the session has a terminal is read from the runtime's own command line when roxd saw
it (`runc exec --console-socket ...` is `docker exec -t`), else from /proc/<pid>/fd/0.

Every process of a container that Docker's classic builder made for a RUN instruction (the
runtime reports it: created from an image id, health check forced off) is `build`.

Its descendants inherit the class through a pid → session map fed by exec events (a bounded
LRU, like the process table). A process whose ancestors roxd never saw exec (the container
started before roxd) is classified by walking its ancestry up to the runtime.

A process that execs again (`sh -c 'exec x'`, busybox and ash running the last command of
`sh -c` in place, env/nice/timeout) is still the session it was: its earlier image was that
session's first process, so it uses up no `runc exec` of another session and, when the runtime
is gone and /proc no longer has it either, keeps the session of its earlier image instead of
becoming `unknown`. The same process is recognised by its host pid, its pid in the container's
own pid namespace and its cgroup, with its parent still its parent or an ancestor it was
re-parented to (a process that only reused the pid matches both pid counters only after the
container itself went through the whole pid space). The earlier session stands in only for
`unknown`: runc's arguments, or a terminal seen on its fd 0, still decide first.

What it cannot tell: an exec session that runs exactly the health check's command line is a
health check (whatever it does next is still matched by every rule); Kubernetes exec probes
are non-interactive exec sessions (roxd does not read pod specs); a session whose first process
exits within about a millisecond of its start is `unknown`, and rules treat `unknown` as
strictly as `interactive`. Without the runtime's `runc exec` record (dropped from a full ring
buffer, say) a session's first process that is gone before roxd reads it stays `unknown`, even
with the shim as its parent: that proves a runtime session (in a container with its own pid
namespace nothing else is re-parented to the shim), but not whether it had a terminal.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from roxd.model import Ancestor, Container, Process
from roxd.vocabulary import SESSION_KINDS

ENTRYPOINT, HEALTHCHECK, INTERACTIVE, EXEC, UNKNOWN, BUILD = SESSION_KINDS

# The runtime's own processes: a parent among these means the child is a session's first.
RUNTIME_PARENTS = frozenset({
    "runc", "crun", "youki", "runsc", "conmon", "containerd-shim", "containerd-shim-runc-v1",
    "containerd-shim-runc-v2", "docker-containerd-shim", "containerd", "dockerd",
})
RUNC_LIKE = frozenset({"runc", "crun", "youki", "runsc"})
_TERMINALS = ("/dev/pts/", "/dev/tty", "/dev/console")
_VERBS = ("exec", "create", "run", "init")
# how long a `runc exec` seen on the host waits for its process in the container
PENDING_EXEC_S = 5.0


# what a session's first process was at its exec: (vpid, cgroup id, session, ancestors)
_FirstImage = tuple[int, int, str, tuple[Ancestor, ...]]


def runtime_verb(args: tuple[str, ...]) -> str | None:
    """runc's subcommand (global flags come first: `runc --root R --log L exec ...`)."""
    return next((a for a in args[1:] if a in _VERBS), None)


def has_console(args: tuple[str, ...]) -> bool:
    """`runc exec` gives the process a terminal exactly when it is handed a console socket
    (`docker exec -t`, `kubectl exec -t`), or -t/--tty when run by hand."""
    return any(a in ("-t", "--tty", "--console-socket") or a.startswith("--console-socket=")
               for a in args)


def stdin_is_terminal(pid: int, proc: str = "/proc") -> bool | None:
    """True/False when /proc/<pid>/fd/0 can be read; None once the process is gone."""
    try:
        target = os.readlink(f"{proc}/{pid}/fd/0")
    except FileNotFoundError:
        return False if os.path.exists(f"{proc}/{pid}") else None  # no stdin at all
    except OSError:
        return None
    return target.startswith(_TERMINALS)


def _basename(path: str) -> str:
    return path.rpartition("/")[2]


def _matches(args: tuple[str, ...], expected: tuple[str, ...], truncated: bool) -> bool:
    if not expected or not args:
        return False
    if args == expected:
        return True
    # argv captured in the kernel may be cut short: a prefix of the command still matches
    return truncated and len(args) <= len(expected) and expected[: len(args)] == args


def _same(process: Process, earlier: _FirstImage) -> _FirstImage | None:
    """earlier, when it is an earlier image of this very process (a session's first process
    then): same host pid (the caller's key), same pid in the container's own pid namespace
    (vpid known and not the host pid: in the host's pid namespace the pair proves nothing),
    same cgroup, and a parent that is its parent then or an ancestor it has been re-parented to
    since. A process that only reused the host pid matches the vpid too only once the
    container itself has gone through its whole pid space."""
    vpid, cgroup_id, _, ancestors = earlier
    if (not process.ancestors or process.vpid is None or process.vpid == process.pid
            or vpid != process.vpid or cgroup_id != process.cgroup_id):
        return None
    parent = process.ancestors[0].pid
    return earlier if any(a.pid == parent for a in ancestors) else None


class SessionClassifier:
    """pid → session kind for container processes; classify() is called once per exec."""

    def __init__(self, *, capacity: int = 32768, proc: str = "/proc",
                 is_terminal: Callable[[int], bool | None] | None = None,
                 vpid_of: Callable[[int], int | None] | None = None,
                 cgroup_of: Callable[[int], int | None] | None = None) -> None:
        self.capacity = capacity
        self._cgroup_of = cgroup_of
        self._clock = time.monotonic
        # container id -> (when, terminal?) of `runc exec`s whose process roxd has not seen
        self._pending: dict[str, deque[tuple[float, bool]]] = {}
        self._is_terminal = is_terminal or (lambda pid: stdin_is_terminal(pid, proc))
        self._vpid_of = vpid_of or (lambda pid: None)
        self._lock = threading.Lock()
        self._by_pid: OrderedDict[int, str] = OrderedDict()
        # pid -> its image at its exec, for the sessions' first processes only (one per `docker
        # exec`, not one per exec): a later exec of the same process is no new session
        self._firsts: OrderedDict[int, _FirstImage] = OrderedDict()

    def classify(self, process: Process, container: Container | None) -> str | None:
        """The session of a process that just exec'd (None on the host); remembered for its
        descendants."""
        if container is None:
            return None
        earlier = self._firsts.get(process.pid)  # one dict read, atomic: no lock per exec
        session = self._decide(process, container, True, earlier and _same(process, earlier))
        self._remember(process.pid, session)
        return session

    def runtime_exec(self, process: Process) -> None:
        """A host process: when it is `runc exec ... <container id>`, remember that an exec
        session (with a terminal or not) is about to start there. A busy roxd may see the
        session's process only after runc and its init stages are gone (no ancestry left);
        runc's word still classifies it. Only host processes come here: nothing inside a
        container can add one."""
        if _basename(process.exe) not in RUNC_LIKE or runtime_verb(process.args) != "exec":
            return
        target = process.args[-1] if process.args else ""
        if len(target) < 12 or target.startswith("-"):
            return
        now = self._clock()
        with self._lock:
            queue = self._pending.setdefault(target, deque())
            queue.append((now, has_console(process.args)))
            while queue and now - queue[0][0] > PENDING_EXEC_S:
                queue.popleft()
            if len(self._pending) > 1024:  # containers that never ran their exec
                for cid in [c for c, q in self._pending.items()
                            if not q or now - q[-1][0] > PENDING_EXEC_S]:
                    del self._pending[cid]

    def _take_pending(self, container_id: str) -> bool | None:
        """The terminal flag of the oldest recent `runc exec` into the container, consumed;
        None when there is none."""
        now = self._clock()
        with self._lock:
            queue = self._pending.get(container_id)
            while queue:
                when, tty = queue.popleft()
                if now - when <= PENDING_EXEC_S:
                    return tty
            self._pending.pop(container_id, None)
        return None

    def session_of(self, process: Process, container: Container | None) -> str | None:
        """The session of a process seen in a non-exec event: what its exec said, else decided
        from its ancestry now (not remembered)."""
        if container is None:
            return None
        return self.of(process.pid) or self._decide(process, container, at_exec=False)

    def of(self, pid: int) -> str | None:
        """The session a pid was classified into at its last exec, if any."""
        with self._lock:
            return self._by_pid.get(pid)

    def forget(self, pid: int) -> None:
        with self._lock:
            self._by_pid.pop(pid, None)

    def _decide(self, process: Process, container: Container, at_exec: bool = True,
                again: _FirstImage | None = None) -> str:
        """again: this exec's process was already a session's first process (an exec of the
        same process again): it takes no pending `runc exec`, which would be another
        session's, and its earlier session stands where this one cannot be told."""
        if container.build_step:
            return BUILD
        if process.vpid == 1:
            return ENTRYPOINT
        # Up the ancestry: the nearest ancestor whose session is known is inherited; a process
        # that never exec'd in roxd's sight (a forked subshell, a worker, runc init's stages,
        # unreadable) is skipped; the runtime ends the walk. Only a runtime process outside the
        # container's cgroup counts: a program named runc inside it is no runtime.
        first = (process.pid, process.args, process.args_truncated)
        for anc in process.ancestors:
            name = _basename(anc.exe)
            if name in RUNTIME_PARENTS and self._outside(anc.pid, process.cgroup_id):
                verb = runtime_verb(anc.args) if name in RUNC_LIKE else None
                if verb in ("create", "run"):  # runc started the container's init: pid 1's tree
                    return ENTRYPOINT
                if verb == "exec":  # runc's own arguments say whether it gave a terminal
                    if at_exec and again is None:
                        self._take_pending(container.id)
                    return self._first_of_session(*first, container, tty=has_console(anc.args),
                                                  first_of=process if at_exec else None)
                if verb == "init":
                    continue
                break
            inherited = self.of(anc.pid)
            if inherited is not None:
                return inherited
            if anc.exe and anc.exe != "/" and "memfd:" not in anc.exe:
                first = (anc.pid, anc.args, False)
        if first[0] != process.pid and self._vpid_of(first[0]) == 1:
            # every ancestor up to the runtime predates roxd; the topmost is pid 1
            self._remember(first[0], ENTRYPOINT)
            return ENTRYPOINT
        if first[0] == process.pid:
            # nothing known above it: the runtime started it. A `runc exec` into this
            # container seen a moment ago says whether with a terminal, when /proc no longer
            # can (a busy roxd reads it after the process is gone)
            pending = self._take_pending(container.id) if at_exec and again is None else None
            return self._first_of_session(*first, container, fallback=pending,
                                          first_of=process if at_exec else None,
                                          earlier=again[2] if again is not None else None)
        return self._first_of_session(*first, container)

    def _outside(self, pid: int, cgroup_id: int) -> bool:
        """A process in another cgroup than the container's (the runtime on the host); True
        when roxd cannot tell (no cgroup reader: unit tests, or the pid is gone)."""
        if self._cgroup_of is None:
            return True
        theirs = self._cgroup_of(pid)
        return not theirs or theirs != cgroup_id

    def _remember(self, pid: int, session: str) -> None:
        with self._lock:
            self._by_pid[pid] = session
            self._by_pid.move_to_end(pid)
            while len(self._by_pid) > self.capacity:
                self._by_pid.popitem(last=False)

    def _first_of_session(self, pid: int, args: tuple[str, ...], truncated: bool,
                          container: Container, tty: bool | None = None,
                          fallback: bool | None = None, first_of: Process | None = None,
                          earlier: str | None = None) -> str:
        """first_of: the process whose exec this is, when it is the session's first (its image
        is kept to recognise a later exec of it); earlier: that process's session at its
        earlier exec, for when this one cannot be told."""
        session = self._first_session(pid, args, truncated, container, tty, fallback)
        if session == UNKNOWN and earlier is not None:
            session = earlier
        if (first_of is not None and first_of.pid == pid and first_of.vpid is not None
                and first_of.vpid != pid):  # the host's pid namespace: nothing to recognise by
            image = (first_of.vpid, first_of.cgroup_id, session, first_of.ancestors)
            with self._lock:
                self._firsts[pid] = image
                self._firsts.move_to_end(pid)
                while len(self._firsts) > self.capacity:
                    self._firsts.popitem(last=False)
        return session

    def _first_session(self, pid: int, args: tuple[str, ...], truncated: bool,
                       container: Container, tty: bool | None, fallback: bool | None) -> str:
        expected = container.healthcheck
        if expected and _matches(args, expected, truncated):
            return HEALTHCHECK
        if tty is None:
            tty = self._is_terminal(pid)
        if tty is None:
            tty = fallback
        if tty is None:
            return UNKNOWN
        return INTERACTIVE if tty else EXEC
