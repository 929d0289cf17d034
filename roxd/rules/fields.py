"""The fields a rule may test, per event type, and how each is read from an EnrichedEvent.

`EventView` wraps one event and computes derived values (basenames, the joined command line, the
parsed destination address) at most once, however many rules ask for them.
"""

from __future__ import annotations

import errno as _errno
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from operator import attrgetter

from roxd.model import (
    BaselineFacts,
    ConnectEvent,
    Container,
    EnrichedEvent,
    ExecEvent,
    FileEvent,
    Process,
    SyscallEvent,
    syscall_result_of,
)
from roxd.vocabulary import RULE_EVENT_KINDS

# Event types a rule may name: exec and connect, sensitive system calls (bpf/syscalls.bpf.c)
# and file access on watched paths (bpf/file.bpf.c); defined in roxd.vocabulary.
EVENT_TYPES: tuple[str, ...] = RULE_EVENT_KINDS
PROCESS_EVENTS = frozenset(EVENT_TYPES)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class ValueKind(str, Enum):
    STR = "string"
    INT = "integer"
    BOOL = "boolean"
    IP = "ip address"
    IMAGE = "image reference"


def basename(path: str) -> str:
    return path.rpartition("/")[2]


# Multi-call binaries run one of many programs chosen by argv[0] ("sh", "nc", "cat" are all
# /bin/busybox in a busybox image; busybox's shell re-execs applets as /proc/self/exe), or by
# argv[1] when called by their own name ("busybox nc ...").
MULTICALL_BINARIES = frozenset({"busybox", "toybox"})


def program_name(exe: str, args: tuple[str, ...]) -> str:
    """The name of the program a process runs: the exe's basename, or for a multi-call binary
    the applet it was asked to be."""
    name = basename(exe)
    if name not in MULTICALL_BINARIES and name != "exe":
        return name
    if args:
        applet = basename(args[0])
        if applet in MULTICALL_BINARIES and len(args) > 1:
            return basename(args[1])
        if applet:
            return applet
    return name


def parse_ip(text: str) -> IPAddress:
    """Parse an address; an IPv4-mapped IPv6 address (::ffff:a.b.c.d) counts as the IPv4 one,
    so a connect through a dual-stack socket cannot slip past a v4 rule."""
    address = ipaddress.ip_address(text.strip())
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class lazy:
    """Like functools.cached_property, without the lock Python 3.11 takes on every first
    access: a view lives on one thread for one event."""

    def __init__(self, compute: Callable[[EventView], object]) -> None:
        self.compute = compute
        self.name = compute.__name__

    def __get__(self, view: EventView | None, owner: type | None = None):
        if view is None:
            return self
        value = self.compute(view)
        view.__dict__[self.name] = value  # later reads find the instance attribute first
        return value


class EventView:
    """Read-only accessors over one event; derived values are computed lazily and once."""

    def __init__(
        self,
        event: ExecEvent | ConnectEvent | object | None,
        process: Process | None,
        container: Container | None,
        baseline: BaselineFacts | None = None,
        drift: str | None = None,
        script_drift: str | None = None,
    ) -> None:
        self.event = event
        self.process = process
        self.container = container
        self.baseline = baseline
        self.drift = drift
        self.script_drift = script_drift

    @classmethod
    def of(cls, enriched: EnrichedEvent) -> EventView:
        view = cls(enriched.event, enriched.process, enriched.container, enriched.baseline,
                   enriched.drift, enriched.script_drift)
        process = enriched.process
        if type(enriched.event) is ExecEvent and process is not None:
            # what the shipped pack reads of every exec, set at once (the same values the
            # lazy properties below compute, without a property call per field: issue 22)
            args = process.args
            exe = process.exe
            view.__dict__.update(exe=exe, args=args, argv0=args[0] if args else None,
                                 params=args[1:], cmdline=" ".join(args),
                                 filename=enriched.event.filename,
                                 exe_basename=program_name(exe, args))
        return view

    @classmethod
    def for_container(cls, container: Container | None) -> EventView:
        """A view with only container facts, for predicates that name container fields only."""
        return cls(None, None, container)

    # -- process
    @lazy
    def exe(self) -> str | None:
        return self.process.exe if self.process else None

    @lazy
    def exe_basename(self) -> str | None:
        # the program's name: busybox applets count as what they are (see program_name)
        return program_name(self.process.exe, self.process.args) if self.process else None

    @lazy
    def args(self) -> tuple[str, ...]:
        return self.process.args if self.process else ()

    @lazy
    def params(self) -> tuple[str, ...]:
        return self.args[1:]

    @lazy
    def argv0(self) -> str | None:
        return self.args[0] if self.args else None

    @lazy
    def cmdline(self) -> str | None:
        return " ".join(self.process.args) if self.process else None

    @lazy
    def parent_exe(self) -> str | None:
        return self.process.parent_exe if self.process else None

    @lazy
    def parent_basename(self) -> str | None:
        if not self.process or not self.process.ancestors:
            return None
        parent = self.process.ancestors[0]
        return program_name(parent.exe, parent.args) if parent.exe else None

    @lazy
    def parent_cmdline(self) -> str | None:
        if not self.process or not self.process.ancestors:
            return None
        return " ".join(self.process.ancestors[0].args)

    @lazy
    def ancestor_exes(self) -> tuple[str, ...]:
        return tuple(a.exe for a in self.process.ancestors) if self.process else ()

    @lazy
    def ancestor_basenames(self) -> tuple[str, ...]:
        if not self.process:
            return ()
        return tuple(program_name(a.exe, a.args) for a in self.process.ancestors)

    # -- event specifics
    @lazy
    def filename(self) -> str | None:
        return self.event.filename if isinstance(self.event, ExecEvent) else None

    @lazy
    def daddr(self) -> IPAddress | None:
        if not isinstance(self.event, ConnectEvent):
            return None
        try:
            return parse_ip(self.event.daddr)
        except ValueError:
            return None

    @lazy
    def result(self) -> str | None:
        ev = self.event
        if isinstance(ev, ConnectEvent):
            return ev.result.value
        if isinstance(ev, SyscallEvent | FileEvent):
            return syscall_result_of(ev.errno)
        return None

    @lazy
    def errno_name(self) -> str | None:
        ev = self.event
        if not isinstance(ev, SyscallEvent | FileEvent | ConnectEvent) or not ev.errno:
            return None
        return _errno.errorcode.get(ev.errno, str(ev.errno))

    @lazy
    def flags(self) -> tuple[str, ...]:
        ev = self.event
        if isinstance(ev, FileEvent):
            return ev.flags
        if isinstance(ev, SyscallEvent):
            raw = ev.args.get("flags")
            return tuple(str(raw).split("|")) if raw else ()
        return ()

    @lazy
    def path(self) -> str | None:
        ev = self.event
        if isinstance(ev, FileEvent):
            return ev.resolved or ev.path
        if isinstance(ev, SyscallEvent):
            value = ev.args.get("path")
            return str(value) if value else None
        return None

    def syscall_arg(self, name: str) -> int | str | None:
        return self.event.args.get(name) if isinstance(self.event, SyscallEvent) else None

    def file_attr(self, name: str) -> object:
        return getattr(self.event, name) if isinstance(self.event, FileEvent) else None

    def label(self, key: str) -> str | None:
        return self.container.labels.get(key) if self.container else None


@dataclass(frozen=True, slots=True)
class FieldSpec:
    name: str
    kind: ValueKind
    events: frozenset[str]
    read: Callable[[EventView], object]
    many: bool = False  # a tuple of values: an operator holds if it holds for any element
    container_only: bool = False  # reads nothing but the container (kernel fast path may use it)
    doc: str = ""
    # the EventView attribute `read` gets, when it is one: compiled rule sets read it inline
    # (roxd/rules/codegen.py)
    attr: str | None = None
    # or the expression over the view `v` that `read` evaluates (_expr), written inline there
    inline: str | None = None


def _expr(source: str) -> Callable[[EventView], object]:
    """A field read written as one expression over the view `v`: the read is a lambda
    compiled from it, and the compiled rule sets write the same text inline (one source for
    both, so they cannot disagree). Only literal text from this module."""
    read = eval(f"lambda v: {source}", {})  # module constants only, no input
    read.inline = source
    return read


def _spec(name: str, kind: ValueKind, events: frozenset[str], read, doc: str, **kw) -> FieldSpec:
    """`read` an attribute name: the view's attribute, read by operator.attrgetter (a C call,
    not a Python frame per read) and inline by the compiled rule sets; or an _expr."""
    if isinstance(read, str):
        kw["attr"] = read
        read = attrgetter(read)
    elif getattr(read, "inline", None) is not None:
        kw["inline"] = read.inline
    return FieldSpec(name=name, kind=kind, events=events, read=read, doc=doc, **kw)


_EXEC = frozenset({"exec"})
_CONNECT = frozenset({"connect"})
_SYSCALL = frozenset({"syscall"})
_FILE = frozenset({"file"})
_SECCOMP = frozenset({"seccomp"})
_RESULTS = frozenset({"connect", "syscall", "file"})
S, N, B, IP, IMG = ValueKind.STR, ValueKind.INT, ValueKind.BOOL, ValueKind.IP, ValueKind.IMAGE

# A field that is an attribute of the view is read by operator.attrgetter: a C call, not a
# Python frame per read (rules read about sixteen fields per exec, issue 22).
FIELDS: dict[str, FieldSpec] = {
    f.name: f
    for f in (
        _spec(
            "exe", S, PROCESS_EVENTS, "exe", "process.exe (as the enricher resolved it)"
        ),
        _spec("exe_basename", S, PROCESS_EVENTS, "exe_basename", "basename of exe"),
        _spec("args", S, PROCESS_EVENTS, "args", "argv, argv[0] included", many=True),
        _spec("argv0", S, PROCESS_EVENTS, "argv0", "argv[0] as the caller set it"),
        _spec("params", S, PROCESS_EVENTS, "params", "argv[1:]", many=True),
        _spec("cmdline", S, PROCESS_EVENTS, "cmdline", "argv joined with spaces"),
        _spec("comm", S, PROCESS_EVENTS, _expr("v.process.comm if v.process else None"), "comm"),
        _spec("uid", N, PROCESS_EVENTS, _expr("v.process.uid if v.process else None"), "uid"),
        _spec("vpid", N, PROCESS_EVENTS, _expr("v.process.vpid if v.process else None"),
              "pid in the container's pid namespace (1: the container's entrypoint)"),
        _spec("session", S, PROCESS_EVENTS, _expr("v.process.session if v.process else None"),
              "container processes: entrypoint | healthcheck | interactive | exec | unknown "
              "(the exec session it belongs to, docs/events.md); unset on the host"),
        _spec("parent_exe", S, PROCESS_EVENTS, "parent_exe", "the parent's exe"),
        _spec("parent_basename", S, PROCESS_EVENTS, "parent_basename", "its basename"),
        _spec("parent_cmdline", S, PROCESS_EVENTS, "parent_cmdline", "parent argv"),
        _spec(
            "ancestor_exe", S, PROCESS_EVENTS, "ancestor_exes", "any ancestor",
            many=True,
        ),
        _spec(
            "ancestor_basename",
            S,
            PROCESS_EVENTS,
            "ancestor_basenames",
            "basename of any ancestor",
            many=True,
        ),
        _spec(
            "container",
            B,
            PROCESS_EVENTS,
            _expr("v.container is not None"),
            "true in a container, false on the host",
            container_only=True,
        ),
        _spec(
            "image",
            IMG,
            PROCESS_EVENTS,
            _expr("v.container.image if v.container else None"),
            "container image",
            container_only=True,
        ),
        _spec(
            "container_name",
            S,
            PROCESS_EVENTS,
            _expr('v.container.name.lstrip("/") if v.container and v.container.name else None'),
            "container name",
            container_only=True,
        ),
        _spec(
            "runtime",
            S,
            PROCESS_EVENTS,
            _expr("v.container.runtime if v.container else None"),
            "docker | containerd | cri-o | podman",
            container_only=True,
        ),
        _spec(
            "namespace",
            S,
            PROCESS_EVENTS,
            _expr("v.container.namespace if v.container else None"),
            "the pod's Kubernetes namespace (unset outside pods)",
            container_only=True,
        ),
        _spec(
            "pod",
            S,
            PROCESS_EVENTS,
            _expr("v.container.pod if v.container else None"),
            "pod name (Kubernetes, or a podman pod; unset outside pods)",
            container_only=True,
        ),
        _spec("filename", S, _EXEC, "filename", "path given to execve, unresolved"),
        _spec("daddr", IP, _CONNECT, "daddr", "destination address"),
        _spec("dport", N, _CONNECT, _expr("v.event.dport"), "destination port"),
        _spec("family", S, _CONNECT, _expr("v.event.family"), "ipv4 | ipv6"),
        _spec("protocol", S, _CONNECT, _expr("v.event.protocol or None"),
              "tcp | udp (the socket's type); none when it could not be read"),
        _spec("via", S, _CONNECT, _expr("v.event.via"),
              "connect (connect(2)) | sendmsg (a UDP datagram sent to an address without "
              "connect)"),
        _spec("fileless", B, _EXEC, _expr("v.event.fileless"), "exec'd from an fd (memfd)"),
        _spec("baseline", S, _EXEC | _CONNECT | _FILE,
              _expr("v.baseline.verdict if v.baseline else None"),
              "the workload's baseline (process for execs, network for connects, written "
              "directories for writes below [baselines] file_trees): learning, learned or "
              "anomaly (none on the host, for other file accesses, or with baselines off)"),
        _spec("baseline_mode", S, _EXEC | _CONNECT | _FILE,
              _expr("v.baseline.mode if v.baseline else None"),
              "the workload's baseline mode: learn, monitor or enforce (none on the host or "
              "with baselines off)"),
        _spec("drift", S, _EXEC, "drift",
              "new (written after the container started), built (new, in a container that "
              "compiled code), modified (an image file changed) or none (the image's own); "
              "unknown on the host and off overlay root filesystems"),
        _spec("script_drift", S, _EXEC, "script_drift",
              "an interpreter's script file (`python3 x.py`, `bash x.sh`): new, modified or "
              "none, as drift; unknown without a script operand, on the host and off overlay "
              "root filesystems"),
        _spec("result", S, _RESULTS, "result", "ok, refused, denied, error, ..."),
        _spec("errno", S, _RESULTS, "errno_name",
              "EPERM, ENOENT, ...; none on success"),
        _spec("syscall", S, _SYSCALL | _SECCOMP, _expr("v.event.syscall"),
              "system call name"),
        _spec("seccomp_verdict", S, _SECCOMP, _expr("v.event.verdict"),
              "killed (enforce mode, at syscall entry) | denied (EPERM by an applied profile)"),
        _spec("flags", S, _SYSCALL | _FILE, "flags", "decoded flags", many=True),
        _spec("path", S, _SYSCALL | _FILE, "path", "file path (resolved if known)"),
        _spec("given_path", S, _FILE, lambda v: v.file_attr("path"), "path as the caller gave it"),
        _spec("other_path", S, _FILE, lambda v: v.file_attr("other_path"), "rename/link other"),
        _spec("access", S, _FILE, lambda v: v.file_attr("access"), "read, write, ...", many=True),
        _spec("operation", S, _FILE, lambda v: v.file_attr("operation"), "open, unlink, ..."),
        _spec("fstype", S, _SYSCALL, lambda v: v.syscall_arg("fstype"), "mount: filesystem type"),
        _spec("mount_source", S, _SYSCALL, lambda v: v.syscall_arg("source"),
              "mount: the source (device, or the file or directory bound)"),
        _spec("target_pid", N, _SYSCALL, lambda v: v.syscall_arg("target_pid"), "ptrace: pid"),
    )
}

LABEL_PREFIX = "label."
POD_LABEL_PREFIX = "pod_label."


def field_spec(name: str) -> FieldSpec | None:
    """The field called `name`, including the open family `label.<key>`; None if unknown."""
    spec = FIELDS.get(name)
    if spec is not None:
        return spec
    if name.startswith(LABEL_PREFIX) and len(name) > len(LABEL_PREFIX):
        key = name[len(LABEL_PREFIX) :]
        return FieldSpec(
            name=name,
            kind=ValueKind.STR,
            events=PROCESS_EVENTS,
            read=lambda v: v.label(key),
            container_only=True,
            doc="a container label's value",
        )
    if name.startswith(POD_LABEL_PREFIX) and len(name) > len(POD_LABEL_PREFIX):
        pod_key = name[len(POD_LABEL_PREFIX) :]
        return FieldSpec(
            name=name,
            kind=ValueKind.STR,
            events=PROCESS_EVENTS,
            read=lambda v: v.container.pod_labels.get(pod_key) if v.container else None,
            container_only=True,
            doc="a label of the container's pod",
        )
    return None


def fields_for_event(event_type: str) -> list[str]:
    return sorted(name for name, spec in FIELDS.items() if event_type in spec.events)
