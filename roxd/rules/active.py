"""The rule set in force: loaded from the configured paths, swapped whole on reload, with the
operator's runtime enable/disable kept across reloads (until roxd restarts).

The built-in rules (roxd/rules/builtin/: what the seccomp sensor's violations become) are
loaded first, so any configured file can override them by id. Listeners (the kernel policy)
hear of every new set; the loop thread owns this object.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path

from roxd.errors import RuleError
from roxd.rules.loader import load_rule_set
from roxd.rules.ruleset import RuleSet

log = logging.getLogger(__name__)

Listener = Callable[[RuleSet], None]
Validator = Callable[[RuleSet], list[RuleError]]
BUILTIN_RULES = Path(__file__).resolve().parent / "builtin"


def with_builtin(paths: Sequence[Path | str]) -> tuple[Path, ...]:
    """The built-in rules, then `paths` (unless they already name them)."""
    given = tuple(Path(p) for p in paths)
    return given if BUILTIN_RULES in given else (BUILTIN_RULES, *given)


class ActiveRules:
    def __init__(self, paths: Sequence[Path], *, builtin: bool = True) -> None:
        self.paths: tuple[Path, ...] = with_builtin(paths) if builtin else tuple(paths)
        self.overrides: dict[str, bool] = {}  # rule id -> enabled, set at runtime
        self._current: RuleSet | None = None
        self._listeners: list[Listener] = []
        self._validators: list[Validator] = []

    def add_validator(self, validator: Validator) -> None:
        """Checks a set must pass before it is installed (the kernel maps' capacity): a
        failing set is refused like a file that does not parse."""
        self._validators.append(validator)

    def load(self) -> RuleSet:
        """The first load: raises RuleError (roxd does not start without rules)."""
        rules = self._validated(load_rule_set(self.paths))
        log.info("loaded %d rules from %s", len(rules.rules),
                 ", ".join(str(p) for p in self.paths))
        self._install(rules)
        return rules

    @property
    def current(self) -> RuleSet:
        if self._current is None:
            raise RuntimeError("rules are not loaded yet")
        return self._current

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def reload(self) -> RuleSet:
        """Load the files again and swap the whole set; raises RuleError and keeps the
        previous set when a file is bad."""
        self._install(self._validated(self._with_overrides(load_rule_set(self.paths))))
        return self.current

    def set_enabled(self, rule_ids: Iterable[str], enabled: bool) -> RuleSet:
        for rule_id in rule_ids:
            self.overrides[rule_id] = enabled
        self._install(self._validated(self._with_overrides(self.current)))
        return self.current

    def _validated(self, rules: RuleSet) -> RuleSet:
        for validator in self._validators:
            problems = validator(rules)
            if problems:
                raise problems[0]
        return rules

    def _install(self, rules: RuleSet) -> None:
        self._current = rules
        for listener in self._listeners:
            listener(rules)

    def _with_overrides(self, rules: RuleSet) -> RuleSet:
        if not self.overrides:
            return rules
        return RuleSet([replace(r, enabled=self.overrides.get(r.id, r.enabled))
                        if self.overrides.get(r.id, r.enabled) != r.enabled else r
                        for r in rules.rules], rules.version, rules.files)
