"""policy/sightings.py: a fold key is marked in the kernel at its second quiet verdict."""

from __future__ import annotations

import pytest

from roxd.policy.sightings import FoldSightings

pytestmark = pytest.mark.unit


def test_the_second_sighting_marks() -> None:
    s = FoldSightings()
    assert not s.second(b"a")
    assert s.second(b"a") and s.second(b"a")
    assert not s.second(b"b")


def test_bounded_by_two_generations() -> None:
    s = FoldSightings(capacity=4)
    for i in range(4):
        assert not s.second(bytes([i]))
    assert not s.second(b"x")  # the current generation was full: it became the previous
    assert s.second(bytes([0]))  # still remembered there
    for i in range(10, 14):
        s.second(bytes([i]))  # fills the next generation: keys 0..3 are forgotten
    assert not s.second(bytes([1]))
    assert len(s) <= 8


def test_clear_forgets_every_key() -> None:
    s = FoldSightings()
    s.second(b"a")
    s.clear()
    assert not s.second(b"a")
