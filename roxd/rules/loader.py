"""Load a rule pack: files and directories in order, merged, compiled, all-or-nothing.

Order of work: parse every file (shape errors), merge in load order (lists, macros, rules, user
exceptions, overrides), then compile every rule, enabled or not, so a disabled rule with a typo
still fails validation instead of failing the day someone enables it.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path

from roxd.errors import RuleError
from roxd.model import ActionKind
from roxd.rules.compile import (
    CompileError,
    Resolver,
    access_kinds,
    compile_exceptions,
    compile_scope,
    connect_sets,
    exe_sets,
    path_watches,
    predicate,
    required_basenames,
    syscall_names,
)
from roxd.rules.ruleset import (
    CompiledRule,
    ConnectKillSpec,
    ContainerGate,
    ExecKillSpec,
    KillPath,
    RuleSet,
)
from roxd.rules.schema import Condition, Item, Origin, RawFile, RawRule, read_file


def load_rule_set(paths: Sequence[Path | str]) -> RuleSet:
    """Load, merge and compile the rules in `paths` (files, or directories whose `*.toml` files
    are read in sorted filename order). Later files append to lists, add exception values and
    override rules by id. Raises the first RuleError; never returns a partial set."""
    errors: list[RuleError] = []
    rule_set = _build(paths, errors)
    if errors or rule_set is None:
        raise errors[0] if errors else RuleError(str(paths), None, None, "no rules loaded")
    return rule_set


def validate_paths(paths: Sequence[Path | str]) -> list[RuleError]:
    """Every error in `paths`, for `roxd --validate-rules`: shape errors of every file first; the
    cross-file checks (references, duplicates, compilation) run once all files parse."""
    errors: list[RuleError] = []
    _build(paths, errors)
    return errors


def rule_files(paths: Iterable[Path | str], errors: list[RuleError]) -> list[Path]:
    files: list[Path] = []
    for entry in map(Path, paths):
        try:
            if entry.is_dir():
                files.extend(sorted(p for p in entry.iterdir()
                                    if p.suffix == ".toml" and p.is_file()))
            elif entry.is_file():
                files.append(entry)
            else:
                errors.append(RuleError(str(entry), None, None,
                                        "no such rules file or directory"))
        except OSError as exc:  # a directory removed or unreadable while it is listed
            errors.append(RuleError(str(entry), None, None,
                                    f"cannot list: {exc.strerror or exc}"))
    return files


def _read(path: Path, errors: list[RuleError]) -> RawFile | None:
    """read_file, with what tomllib lets escape turned into an error naming the file: an
    integer of more than 4300 digits raises ValueError (Python's int conversion limit), which
    crashed a reload (SIGHUP ended roxd) and every start after it."""
    try:
        return read_file(path, errors)
    except ValueError as exc:
        errors.append(RuleError(str(path), None, None, f"TOML: {exc}"))
    except RecursionError:
        errors.append(RuleError(str(path), None, None, "TOML: nested too deeply"))
    return None


def _build(paths: Sequence[Path | str], errors: list[RuleError]) -> RuleSet | None:
    files = rule_files(paths, errors)
    raw_files = [raw for raw in (_read(path, errors) for path in files) if raw is not None]
    if errors:
        return None
    pack = _Merge(errors)
    for raw in raw_files:
        pack.add_file(raw)
    pack.apply_exceptions_and_overrides(raw_files)
    # Merge errors (an override for a missing id, a duplicate) do not make compiling the rest
    # meaningless, so --validate-rules goes on and reports the compile errors too.
    resolver = Resolver(pack.lists, pack.macros)
    pack.check_lists_and_macros(resolver)
    compiled = []
    for order, rule in enumerate(pack.rules.values()):
        try:
            compiled.append(_compile_rule(resolver, rule, order))
        except CompileError as exc:
            errors.append(rule.origin.error(exc.message, exc.key or "when"))
    if errors:
        return None
    return RuleSet(compiled, _version(raw_files), [raw.path for raw in raw_files])


def _version(raw_files: list[RawFile]) -> str:
    """Content hash: the same texts under the same file names give the same version."""
    digest = hashlib.sha256()
    for raw in raw_files:
        digest.update(Path(raw.path).name.encode() + b"\0" + raw.text.encode() + b"\0")
    return digest.hexdigest()[:16]


def _where(origin: Origin) -> str:
    return f"{origin.file}:{origin.line() or '?'}"


class _Merge:
    """Lists, macros and rules in load order, with later files appending and overriding."""

    def __init__(self, errors: list[RuleError]) -> None:
        self.errors = errors
        self.lists: dict[str, tuple[Item, ...]] = {}
        self.list_origins: dict[str, Origin] = {}
        self.macros: dict[str, Condition] = {}
        self.macro_origins: dict[str, Origin] = {}
        self.rules: dict[str, RawRule] = {}

    def add_file(self, raw: RawFile) -> None:
        for item in raw.lists:
            known = item.name in self.lists
            if item.mode == "define" and known:
                self.errors.append(
                    item.origin.error(
                        f"already defined at {_where(self.list_origins[item.name])}; "
                        "set append = true to add items or replace = true to redefine it"
                    )
                )
            elif item.mode != "define" and not known:
                self.errors.append(
                    item.origin.error(f"cannot {item.mode}: no such list is defined before it")
                )
            elif item.mode == "append":
                self.lists[item.name] = (*self.lists[item.name], *item.items)
            else:
                self.lists[item.name] = item.items
                self.list_origins.setdefault(item.name, item.origin)
        for macro in raw.macros:
            known = macro.name in self.macros
            if known and not macro.replace:
                self.errors.append(
                    macro.origin.error(
                        f"already defined at {_where(self.macro_origins[macro.name])}; "
                        "set replace = true to redefine it"
                    )
                )
            elif macro.replace and not known:
                self.errors.append(
                    macro.origin.error("cannot replace: no such macro is defined before it")
                )
            else:
                self.macros[macro.name] = macro.condition
                self.macro_origins.setdefault(macro.name, macro.origin)
        for rule in raw.rules:
            if rule.id in self.rules:
                first = self.rules[rule.id].origin
                self.errors.append(
                    rule.origin.error(
                        f"duplicate rule id, first defined at {_where(first)}; "
                        "use [[override]] to change a shipped rule"
                    )
                )
            else:
                self.rules[rule.id] = rule

    def apply_exceptions_and_overrides(self, raw_files: list[RawFile]) -> None:
        # After all rules are known, so a user file may sort before or after the shipped pack.
        for raw in raw_files:
            for extra in raw.exceptions:
                rule = self.rules.get(extra.rule)
                if rule is None:
                    self.errors.append(extra.origin.error("exception for an unknown rule id"))
                    continue
                names = [e.name for e in rule.exceptions]
                if extra.name not in names:
                    declared = ", ".join(names) or "none"
                    self.errors.append(
                        extra.origin.error(
                            f"rule has no exception named {extra.name!r} (declared: {declared})",
                            "name",
                        )
                    )
                    continue
                declared_exception = rule.exceptions[names.index(extra.name)]
                width = len(declared_exception.fields)
                if any(len(row) != width for row in extra.values):
                    fields = ", ".join(declared_exception.fields)
                    self.errors.append(
                        extra.origin.error(
                            f"exception {extra.name!r} takes {width} value(s) per entry: {fields}",
                            "values",
                        )
                    )
                    continue
                merged = tuple(
                    dataclasses.replace(e, values=(*e.values, *extra.values))
                    if e.name == extra.name
                    else e
                    for e in rule.exceptions
                )
                self.rules[rule.id] = dataclasses.replace(rule, exceptions=merged)
            for override in raw.overrides:
                rule = self.rules.get(override.id)
                if rule is None:
                    self.errors.append(override.origin.error("override for an unknown rule id"))
                    continue
                changes: dict[str, object] = {}
                for name in ("enabled", "monitor", "severity", "actions"):
                    value = getattr(override, name)
                    if value is not None:
                        changes[name] = value
                self.rules[rule.id] = dataclasses.replace(rule, **changes)

    def check_lists_and_macros(self, resolver: Resolver) -> None:
        """Unused lists and macros are checked too: a broken one fails before anyone uses it."""
        for name, origin in self.list_origins.items():
            try:
                resolver.expand(self.lists[name], (name,))
            except CompileError as exc:
                self.errors.append(origin.error(exc.message, "items"))
        for name, origin in self.macro_origins.items():
            try:
                resolver.resolve(self.macros[name], None, (name,))
            except CompileError as exc:
                self.errors.append(origin.error(exc.message, "condition"))


def _compile_rule(resolver: Resolver, rule: RawRule, order: int) -> CompiledRule:
    when = resolver.resolve(rule.when, rule.event)
    scope = compile_scope(resolver, rule.scope)
    exceptions = compile_exceptions(resolver, rule.exceptions, rule.event)
    kill_path: KillPath | None = None
    kill_spec: ExecKillSpec | None = None
    if ActionKind.KILL in rule.actions:
        kill_path = KillPath.USERSPACE
        gate = ContainerGate(scope, exceptions.excepted)
        if rule.kill_target != "process":
            pass  # a tree or a container is killed by roxd itself, after the event
        elif rule.event == "exec" and exceptions.container_only:
            sets = exe_sets(when)
            if sets is not None:
                kill_path = KillPath.IN_KERNEL
                kill_spec = ExecKillSpec(rule.id, sets[0], sets[1], gate)
        elif rule.event == "connect" and exceptions.container_only:
            target = connect_sets(when)
            if target is not None:
                kill_path = KillPath.IN_KERNEL
                kill_spec = ConnectKillSpec(rule.id, target[0], target[1], gate)
    return CompiledRule(
        id=rule.id,
        name=rule.name,
        description=rule.description.strip(),
        phase=rule.phase,
        severity=rule.severity,
        mitre=rule.mitre,
        event=rule.event,
        enabled=rule.enabled,
        monitor=rule.monitor,
        kill_target=rule.kill_target,
        actions=rule.actions,
        source=rule.origin.file,
        line=rule.origin.line(),
        scope=scope,
        exception_count=exceptions.count,
        kill_path=kill_path,
        kill_spec=kill_spec,
        order=order,
        condition=predicate(when),
        when=when,
        excepted=exceptions.excepted,
        basenames=required_basenames(when) if rule.event == "exec" else None,
        path_watches=path_watches(when) if rule.event == "file" else None,
        access_kinds=access_kinds(when) if rule.event == "file" else None,
        syscalls=syscall_names(when) if rule.event == "syscall" else None,
    )
