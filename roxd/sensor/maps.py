"""What the sensor's policy maps hold, as typed values: the contract between roxd/policy/
(which computes them from rules and containers) and the Sensor's map writers (which apply
them to the kernel, touching only what changed). The sensor knows maps, not rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field

GATE_WORDS = 1024  # FILE_GATE_WORDS in bpf/common.h: 65,536 bits, one per pair of bytes
GATE_HEAD_OFF = 1  # file_watch_all[1] bits: a gate switched off (an entry too short for it)
GATE_TAIL_OFF = 2

# exec_kill: {cgroup id or a scope sentinel, FNV-1a of exe path or basename} -> verdict
ExecKillEntries = dict[tuple[int, int], int]
# connect_kill_port / connect_kill_any (LPM tries): {(prefix bits, key bytes)} -> verdict
LpmEntries = dict[tuple[int, bytes], int]


@dataclass
class FileWatchEntries:
    """file_watch_paths, file_watch_names, file_watch_all and file_gate_bits (bpf/file.bpf.c)."""

    paths: dict[bytes, int]  # LPM key bytes -> access mask (shorter prefixes folded in)
    names: dict[int, int]  # FNV-1a of a basename -> access mask
    everything: int  # access mask wanted for every path
    gate_words: dict[int, int] = field(default_factory=dict)  # word index -> bits (non-zero)
    gates_off: int = 0  # GATE_HEAD_OFF | GATE_TAIL_OFF
