"""The learned elements of one baseline (executables or network elements), stored compactly.

1,000 workloads x 100 elements are 100,000 elements. As one slotted object each, with its three
integers as Python ints (first seen, last seen, count: 32-40 bytes apiece), they cost about 320
bytes per element with the name and its dict slot (bench/netenf.py). Here an element is its
name in a sorted list, three 64-bit slots in an array, and (executables only) a pointer to a
shared tuple of parents: about 140 bytes with the name (bench/netenf.py).

Elements are only ever added (an import replaces a whole baseline).
`LearnedProcess` is the value the engine hands out and persists: a snapshot, not a view.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

_PARENTS: dict[tuple[str, ...], tuple[str, ...]] = {}


def intern_parents(parents: tuple[str, ...]) -> tuple[str, ...]:
    """One shared tuple per distinct set of parents: most executables of most workloads have
    the same one or two (a shell, the entrypoint), so 100,000 elements share a few tuples."""
    if len(_PARENTS) >= 16384:  # bounded: start over (the old tuples stay valid)
        _PARENTS.clear()
    return _PARENTS.setdefault(parents, parents)


@dataclass(slots=True)
class LearnedProcess:
    """One learned executable or network element, as handed out and persisted."""

    first_ns: int
    last_ns: int
    count: int = 1
    parents: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"first_ns": self.first_ns, "last_ns": self.last_ns, "count": self.count,
                "parents": sorted(self.parents)}


class Elements:
    """name -> (first_ns, last_ns, count, parents), kept sorted by name. Iterates over the
    names. A sorted list and bisect instead of a dict: a dict of 50 names is 2.2 KB (its
    table grows to 128 slots), the list 0.5 KB; a lookup is ~9 string compares at the
    512-element cap, and adding (rare: each element once) shifts the arrays."""

    __slots__ = ("_names", "_nums", "_parents")

    def __init__(self, records: Iterable[tuple[str, LearnedProcess]] = ()) -> None:
        self._names: list[str] = []
        self._nums = array("q")  # first_ns, last_ns, count of element i at 3i, 3i+1, 3i+2
        self._parents: list[tuple[str, ...]] | None = None  # made by the first parent
        for name, record in records:
            self.add(name, record)

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._find(name) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Elements):
            return NotImplemented
        return list(self.items()) == list(other.items())

    def __repr__(self) -> str:
        return f"Elements({dict(self.items())!r})"

    def _find(self, name: str) -> int | None:
        names = self._names
        i = bisect_left(names, name)
        return i if i < len(names) and names[i] == name else None

    def add(self, name: str, record: LearnedProcess) -> None:
        """Learn `name` (replacing what was learned of it)."""
        values = (record.first_ns, record.last_ns, record.count)
        if not all(-2**63 <= v < 2**63 for v in values):
            raise ValueError(f"{name!r}: first_ns, last_ns and count must fit 64 bits")
        names = self._names
        i = bisect_left(names, name)
        if i < len(names) and names[i] == name:
            self._nums[3 * i:3 * i + 3] = array("q", values)
            if record.parents or self._parents is not None:
                self._parents_list()[i] = record.parents
            return
        names.insert(i, name)
        self._nums[3 * i:3 * i] = array("q", values)
        if self._parents is not None:
            self._parents.insert(i, record.parents)
        elif record.parents:
            self._parents_list()[i] = record.parents

    def seen(self, name: str, now: int, n: int = 1) -> int:
        """One more sighting of a learned element (last seen, count): its index, for
        parents_at(); -1 if it is not learned. One bisect: this is on every exec's path."""
        names = self._names
        i = bisect_left(names, name)
        if i == len(names) or names[i] != name:
            return -1
        nums = self._nums
        nums[3 * i + 1] = now
        nums[3 * i + 2] += n
        return i

    def parents_at(self, i: int) -> tuple[str, ...]:
        return self._parents[i] if self._parents is not None else ()

    def set_parents_at(self, i: int, parents: tuple[str, ...]) -> None:
        self._parents_list()[i] = parents

    def parents(self, name: str) -> tuple[str, ...]:
        i = self._find(name)
        if i is None:
            raise KeyError(name)
        return self._parents[i] if self._parents is not None else ()

    def set_parents(self, name: str, parents: tuple[str, ...]) -> None:
        i = self._find(name)
        if i is None:
            raise KeyError(name)
        self._parents_list()[i] = parents

    def get(self, name: str) -> LearnedProcess | None:
        i = self._find(name)
        return None if i is None else self._record(i)

    def items(self) -> Iterator[tuple[str, LearnedProcess]]:
        for i, name in enumerate(self._names):
            yield name, self._record(i)

    def _parents_list(self) -> list[tuple[str, ...]]:
        if self._parents is None:
            self._parents = [()] * len(self._names)
        return self._parents

    def _record(self, i: int) -> LearnedProcess:
        nums = self._nums
        return LearnedProcess(nums[3 * i], nums[3 * i + 1], nums[3 * i + 2],
                              self._parents[i] if self._parents is not None else ())
