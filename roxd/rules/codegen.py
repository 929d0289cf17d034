"""The rules an event meets, as one Python function (issue 22).

`RuleSet.match` used to loop over the rules in scope of an event's container and basename
and call each rule's condition: a tree of closures (an all of field tests, each a closure over
a getter and a set or a regex). For a distinct exec in a container that was 14 rules, about
40 Python calls and 6 µs. `build` writes the conditions of one such tuple of rules out as the
body of one function instead: per rule an `if` whose test is the condition as an expression,
with the field reads inline (`v.exe`, an attribute of the EventView; computed once per event
as before) and the sets, regexes and prefixes as constants of the function. Exceptions stay
closures (they run only for an event whose condition held: a match, rare).

The expression is the condition `compile.predicate` builds, shape for shape: the same parts
in the same order (cheapest first, the regex tests of one field in an `any` joined into one
search), each field test with the value test `_value_test` builds for it; a field test of a
shape written out below is inline, any other calls the closure `_field_predicate` builds
(one call instead of several). So the answers cannot differ from the closures';
tests/unit/test_rules_index.py checks both over the shipped pack and a spread of events.

A function is built per tuple of rules (a RuleSet keeps them: a reload is a new set), when
an event first needs it; a tuple that cannot be written out (a compile error of the generated
source, which would be a bug) falls back to the loop over the closures, logged.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from roxd.model import RuleMatch
from roxd.rules.compile import (
    AllOf,
    AnyOf,
    NotOf,
    Resolved,
    ResolvedTest,
    _field_predicate,
    _value_test,
    cost,
    merged_regex_tests,
)
from roxd.rules.fields import EventView, ValueKind

if TYPE_CHECKING:
    from roxd.rules.ruleset import CompiledRule

log = logging.getLogger(__name__)

Matcher = Callable[[EventView], list[RuleMatch]]


class _Writer:
    """Source text for conditions; every value the source needs is a named constant."""

    def __init__(self) -> None:
        self.constants: dict[str, object] = {}

    def const(self, value: object) -> str:
        name = f"_k{len(self.constants)}"
        self.constants[name] = value
        return name

    def condition(self, cond: Resolved) -> str:
        if isinstance(cond, ResolvedTest):
            return self.test(cond)
        if isinstance(cond, NotOf):
            return f"(not {self.condition(cond.part)})"  # type: ignore[arg-type]
        # as compile.predicate: an any's regex tests of one field joined, parts cheapest first
        parts = merged_regex_tests(cond.parts) if isinstance(cond, AnyOf) else cond.parts
        ordered = sorted(parts, key=cost)  # type: ignore[arg-type]  # stable, as there
        if not ordered:  # all_of([]) holds, any_of([]) does not (compile.all_of / any_of)
            return "True" if isinstance(cond, AllOf) else "False"
        joiner = " and " if isinstance(cond, AllOf) else " or "
        return "(" + joiner.join(self.condition(p) for p in ordered) + ")"  # type: ignore[arg-type]

    def read(self, test: ResolvedTest) -> str:
        attr = test.spec.attr
        if attr is not None and attr.isidentifier():
            return f"v.{attr}"
        if test.spec.inline is not None:  # the very expression `read` evaluates
            return f"({test.spec.inline})"
        return f"{self.const(test.spec.read)}(v)"

    def test(self, test: ResolvedTest) -> str:
        """One field test as an expression; the shapes below mirror _field_predicate's."""
        op, kind, spec = test.op, test.spec.kind, test.spec
        if spec.many:
            if op in ("equals", "in") and kind is ValueKind.STR:
                # None never comes from a many-valued field (an empty tuple does)
                expr = f"(not {self.const(frozenset(test.values))}.isdisjoint({self.read(test)}))"
                return f"(not {expr})" if test.negated else expr
            return f"{self.const(_field_predicate(test))}(v)"
        if op in ("equals", "in") and kind in (ValueKind.STR, ValueKind.INT, ValueKind.BOOL):
            # None (an unset field) is in no set of strings, integers or booleans
            word = "not in" if test.negated else "in"
            return f"({self.read(test)} {word} {self.const(frozenset(test.values))})"
        check = _value_test(test)
        plain = _plain_globs(test) if op == "glob" and kind is ValueKind.STR else None
        if plain is not None:  # `*/.*`: the regex fnmatch writes backtracks; `"/." in x`
            expr = f"((_x := {self.read(test)}) is not None and ({plain}))"
        elif isinstance(getattr(check, "__self__", None), re.Pattern):  # one search or match
            found = f"{self.const(check)}(_x) is not None"
            expr = f"((_x := {self.read(test)}) is not None and {found})"
        elif op == "prefix" and kind in (ValueKind.STR, ValueKind.IMAGE):
            prefixes = self.const(tuple(str(v) for v in test.values))
            expr = f"((_x := {self.read(test)}) is not None and _x.startswith({prefixes}))"
        else:
            return f"{self.const(_field_predicate(test))}(v)"
        return f"(not {expr})" if test.negated else expr


def _plain_glob(pattern: str) -> str | None:
    """A glob (as fnmatch.translate reads it: `*` any text, `/` included) without `?` or `[`
    as a string test of `_x`: `x`, `x*`, `*x`, `*x*`; None for any other shape."""
    if "?" in pattern or "[" in pattern:
        return None
    head, tail = pattern.startswith("*"), pattern.endswith("*")
    core = pattern.strip("*")
    if "*" in core:
        return None
    if not core:
        return "True" if pattern else "_x == ''"  # `*` (or `**`): any text
    if head and tail:
        return f"{core!r} in _x"
    if head:
        return f"_x.endswith({core!r})"
    if tail:
        return f"_x.startswith({core!r})"
    return f"_x == {core!r}"


def _plain_globs(test: ResolvedTest) -> str | None:
    tests = [_plain_glob(str(v)) for v in test.values]
    if any(t is None for t in tests):
        return None
    return " or ".join(f"({t})" for t in tests)


def source(rules: Sequence[CompiledRule]) -> tuple[str, dict[str, object]]:
    """The matcher's source text and the constants it names."""
    writer = _Writer()
    lines = ["def match(v):", "    out = []"]
    for rule in rules:
        if rule.when is not None:
            test = writer.condition(rule.when)
        else:  # a rule built without its resolved condition: its closure
            test = f"{writer.const(rule.condition)}(v)"
        if rule.excepted is not None:
            test = f"{test} and not {writer.const(rule.excepted)}(v)"
        lines.append(f"    if {test}:")
        lines.append(f"        out.append({writer.const(rule.verdict)})")
    lines.append("    return out")
    return "\n".join(lines) + "\n", writer.constants


def loop(rules: Sequence[CompiledRule]) -> Matcher:
    """The matcher as a loop over the rules' closures (the fallback)."""
    checks = tuple((r.condition, r.excepted, r.verdict) for r in rules)

    def match(v: EventView) -> list[RuleMatch]:
        out = []
        for condition, excepted, verdict in checks:
            if condition(v) and (excepted is None or not excepted(v)):
                out.append(verdict)
        return out

    return match


def build(rules: Sequence[CompiledRule]) -> Matcher:
    """One function that returns the verdicts of `rules` that match a view, in their order."""
    try:
        text, namespace = source(rules)
        code = compile(text, "<roxd rules>", "exec")
        exec(code, namespace)  # the source is built above from compiled rules only
    except (SyntaxError, RecursionError, MemoryError, ValueError):
        log.exception("could not compile %d rules into one matcher; matching them one by one",
                      len(rules))
        return loop(rules)
    return namespace["match"]  # type: ignore[return-value]
