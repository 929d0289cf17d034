"""The in-kernel exec kill table: rule specs x known containers → BPF map entries.

Keys are {cgroup id, FNV-1a hash of the exe path or basename}, or a scope sentinel in place of
the cgroup id: SCOPE_HOST for host processes, SCOPE_ANY_CONTAINER for rules that hold in every
container whatever its image (these also cover containers that start between two refreshes).
A rule scoped to some images gets one entry per matching container's cgroup. Values are rule
slots (1-based); `slots` maps them back to rule ids so the kill is reported against its rule.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from roxd.model import Container
from roxd.sensor.records import SCOPE_ANY_CONTAINER, SCOPE_HOST, fnv1a


class ExecKillSpec(Protocol):
    rule_id: str
    exe_paths: frozenset[str]
    exe_basenames: frozenset[str]
    scope: Any  # has matches_container(container | None) -> bool


@dataclass(frozen=True)
class KillTable:
    entries: dict[tuple[int, int], int]
    slots: dict[int, str]


def _hashes(spec: ExecKillSpec) -> list[int]:
    return [fnv1a(p.encode()) for p in spec.exe_paths] + [
        fnv1a(b.encode()) for b in spec.exe_basenames
    ]


def _any_container(scope: Any) -> bool:
    """True when the scope holds in every container, whatever its image, name or labels."""
    probe = getattr(scope, "matches_any_container", None)
    return bool(probe()) if callable(probe) else False


def _targets(scope: Any, containers: list[tuple[int, Container]]) -> list[int]:
    """Map keys a rule's scope needs: the host sentinel, the any-container sentinel, or the
    cgroup ids of the containers it admits."""
    targets: list[int] = []
    if scope.matches_container(None):
        targets.append(SCOPE_HOST)
    if _any_container(scope):
        targets.append(SCOPE_ANY_CONTAINER)
    else:
        targets.extend(cg for cg, c in containers if scope.matches_container(c))
    return targets


def build_exec_kill_table(
    specs: Sequence[ExecKillSpec], containers: Iterable[tuple[int, Container]]
) -> KillTable:
    containers = list(containers)
    entries: dict[tuple[int, int], int] = {}
    slots: dict[int, str] = {}
    for slot, spec in enumerate(specs, start=1):
        slots[slot] = spec.rule_id
        hashes = _hashes(spec)
        targets = _targets(spec.scope, containers)
        for target in targets:
            for h in hashes:
                entries.setdefault((target, h), slot)  # first rule wins a shared key
    return KillTable(entries, slots)


class ConnectKillSpec(Protocol):
    rule_id: str
    ports: frozenset[int] | None
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] | None
    scope: Any


# LPM trie entries: (prefix length in bits, key data bytes) -> rule slot
LpmEntries = dict[tuple[int, bytes], int]


@dataclass(frozen=True)
class ConnectKillTable:
    by_port: LpmEntries  # connect_kill_port: scope(8) + port(2, big endian) + address(16)
    any_port: LpmEntries  # connect_kill_any: scope(8) + address(16)
    slots: dict[int, str]


_ANY_V6 = (ipaddress.ip_network("::/0"),)


def _v6(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> tuple[bytes, int]:
    """An IPv4 network as its v4-mapped IPv6 prefix, as the kernel stores addresses."""
    if net.version == 4:
        return b"\0" * 10 + b"\xff\xff" + net.network_address.packed, 96 + net.prefixlen
    return net.network_address.packed, net.prefixlen


def build_connect_kill_table(
    specs: Sequence[ConnectKillSpec], containers: Iterable[tuple[int, Container]]
) -> ConnectKillTable:
    containers = list(containers)
    by_port: LpmEntries = {}
    any_port: LpmEntries = {}
    slots: dict[int, str] = {}
    for slot, spec in enumerate(specs, start=1):
        slots[slot] = spec.rule_id
        targets = _targets(spec.scope, containers)
        networks = spec.networks if spec.networks is not None else _ANY_V6
        for target in targets:
            scope = struct.pack("<Q", target)
            for net in networks:
                addr, bits = _v6(net)
                if spec.ports is None:
                    any_port.setdefault((64 + bits, scope + addr), slot)
                    continue
                for port in spec.ports:
                    key = (64 + 16 + bits, scope + struct.pack(">H", port) + addr)
                    by_port.setdefault(key, slot)
    return ConnectKillTable(by_port, any_port, slots)
