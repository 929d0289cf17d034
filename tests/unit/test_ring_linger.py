"""The linger after a read (Sensor._linger, [sensor] ring_linger_ms): in a storm (reads of two
records or more that come within ring_linger_ms of each other) the consumer stays "awake" for
ring_linger_ms and reads again, so records the kernel writes meanwhile (told by the flag that
nobody sleeps) need no wake-up and a storm is read in batches. It must never sleep while
saying it is awake, nor linger after a read that found nothing, nor delay the first record
after a quiet spell, nor linger after reads that come further apart than a linger is long
(an exec and its exit every few milliseconds: the linger would find nothing and cost a
timer wake-up each)."""

from __future__ import annotations

import ctypes as ct

import pytest

from roxd.config import ConfigError, load_config
from roxd.sensor import program
from roxd.sensor.program import Sensor, SensorConfig
from tests.unit.test_ring_wakeups import FakeRing, awake, fake_sensor


def lingering(monkeypatch: pytest.MonkeyPatch, linger_ms: float = 1.0
              ) -> tuple[Sensor, FakeRing, list[tuple[float, bool]], list[list[bool]]]:
    """A fake sensor whose time.sleep records (seconds, flag says awake) and lets the records
    of `arrivals[0]` land in the ring meanwhile, written without a wake-up."""
    sensor, ring = fake_sensor(20, monkeypatch)
    sensor._config = SensorConfig(ring_batch_ms=20, ring_linger_ms=linger_ms)
    sleeps: list[tuple[float, bool]] = []
    arrivals: list[list[bool]] = []

    def sleep(seconds: float) -> None:
        sleeps.append((seconds, awake(sensor)))
        ring.slept_ms += seconds * 1000  # the fake clock (fake_sensor's monotonic)
        if arrivals:
            ring.queue += arrivals.pop(0)

    monkeypatch.setattr(program.time, "sleep", sleep)
    return sensor, ring, sleeps, arrivals


def test_a_burst_is_read_in_lingers_while_the_flag_says_awake(
        monkeypatch: pytest.MonkeyPatch) -> None:
    sensor, ring, sleeps, arrivals = lingering(monkeypatch)
    ring.during = [True, False]  # a storm: two records by the time roxd reads
    sensor.poll(100)
    assert sensor._records == 2 and sleeps == []  # no linger before that first read
    ring.during = [True, False]  # ... and two more at once: its pace is a storm's
    sensor.poll(100)
    assert sensor._records == 4 and sleeps == []  # the first read had nothing to pace it by
    arrivals += [[False] * 5, [False] * 3]  # the storm goes on: no wake-ups while awake
    waits = len(ring.timeouts)
    sensor.poll(100)
    assert sensor._records == 9 and len(ring.timeouts) == waits  # read after a linger, no wait
    sensor.poll(100)
    assert sensor._records == 12 and len(ring.timeouts) == waits
    assert sleeps == [(0.001, True), (0.001, True)]  # each linger said "awake" throughout
    sensor.poll(100)  # a linger that finds nothing: the burst is over, roxd goes to sleep
    assert len(sleeps) == 3 and len(ring.timeouts) == waits + 1
    assert not awake(sensor)
    assert set(ring.awake_while_waiting) == {bytes(8)}  # it never slept saying it was awake


def test_one_record_per_read_wakes_roxd_each_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """A slow stream (a kill now and then): each record woke roxd and came alone, so no
    linger delays the next one; a linger that brings a single record ends the lingering."""
    sensor, ring, sleeps, arrivals = lingering(monkeypatch)
    for n in range(1, 4):
        ring.during = [True]
        sensor.poll(100)
        assert sensor._records == n
    assert sleeps == [] and len(ring.timeouts) == 3
    ring.during = [True, True]  # two at once, right after the last read: a storm
    sensor.poll(100)
    arrivals.append([True])  # the storm thins out: one record in the linger
    sensor.poll(100)
    assert sensor._records == 6 and len(sleeps) == 1
    ring.during = [True]
    sensor.poll(100)  # no second linger after a linger that read one record
    assert len(sleeps) == 1 and sensor._records == 7


def test_no_linger_after_a_poll_that_read_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    sensor, ring, sleeps, _arrivals = lingering(monkeypatch)
    for _ in range(3):
        sensor.poll(100)
    assert sleeps == [] and ring.timeouts == [100, 100, 100]


def test_a_record_written_during_a_linger_is_read_at_its_end(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An urgent record written while roxd lingers waits for the linger's end (at most
    ring_linger_ms): the kernel saw "awake" and sent no wake-up; the read after the sleep has
    it, before any wait."""
    sensor, ring, sleeps, arrivals = lingering(monkeypatch, linger_ms=2.5)
    for _ in range(2):  # two reads of two at once: a storm
        ring.during = [True, True]
        sensor.poll(100)
    arrivals.append([True])  # urgent, but the flag says awake: no wake-up is sent
    waits = len(ring.timeouts)
    sensor.poll(100)
    assert sensor._records == 5 and len(ring.timeouts) == waits and sleeps == [(0.0025, True)]


def test_pairs_further_apart_than_a_linger_wake_roxd_without_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An exec and its exit read together every few milliseconds (a build's compiler runs):
    a linger would find nothing, so none starts; each pair is read on its wake-up."""
    sensor, ring, sleeps, _arrivals = lingering(monkeypatch)
    for n in range(1, 6):
        ring.during = [True, True]
        sensor.poll(100)
        assert sensor._records == 2 * n
        ring.slept_ms += 3  # the next exec comes 3 ms later (the fake clock)
    assert sleeps == [] and len(ring.timeouts) == 5


def test_a_linger_that_reads_a_batch_paces_the_next_wait(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The read after a linger is timed from the linger's last read: a storm that goes on
    lingers again at once, whatever the linger's own reads took."""
    sensor, ring, sleeps, arrivals = lingering(monkeypatch)
    for _ in range(2):
        ring.during = [True, True]
        sensor.poll(100)
    arrivals.append([True])  # a thin linger (1 ms on the fake clock): one record ...
    sensor.poll(100)
    assert len(sleeps) == 1 and sensor._records == 5
    ring.during = [True, True]  # ... then a wait's read of two, 1 ms after the last wait's
    sensor.poll(100)  # read but at once after the linger's
    assert len(sleeps) == 1 and sensor._records == 7
    arrivals.append([True, True])
    sensor.poll(100)  # a storm's pace: it lingers again
    assert len(sleeps) == 2 and sensor._records == 9


def test_linger_off_is_the_batched_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    sensor, ring, sleeps, _arrivals = lingering(monkeypatch, linger_ms=0)
    ring.during = [True, True]
    sensor.poll(100)
    sensor.poll(100)
    assert sleeps == [] and len(ring.timeouts) == 2


@pytest.mark.parametrize("value", ["-1", "51", '"1"'])
def test_the_config_bounds_the_linger(tmp_path, value: str) -> None:
    cfg = tmp_path / "roxd.toml"
    cfg.write_text(f"[sensor]\nring_linger_ms = {value}\n")
    with pytest.raises(ConfigError, match="ring_linger_ms"):
        load_config(cfg)


def test_an_integer_linger_is_accepted(tmp_path) -> None:
    cfg = tmp_path / "roxd.toml"
    cfg.write_text("[sensor]\nring_linger_ms = 2\n")
    assert load_config(cfg).sensor.ring_linger_ms == 2


class BigRecords(FakeRing):
    """The ring of a storm of exec records: each record `size` bytes (undecodable zeros: the
    callback counts them all the same)."""

    size = 2424  # an exec record with a full argv buffer (records.ExecRecord)

    def ring_buffer_consume(self) -> None:
        junk = ct.create_string_buffer(self.size)
        for _ in self.queue:
            self.sensor._ring_callback(None, ct.addressof(junk), self.size)
        self.queue = []


@pytest.mark.parametrize("pages, expected_s", [(1024, 0.005), (4, 4096 / 4848 * 1e-3)])
def test_a_linger_never_lets_a_small_ring_fill(monkeypatch: pytest.MonkeyPatch, pages: int,
                                               expected_s: float) -> None:
    """Nobody reads the ring during a linger, so at the rate of the last read it lasts at most
    as long as a quarter of the ring takes to fill: the whole 5 ms with the default ring, about
    0.85 ms with 4 pages at 2 records of 2,424 bytes per ms (4,096 of 16,384 bytes)."""
    sensor, _ = fake_sensor(20, monkeypatch)
    ring = BigRecords(sensor)
    sensor._bpf = ring
    monkeypatch.setattr(program.time, "monotonic", lambda: ring.slept_ms / 1000)
    sensor._config = SensorConfig(ring_batch_ms=20, ring_linger_ms=5, ringbuf_pages=pages)
    sleeps: list[float] = []
    monkeypatch.setattr(program.time, "sleep", sleeps.append)
    for _ in range(2):  # two reads of two records, 1 ms apart: a stream of 4,848 bytes/ms
        ring.slept_ms += 1
        ring.during = [True, True]
        sensor.poll(100)
    sensor.poll(100)
    assert sleeps == [pytest.approx(expected_s)]
