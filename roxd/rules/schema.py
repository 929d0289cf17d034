"""Parse one rules file (TOML) into raw, validated records.

This module checks shapes: known keys, value types, enum values, operator names and field names.
What needs more than one file — list and macro references, duplicate ids, whether a field exists
for a rule's event type — is checked when the pack is merged and compiled (loader.py,
compile.py).

Parser: Python's stdlib `tomllib` (TOML 1.0), not the `toml` package. tomllib is strict (the
`toml` package is TOML 0.5-era and accepts some invalid documents and mis-reads others) and needs
no dependency; its error messages carry "(at line N, column M)", which gives the line number.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from roxd.errors import RuleError
from roxd.model import ActionKind, Phase, Severity
from roxd.rules.fields import EVENT_TYPES, FIELDS, field_spec
from roxd.rules.source import SourceMap, syntax_error_line

OPERATORS: tuple[str, ...] = ("equals", "in", "glob", "prefix", "contains", "regex", "cidr")
ALL_OPERATORS: frozenset[str] = frozenset(OPERATORS) | {f"not_{op}" for op in OPERATORS}
COMBINATORS = ("all", "any", "not", "macro")

RULE_ID = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,127}$")
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,127}$")
MITRE_ID = re.compile(r"^T\d{4}(\.\d{3})?$")

# --------------------------------------------------------------------------- raw records


@dataclass(frozen=True, slots=True)
class ListRef:
    """`"@name"` in a value position: the items of the named list."""

    name: str


Item = str | int | bool | ListRef


@dataclass(frozen=True, slots=True)
class FieldTest:
    field: str
    op: str  # one of ALL_OPERATORS
    items: tuple[Item, ...]


@dataclass(frozen=True, slots=True)
class AllOf:
    parts: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    parts: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class NotOf:
    part: Condition


@dataclass(frozen=True, slots=True)
class MacroRef:
    name: str


Condition = FieldTest | AllOf | AnyOf | NotOf | MacroRef


@dataclass(frozen=True, eq=False)
class Origin:
    """Where a record came from, to put a file, a line and a rule id on every error."""

    file: str
    section: str
    index: int
    source: SourceMap = field(repr=False)
    ident: str | None = None  # the rule id, list/macro name, or target rule id

    @property
    def rule_id(self) -> str | None:
        return self.ident if self.section in ("rule", "override", "exception") else None

    def line(self, key: str | None = None) -> int | None:
        anchor = key or ("id" if self.section in ("rule", "override") else "name")
        if self.section == "exception" and key is None:
            anchor = "rule"
        return self.source.line_of(self.section, self.index, anchor, self.ident)

    def error(self, message: str, key: str | None = None) -> RuleError:
        where = self.rule_id
        if where is None and self.ident:
            message = f"{self.section} {self.ident!r}: {message}"
        return RuleError(self.file, self.line(key), where, message)


@dataclass(frozen=True)
class RawList:
    name: str
    items: tuple[Item, ...]
    mode: str  # "define" | "append" | "replace"
    origin: Origin


@dataclass(frozen=True)
class RawMacro:
    name: str
    condition: Condition
    replace: bool
    origin: Origin


@dataclass(frozen=True)
class RawException:
    """A named exception: which fields it compares, how, and tuples of values."""

    name: str
    fields: tuple[str, ...]
    comps: tuple[str, ...] | None
    # One tuple per exception entry; per field, the alternatives that field may equal.
    values: tuple[tuple[tuple[Item, ...], ...], ...]


@dataclass(frozen=True)
class RawScope:
    host: bool = True
    containers: bool = True
    image: tuple[Item, ...] | None = None
    name: tuple[Item, ...] | None = None
    runtime: tuple[Item, ...] | None = None
    labels: tuple[tuple[str, str | bool], ...] = ()
    namespace: tuple[Item, ...] | None = None
    pod: tuple[Item, ...] | None = None
    pod_labels: tuple[tuple[str, str | bool], ...] = ()


@dataclass(frozen=True)
class RawRule:
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
    when: Condition
    scope: RawScope
    exceptions: tuple[RawException, ...]
    origin: Origin
    kill_target: str = "process"


@dataclass(frozen=True)
class RawExceptionValues:
    """A user's `[[exception]]`: more value tuples for a rule's named exception."""

    rule: str
    name: str
    values: tuple[tuple[tuple[Item, ...], ...], ...]
    origin: Origin


@dataclass(frozen=True)
class RawOverride:
    id: str
    enabled: bool | None
    monitor: bool | None
    severity: Severity | None
    actions: tuple[ActionKind, ...] | None
    origin: Origin


@dataclass(frozen=True)
class RawFile:
    path: str
    text: str
    lists: tuple[RawList, ...] = ()
    macros: tuple[RawMacro, ...] = ()
    rules: tuple[RawRule, ...] = ()
    exceptions: tuple[RawExceptionValues, ...] = ()
    overrides: tuple[RawOverride, ...] = ()


# --------------------------------------------------------------------------- validation helpers


class Invalid(Exception):
    """A shape error inside one record; `key` helps find the line."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.key = key


def _type_name(value: object) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a float",
        str: "a string",
        list: "an array",
        dict: "a table",
    }.get(type(value), f"a {type(value).__name__}")


def _check_keys(
    table: dict, allowed: tuple[str, ...], required: tuple[str, ...], what: str
) -> None:
    for key in table:
        if key not in allowed:
            raise Invalid(f"unknown key {key!r} in {what} (allowed: {', '.join(allowed)})", key)
    for key in required:
        if key not in table:
            raise Invalid(f"{what} is missing {key!r}", None)


def _string(table: dict, key: str, pattern: re.Pattern[str] | None = None) -> str:
    value = table[key]
    if not isinstance(value, str):
        raise Invalid(f"{key!r} must be a non-empty string, not {_type_name(value)}", key)
    if not value.strip():
        raise Invalid(f"{key!r} must not be empty", key)
    if pattern is not None and not pattern.match(value):
        raise Invalid(f"{key!r} value {value!r} is not valid (expected {pattern.pattern})", key)
    return value


def _bool(table: dict, key: str, default: bool | None) -> bool | None:
    if key not in table:
        return default
    value = table[key]
    if not isinstance(value, bool):
        raise Invalid(f"{key!r} must be true or false, not {_type_name(value)}", key)
    return value


def _enum(table: dict, key: str, enum: type, what: str):
    value = table[key]
    choices = ", ".join(member.value for member in enum)
    if not isinstance(value, str):
        raise Invalid(f"{key!r} must be a string, one of: {choices}", key)
    try:
        return enum(value)
    except ValueError:
        raise Invalid(f"unknown {what} {value!r} (expected one of: {choices})", key) from None


def _string_list(value: object, key: str, allow_scalar: bool = True) -> tuple[str, ...]:
    if allow_scalar and isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise Invalid(f"{key!r} must be an array of strings", key)
    return tuple(value)


def _actions(table: dict, key: str) -> tuple[ActionKind, ...]:
    names = _string_list(table[key], key, allow_scalar=False)
    if not names:
        raise Invalid(f"{key!r} must name at least one action (alert, kill, isolate, seccomp)", key)
    actions: list[ActionKind] = []
    for name in names:
        try:
            action = ActionKind(name)
            if action is ActionKind.BLOCK:  # only the kernel reports it (network baselines)
                raise ValueError(name)
        except ValueError:
            choices = ", ".join(a.value for a in ActionKind if a is not ActionKind.BLOCK)
            raise Invalid(f"unknown action {name!r} (expected: {choices})", key) from None
        if action in actions:
            raise Invalid(f"action {name!r} is listed twice", key)
        actions.append(action)
    return tuple(actions)


def _item(value: object, key: str) -> Item:
    if isinstance(value, str):
        if value.startswith("@@"):
            return value[1:]  # "@@x" is the literal "@x"
        if value.startswith("@"):
            name = value[1:]
            if not NAME.match(name):
                raise Invalid(f"{value!r} is not a valid list reference", key)
            return ListRef(name)
        return value
    if isinstance(value, bool | int):
        return value
    raise Invalid(
        f"values in {key!r} must be strings, integers or booleans, not {_type_name(value)}", key
    )


def _items(value: object, key: str) -> tuple[Item, ...]:
    """A scalar or an array of scalars."""
    if isinstance(value, list):
        if not value:
            raise Invalid(f"{key!r} must not be an empty array", key)
        return tuple(_item(v, key) for v in value)
    return (_item(value, key),)


# --------------------------------------------------------------------------- conditions


def parse_condition(table: object, key: str, depth: int = 0) -> Condition:
    """A condition table: every key must hold. Keys are field names or all/any/not/macro."""
    if depth > 32:
        raise Invalid("conditions are nested too deeply", key)
    if not isinstance(table, dict):
        raise Invalid(f"{key!r} must be a table of conditions, not {_type_name(table)}", key)
    parts: list[Condition] = []
    for name, value in table.items():
        if name in ("all", "any"):
            if not isinstance(value, list) or not value:
                raise Invalid(f"{name!r} must be a non-empty array of condition tables", key)
            sub = tuple(parse_condition(v, key, depth + 1) for v in value)
            parts.append(AllOf(sub) if name == "all" else AnyOf(sub))
        elif name == "not":
            parts.append(NotOf(parse_condition(value, key, depth + 1)))
        elif name == "macro":
            if not isinstance(value, str | list) or not all(isinstance(v, str) for v in value):
                raise Invalid(f"'macro' in {key!r} takes a macro name or an array of names", key)
            for macro in (value,) if isinstance(value, str) else value:
                if not NAME.match(macro):
                    raise Invalid(f"{macro!r} is not a valid macro name", key)
                parts.append(MacroRef(macro))
        else:
            parts.append(_field_test(name, value, key))
    return parts[0] if len(parts) == 1 else AllOf(tuple(parts))


def _field_test(name: str, value: object, key: str) -> Condition:
    if field_spec(name) is None:
        known = ", ".join([*sorted(FIELDS), "label.<key>", "pod_label.<key>"])
        raise Invalid(f"unknown field {name!r} (known fields: {known})", key)
    if isinstance(value, dict):
        if not value:
            raise Invalid(f"field {name!r} has an empty operator table", key)
        tests: list[Condition] = []
        for op, operand in value.items():
            if op not in ALL_OPERATORS:
                known = ", ".join(sorted(ALL_OPERATORS))
                raise Invalid(f"unknown operator {op!r} on {name!r} (known: {known})", key)
            if op in ("equals", "not_equals") and isinstance(operand, list):
                raise Invalid(f"{op!r} takes one value; use 'in' for several", key)
            tests.append(FieldTest(name, op, _items(operand, f"{name}.{op}")))
        return tests[0] if len(tests) == 1 else AllOf(tuple(tests))
    # Shorthand: `exe = "/bin/sh"` is equals, `exe_basename = ["sh", "bash"]` is in.
    if isinstance(value, list):
        return FieldTest(name, "in", _items(value, name))
    return FieldTest(name, "equals", _items(value, name))


# --------------------------------------------------------------------------- records


def _parse_list(table: dict, origin: Origin) -> RawList:
    _check_keys(table, ("name", "items", "append", "replace"), ("name", "items"), "list")
    name = _string(table, "name", NAME)
    items = table["items"]
    if not isinstance(items, list):
        raise Invalid(f"'items' must be an array, not {_type_name(items)}", "items")
    append = _bool(table, "append", False)
    replace = _bool(table, "replace", False)
    if append and replace:
        raise Invalid("a list cannot both append and replace", "append")
    mode = "append" if append else "replace" if replace else "define"
    return RawList(name, tuple(_item(v, "items") for v in items), mode, origin)


def _parse_macro(table: dict, origin: Origin) -> RawMacro:
    _check_keys(table, ("name", "condition", "replace"), ("name", "condition"), "macro")
    name = _string(table, "name", NAME)
    condition = parse_condition(table["condition"], "condition")
    return RawMacro(name, condition, bool(_bool(table, "replace", False)), origin)


def _exception_values(
    value: object, width: int, key: str
) -> tuple[tuple[tuple[Item, ...], ...], ...]:
    if not isinstance(value, list):
        raise Invalid(f"{key!r} must be an array of value tuples (arrays)", key)
    rows = []
    for row in value:
        if not isinstance(row, list) or len(row) != width:
            raise Invalid(
                f"each entry of {key!r} must be an array of {width} value(s), one per field", key
            )
        rows.append(tuple(_items(cell, key) for cell in row))
    return tuple(rows)


def _parse_rule_exception(table: object) -> RawException:
    if not isinstance(table, dict):
        raise Invalid("each [[rule.exception]] must be a table", "exception")
    _check_keys(table, ("name", "fields", "comps", "values"), ("name", "fields"), "exception")
    name = _string(table, "name", NAME)
    fields = _string_list(table["fields"], "fields")
    if not fields or len(set(fields)) != len(fields):
        raise Invalid(f"exception {name!r}: 'fields' must list distinct field names", "fields")
    for field_name in fields:
        if field_spec(field_name) is None:
            raise Invalid(f"exception {name!r}: unknown field {field_name!r}", "fields")
    comps = None
    if "comps" in table:
        comps = _string_list(table["comps"], "comps")
        if len(comps) != len(fields):
            raise Invalid(f"exception {name!r}: 'comps' needs one operator per field", "comps")
        for comp in comps:
            if comp not in ALL_OPERATORS:
                raise Invalid(f"exception {name!r}: unknown operator {comp!r}", "comps")
    values = _exception_values(table.get("values", []), len(fields), "values")
    return RawException(name, fields, comps, values)


def _parse_scope(table: object) -> RawScope:
    if not isinstance(table, dict):
        raise Invalid("'scope' must be a table", "scope")
    _check_keys(table, ("host", "containers", "image", "name", "runtime", "labels", "namespace",
                        "pod", "pod_labels"), (), "scope")

    def label_tests(key: str) -> tuple[tuple[str, str | bool], ...]:
        out: list[tuple[str, str | bool]] = []
        raw_labels = table.get(key, {})
        if not isinstance(raw_labels, dict):
            raise Invalid(f"'scope.{key}' must be a table of label = value (or true/false)", key)
        for label, wanted in raw_labels.items():
            if not isinstance(wanted, str | bool):
                raise Invalid(f"label {label!r} must be a string glob, true or false", key)
            out.append((label, wanted))
        return tuple(out)

    labels = label_tests("labels")
    pod_labels = label_tests("pod_labels")

    def patterns(key: str) -> tuple[Item, ...] | None:
        if key not in table:
            return None
        items = _items(table[key], f"scope.{key}")
        if not all(isinstance(i, str | ListRef) for i in items):
            raise Invalid(f"'scope.{key}' takes strings", key)
        return items

    return RawScope(
        host=bool(_bool(table, "host", True)),
        containers=bool(_bool(table, "containers", True)),
        image=patterns("image"),
        name=patterns("name"),
        runtime=patterns("runtime"),
        labels=labels,
        namespace=patterns("namespace"),
        pod=patterns("pod"),
        pod_labels=pod_labels,
    )


KILL_TARGETS = ("process", "process-tree", "container")

_RULE_KEYS = (
    "id",
    "name",
    "description",
    "phase",
    "severity",
    "mitre",
    "event",
    "enabled",
    "monitor",
    "actions",
    "kill_target",
    "when",
    "scope",
    "exception",
)
_RULE_REQUIRED = ("id", "name", "description", "phase", "severity", "mitre", "event", "when")


def _parse_rule(table: dict, origin: Origin) -> RawRule:
    _check_keys(table, _RULE_KEYS, _RULE_REQUIRED, "rule")
    mitre = _string_list(table["mitre"], "mitre", allow_scalar=False)
    if not mitre:
        raise Invalid("'mitre' must list at least one ATT&CK technique id", "mitre")
    for technique in mitre:
        if not MITRE_ID.match(technique):
            raise Invalid(f"{technique!r} is not a MITRE technique id like T1059.004", "mitre")
    event = table["event"]
    if event not in EVENT_TYPES:
        raise Invalid(
            f"unknown event type {event!r} (expected one of: {', '.join(EVENT_TYPES)})", "event"
        )
    exceptions = table.get("exception", [])
    if not isinstance(exceptions, list):
        raise Invalid("'exception' must be an array of tables ([[rule.exception]])", "exception")
    parsed_exceptions = tuple(_parse_rule_exception(e) for e in exceptions)
    names = [e.name for e in parsed_exceptions]
    if len(set(names)) != len(names):
        raise Invalid("exception names must be unique within a rule", "exception")
    actions = _actions(table, "actions") if "actions" in table else (ActionKind.ALERT,)
    kill_target = "process"
    if "kill_target" in table:
        kill_target = table["kill_target"]
        if kill_target not in KILL_TARGETS:
            raise Invalid(f"kill_target {kill_target!r} is not one of "
                          f"{', '.join(KILL_TARGETS)}", "kill_target")
        if ActionKind.KILL not in actions:
            raise Invalid("kill_target needs the kill action in 'actions'", "kill_target")
    return RawRule(
        kill_target=kill_target,
        id=_string(table, "id", RULE_ID),
        name=_string(table, "name"),
        description=_string(table, "description"),
        phase=_enum(table, "phase", Phase, "phase"),
        severity=_enum(table, "severity", Severity, "severity"),
        mitre=mitre,
        event=event,
        enabled=bool(_bool(table, "enabled", True)),
        monitor=bool(_bool(table, "monitor", False)),
        actions=actions,
        when=parse_condition(table["when"], "when"),
        scope=_parse_scope(table["scope"]) if "scope" in table else RawScope(),
        exceptions=parsed_exceptions,
        origin=origin,
    )


def _parse_exception_values(table: dict, origin: Origin) -> RawExceptionValues:
    _check_keys(table, ("rule", "name", "values"), ("rule", "name", "values"), "exception")
    rule = _string(table, "rule", RULE_ID)
    name = _string(table, "name", NAME)
    values = table["values"]
    if not isinstance(values, list) or not values or not isinstance(values[0], list):
        raise Invalid("'values' must be a non-empty array of value tuples (arrays)", "values")
    # The width is checked against the rule's declared fields when the pack is merged.
    rows = _exception_values(values, len(values[0]), "values")
    return RawExceptionValues(rule, name, rows, origin)


def _parse_override(table: dict, origin: Origin) -> RawOverride:
    _check_keys(table, ("id", "enabled", "monitor", "severity", "actions"), ("id",), "override")
    override = RawOverride(
        id=_string(table, "id", RULE_ID),
        enabled=_bool(table, "enabled", None),
        monitor=_bool(table, "monitor", None),
        severity=_enum(table, "severity", Severity, "severity") if "severity" in table else None,
        actions=_actions(table, "actions") if "actions" in table else None,
        origin=origin,
    )
    if len(table) == 1:
        raise Invalid("an override must set enabled, monitor, severity or actions", "id")
    return override


_SECTIONS = {
    "list": _parse_list,
    "macro": _parse_macro,
    "rule": _parse_rule,
    "exception": _parse_exception_values,
    "override": _parse_override,
}
_IDENT_KEY = {"list": "name", "macro": "name", "rule": "id", "exception": "rule", "override": "id"}


def parse_text(path: str, text: str, errors: list[RuleError]) -> RawFile:
    """Parse one file's text; shape errors are appended to `errors`, one per bad record."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        errors.append(RuleError(path, syntax_error_line(str(exc), text), None, f"TOML: {exc}"))
        return RawFile(path, text)
    except RecursionError:
        errors.append(RuleError(path, None, None, "TOML: nested too deeply"))
        return RawFile(path, text)

    source = SourceMap(text)
    collected: dict[str, list] = {section: [] for section in _SECTIONS}
    for key, value in document.items():
        if key not in _SECTIONS:
            known = ", ".join(f"[[{s}]]" for s in _SECTIONS)
            errors.append(
                RuleError(
                    path,
                    source.top_level_key(key),
                    None,
                    f"unknown section {key!r} (expected {known})",
                )
            )
            continue
        if not isinstance(value, list):
            errors.append(
                RuleError(
                    path,
                    source.top_level_key(key),
                    None,
                    f"{key!r} must be an array of tables: write [[{key}]]",
                )
            )
            continue
        for index, table in enumerate(value):
            ident = None
            if isinstance(table, dict):
                candidate = table.get(_IDENT_KEY[key])
                ident = candidate if isinstance(candidate, str) else None
            origin = Origin(path, key, index, source, ident)
            if not isinstance(table, dict):
                errors.append(origin.error(f"each [[{key}]] entry must be a table"))
                continue
            try:
                collected[key].append(_SECTIONS[key](table, origin))
            except Invalid as exc:
                errors.append(origin.error(exc.message, exc.key))
    return RawFile(
        path,
        text,
        lists=tuple(collected["list"]),
        macros=tuple(collected["macro"]),
        rules=tuple(collected["rule"]),
        exceptions=tuple(collected["exception"]),
        overrides=tuple(collected["override"]),
    )


def read_file(path: Path, errors: list[RuleError]) -> RawFile | None:
    try:
        data = path.read_bytes()
    except OSError as exc:
        errors.append(RuleError(str(path), None, None, f"cannot read: {exc.strerror or exc}"))
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        errors.append(RuleError(str(path), None, None, f"not UTF-8 text: {exc.reason}"))
        return None
    return parse_text(str(path), text, errors)
