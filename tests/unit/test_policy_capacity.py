"""Issue 23, item 4: a full BPF map is never fatal, and a rule set that cannot fit is refused
when it loads with the file, line, rule and limit, the previous set kept."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from roxd.errors import RuleError
from roxd.policy.capacity import POLICY_MAPS, capacity_problems, map_capacities
from roxd.policy.kernel import KernelPolicy
from roxd.rules.active import ActiveRules
from tests.unit.test_pipeline import FakeMaps

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]
CAPACITIES = map_capacities(REPO / "bpf")


def kill_rule(rule_id: str, names: list[str]) -> str:
    listed = ", ".join(f'"{n}"' for n in names)
    return f'''
[[rule]]
id = "{rule_id}"
name = "kill"
description = "Test rule."
phase = "objectives"
severity = "critical"
mitre = ["T1496"]
event = "exec"
actions = ["alert", "kill"]
[rule.when]
exe_basename = [{listed}]
'''


def test_capacities_come_from_the_declarations() -> None:
    assert set(POLICY_MAPS) <= set(CAPACITIES)
    assert CAPACITIES["exec_kill"] == 16384 and CAPACITIES["file_watch_paths"] == 1024
    # declared with flags (not preallocated): BPF_F_TABLE("hash", ...)
    assert CAPACITIES["baseline_allow"] == 131072 and CAPACITIES["baseline_cgroups"] == 16384


def test_the_shipped_pack_fits() -> None:
    rules = ActiveRules([REPO / "rules"]).load()
    assert capacity_problems(rules, CAPACITIES) == []


def test_a_rule_set_that_cannot_fit_is_refused_naming_the_rule(tmp_path: Path) -> None:
    small = tmp_path / "rules.toml"
    small.write_text(kill_rule("t.small", ["xmrig"]))
    active = ActiveRules([small])
    active.add_validator(lambda rs: capacity_problems(rs, CAPACITIES))
    active.load()
    # host + every container: two entries per name; 9,000 names need 18,000 of 16,384
    small.write_text(kill_rule("t.small", ["xmrig"])
                     + kill_rule("t.huge", [f"miner{i}" for i in range(9000)]))
    with pytest.raises(RuleError) as refused:
        active.reload()
    err = refused.value
    assert err.rule_id == "t.huge" and err.file == str(small) and err.line
    assert "exec_kill" in err.message and "16384" in err.message
    assert [r.id for r in active.current.rules if r.id.startswith("t.")] == ["t.small"]


class FullMaps(FakeMaps):
    """The kernel's answer for a full hash map (bcc raises a bare Exception)."""

    def set_exec_kills(self, entries: dict[Any, int]) -> None:
        raise Exception("Could not update table: [Errno 7] Argument list too long")


def test_a_full_map_is_counted_never_fatal(tmp_path: Path) -> None:
    rule_file = tmp_path / "r.toml"
    rule_file.write_text(kill_rule("t.kill", ["xmrig"]))
    rules = ActiveRules([rule_file]).load()
    maps = FullMaps()
    policy = KernelPolicy(maps, enforce_in_kernel=True, fold_window_ns=0,
                          containers=list, known_cgroups=tuple, host_kills=True)
    policy.apply_rules(rules)  # raised on the old code
    policy.containers_changed()
    policy.refresh()
    snap = policy.snapshot()
    assert snap["map_write_errors"] == 2
    assert snap["map_write_errors_by_writer"] == {"set_exec_kills": 2}
    # the rest of the policy still reached the kernel
    assert maps.file_watches is not None and maps.connect_kills == ({}, {})
