"""Turn raw conditions into matcher callables, once per load.

Two steps. `Resolver.resolve` inlines macros and expands `@list` references, giving a tree of
FieldTests with concrete values; errors found there (unknown list, macro cycle, a field that the
rule's event type does not have, a value of the wrong type, a regex that does not compile) are
raised as CompileError. `predicate` then builds closures over precompiled sets, regexes and
networks so matching an event is a handful of calls with no parsing.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from roxd.rules.fields import (
    EventView,
    FieldSpec,
    ValueKind,
    basename,
    field_spec,
    fields_for_event,
    parse_ip,
)
from roxd.rules.images import ImagePattern, glob_regex
from roxd.rules.schema import (
    AllOf,
    AnyOf,
    Condition,
    FieldTest,
    Item,
    ListRef,
    MacroRef,
    NotOf,
    RawException,
    RawScope,
)
from roxd.rules.scope import ContainerScope

Predicate = Callable[[EventView], bool]
Value = str | int | bool

_OPS_BY_KIND: dict[ValueKind, frozenset[str]] = {
    ValueKind.STR: frozenset({"equals", "in", "glob", "prefix", "contains", "regex"}),
    ValueKind.IMAGE: frozenset({"equals", "in", "glob", "prefix", "contains", "regex"}),
    ValueKind.INT: frozenset({"equals", "in"}),
    ValueKind.BOOL: frozenset({"equals", "in"}),
    ValueKind.IP: frozenset({"equals", "in", "cidr"}),
}
# What an exception compares with when it does not say (`comps`).
DEFAULT_EXCEPTION_COMP: dict[ValueKind, str] = {
    ValueKind.STR: "glob",
    ValueKind.IMAGE: "glob",
    ValueKind.INT: "in",
    ValueKind.BOOL: "in",
    ValueKind.IP: "cidr",
}
_PYTHON_TYPE = {ValueKind.INT: int, ValueKind.BOOL: bool}


# Deeper nesting than this is a mistake, and unbounded nesting would end in a RecursionError
# while compiling or, worse, while matching.
MAX_NESTING = 16


class CompileError(Exception):
    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.key = key


@dataclass(frozen=True, slots=True)
class ResolvedTest:
    """A field test with concrete values: no list references, no macros."""

    spec: FieldSpec
    op: str  # positive operator name
    negated: bool
    values: tuple[Value, ...]


Resolved = ResolvedTest | AllOf | AnyOf | NotOf


class Resolver:
    """Expands lists and macros for one merged pack."""

    def __init__(self, lists: dict[str, tuple[Item, ...]], macros: dict[str, Condition]) -> None:
        self.lists = lists
        self.macros = macros

    def expand(self, items: Iterable[Item], _stack: tuple[str, ...] = ()) -> tuple[Value, ...]:
        out: list[Value] = []
        for item in items:
            if isinstance(item, ListRef):
                if len(_stack) >= MAX_NESTING:
                    raise CompileError(f"lists nest more than {MAX_NESTING} deep")
                if item.name in _stack:
                    cycle = " -> ".join([*_stack, item.name])
                    raise CompileError(f"list reference cycle: {cycle}")
                if item.name not in self.lists:
                    raise CompileError(f"unknown list {item.name!r}")
                out.extend(self.expand(self.lists[item.name], (*_stack, item.name)))
            else:
                out.append(item)
        return tuple(out)

    def resolve(
        self, cond: Condition, event: str | None, _macros: tuple[str, ...] = ()
    ) -> Resolved:
        if isinstance(cond, FieldTest):
            return self.resolve_test(cond.field, cond.op, cond.items, event, _macros)
        if isinstance(cond, AllOf):
            return AllOf(tuple(self.resolve(p, event, _macros) for p in cond.parts))
        if isinstance(cond, AnyOf):
            return AnyOf(tuple(self.resolve(p, event, _macros) for p in cond.parts))
        if isinstance(cond, NotOf):
            return NotOf(self.resolve(cond.part, event, _macros))
        if isinstance(cond, MacroRef):
            if len(_macros) >= MAX_NESTING:
                raise CompileError(f"macros nest more than {MAX_NESTING} deep")
            if cond.name in _macros:
                raise CompileError(f"macro cycle: {' -> '.join([*_macros, cond.name])}")
            if cond.name not in self.macros:
                raise CompileError(f"unknown macro {cond.name!r}")
            return self.resolve(self.macros[cond.name], event, (*_macros, cond.name))
        raise CompileError(f"not a condition: {cond!r}")

    def resolve_test(
        self,
        field: str,
        op: str,
        items: tuple[Item, ...],
        event: str | None,
        macros: tuple[str, ...] = (),
    ) -> ResolvedTest:
        """Check and expand one test; `event` None checks a macro on its own, for any event."""
        via = f" (in macro {macros[-1]!r})" if macros else ""
        spec = field_spec(field)
        if spec is None:
            raise CompileError(f"unknown field {field!r}{via}")
        if event is not None and event not in spec.events:
            available = ", ".join([*fields_for_event(event), "label.<key>", "pod_label.<key>"])
            raise CompileError(
                f"field {field!r} is not available on {event} events{via} (available: {available})"
            )
        negated = op.startswith("not_")
        positive = op.removeprefix("not_")
        if positive not in _OPS_BY_KIND[spec.kind]:
            allowed = ", ".join(sorted(_OPS_BY_KIND[spec.kind]))
            raise CompileError(
                f"operator {op!r} does not apply to {field!r} ({spec.kind.value}; "
                f"use {allowed} or their not_ forms){via}"
            )
        values = self.expand(items)
        if not values:
            raise CompileError(f"{field}.{op} has no values (an empty list?){via}")
        expected = _PYTHON_TYPE.get(spec.kind, str)
        for value in values:
            # bool is an int subclass: keep true/false out of integer fields and vice versa.
            if type(value) is not expected:
                raise CompileError(
                    f"{field!r} compares {spec.kind.value}s; {value!r} is not one{via}"
                )
        _check_values(spec, positive, values, via)
        return ResolvedTest(spec, positive, negated, values)


def _check_values(spec: FieldSpec, op: str, values: tuple[Value, ...], via: str) -> None:
    """Fail at load time for anything that would fail per event."""
    for value in values:
        try:
            if op == "regex":
                re.compile(str(value))
            elif op == "cidr":
                ipaddress.ip_network(str(value).strip(), strict=False)
            elif spec.kind is ValueKind.IP:
                parse_ip(str(value))
        except re.error as exc:
            raise CompileError(f"regex {value!r} does not compile: {exc}{via}") from None
        except ValueError:
            what = "a network (CIDR)" if op == "cidr" else "an IP address"
            raise CompileError(f"{value!r} is not {what}{via}") from None
        except (RecursionError, OverflowError, MemoryError):
            raise CompileError(f"regex {value!r} is too complex{via}") from None


# --------------------------------------------------------------------------- predicates


def _value_test(test: ResolvedTest) -> Callable[[object], bool]:
    """A test on one non-None field value."""
    op, values, kind = test.op, test.values, test.spec.kind
    if kind is ValueKind.IMAGE and op in ("equals", "in", "glob"):
        patterns = tuple(ImagePattern.compile(str(v)) for v in values)
        return lambda x: any(p.matches(x) for p in patterns)  # type: ignore[arg-type]
    if kind is ValueKind.IP:
        if op == "cidr":
            networks = tuple(ipaddress.ip_network(str(v).strip(), strict=False) for v in values)
            return lambda x: any(x in n for n in networks)
        return frozenset(parse_ip(str(v)) for v in values).__contains__
    if op in ("equals", "in"):
        return frozenset(values).__contains__
    if op == "glob":
        return glob_regex([str(v) for v in values]).match  # type: ignore[return-value]
    if op == "prefix":
        prefixes = tuple(str(v) for v in values)
        return lambda x: x.startswith(prefixes)  # type: ignore[attr-defined]
    if op == "contains":
        needles = tuple(str(v) for v in values)
        return lambda x: any(n in x for n in needles)  # type: ignore[operator]
    if op == "regex":
        one = one_regex([str(v) for v in values])
        if one is not None:
            return one.search  # type: ignore[return-value]
        regexes = tuple(re.compile(str(v)) for v in values)
        return lambda x: any(r.search(x) for r in regexes)  # type: ignore[arg-type]
    raise CompileError(f"unsupported operator {op!r}")


# A pattern's leading global flags, which one_regex() scopes to the pattern's own branch.
_LEADING_FLAGS = re.compile(r"\(\?([ims]+)\)")
# What numbers or names groups across a pattern: kept apart, a joined pattern would renumber
# them (backreferences, named groups, conditionals).
_GROUP_REFERENCES = re.compile(r"\\[1-9]|\(\?P|\(\?\(|\\g")


def one_regex(patterns: list[str]) -> re.Pattern[str] | None:
    """One compiled alternation that searches as `any(re.search(p, x) for p in patterns)`
    (issue 22: one regex search per event instead of one per pattern, e.g. the miner rule's
    five): a match of any branch at some position is a match of the alternation there, and
    the reverse. Leading `(?i)`-style flags become scoped to their branch. None when a pattern
    refers to groups by number or name, or does not combine: then each is searched alone."""
    if len(patterns) == 1:
        return re.compile(patterns[0])
    branches = []
    for pattern in patterns:
        if _GROUP_REFERENCES.search(pattern):
            return None
        flags = _LEADING_FLAGS.match(pattern)
        if flags is not None:
            branches.append(f"(?{flags.group(1)}:{pattern[flags.end():]})")
        elif pattern.startswith("(?") and re.match(r"\(\?[aiLmsux-]+\)", pattern):
            return None  # other global flags (verbose, ASCII, ...): not combined
        else:
            branches.append(f"(?:{pattern})")
    try:
        return re.compile("|".join(branches))
    except (re.error, RecursionError, OverflowError):
        return None


def _field_predicate(test: ResolvedTest) -> Predicate:
    """One field test as a closure. The usual shapes get closures of their own (a set lookup,
    one regex search, a plain loop): rules run about sixteen of these per exec, and each
    call or generator less is a fraction of a µs per rule per event (issue 22)."""
    read = test.spec.read
    check = _value_test(test)
    kind = test.spec.kind
    positive: Predicate
    if test.spec.many:
        if test.op in ("equals", "in") and kind is ValueKind.STR:
            wanted = frozenset(test.values)
            positive = lambda v: not wanted.isdisjoint(read(v))  # type: ignore[arg-type]  # noqa: E731
        else:

            def positive(v: EventView) -> bool:
                for x in read(v):  # type: ignore[attr-defined]  # noqa: SIM110
                    if check(x):
                        return True
                return False

    elif test.op in ("equals", "in") and kind in (ValueKind.STR, ValueKind.INT, ValueKind.BOOL):
        # None (an unset field) is in no set of strings, integers or booleans
        wanted = frozenset(test.values)
        if test.negated:
            return lambda v: read(v) not in wanted
        return lambda v: read(v) in wanted
    elif isinstance(getattr(check, "__self__", None), re.Pattern):
        search = check  # one compiled pattern's search: a match object or None

        def positive(v: EventView) -> bool:
            value = read(v)
            return value is not None and search(value) is not None

    else:

        def positive(v: EventView) -> bool:
            value = read(v)
            return value is not None and bool(check(value))

    if test.negated:
        return lambda v: not positive(v)
    return positive


# Rough relative cost of reading a field (per event): most are an attribute read; these walk
# the ancestry, join argv or build a tuple first.
_FIELD_COST = {"ancestor_exe": 4, "ancestor_basename": 6, "parent_basename": 2,
               "parent_cmdline": 2, "cmdline": 2, "params": 1, "args": 1}
_OP_COST = {"regex": 3, "glob": 2, "cidr": 2, "contains": 1}


def cost(cond: Resolved) -> float:
    """A rough per-event cost of evaluating cond, for ordering the parts of an all/any: the
    cheap tests run first, so the usual event (which fails the cheap ones) never reaches the
    expensive ones. Every part is a pure test of the event, so the order cannot change the
    outcome, only the work. Most events match no rule: an `any` is paid in full, an `all`
    mostly stops at its cheapest part."""
    if isinstance(cond, ResolvedTest):
        field_cost = 1 + _FIELD_COST.get(cond.spec.name, 0)
        op_cost = _OP_COST.get(cond.op, 0) * (1 + (cond.op == "regex") * (len(cond.values) - 1))
        return field_cost + op_cost * (2 if cond.spec.many else 1)
    if isinstance(cond, NotOf):
        return cost(cond.part)  # type: ignore[arg-type]
    costs = sorted(cost(p) for p in cond.parts)  # type: ignore[arg-type]
    if isinstance(cond, AllOf) and costs:
        return costs[0] + sum(costs[1:]) / 4
    return sum(costs)


def predicate(cond: Resolved) -> Predicate:
    if isinstance(cond, ResolvedTest):
        return _field_predicate(cond)
    if isinstance(cond, NotOf):
        inner = predicate(cond.part)  # type: ignore[arg-type]
        return lambda v: not inner(v)
    parts_in = merged_regex_tests(cond.parts) if isinstance(cond, AnyOf) else cond.parts
    ordered = sorted(parts_in, key=cost)  # type: ignore[arg-type]  # stable: ties keep order
    parts = [predicate(p) for p in ordered]
    return all_of(parts) if isinstance(cond, AllOf) else any_of(parts)


def merged_regex_tests(parts: tuple[Resolved, ...]) -> tuple[Resolved, ...]:
    """The parts of an `any`, with its positive regex tests of one field merged into one test
    of all their patterns (true when any pattern matches: the same answer as any of the
    parts, with one search; e.g. the masquerade rule's three tests of `filename`)."""
    by_field: dict[str, list[ResolvedTest]] = {}
    for part in parts:
        if isinstance(part, ResolvedTest) and part.op == "regex" and not part.negated:
            by_field.setdefault(part.spec.name, []).append(part)
    if all(len(tests) < 2 for tests in by_field.values()):
        return parts
    out: list[Resolved] = []
    for part in parts:
        if not (isinstance(part, ResolvedTest) and part.op == "regex" and not part.negated):
            out.append(part)
            continue
        tests = by_field[part.spec.name]
        if len(tests) < 2:
            out.append(part)
        elif part is tests[0]:  # the merged test takes the place of the field's first one
            values = tuple(v for t in tests for v in t.values)
            out.append(ResolvedTest(part.spec, "regex", False, values))
    return tuple(out)


def all_of(parts: list[Predicate]) -> Predicate:
    if len(parts) == 1:
        return parts[0]
    # two or three parts (most rules): one expression, no loop over a tuple (about 45 ns per
    # call less; rules evaluate about nine of these per exec)
    if len(parts) == 2:
        a, b = parts
        return lambda v: a(v) and b(v)
    if len(parts) == 3:
        a, b, c = parts
        return lambda v: a(v) and b(v) and c(v)
    frozen = tuple(parts)

    # Plain loops, not all()/any() over a generator: this runs per event and the generator
    # costs more than the conditions it short-circuits.
    def every(v: EventView) -> bool:
        for part in frozen:  # noqa: SIM110
            if not part(v):
                return False
        return True

    return every


def any_of(parts: list[Predicate]) -> Predicate:
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        a, b = parts
        return lambda v: bool(a(v) or b(v))
    if len(parts) == 3:
        a, b, c = parts
        return lambda v: bool(a(v) or b(v) or c(v))
    frozen = tuple(parts)

    def some(v: EventView) -> bool:
        for part in frozen:  # noqa: SIM110
            if part(v):
                return True
        return False

    return some


# --------------------------------------------------------------------------- analysis


def exe_sets(cond: Resolved) -> tuple[frozenset[str], frozenset[str]] | None:
    """(exact exe paths, basenames) if the condition is only `exe`/`exe_basename` equals/in,
    alone or OR-ed; None otherwise. This is what a kernel hash-map lookup can decide."""
    if isinstance(cond, ResolvedTest):
        if cond.negated or cond.op not in ("equals", "in"):
            return None
        if cond.spec.name == "exe":
            return frozenset(map(str, cond.values)), frozenset()
        if cond.spec.name == "exe_basename":
            return frozenset(), frozenset(map(str, cond.values))
        return None
    if isinstance(cond, AllOf | AnyOf) and cond.parts:
        if isinstance(cond, AllOf) and len(cond.parts) != 1:
            return None
        paths: set[str] = set()
        names: set[str] = set()
        for part in cond.parts:
            sets = exe_sets(part)  # type: ignore[arg-type]
            if sets is None:
                return None
            paths |= sets[0]
            names |= sets[1]
        return frozenset(paths), frozenset(names)
    return None


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def connect_sets(cond: Resolved) -> tuple[frozenset[int] | None, tuple[Network, ...] | None] | None:
    """(ports, networks) if the condition is only `dport` equals/in and/or `daddr`
    equals/in/cidr, AND-ed (None in a slot: any); None otherwise. This is what a kernel
    LPM-trie lookup at connect() entry can decide."""
    tests = list(cond.parts) if isinstance(cond, AllOf) else [cond]
    ports: frozenset[int] | None = None
    networks: tuple[Network, ...] | None = None
    for test in tests:
        if not isinstance(test, ResolvedTest) or test.negated:
            return None
        if test.spec.name == "dport" and test.op in ("equals", "in") and ports is None:
            ports = frozenset(int(v) for v in test.values)  # type: ignore[arg-type]
        elif test.spec.name == "daddr" and test.op in ("equals", "in", "cidr") and networks is None:
            networks = tuple(ipaddress.ip_network(str(v).strip(), strict=False)
                             for v in test.values)
        else:
            return None
    if ports is None and networks is None:
        return None
    return ports, networks


def required_basenames(cond: Resolved) -> frozenset[str] | None:
    """Basenames an exec must have for the condition to hold, or None if any may match.
    Used to index exec rules by basename so most rules are never looked at for an event."""
    if isinstance(cond, ResolvedTest):
        if cond.negated or cond.op not in ("equals", "in"):
            return None
        if cond.spec.name == "exe_basename":
            return frozenset(map(str, cond.values))
        if cond.spec.name == "exe":
            return frozenset(basename(str(v)) for v in cond.values)
        return None
    if isinstance(cond, AllOf):
        candidates = [s for s in map(required_basenames, cond.parts) if s is not None]  # type: ignore[arg-type]
        return min(candidates, key=len) if candidates else None
    if isinstance(cond, AnyOf):
        union: set[str] = set()
        for part in cond.parts:
            names = required_basenames(part)  # type: ignore[arg-type]
            if names is None:
                return None
            union |= names
        return frozenset(union)
    return None


# --------------------------------------------------------------------------- exceptions, scope


@dataclass(frozen=True)
class CompiledExceptions:
    excepted: Predicate | None  # None: no value tuples at all
    container_only: bool  # every field names the container only
    count: int


def compile_exceptions(
    resolver: Resolver, exceptions: Iterable[RawException], event: str
) -> CompiledExceptions:
    rows: list[Predicate] = []
    container_only = True
    for exception in exceptions:
        comps = exception.comps
        specs = []
        for index, name in enumerate(exception.fields):
            spec = field_spec(name)
            if spec is None or event not in spec.events:
                raise CompileError(
                    f"exception {exception.name!r}: field {name!r} is not available on "
                    f"{event} events",
                    "exception",
                )
            specs.append((spec, comps[index] if comps else DEFAULT_EXCEPTION_COMP[spec.kind]))
            # Fields of an exception without values yet do not constrain the kill path.
            if exception.values:
                container_only = container_only and spec.container_only
        for row in exception.values:
            tests = []
            for (spec, comp), cell in zip(specs, row, strict=True):
                try:
                    tests.append(resolver.resolve_test(spec.name, comp, cell, event))
                except CompileError as exc:
                    raise CompileError(
                        f"exception {exception.name!r}: {exc.message}", "exception"
                    ) from None
            rows.append(predicate(AllOf(tuple(tests))))
    if not rows:
        return CompiledExceptions(None, container_only, 0)
    return CompiledExceptions(any_of(rows), container_only, len(rows))


def compile_scope(resolver: Resolver, raw: RawScope) -> ContainerScope:
    def strings(items: tuple[Item, ...] | None, key: str) -> list[str] | None:
        if items is None:
            return None
        values = resolver.expand(items)
        if not all(isinstance(v, str) for v in values):
            raise CompileError(f"scope.{key} takes strings", "scope")
        return [str(v) for v in values]

    try:
        return ContainerScope.build(
            host=raw.host,
            containers=raw.containers,
            images=strings(raw.image, "image"),
            names=strings(raw.name, "name"),
            runtimes=strings(raw.runtime, "runtime"),
            labels=list(raw.labels),
            namespaces=strings(raw.namespace, "namespace"),
            pods=strings(raw.pod, "pod"),
            pod_labels=list(raw.pod_labels),
        )
    except CompileError as exc:
        raise CompileError(exc.message, "scope") from None


# --------------------------------------------------------------------------- kernel watch sets


def restriction(
    cond: Resolved, accept: Callable[[ResolvedTest], frozenset | None]
) -> frozenset | None:
    """The values a condition restricts some field to, or None when it does not restrict it.
    `accept` turns one positive test into its values (None: not a usable restriction). AND
    takes the first restricting part (the truth is inside each), OR needs every part to
    restrict and takes the union, NOT never restricts."""
    if isinstance(cond, ResolvedTest):
        return None if cond.negated else accept(cond)
    if isinstance(cond, AllOf):
        for part in cond.parts:
            found = restriction(part, accept)  # type: ignore[arg-type]
            if found is not None:
                return found
        return None
    if isinstance(cond, AnyOf):
        union: set = set()
        for part in cond.parts:
            found = restriction(part, accept)  # type: ignore[arg-type]
            if found is None:
                return None
            union |= found
        return frozenset(union)
    return None


_GLOB_CHARS = "*?["


def _glob_watch(pattern: str) -> tuple[str, str] | None:
    """What the kernel can watch for a path glob: an exact path, a prefix (the glob's fixed
    head: /etc/cron* -> /etc/cron), or a basename (*/.ssh/authorized_keys, /proc/*/mem)."""
    cut = min((i for i in (pattern.find(c) for c in _GLOB_CHARS) if i >= 0), default=-1)
    if cut < 0:
        return ("exact", pattern) if pattern.startswith("/") else ("name", basename(pattern))
    last = pattern.rpartition("/")[2]
    if "/" in pattern and last and not any(c in last for c in _GLOB_CHARS):
        return ("name", last)
    head = pattern[:cut]
    return ("prefix", head) if head.startswith("/") and len(head) > 1 else None


def _path_values(test: ResolvedTest) -> frozenset | None:
    if test.spec.name == "baseline" and test.op in ("equals", "in"):
        # a file event has a baseline verdict only for writes below [baselines] file_trees,
        # which the policy watches for the baselines: such a rule needs no watch of its own
        return frozenset()
    if test.spec.name not in ("path", "given_path"):
        return None
    out: set[tuple[str, str]] = set()
    for value in map(str, test.values):
        if test.op in ("equals", "in"):
            out.add(("exact", value) if value.startswith("/") else ("name", basename(value)))
        elif test.op == "prefix" and value.startswith("/") and len(value) > 1:
            out.add(("prefix", value))
        elif test.op == "glob" and (watch := _glob_watch(value)) is not None:
            out.add(watch)
        else:
            return None
    return frozenset(out)


def path_watches(cond: Resolved) -> frozenset[tuple[str, str]] | None:
    """("exact" | "prefix" | "name", value) pairs covering every path the condition can match;
    None when they cannot be derived (then the kernel must let every path through)."""
    return restriction(cond, _path_values)


def access_kinds(cond: Resolved) -> frozenset[str] | None:
    return restriction(
        cond,
        lambda t: frozenset(map(str, t.values))
        if t.spec.name == "access" and t.op in ("equals", "in") else None,
    )


def syscall_names(cond: Resolved) -> frozenset[str] | None:
    return restriction(
        cond,
        lambda t: frozenset(map(str, t.values))
        if t.spec.name == "syscall" and t.op in ("equals", "in") else None,
    )
