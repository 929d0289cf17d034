"""In-kernel kill tables: rule specs x known containers -> BPF map entries, and back.

Exec keys are {cgroup id, FNV-1a hash of the exe path or basename}, or a scope sentinel in
place of the cgroup id: SCOPE_HOST for host processes, SCOPE_ANY_CONTAINER for rules that hold
in every container whatever its image (these also cover containers that start between two
refreshes). A rule scoped to some images gets one entry per matching container's cgroup.
Host kills are opt-in (`host=False`, the default of [enforce] host_kills): then no SCOPE_HOST
entry is built, and a rule whose scope admits the host kills in containers only. With host
kills on, a host entry is still never built for an exe that names a protected process
(`protected`: e.g. a rule killing `sshd` kills it in containers, never the host's daemon).

Values are *verdicts*: a versioned rule slot. The kernel copies the verdict into the record of
the process it killed, and records can still be in the ring buffer after a reload renumbered
the rules; so a verdict carries the generation of the rule set it came from (high bits) and
the rule's index in that generation (low bits), and RuleSlots of recent generations are kept
to name the rule that really killed.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import struct
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from roxd.model import Container
from roxd.rules.ruleset import ConnectKillSpec, ContainerGate, ExecKillSpec
from roxd.sensor.maps import BaselineAllow, BaselineCgroups, ExecKillEntries, LpmEntries
from roxd.sensor.records import SCOPE_ANY_CONTAINER, SCOPE_HOST, fnv1a

INDEX_BITS = 20  # up to a million kill rules per rule set
GENERATION_BITS = 32 - INDEX_BITS  # 4,095 generations before the counter wraps
_INDEX_MASK = (1 << INDEX_BITS) - 1
_GENERATION_MASK = (1 << GENERATION_BITS) - 1


def verdict(generation: int, index: int) -> int:
    """The u32 the kernel stores for a rule: never 0 (0 means "no kill")."""
    if not 1 <= index <= _INDEX_MASK:
        raise ValueError(f"rule index {index} out of range")
    return (generation & _GENERATION_MASK) << INDEX_BITS | index


def split_verdict(value: int) -> tuple[int, int]:
    """(generation, index) of a verdict."""
    return value >> INDEX_BITS & _GENERATION_MASK, value & _INDEX_MASK


@dataclass(frozen=True)
class RuleSlots:
    """The verdict of each kill rule of one rule-set generation."""

    generation: int
    rule_ids: tuple[str, ...]  # index - 1 -> rule id

    @classmethod
    def number(cls, generation: int, rule_ids: Iterable[str]) -> RuleSlots:
        return cls(generation & _GENERATION_MASK or 1, tuple(dict.fromkeys(rule_ids)))

    def verdict_of(self, rule_id: str) -> int:
        return verdict(self.generation, self.rule_ids.index(rule_id) + 1)

    def rule_of(self, index: int) -> str | None:
        return self.rule_ids[index - 1] if 1 <= index <= len(self.rule_ids) else None


def targets(gate: ContainerGate, containers: Sequence[tuple[int, Container]], *,
            host: bool = False) -> list[int]:
    """Map keys a rule's scope needs: the host sentinel (only with host kills on), the
    any-container sentinel, or the cgroup ids of the containers it admits."""
    found: list[int] = []
    if host and gate.matches_container(None):
        found.append(SCOPE_HOST)
    if gate.matches_any_container():
        found.append(SCOPE_ANY_CONTAINER)
    else:
        found.extend(cg for cg, c in containers if gate.matches_container(c))
    return found


@dataclass(frozen=True)
class ExecKillTable:
    entries: ExecKillEntries

    def lookup(self, cgroup_id: int, is_container: bool, path: str) -> int:
        """The verdict the kernel would reach for an exec of `path` in `cgroup_id`, in the
        order of kill_lookup() in bpf/process.bpf.c: the cgroup's own entries, then the
        scope sentinel; within each, the full path before the basename. 0: no kill."""
        path_hash = fnv1a(path.encode())
        base_hash = fnv1a(path.rpartition("/")[2].encode())
        scope = SCOPE_ANY_CONTAINER if is_container else SCOPE_HOST
        for key in (cgroup_id, scope):
            for h in (path_hash, base_hash):
                found = self.entries.get((key, h))
                if found:
                    return found
        return 0


def protected_exe(name: str, comms: Sequence[str], exes: Sequence[str]) -> bool:
    """Whether an exe path or basename a kill rule names is a protected process's: its
    basename as a comm (the kernel's comm is the basename's first 15 characters), or the
    path itself as an exe."""
    base = name.rpartition("/")[2]
    return (any(fnmatch.fnmatchcase(base, p) or fnmatch.fnmatchcase(base[:15], p)
                for p in comms)
            or ("/" in name and any(fnmatch.fnmatchcase(name, p) for p in exes)))


def build_exec_kill_table(specs: Sequence[ExecKillSpec],
                          containers: Iterable[tuple[int, Container]],
                          slots: RuleSlots, *, host: bool = False,
                          protected_comms: Sequence[str] = (),
                          protected_exes: Sequence[str] = ()) -> ExecKillTable:
    containers = list(containers)
    entries: ExecKillEntries = {}
    for spec in specs:
        value = slots.verdict_of(spec.rule_id)
        names = [*spec.exe_paths, *spec.exe_basenames]
        host_names = [n for n in names
                      if not protected_exe(n, protected_comms, protected_exes)]
        for target in targets(spec.scope, containers, host=host):
            for name in host_names if target == SCOPE_HOST else names:
                entries.setdefault((target, fnv1a(name.encode())), value)  # first rule wins
    return ExecKillTable(entries)


@dataclass(frozen=True)
class ConnectKillTable:
    by_port: LpmEntries  # connect_kill_port: scope(8) + port(2, big endian) + address(16)
    any_port: LpmEntries  # connect_kill_any: scope(8) + address(16)


_ANY_V6 = (ipaddress.ip_network("::/0"),)


def _v6(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> tuple[bytes, int]:
    """An IPv4 network as its v4-mapped IPv6 prefix, as the kernel stores addresses."""
    if net.version == 4:
        return b"\0" * 10 + b"\xff\xff" + net.network_address.packed, 96 + net.prefixlen
    return net.network_address.packed, net.prefixlen


def build_connect_kill_table(specs: Sequence[ConnectKillSpec],
                             containers: Iterable[tuple[int, Container]],
                             slots: RuleSlots, *, host: bool = False) -> ConnectKillTable:
    containers = list(containers)
    by_port: LpmEntries = {}
    any_port: LpmEntries = {}
    for spec in specs:
        value = slots.verdict_of(spec.rule_id)
        networks = spec.networks if spec.networks is not None else _ANY_V6
        for target in targets(spec.scope, containers, host=host):
            scope = struct.pack("<Q", target)
            for net in networks:
                addr, bits = _v6(net)
                if spec.ports is None:
                    any_port.setdefault((64 + bits, scope + addr), value)
                    continue
                for port in spec.ports:
                    key = (64 + 16 + bits, scope + struct.pack(">H", port) + addr)
                    by_port.setdefault(key, value)
    return ConnectKillTable(by_port, any_port)


# The name the kernel's baseline verdict carries in the slot table: an exec the kernel killed
# because it is not in its workload's locked baseline (bpf/process.bpf.c, baseline_cgroups).
BASELINE_VERDICT = "baseline.enforce"


@dataclass(frozen=True)
class BaselineTable:
    """What the kernel's baseline maps hold, kept to decide held execs as the kernel would.
    The allow-list is kept per workload number as a sorted array of 64-bit path hashes (8
    bytes an entry; a set of (number, hash) tuples was about 130): the kernel's own map is
    what `set_baselines` diffs against, `entries()` makes the set only while it writes."""

    cgroups: BaselineCgroups
    hashes: Mapping[int, array] = field(default_factory=dict)  # workload number -> hashes

    @property
    def allow_entries(self) -> int:
        return sum(len(h) for h in self.hashes.values())

    def entries(self) -> BaselineAllow:
        """The allow-list as the kernel map's keys: {(workload number, path hash)}."""
        return {(number, h) for number, hashes in self.hashes.items() for h in hashes}

    def allows(self, workload: int, path_hash: int) -> bool:
        hashes = self.hashes.get(workload)
        if not hashes:
            return False
        i = bisect_left(hashes, path_hash)
        return i < len(hashes) and hashes[i] == path_hash

    def lookup(self, cgroup_id: int, path: str) -> int:
        """The verdict the kernel would reach for an exec of `path` in `cgroup_id`: 0 unless
        the cgroup's workload enforces and the path is not in its baseline."""
        entry = self.cgroups.get(cgroup_id)
        if entry is None:
            return 0
        workload, value = entry
        return 0 if self.allows(workload, fnv1a(path.encode())) else value


def build_baseline_table(enforcing: Mapping[str, Iterable[str]],
                         workload_of: Callable[[Container], str],
                         containers: Iterable[tuple[int, Container]],
                         numbers: dict[str, int], verdict_value: int) -> BaselineTable:
    """Allow entries for each enforcing workload's learned paths, and its containers' cgroups.
    `numbers` keeps each workload's number stable for roxd's lifetime (grown here)."""
    cgroups: BaselineCgroups = {}
    hashes: dict[int, array] = {}
    if not enforcing or not verdict_value:
        return BaselineTable(cgroups, hashes)
    for key, paths in enforcing.items():
        number = numbers.setdefault(key, len(numbers) + 1)
        hashes[number] = array("Q", sorted({fnv1a(p.encode()) for p in paths}))
    for cg, container in containers:
        key = workload_of(container)
        if key in enforcing:
            cgroups[cg] = (numbers[key], verdict_value)
    return BaselineTable(cgroups, hashes)
