"""A compiled, immutable rule set: index by event type, match events, describe the kill path."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum

from roxd.model import (
    FILE_ACCESS_KINDS,
    ActionKind,
    Container,
    EnrichedEvent,
    FileWatchSet,
    Phase,
    RuleMatch,
    RuleRef,
    Severity,
)
from roxd.rules import codegen
from roxd.rules.compile import Resolved
from roxd.rules.fields import EventView
from roxd.rules.scope import ContainerScope

# containers (objects) whose in-scope rules a RuleSet keeps (in_scope): past it, start over
MAX_SCOPED_CONTAINERS = 4096
# distinct tuples of rules in scope a RuleSet keeps a compiled matcher for: past it, start over
MAX_MATCHERS = 1024


class KillPath(str, Enum):
    """Where a rule's kill can happen, judged from the rule's shape alone. The daemon still has
    to check the kernel (bpf_send_signal) before it reports "in-kernel" as effective."""

    IN_KERNEL = "in-kernel"  # exe path/basename lookup at sched_process_exec, before user code
    USERSPACE = "userspace"  # after the event reached userspace, by pidfd


@dataclass(frozen=True, slots=True)
class ContainerGate:
    """A rule's scope plus its container-only exceptions: everything about a rule that depends
    on the container alone, so the daemon can decide per container (and for the host, None)
    whether the rule's kernel kill entries apply."""

    scope: ContainerScope
    excepted: Callable[[EventView], bool] | None = None

    def matches_container(self, container: Container | None) -> bool:
        if not self.scope.matches_container(container):
            return False
        return self.excepted is None or not self.excepted(EventView.for_container(container))

    def matches_any_container(self) -> bool:
        """True when every container is admitted whatever its image, name, labels or runtime,
        so one wildcard kernel entry covers containers that start before the next refresh."""
        return self.scope.containers and not self.scope.container_filters and self.excepted is None


@dataclass(frozen=True, slots=True)
class ExecKillSpec:
    """An exec rule the kernel can enforce: kill when the new image's exe is one of
    `exe_paths` OR its basename is one of `exe_basenames`, in a container the gate admits."""

    rule_id: str
    exe_paths: frozenset[str]
    exe_basenames: frozenset[str]
    scope: ContainerGate


@dataclass(frozen=True)
class ConnectKillSpec:
    """A connect rule the kernel can enforce at connect() entry: kill when the destination
    port is one of `ports` (None: any) AND the address is in one of `networks` (None: any),
    in a container the gate admits."""

    rule_id: str
    ports: frozenset[int] | None
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] | None
    scope: ContainerGate


@dataclass(frozen=True, eq=False)
class CompiledRule:
    id: str
    name: str
    description: str
    phase: Phase
    severity: Severity
    mitre: tuple[str, ...]
    event: str
    enabled: bool
    monitor: bool
    actions: tuple[ActionKind, ...]
    source: str  # file that defined the rule
    line: int | None
    scope: ContainerScope
    exception_count: int
    kill_path: KillPath | None  # None when the rule does not kill
    kill_spec: ExecKillSpec | ConnectKillSpec | None  # set when kill_path is IN_KERNEL
    order: int  # position in load order; matches are reported in this order
    condition: Callable[[EventView], bool] = field(repr=False)
    excepted: Callable[[EventView], bool] | None = field(repr=False)
    # Exec basenames the condition requires; None: any exec may match (no index shortcut).
    basenames: frozenset[str] | None = field(repr=False, default=None)
    # What the kernel must let through for this rule (file and syscall rules; None: anything):
    # path watches as ("exact" | "prefix" | "name", value), access kinds, syscall names.
    path_watches: frozenset[tuple[str, str]] | None = field(repr=False, default=None)
    access_kinds: frozenset[str] | None = field(repr=False, default=None)
    syscalls: frozenset[str] | None = field(repr=False, default=None)
    kill_target: str = "process"
    # the condition as resolved (lists and macros expanded), which `condition` was built
    # from: the compiled matchers write it out (roxd/rules/codegen.py); None: use `condition`
    when: Resolved | None = field(repr=False, default=None)
    ref: RuleRef = field(init=False, repr=False)
    verdict: RuleMatch = field(init=False, repr=False)

    def __post_init__(self) -> None:
        ref = RuleRef(self.id, self.name, self.phase, self.severity, self.mitre, self.description)
        object.__setattr__(self, "ref", ref)
        object.__setattr__(self, "verdict", RuleMatch(ref, self.actions, self.monitor,
                                                      self.kill_target))

    def matches(self, view: EventView) -> bool:
        return (
            self.scope.matches_container(view.container)
            and self.condition(view)
            and (self.excepted is None or not self.excepted(view))
        )

    def action_note(self, *, host_kills: bool = False) -> str:
        """What this rule does, honestly: "alert; kill: in-kernel", "disabled", ...
        host_kills: the daemon's [enforce] host_kills (off by default); off, a kill of a rule
        that admits the host says it applies in containers only."""
        if not self.enabled:
            return "disabled"
        notes = []
        for action in self.actions:
            if action is ActionKind.KILL and self.kill_path is not None:
                note = f"kill: {self.kill_path.value}"
                if self.scope.host and not host_kills and self.kill_target != "container":
                    note = (f"{note}, containers only (host kills off)" if self.scope.containers
                            else "kill: none (host-only rule, host kills off)")
                notes.append(note)
            else:
                notes.append(action.value)
        text = "; ".join(notes)
        if self.monitor:
            return f"monitor (would: {text})"
        return text

    def to_dict(self) -> dict[str, object]:
        return {
            **self.ref.to_dict(),  # id, name, phase, severity, mitre: as alerts name the rule
            "event": self.event,
            "enabled": self.enabled,
            "monitor": self.monitor,
            "actions": [a.value for a in self.actions],
            "kill_path": self.kill_path.value if self.kill_path else None,
            "scope": self.scope.describe(),
            "exceptions": self.exception_count,
            "source": self.source,
            "line": self.line,
        }


class RuleSet:
    """The compiled rules of one load. Immutable: a reload builds a new RuleSet."""

    def __init__(self, rules: Sequence[CompiledRule], version: str, files: Sequence[str]) -> None:
        self.rules: tuple[CompiledRule, ...] = tuple(rules)
        self.version = version
        self.files: tuple[str, ...] = tuple(files)
        self._by_id = {rule.id: rule for rule in self.rules}
        by_event: dict[str, list[CompiledRule]] = {}
        by_basename: dict[str, list[CompiledRule]] = {}
        for rule in self.rules:
            if not rule.enabled:
                continue
            if rule.event == "exec" and rule.basenames is not None:
                for name in rule.basenames:
                    by_basename.setdefault(name, []).append(rule)
            else:
                by_event.setdefault(rule.event, []).append(rule)
        self._by_event = {kind: tuple(rules) for kind, rules in by_event.items()}
        # Precomputed per basename: the basename-indexed exec rules merged with the exec rules
        # every exec must be checked against, in load order.
        general_exec = by_event.get("exec", [])
        self._exec_by_basename = {
            name: tuple(sorted([*general_exec, *rules], key=lambda r: r.order))
            for name, rules in by_basename.items()
        }
        # id(container) -> (the container, (kind, basename) -> candidates in its scope and
        # their matcher); the container is kept so that its id cannot be reused while the
        # entry lives (in_scope)
        self._scoped: dict[int, tuple[Container | None,
                                      dict[tuple[str, str | None],
                                           tuple[tuple[CompiledRule, ...],
                                                 codegen.Matcher]]]] = {}
        # the rules' orders -> their compiled matcher: containers with the same rules in
        # scope share one (codegen.build: one function per tuple of rules)
        self._matchers: dict[tuple[int, ...], codegen.Matcher] = {}

    def __len__(self) -> int:
        return len(self.rules)

    def get(self, rule_id: str) -> CompiledRule | None:
        return self._by_id.get(rule_id)

    def candidates(self, kind: str, exe_basename: str | None) -> tuple[CompiledRule, ...]:
        """The enabled rules that can match an event of this kind (and exec basename)."""
        general = self._by_event.get(kind, ())
        if kind != "exec" or exe_basename is None:
            return general
        return self._exec_by_basename.get(exe_basename, general)

    def match(self, event: EnrichedEvent) -> list[RuleMatch]:
        """The verdicts of every enabled rule that matches, in load order."""
        view = EventView.of(event)
        kind = event.kind
        basename = view.exe_basename if kind == "exec" else None
        # the rules in scope of this container and basename, as one compiled function
        return self._scoped_entry(kind, basename, event.container)[1](view)

    def in_scope(self, kind: str, exe_basename: str | None,
                 container: Container | None) -> tuple[CompiledRule, ...]:
        """candidates() whose scope admits the container (None: the host). A scope reads only
        the Container, so this is decided once per container object and kept: the resolver
        hands out one object per container and a new one when its metadata changes (a new
        object is a new entry), and a reload builds a new RuleSet (a new cache)."""
        return self._scoped_entry(kind, exe_basename, container)[0]

    def _scoped_entry(self, kind: str, exe_basename: str | None, container: Container | None
                      ) -> tuple[tuple[CompiledRule, ...], codegen.Matcher]:
        if kind == "exec" and exe_basename not in self._exec_by_basename:
            exe_basename = None  # every such basename has the same candidates
        key = (kind, exe_basename)
        entry = self._scoped.get(id(container))
        if entry is None or entry[0] is not container:
            if len(self._scoped) >= MAX_SCOPED_CONTAINERS:
                self._scoped.clear()  # gone containers' objects: start over
            entry = (container, {})
            self._scoped[id(container)] = entry
        found = entry[1].get(key)
        if found is None:
            rules = tuple(r for r in self.candidates(kind, exe_basename)
                          if r.scope.matches_container(container))
            found = entry[1][key] = (rules, self._matcher(rules))
        return found

    def _matcher(self, rules: tuple[CompiledRule, ...]) -> codegen.Matcher:
        key = tuple(r.order for r in rules)
        matcher = self._matchers.get(key)
        if matcher is None:
            if len(self._matchers) >= MAX_MATCHERS:
                self._matchers.clear()
            matcher = self._matchers[key] = codegen.build(rules)
        return matcher

    def exec_kill_specs(self) -> list[ExecKillSpec]:
        """Enabled, non-monitor exec rules whose kill the kernel can decide by itself."""
        return [
            rule.kill_spec
            for rule in self.rules
            if rule.enabled and not rule.monitor and isinstance(rule.kill_spec, ExecKillSpec)
        ]

    def connect_kill_specs(self) -> list[ConnectKillSpec]:
        """Enabled, non-monitor connect rules whose kill the kernel can decide at connect()."""
        return [
            rule.kill_spec
            for rule in self.rules
            if rule.enabled and not rule.monitor and isinstance(rule.kill_spec, ConnectKillSpec)
        ]

    def file_watch_set(self) -> FileWatchSet:
        """The paths (exact, prefixes, basenames) and access kinds that enabled file rules can
        match: the kernel drops every other file access before it costs userspace anything."""
        exact: dict[str, set[str]] = {}
        prefixes: dict[str, set[str]] = {}
        names: dict[str, set[str]] = {}
        everything: set[str] = set()
        tables = {"exact": exact, "prefix": prefixes, "name": names}
        for rule in self._by_event.get("file", ()):
            kinds = rule.access_kinds if rule.access_kinds is not None else FILE_ACCESS_KINDS
            if rule.path_watches is None:
                everything.update(kinds)
                continue
            for kind, value in rule.path_watches:
                tables[kind].setdefault(value, set()).update(kinds)
        return FileWatchSet(
            exact={k: frozenset(v) for k, v in exact.items()},
            prefixes={k: frozenset(v) for k, v in prefixes.items()},
            basenames={k: frozenset(v) for k, v in names.items()},
            everything=frozenset(everything),
        )

    def syscall_watch_set(self) -> frozenset[str] | None:
        """Names of the syscalls enabled syscall rules can match; None: every watched one."""
        names: set[str] = set()
        for rule in self._by_event.get("syscall", ()):
            if rule.syscalls is None:
                return None
            names |= rule.syscalls
        return frozenset(names)

    def effective_action_notes(self, *, host_kills: bool = False) -> dict[str, str]:
        """rule id -> what the rule does ("alert; kill: in-kernel", "disabled", ...), given
        the daemon's [enforce] host_kills."""
        return {rule.id: rule.action_note(host_kills=host_kills) for rule in self.rules}
