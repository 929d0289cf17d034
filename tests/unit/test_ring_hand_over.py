"""The sensor hands a read's records over after the read (Sensor._hand_over), not from inside
bcc's callback: in the kernel's order, every one, with a failing handler counted and the rest
still delivered; an exec whose process's exit comes later in the same read is `exited` (the
drift check then skips /proc, where nothing of the process is left)."""

from __future__ import annotations

import ctypes as ct

import pytest

from roxd.model import ExecEvent, ExitEvent
from roxd.sensor import records
from roxd.sensor.program import Sensor, SensorConfig, _mark_exited
from roxd.sensor.records import Decoded

pytestmark = pytest.mark.unit


def exec_record(pid: int, arg: str) -> bytes:
    rec = records.ExecRecord()
    rec.h.type, rec.h.pid, rec.h.cgroup_id, rec.h.ktime_ns = records.REC_EXEC, pid, 7, 10
    rec.h.comm = b"tiny"
    rec.filename = b"/bench/tiny"
    argv = b"/bench/tiny\0" + arg.encode() + b"\0"
    ct.memmove(ct.addressof(rec) + records.ExecRecord.args.offset, argv, len(argv))
    rec.args_len, rec.args_captured = len(argv), 1
    return bytes(rec)[: records.ExecRecord.args.offset + len(argv)]


def exit_record(pid: int) -> bytes:
    rec = records.ExitRecord()
    rec.h.type, rec.h.pid, rec.h.cgroup_id, rec.h.ktime_ns = records.REC_EXIT, pid, 7, 20
    return bytes(rec)


class Ring:
    """bcc's ring-buffer calls: each read hands `queue`'s records to the callback."""

    def __init__(self, sensor: Sensor, handled: list[Decoded]) -> None:
        self.sensor = sensor
        self.handled = handled  # what the sensor's handler has been given so far
        self.queue: list[bytes] = []
        self.handled_during_read: list[int] = []

    def ring_buffer_consume(self) -> None:
        for raw in self.queue:
            buf = ct.create_string_buffer(raw, len(raw))
            self.sensor._ring_callback(None, ct.addressof(buf), len(raw))
            self.handled_during_read.append(len(self.handled))
        self.queue = []

    def ring_buffer_poll(self, _timeout_ms: int) -> None:
        self.ring_buffer_consume()


def sensor_with(handler, handled: list[Decoded] | None = None) -> tuple[Sensor, Ring]:
    sensor = Sensor(SensorConfig(ring_batch_ms=20, ring_linger_ms=0), handler)
    ring = Ring(sensor, handled if handled is not None else [])
    sensor._bpf = ring
    sensor._consumer_flag = bytearray(8)  # type: ignore[assignment]
    return sensor, ring


def test_a_read_is_handed_over_after_it_in_order_with_exits_marked() -> None:
    handled: list[Decoded] = []
    sensor, ring = sensor_with(handled.append, handled)
    # 41 exec'd and exited; 42's exit belongs to an earlier process (before its exec);
    # 43 is still running at the end of the read
    ring.queue = [exec_record(41, "a"), exit_record(42), exec_record(42, "b"),
                  exec_record(43, "c"), exit_record(41)]
    sensor.poll(100)
    assert ring.handled_during_read == [0] * 5  # nothing handed over inside bcc's callback
    assert [(type(d.event), d.event.pid) for d in handled] == [
        (ExecEvent, 41), (ExitEvent, 42), (ExecEvent, 42), (ExecEvent, 43), (ExitEvent, 41)]
    assert [d.exited for d in handled] == [True, False, False, False, False]
    assert handled[0].event.args == ("/bench/tiny", "a")  # the rest of the record as decoded
    assert handled[0].fold_key == records.decode(exec_record(41, "a"), 0).fold_key
    ring.queue = [exit_record(43)]  # its exit in a later read: nothing to mark any more
    sensor.poll(100)
    assert [d.exited for d in handled] == [True, False, False, False, False, False]


def test_a_failing_handler_loses_no_other_record(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[int] = []

    def handler(decoded: Decoded) -> None:
        seen.append(decoded.event.pid)
        if decoded.event.pid == 2:
            raise RuntimeError("boom")

    sensor, ring = sensor_with(handler)
    ring.queue = [exec_record(1, "x"), exec_record(2, "y"), b"\0" * 8, exec_record(3, "z")]
    sensor.poll(100)
    assert seen == [1, 2, 3]
    stats = sensor._callback_errors, sensor._decode_errors
    assert stats == (1, 1)  # the handler's failure and the undecodable record, each counted
    assert "event handler failed" in caplog.text


def test_drain_hands_over_what_it_read() -> None:
    handled: list[Decoded] = []
    sensor, ring = sensor_with(handled.append)
    ring.queue = [exec_record(5, "x"), exit_record(5)]
    sensor.drain()
    assert [d.exited for d in handled] == [True, False]


def test_re_exec_and_reused_pids() -> None:
    """A process that exec'd twice and then exited: both execs are exited. A pid reused
    within the read: the first process's exec is exited, the second's only if its own exit
    follows it."""
    def ex(pid: int) -> Decoded:
        return records.decode(exec_record(pid, "a"), 0)

    def ext(pid: int) -> Decoded:
        return records.decode(exit_record(pid), 0)

    read = [ex(7), ex(7), ext(7), ex(8), ext(8), ex(8), ex(9)]
    _mark_exited(read)
    assert [d.exited for d in read] == [True, True, False, True, False, False, False]
    alone = [ex(7)]
    _mark_exited(alone)
    assert alone[0].exited is False
