"""How much the kernel's policy maps hold, and whether a rule set fits in them.

The capacities are read from the eBPF sources' own declarations (`BPF_HASH(name, key, value,
N)`, `BPF_LPM_TRIE(...)`), so they cannot drift from what is compiled. A rule set whose fixed
entries (those that do not depend on which containers run) do not fit is refused when it loads,
with the file, line and rule that went over and the limit; the previous set keeps running. What
grows with containers (container-scoped kill entries, cgroup sets, baselines) is checked when it
is written: a full map is counted and logged, never fatal (roxd/policy/kernel.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from roxd.errors import RuleError
from roxd.policy.file_watch import file_watch_entries
from roxd.rules.ruleset import RuleSet

# the maps roxd/policy writes (LRU maps evict, arrays are fixed: neither fills up)
POLICY_MAPS = ("exec_kill", "container_cgroups", "known_cgroups", "connect_kill_port",
               "connect_kill_any", "file_watch_paths", "file_watch_names",
               "baseline_cgroups", "baseline_allow")

_DECL = re.compile(r"^BPF_(?:HASH|LPM_TRIE)\((\w+),[^;]*?,\s*(\d+)\);", re.MULTILINE)
# maps declared with flags (BPF_F_NO_PREALLOC): BPF_F_TABLE("hash", key, value, name, N, flags)
_FLAGGED = re.compile(r'^BPF_F_TABLE\("(?:hash|lpm_trie)",\s*[^,]+,\s*[^,]+,\s*(\w+),\s*(\d+),',
                      re.MULTILINE)


def map_capacities(bpf_dir: Path) -> dict[str, int]:
    """{map name: max entries} for every hash and LPM trie declared in bpf_dir/*.bpf.c."""
    found: dict[str, int] = {}
    for source in sorted(bpf_dir.glob("*.bpf.c")):
        text = source.read_text()
        for name, size in _DECL.findall(text) + _FLAGGED.findall(text):
            found[name] = int(size)
    return found


def capacity_problems(rules: RuleSet, capacities: dict[str, int]) -> list[RuleError]:
    """Rule errors for every map the rule set's fixed entries would overfill: the rule at which
    the running total first goes over the limit is named."""
    problems: list[RuleError] = []
    by_id = {r.id: r for r in rules.rules}

    def over(map_name: str, demands: Iterable[tuple[str, int]], what: str) -> None:
        limit = capacities.get(map_name)
        if limit is None:
            return
        total = 0
        for rule_id, n in demands:
            total += n
            if total > limit:
                rule = by_id.get(rule_id)
                problems.append(RuleError(
                    rule.source if rule else "rules", rule.line if rule else None, rule_id,
                    f"needs {n} {what} in the kernel's {map_name} map, {total} with the rules "
                    f"before it; the map holds {limit} (fewer paths or ports, or split the "
                    "rule's scope)"))
                return

    exec_specs = rules.exec_kill_specs()
    # fixed targets: the host sentinel and the any-container sentinel, per hash
    over("exec_kill", ((s.rule_id, (len(s.exe_paths) + len(s.exe_basenames))
                        * (int(s.scope.matches_container(None))
                           + int(s.scope.matches_any_container())))
                       for s in exec_specs), "exe hashes")
    port_demand: list[tuple[str, int]] = []
    any_demand: list[tuple[str, int]] = []
    for s in rules.connect_kill_specs():
        targets = int(s.scope.matches_container(None)) + int(s.scope.matches_any_container())
        nets = len(s.networks) if s.networks is not None else 1
        if s.ports is None:
            any_demand.append((s.rule_id, targets * nets))
        else:
            port_demand.append((s.rule_id, targets * nets * len(s.ports)))
    over("connect_kill_port", port_demand, "port/address prefixes")
    over("connect_kill_any", any_demand, "address prefixes")
    entries = file_watch_entries(rules.file_watch_set())
    file_rules = [r.id for r in rules.rules if r.event == "file" and r.enabled]
    last = file_rules[-1] if file_rules else None
    if last is not None:
        over("file_watch_paths", [(last, len(entries.paths))], "watched paths and prefixes")
        over("file_watch_names", [(last, len(entries.names))], "watched basenames")
    return problems
