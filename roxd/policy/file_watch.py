"""The kernel's file watch maps (bpf/file.bpf.c) computed from a rule set's FileWatchSet.

Three kinds of entry: the LPM trie (exact paths with their NUL, prefixes without), FNV-1a
hashes of basenames, and a mask wanted for every path. Two gates in front of them let the
kernel skip both lookups for nearly every open: the head gate holds the two bytes after the
leading '/' of each trie entry, the tail gate the last two bytes of each watched basename.
A gate is only a shortcut: it may let through a path that matches nothing (the lookups then
decide), and it is switched off whenever an entry is too short to give it two bytes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from roxd.model import FileWatchSet
from roxd.sensor import records
from roxd.sensor.bitwords import has_bit, words_of
from roxd.sensor.maps import GATE_HEAD_OFF, GATE_TAIL_OFF, GATE_WORDS, FileWatchEntries

__all__ = ["GATE_HEAD_OFF", "GATE_TAIL_OFF", "FileWatchEntries", "file_watch_entries",
           "gate_passes"]

log = logging.getLogger(__name__)


def _mask(kinds: Iterable[str]) -> int:
    return sum(records.ACCESS_BITS[k] for k in set(kinds) if k in records.ACCESS_BITS)


HEAD_BASE = 0  # first bit of the head gate in file_gate_bits
TAIL_BASE = GATE_WORDS * 64  # first bit of the tail gate


def _pair_bit(base: int, a: int, b: int) -> int:
    """The gate bit of the byte pair (a, b), as gate_bit() in bpf/file.bpf.c numbers it."""
    return base + (a | (b << 8))


def file_watch_entries(watches: FileWatchSet) -> FileWatchEntries:
    """The BPF map contents for a watch set. Entries that cannot fit the kernel's path buffer
    are left out and logged."""
    limit = records.FILE_PATH_LEN
    prefixes: dict[bytes, int] = {}
    for prefix, kinds in watches.prefixes.items():
        data = prefix.encode()
        if not data.startswith(b"/") or len(data) >= limit:
            log.warning("file watch prefix %r cannot be matched in the kernel", prefix)
            continue
        prefixes[data] = prefixes.get(data, 0) | _mask(kinds)
    paths: dict[bytes, int] = dict(prefixes)
    basenames: dict[bytes, int] = {}
    for path, kinds in watches.exact.items():
        data = path.encode() + b"\0"
        if not data.startswith(b"/") or len(data) > limit:
            log.warning("file watch path %r cannot be matched in the kernel", path)
            continue
        paths[data] = paths.get(data, 0) | _mask(kinds)
        base = path.rpartition("/")[2].encode()
        if base:  # /etc//shadow, ../shadow, `cd /etc; cat shadow`: by name
            basenames[base] = basenames.get(base, 0) | _mask(kinds)
    for name, kinds in watches.basenames.items():
        base = name.encode()
        basenames[base] = basenames.get(base, 0) | _mask(kinds)
    for data in paths:
        for prefix, m in prefixes.items():
            if data != prefix and data.startswith(prefix):
                paths[data] |= m
    names: dict[int, int] = {}
    for base, m in basenames.items():
        h = records.fnv1a(base)
        names[h] = names.get(h, 0) | m
    entries = FileWatchEntries(paths, names, _mask(watches.everything))
    _build_gates(entries, basenames)
    return entries


def _build_gates(entries: FileWatchEntries, basenames: Iterable[bytes]) -> None:
    bits: list[int] = []
    for data in entries.paths:
        if len(data) < 3:  # "/" or "/x": no two bytes after the slash to gate on
            entries.gates_off |= GATE_HEAD_OFF
        else:
            bits.append(_pair_bit(HEAD_BASE, data[1], data[2]))
    for base in basenames:
        if len(base) < 2:
            entries.gates_off |= GATE_TAIL_OFF
        else:
            bits.append(_pair_bit(TAIL_BASE, base[-2], base[-1]))
    entries.gate_words = words_of(bits)


def gate_passes(entries: FileWatchEntries, path: bytes) -> tuple[bool, bool]:
    """(head, tail): whether the kernel's gates let `path` through to the trie and to the
    basename hash, as bpf/file.bpf.c decides it. For tests and for explaining a miss."""
    words = entries.gate_words
    n = len(path) + 1  # with the NUL, as bpf_probe_read_user_str counts
    head = path.startswith(b"/") and (
        n < 4 or bool(entries.gates_off & GATE_HEAD_OFF)
        or has_bit(words, _pair_bit(HEAD_BASE, path[1], path[2])))
    tail = n < 3 or bool(entries.gates_off & GATE_TAIL_OFF) or has_bit(
        words, _pair_bit(TAIL_BASE, path[-2], path[-1]))
    return head, tail
