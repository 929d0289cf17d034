"""Which fold keys userspace has judged quiet once: a fold mark is written only at the second.

A fold mark (`Sensor.mark_quiet`) is a `bpf()` map update, a syscall of about 4 µs on an idle
host and more with many tracers attached, and for most events it is wasted: an exec with
distinct arguments (a compiler run, a build's shell lines, a storm of `tiny 1`, `tiny 2`, ...)
never comes again with the same key, so the mark folds nothing. The kernel's key already says
what "the same" is (cgroup, parent, program, argv hash for an exec; process, destination and
result for a connect), so userspace remembers the keys it judged quiet and marks a key the
second time it is judged quiet: an identical event then costs one more trip to userspace per
key and fold window, a distinct one no syscall at all (issue 22).

Bounded: two generations of `capacity` keys each; when the current one fills, it becomes the
previous one and the older keys are forgotten (a key forgotten before its second sighting is
marked one sighting later). Forgotten on a rule reload with the kernel's own marks.
"""

from __future__ import annotations


class FoldSightings:
    def __init__(self, capacity: int = 8192) -> None:
        self.capacity = capacity
        self._current: set[bytes] = set()
        self._previous: set[bytes] = set()

    def second(self, key: bytes) -> bool:
        """True when `key` was judged quiet before (mark it now); else remember it."""
        if key in self._current or key in self._previous:
            return True
        if len(self._current) >= self.capacity:
            self._previous, self._current = self._current, set()
        self._current.add(key)
        return False

    def clear(self) -> None:
        self._current.clear()
        self._previous.clear()

    def __len__(self) -> int:
        return len(self._current | self._previous)
