"""Bit sets as 64-bit words, the layout of the BPF u64 arrays roxd's programs test bits in
(word = bit >> 6, mask = 1 << (bit & 63)): the file watch gates, the seccomp cgroup gate and
the seccomp syscall bitmaps. Sparse: {word index: word}, non-zero words only."""

from __future__ import annotations

import ctypes as ct
from collections.abc import Iterable, Mapping
from typing import Any


def words_of(bits: Iterable[int]) -> dict[int, int]:
    words: dict[int, int] = {}
    for bit in bits:
        words[bit >> 6] = words.get(bit >> 6, 0) | (1 << (bit & 63))
    return words


def has_bit(words: Mapping[int, int], bit: int) -> bool:
    return bool(words.get(bit >> 6, 0) >> (bit & 63) & 1)


def merged(a: Mapping[int, int], b: Mapping[int, int]) -> dict[int, int]:
    """The union of two bit sets."""
    return {i: a.get(i, 0) | b.get(i, 0) for i in set(a) | set(b)}


def read_words(table: Any) -> dict[int, int]:
    """The non-zero words of a bcc BPF array of u64."""
    return {int(k.value): int(v.value) for k, v in table.items() if v.value}


def write_words(table: Any, words: Mapping[int, int], current: Mapping[int, int]) -> None:
    """Make a bcc BPF array of u64 hold `words`, given that it holds `current`: only words that
    differ are written (a word only in `current` is cleared)."""
    for i in sorted(set(words) | set(current)):
        if words.get(i, 0) != current.get(i, 0):
            table[ct.c_int(i)] = ct.c_uint64(words.get(i, 0))
