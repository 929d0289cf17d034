"""The syslog disk queue: FIFO, bounded (oldest dropped and counted), durable across reopen."""

from __future__ import annotations

from pathlib import Path

import pytest

from roxd.alerts.diskqueue import DiskQueue

pytestmark = pytest.mark.unit


def test_fifo_bound_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    q = DiskQueue(path, max_items=5)
    assert q.push([(i, b"m%d" % i) for i in range(3)]) == 0
    assert q.push([(i, b"m%d" % i) for i in range(3, 8)]) == 3  # m0..m2 dropped
    assert len(q) == 5
    rows = q.peek(2)
    assert [m for _, m in rows] == [b"m3", b"m4"]
    q.remove_through(rows[-1][0])
    q.close()
    q = DiskQueue(path, max_items=5)
    assert len(q) == 3
    assert [m for _, m in q.peek(10)] == [b"m5", b"m6", b"m7"]
    q.close()


def test_bounded_in_bytes_drops_the_oldest_and_keeps_the_count_across_reopen(
        tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    q = DiskQueue(path, max_items=100, max_bytes=25)
    assert q.push([(i, b"%09d" % i) for i in range(2)]) == 0  # 18 bytes
    assert q.push([(2, b"%09d" % 2)]) == 1  # 27 > 25: the oldest goes
    assert (len(q), q.size_bytes) == (2, 18)
    assert [m for _, m in q.peek(5)] == [b"000000001", b"000000002"]
    assert q.push([(3, b"x" * 40)]) == 2  # larger than the bound alone: still kept
    assert (len(q), q.size_bytes) == (1, 40)
    q.remove_through(q.peek(1)[0][0])
    assert (len(q), q.size_bytes) == (0, 0)
    q.push([(4, b"abc")])
    q.close()
    q = DiskQueue(path, max_items=100, max_bytes=25)
    assert (len(q), q.size_bytes) == (1, 3)
    q.close()
