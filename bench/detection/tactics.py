"""ATT&CK technique -> tactics, tactic -> roxd phase.

Atomic Red Team's YAML names the technique but not the tactic, so this table gives the
tactics ATT&CK lists for each technique with a Linux sh/bash atomic test (first = primary, the
one the per-tactic table counts under). A test scores "in the mapped phase" when one of its
alerts has the phase of any of its technique's tactics: ATT&CK files cron under execution,
persistence and privilege escalation alike, and an alert of any of them is right.

Phases follow issue 21: initial access and execution -> foothold; privilege escalation and
credential access -> privilege_escalation; persistence; remote discovery and lateral movement
-> lateral_movement; impact, collection, exfiltration, command and control, log/history
clearing and defence impairment -> objectives; other discovery -> "discovery", reported apart.
Defence evasion is split: clearing and impairing (T1070, T1562, T1685, T1686, T1690, T1014) ->
objectives; the rest (obfuscation, masquerading, permission changes, decoding) serves getting
code to run -> foothold (our choice; the issue does not place it).
"""

from __future__ import annotations

# tactic short names as ATT&CK spells them
TACTICS = ("reconnaissance", "initial-access", "execution", "persistence", "privilege-escalation",
           "defense-evasion", "credential-access", "discovery", "lateral-movement",
           "collection", "command-and-control", "exfiltration", "impact")

_IA, _EX, _PE, _PR = "initial-access", "execution", "persistence", "privilege-escalation"
_DE, _CA, _DI, _LM = "defense-evasion", "credential-access", "discovery", "lateral-movement"
_CO, _C2, _XF, _IM = "collection", "command-and-control", "exfiltration", "impact"

TECHNIQUE_TACTICS: dict[str, tuple[str, ...]] = {
    "T1001.002": (_C2,),
    "T1003.007": (_CA,),
    "T1003.008": (_CA,),
    "T1005": (_CO,),
    "T1007": (_DI,),
    "T1014": (_DE,),
    "T1016": (_DI,),
    "T1016.001": (_DI,),
    "T1018": (_DI,),
    "T1027": (_DE,),
    "T1027.001": (_DE,),
    "T1027.002": (_DE,),
    "T1027.004": (_DE,),
    "T1027.013": (_DE,),
    "T1030": (_XF,),
    "T1033": (_DI,),
    "T1036.003": (_DE,),
    "T1036.004": (_DE,),
    "T1036.005": (_DE,),
    "T1036.006": (_DE,),
    "T1036.007": (_DE,),
    "T1036.008": (_DE,),
    "T1037.004": (_PE, _PR),
    "T1040": (_CA, _DI),
    "T1046": (_DI,),
    "T1048": (_XF,),
    "T1048.002": (_XF,),
    "T1048.003": (_XF,),
    "T1049": (_DI,),
    "T1053.002": (_EX, _PE, _PR),
    "T1053.003": (_EX, _PE, _PR),
    "T1053.006": (_EX, _PE, _PR),
    "T1055.009": (_DE, _PR),
    "T1056.001": (_CO, _CA),
    "T1057": (_DI,),
    "T1059.004": (_EX,),
    "T1059.006": (_EX,),
    "T1069.001": (_DI,),
    "T1069.002": (_DI,),
    "T1070.003": (_DE,),
    "T1070.004": (_DE,),
    "T1070.006": (_DE,),
    "T1070.008": (_DE,),
    "T1071.001": (_C2,),
    "T1074.001": (_CO,),
    "T1078.003": (_DE, _PE, _PR, _IA),
    "T1082": (_DI,),
    "T1083": (_DI,),
    "T1087.001": (_DI,),
    "T1087.002": (_DI,),
    "T1090.001": (_C2,),
    "T1090.003": (_C2,),
    "T1098.004": (_PE, _PR),
    "T1102.002": (_C2,),
    "T1095": (_C2,),
    "T1105": (_C2,),
    "T1110.001": (_CA,),
    "T1110.004": (_CA,),
    "T1113": (_CO,),
    "T1115": (_CO,),
    "T1124": (_DI,),
    "T1132.001": (_C2,),
    "T1135": (_DI,),
    "T1136.001": (_PE,),
    "T1136.002": (_PE,),
    "T1140": (_DE,),
    "T1176": (_PE,),
    "T1195.002": (_IA,),
    "T1201": (_DI,),
    "T1217": (_DI,),
    "T1222.002": (_DE,),
    "T1485": (_IM,),
    "T1486": (_IM,),
    "T1489": (_IM,),
    "T1496": (_IM,),
    "T1497.001": (_DE, _DI),
    "T1497.003": (_DE, _DI),
    "T1518.001": (_DI,),
    "T1529": (_IM,),
    "T1531": (_IM,),
    "T1543.002": (_PE, _PR),
    "T1546.004": (_PE, _PR),
    "T1546.005": (_PE, _PR),
    "T1546.018": (_PE, _PR),
    "T1547.006": (_PE, _PR),
    "T1548.001": (_PR, _DE),
    "T1548.003": (_PR, _DE),
    "T1552": (_CA,),
    "T1552.001": (_CA,),
    "T1552.003": (_CA,),
    "T1552.004": (_CA,),
    "T1552.005": (_CA,),
    "T1552.007": (_CA,),
    "T1553.004": (_DE,),
    "T1555.003": (_CA,),
    "T1556.003": (_CA, _DE, _PE),
    "T1560.001": (_CO,),
    "T1560.002": (_CO,),
    "T1564.001": (_DE,),
    "T1567.002": (_XF,),
    "T1567.004": (_XF,),
    "T1568.002": (_C2,),
    "T1569.002": (_EX,),
    "T1569.003": (_EX,),
    "T1571": (_C2,),
    "T1572": (_C2,),
    "T1574.006": (_PE, _PR, _DE),
    "T1578.002": (_DE,),
    "T1580": (_DI,),
    "T1614": (_DI,),
    "T1614.001": (_DI,),
    "T1595.003": ("reconnaissance",),
    "T1652": (_DI,),
    "T1659": (_IA, _C2),
    "T1685": (_DE,),
    "T1685.002": (_DE,),
    "T1685.004": (_DE,),
    "T1685.006": (_DE,),
    "T1686": (_DE,),
    "T1689": (_DE,),
    "T1690": (_DE,),
}

# discovery of other hosts, not of this one: lateral movement's reconnaissance
REMOTE_DISCOVERY = frozenset({"T1018", "T1046", "T1135"})
# defence evasion that clears traces or impairs defences: an attacker's objective
CLEAR_OR_IMPAIR = ("T1070", "T1562", "T1685", "T1686", "T1689", "T1690", "T1014")

PHASES = ("foothold", "privilege_escalation", "persistence", "lateral_movement", "objectives",
          "discovery")

_TACTIC_PHASE = {
    "reconnaissance": "lateral_movement",  # scanning other hosts, as remote discovery
    _IA: "foothold", _EX: "foothold",
    _PR: "privilege_escalation", _CA: "privilege_escalation",
    _PE: "persistence",
    _LM: "lateral_movement",
    _IM: "objectives", _CO: "objectives", _XF: "objectives", _C2: "objectives",
}


class UnknownTechnique(KeyError):
    """A technique the table does not know: add it (with ATT&CK's tactics) to TECHNIQUE_TACTICS."""


def tactics_of(technique: str) -> tuple[str, ...]:
    try:
        return TECHNIQUE_TACTICS[technique]
    except KeyError:
        raise UnknownTechnique(
            f"technique {technique} has no tactic in bench/detection/tactics.py") from None


def phase_of(technique: str, tactic: str) -> str:
    """The roxd phase an alert for `technique` under `tactic` should carry."""
    if tactic == _DI:
        return "lateral_movement" if technique in REMOTE_DISCOVERY else "discovery"
    if tactic == _DE:
        if technique.startswith(CLEAR_OR_IMPAIR):
            return "objectives"
        return "foothold"
    return _TACTIC_PHASE[tactic]


def phases_of(technique: str) -> tuple[str, ...]:
    """Every phase an alert may carry for the technique, the primary tactic's first."""
    out: list[str] = []
    for tactic in tactics_of(technique):
        phase = phase_of(technique, tactic)
        if phase not in out:
            out.append(phase)
    return tuple(out)
