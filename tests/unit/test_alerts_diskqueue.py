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
