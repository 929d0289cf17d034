"""The rule engine stage: TOML rule packs compiled into matchers over EnrichedEvents.

Imports only roxd.model and roxd.errors; the daemon wires it to the sensor and the enforcers.
"""

from roxd.rules.loader import load_rule_set, rule_files, validate_paths
from roxd.rules.ruleset import CompiledRule, ContainerGate, ExecKillSpec, KillPath, RuleSet
from roxd.rules.scope import ContainerScope

__all__ = [
    "CompiledRule",
    "ContainerGate",
    "ContainerScope",
    "ExecKillSpec",
    "KillPath",
    "RuleSet",
    "load_rule_set",
    "rule_files",
    "validate_paths",
]
