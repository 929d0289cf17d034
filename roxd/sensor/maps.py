"""What the sensor's policy maps hold, as typed values: the contract between roxd/policy/
(which computes them from rules and containers) and the Sensor's map writers (which apply
them to the kernel, touching only what changed). The sensor knows maps, not rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# mirrored from bpf/common.h in records.py (checked there): 65,536 gate bits, one per pair of
# bytes; file_watch_all[1] bits saying a gate is switched off (an entry too short for it)
from roxd.sensor.records import FILE_GATE_WORDS as GATE_WORDS
from roxd.sensor.records import GATE_HEAD_OFF, GATE_TAIL_OFF

__all__ = ["GATE_HEAD_OFF", "GATE_TAIL_OFF", "GATE_WORDS", "BaselineAllow", "BaselineCgroups",
           "ExecKillEntries", "FileWatchEntries", "LpmEntries"]

# exec_kill: {cgroup id or a scope sentinel, FNV-1a of exe path or basename} -> verdict
ExecKillEntries = dict[tuple[int, int], int]
# connect_kill_port / connect_kill_any (LPM tries): {(prefix bits, key bytes)} -> verdict
LpmEntries = dict[tuple[int, bytes], int]
# baseline_cgroups: cgroup id -> (workload number, verdict); baseline_allow: {(workload
# number, FNV-1a of the exe path as executed)}
BaselineCgroups = dict[int, tuple[int, int]]
BaselineAllow = set[tuple[int, int]]


@dataclass
class FileWatchEntries:
    """file_watch_paths, file_watch_names, file_watch_all and file_gate_bits (bpf/file.bpf.c)."""

    paths: dict[bytes, int]  # LPM key bytes -> access mask (shorter prefixes folded in)
    names: dict[int, int]  # FNV-1a of a basename -> access mask
    everything: int  # access mask wanted for every path
    gate_words: dict[int, int] = field(default_factory=dict)  # word index -> bits (non-zero)
    gates_off: int = 0  # GATE_HEAD_OFF | GATE_TAIL_OFF
