"""Sensor event -> EnrichedEvent: its container (None on the host) and its process with ancestry."""

from __future__ import annotations

import logging

from roxd.containers.file_paths import resolve_file_event
from roxd.containers.process_table import ProcessInfo, ProcessTable
from roxd.containers.resolver import ContainerResolver
from roxd.containers.sessions import SessionClassifier
from roxd.model import (
    ConnectEvent,
    Container,
    EnrichedEvent,
    ExecEvent,
    ExitEvent,
    FileEvent,
    Process,
    SeccompEvent,
    SensorEvent,
    SyscallEvent,
)

log = logging.getLogger(__name__)


class Enricher:
    def __init__(self, resolver: ContainerResolver, processes: ProcessTable,
                 sessions: SessionClassifier | None = None) -> None:
        self.resolver = resolver
        self.processes = processes
        self.sessions = sessions or SessionClassifier(
            proc=processes.proc_root, vpid_of=processes.vpid, cgroup_of=self._cgroup_of)

    def _cgroup_of(self, pid: int) -> int | None:
        info = self.processes.get(pid)
        return info.cgroup_id if info is not None else None

    def enrich(self, event: SensorEvent, *, exit_details: bool = True) -> EnrichedEvent:
        """exit_details=False: an exit's process without its ancestry and session (nothing
        but the event taps reads them on an exit; the pipeline asks for them only when one
        listens): the walk and the Process cost several µs per exit, one exit per exec."""
        kind = type(event)
        if kind is FileEvent:
            event = resolve_file_event(event)  # relative paths, while the process lives
        # the resolver's second hint: an exec's parent, as the kernel reported it (free; no
        # /proc read on the hot path for other events)
        container = self.resolver.resolve(event.cgroup_id, pid=event.pid,
                                          ppid=(event.ppid or None) if kind is ExecEvent
                                          else None)
        if kind is ExecEvent:
            info = self.processes.on_exec(event)
            if container is not None:
                # a container's entrypoint is pid 1 of its namespace; rules tell it apart
                # from a shell started later (docker exec, an exploited app)
                process = self._process(info, event.cgroup_id, event.comm, uid=event.uid,
                                        vpid=event.vpid or self.processes.vpid(event.pid))
                # once per exec: a session's first process is classified, the rest inherit
                _set_session(process, self.sessions.classify(process, container))
            else:
                process = self._process(info, event.cgroup_id, event.comm, uid=event.uid)
                self.sessions.runtime_exec(process)  # `runc exec` on the host: a session soon
        elif isinstance(event, ExitEvent):
            if not exit_details:
                info_or_none = self.processes.on_exit(event)
                if info_or_none is None:
                    info_or_none = self.processes.get(event.pid)
                    self.processes.on_exit(event)
                return self.exit_event(event, container, info_or_none)
            info_or_none = self.processes.get(event.pid)
            self.processes.on_exit(event)
            if info_or_none is None:
                process = self._unknown(event.pid, -1, event.comm, event.cgroup_id)
            else:
                process = self._process(info_or_none, event.cgroup_id, event.comm)
        elif isinstance(event, ConnectEvent | SyscallEvent | FileEvent | SeccompEvent):
            info_or_none = self.processes.get(event.pid)
            process = (
                self._process(info_or_none, event.cgroup_id, event.comm, uid=event.uid)
                if info_or_none is not None
                else self._unknown(event.pid, event.uid, event.comm, event.cgroup_id)
            )
        else:
            raise TypeError(f"not a sensor event: {event!r}")
        if container is not None and process.session is None:
            _set_session(process, self.sessions.session_of(process, container))
        return EnrichedEvent(event, container, process)

    def exited(self, event: ExitEvent) -> tuple[Container | None, ProcessInfo | None]:
        """An exit, as the process table needs it and no more: its container and its table
        entry, marked exited (None: a process neither the table nor /proc knows). What the
        pipeline does with an exit nobody listens to (exits meet no rule); `exit_event`
        builds the event from this when someone asks (issue 22: the Process and the
        EnrichedEvent were a third of an exit's cost)."""
        container = self.resolver.resolve(event.cgroup_id, pid=event.pid)
        processes = self.processes
        info = processes.on_exit(event)  # the usual exit: in the table, marked in one step
        if info is None:  # what /proc still says (a process that predates roxd), then marked
            info = processes.get(event.pid)
            processes.on_exit(event)
        return container, info

    def exit_event(self, event: ExitEvent, container: Container | None,
                   info: ProcessInfo | None) -> EnrichedEvent:
        """What `enrich(event, exit_details=False)` gives, from `exited`'s answer."""
        if info is not None:  # without ancestry and session, as nobody asked for them
            return EnrichedEvent(event, container, self._bare(info, event.cgroup_id, event.comm))
        process = self._unknown(event.pid, -1, event.comm, event.cgroup_id)
        if container is not None:
            _set_session(process, self.sessions.session_of(process, container))
        return EnrichedEvent(event, container, process)

    def _process(
        self, info: ProcessInfo, cgroup_id: int, comm: str, uid: int | None = None,
        vpid: int | None = None,
    ) -> Process:
        # positional, in Process's field order (pid, ppid, uid, exe, comm, args, cgroup_id,
        # args_truncated, ancestors, vpid): keyword arguments cost about 0.5 µs more per event
        return Process(
            info.pid,
            info.ppid,
            info.uid if uid is None else uid,
            info.exe,
            comm or info.comm,
            info.args,
            cgroup_id,  # the event's: the kernel's word at the time of the event
            info.args_truncated,
            self.processes.ancestry_of(info),
            vpid,
        )

    @staticmethod
    def _bare(info: ProcessInfo, cgroup_id: int, comm: str) -> Process:
        """The process of an exit nobody will look at closely: no ancestry, no session."""
        return Process(info.pid, info.ppid, info.uid, info.exe, comm or info.comm, info.args,
                       cgroup_id, info.args_truncated)  # positional, as in _process

    @staticmethod
    def _unknown(pid: int, uid: int, comm: str, cgroup_id: int) -> Process:
        """A process that exited before roxd could read it: only what the event says."""
        return Process(pid=pid, ppid=0, uid=uid, exe="", comm=comm, args=(), cgroup_id=cgroup_id)


def _set_session(process: Process, session: str | None) -> None:
    """The session of a Process this enricher just built and nobody else holds yet (frozen for
    everyone downstream): set in place because the classifier needs the rest of the Process
    first, and dataclasses.replace() of an 11-field frozen dataclass cost about 6 µs, twice
    per container exec (docs/performance.md)."""
    _SET_SESSION(process, session)


# the `session` slot's own setter: what object.__setattr__ does, without the lookup by name
_SET_SESSION = Process.__dict__["session"].__set__
