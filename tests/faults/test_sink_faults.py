"""Alert sinks under storage faults: SQLite errors (injected), a full disk (a real 2 MiB tmpfs
filled to the last byte), corrupt queue and store files at start and while running. The
syslog forwarder keeps forwarding to a real rsyslogd, the store keeps every alert that reached
it, health names each failing sink, and nothing is lost once the fault is gone."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from roxd.alerts.delivery import AlertDelivery
from roxd.alerts.diskqueue import DiskQueue
from roxd.alerts.settings import AlertsSettings, JournaldSettings, StoreSettings, SyslogCollector
from roxd.alerts.store import AlertQuery, AlertStore
from roxd.alerts.syslog import SyslogForwarder
from roxd.incidents.store import IncidentStore
from roxd.incidents.tracker import IncidentChange, IncidentQuery
from tests.conftest import wait_until
from tests.faults.conftest import fill
from tests.system.alerts_factory import make_alert
from tests.system.conftest import Rsyslog
from tests.system.rfc5424_parse import parse_sd

pytestmark = pytest.mark.faults

GARBAGE = b"this is not an SQLite file\n" * 200


def delivered(r: Rsyslog) -> set[str]:
    out = set()
    for fields in r.lines():
        sd, _ = parse_sd(fields[5])
        out.add(dict(sd["roxd@32473"])["alert"])
    return out


def tcp(r: Rsyslog) -> SyslogCollector:
    return SyslogCollector(address="127.0.0.1", port=r.tcp, protocol="tcp", hostname="node-1",
                           backoff_max_s=0.2)


class Faulty:
    """Fault injection: the wrapped method raises `error` while `on` is set."""

    def __init__(self, target: Any, name: str, error: Exception,
                 times: int | None = None) -> None:
        self.real = getattr(target, name)
        self.error = error
        self.on = True
        self.times = times  # None: until switched off
        self.raised = 0
        setattr(target, name, self)

    def __call__(self, *args: Any, **kw: Any) -> Any:
        if self.on and (self.times is None or self.raised < self.times):
            self.raised += 1
            raise self.error
        return self.real(*args, **kw)


# ---------------------------------------------------------------------------- syslog


def test_sqlite_errors_never_stop_syslog_forwarding(rsyslog: Rsyslog, tmp_path: Path) -> None:
    fwd = SyslogForwarder(tcp(rsyslog), tmp_path / "state")
    try:
        fault = Faulty(fwd._disk, "push", sqlite3.OperationalError("database or disk is full"))
        during = [make_alert() for _ in range(30)]
        for a in during:
            fwd.emit(a)
        # the queue file refuses every write: alerts go to the collector from memory
        wait_until(lambda: {a.id for a in during} <= delivered(rsyslog), 20,
                   message="the alerts sent from memory at rsyslog")
        assert fault.raised >= 1
        [problem] = fwd.problems()
        assert "database or disk is full" in problem and str(fwd.queue_path) in problem
        fault.on = False
        after = [make_alert() for _ in range(30)]
        for a in after:
            fwd.emit(a)
        assert fwd.flush(20), fwd.stats()
        wait_until(lambda: {a.id for a in during + after} <= delivered(rsyslog), 20,
                   message="every alert at rsyslog")
        wait_until(lambda: not fwd.problems(), 15, message="the queue file to work again")
        assert fwd._thread.is_alive()
        stats = fwd.stats()
        assert stats["errors"] >= 1 and stats["dropped"] == 0
    finally:
        fwd.close(5)


def test_a_failing_queue_file_holds_alerts_while_the_collector_is_down_too(
        rsyslog: Rsyslog, tmp_path: Path) -> None:
    rsyslog.stop()
    fwd = SyslogForwarder(tcp(rsyslog), tmp_path / "state")
    try:
        fault = Faulty(fwd._disk, "push", sqlite3.OperationalError("disk I/O error"))
        alerts = [make_alert() for _ in range(25)]
        for a in alerts:
            fwd.emit(a)
        wait_until(lambda: fault.raised >= 2, 10, message="the queue file retried")
        assert fwd.stats()["queued"] == 25 and fwd.problems()
        rsyslog.start()
        fault.on = False
        assert fwd.flush(30), fwd.stats()
        wait_until(lambda: {a.id for a in alerts} <= delivered(rsyslog), 20,
                   message="the held alerts at rsyslog")
        assert fwd.stats()["dropped"] == 0
    finally:
        fwd.close(5)


def test_a_full_disk_never_stops_forwarding(rsyslog: Rsyslog, small_fs: Path) -> None:
    """A real full filesystem under the queue file: forwarding goes on from memory, health
    says why, and once space is back the queue file works again."""
    fwd = SyslogForwarder(tcp(rsyslog), small_fs / "state")
    try:
        fwd.emit(make_alert())
        assert fwd.flush(20)
        filler = fill(small_fs)
        big = tuple("x" * 900 for _ in range(40))  # ~36 KiB a message: pages must be added
        during = [make_alert(args=big) for _ in range(40)]
        rsyslog.stop()  # collector down: the queue file must take them, and cannot
        for a in during:
            fwd.emit(a)
        wait_until(fwd.problems, 20, message="the forwarder to report the full disk")
        assert any("full" in p for p in fwd.problems()), fwd.problems()
        rsyslog.start()
        wait_until(lambda: {a.id for a in during} <= delivered(rsyslog), 30,
                   message="the alerts at rsyslog while the disk is full")
        filler.unlink()
        after = [make_alert() for _ in range(10)]
        for a in after:
            fwd.emit(a)
        assert fwd.flush(20), fwd.stats()
        wait_until(lambda: {a.id for a in after} <= delivered(rsyslog), 20,
                   message="the later alerts")
        wait_until(lambda: not fwd.problems(), 10, message="the problem to clear")
        assert fwd.stats()["dropped"] == 0
    finally:
        fwd.close(5)


def test_a_corrupt_queue_file_at_start_is_moved_aside_and_forwarding_works(
        rsyslog: Rsyslog, tmp_path: Path) -> None:
    state = tmp_path / "state"
    collector = tcp(rsyslog)
    queue = state / "alerts" / f"syslog-{collector.queue_name}.db"
    queue.parent.mkdir(parents=True)
    queue.write_bytes(GARBAGE)
    fwd = SyslogForwarder(collector, state)  # was: DatabaseError, the sink disabled
    try:
        [moved] = list(queue.parent.glob(queue.name + ".corrupt-*"))
        assert moved.read_bytes() == GARBAGE  # kept for whoever wants to look
        assert fwd.stats()["quarantined"] == 1
        a = make_alert()
        fwd.emit(a)
        assert fwd.flush(20)
        wait_until(lambda: a.id in delivered(rsyslog), 20, message="the alert at rsyslog")
    finally:
        fwd.close(5)


def test_a_queue_file_corrupted_while_running_is_replaced(rsyslog: Rsyslog,
                                                           tmp_path: Path) -> None:
    fwd = SyslogForwarder(tcp(rsyslog), tmp_path / "state")
    try:
        # damaged pages show as SQLITE_CORRUPT on a write; the fresh file works
        Faulty(fwd._disk, "push", sqlite3.DatabaseError("database disk image is malformed"),
               times=1)
        alerts = [make_alert() for _ in range(5)]
        fwd.emit(alerts[0])
        wait_until(lambda: fwd.stats()["quarantined"] == 1, 10, message="the file replaced")
        for a in alerts[1:]:
            fwd.emit(a)
        wait_until(lambda: {a.id for a in alerts} <= delivered(rsyslog), 20,
                   message="every alert at rsyslog")
        assert list(fwd.queue_path.parent.glob(fwd.queue_path.name + ".corrupt-*"))
    finally:
        fwd.close(5)


# ---------------------------------------------------------------------------- store


def test_store_write_errors_keep_every_alert_and_health_says_why(tmp_path: Path) -> None:
    store = AlertStore(tmp_path)
    try:
        fault = Faulty(store, "_insert", sqlite3.OperationalError("database or disk is full"))
        alerts = [make_alert() for _ in range(50)]
        for a in alerts:
            store.emit(a)
        wait_until(lambda: fault.raised >= 2, 10, message="the store to retry")
        [problem] = store.problems()
        assert "database or disk is full" in problem
        fault.on = False
        assert store.flush(20)
        assert store.count() == 50  # was: the batch dropped, counted "failed"
        assert {s.id for s in store.query(AlertQuery(limit=1000)).items} == {
            a.id for a in alerts}
        assert store.problems() == [] and store.stats()["failed"] == 0
    finally:
        store.close()


def test_a_full_disk_under_the_store_loses_no_alert(small_fs: Path) -> None:
    store = AlertStore(small_fs / "state")
    try:
        store.emit(make_alert())
        assert store.flush(10)
        filler = fill(small_fs)
        big = tuple("y" * 900 for _ in range(10))  # ~18 KiB a body; 30 fit once space is back
        alerts = [make_alert(args=big) for _ in range(30)]
        for a in alerts:
            store.emit(a)
        wait_until(store.problems, 20, message="the store to report the full disk")
        filler.unlink()
        assert store.flush(30)
        assert store.count() == 31
        assert store.problems() == []
    finally:
        store.close()


@pytest.mark.parametrize("content", [GARBAGE, b"SQLite format 3\0" + b"\xff" * 4000])
def test_a_corrupt_store_at_start_is_moved_aside(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "alerts" / "alerts.db"
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    store = AlertStore(tmp_path)  # was: DatabaseError, the API fell back to memory
    try:
        assert store.stats()["quarantined"] == 1
        [moved] = list(path.parent.glob("alerts.db.corrupt-*"))
        assert moved.read_bytes() == content
        a = make_alert()
        store.emit(a)
        assert store.flush(5) and store.get(a.id) is not None
    finally:
        store.close()


def test_a_store_corrupted_while_running_is_replaced(tmp_path: Path) -> None:
    store = AlertStore(tmp_path)
    try:
        Faulty(store, "_insert", sqlite3.DatabaseError("database disk image is malformed"),
               times=1)
        a = make_alert()
        store.emit(a)
        wait_until(lambda: store.stats()["quarantined"] == 1, 10, message="the file replaced")
        assert store.flush(10)
        assert store.get(a.id) is not None
    finally:
        store.close()


def test_a_corrupt_incident_store_at_start_is_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "incidents" / "incidents.db"
    path.parent.mkdir(parents=True)
    path.write_bytes(GARBAGE)
    store = IncidentStore(tmp_path)
    try:
        assert list(path.parent.glob("incidents.db.corrupt-*"))
        assert store.open_incidents() == []
    finally:
        store.close()


def incident_change(i: int, filler: str = "") -> IncidentChange:
    """An incident as the tracker publishes it (the keys the store indexes, and a body)."""
    doc = {"id": f"{i:032x}", "state": "open", "first_ns": i, "last_ns": i,
           "severity": "warning", "phases": ["foothold"], "alerts": 1,
           "containers": [{"id": f"{i:064x}", "name": f"web-{i}"}], "note": filler}
    return IncidentChange("opened", i, doc)


def stored_incidents(store: IncidentStore) -> set[str]:
    return {d["id"] for d in store.query(IncidentQuery(limit=1000))}


def test_incident_store_write_errors_keep_every_incident_and_health_says_why(
        tmp_path: Path) -> None:
    store = IncidentStore(tmp_path)
    try:
        fault = Faulty(store, "_write", sqlite3.OperationalError("database or disk is full"))
        changes = [incident_change(i) for i in range(1, 41)]
        for c in changes:
            store.incident_changed(c)
        # was: the batch was dropped (counted "failed") and never tried again
        wait_until(lambda: fault.raised >= 2, 10, message="the incident store to retry")
        [problem] = store.problems()
        assert "database or disk is full" in problem and str(store.path) in problem
        fault.on = False
        assert store.flush(20)
        assert stored_incidents(store) == {c.incident["id"] for c in changes}
        assert store.problems() == []
        assert store.stats()["failed"] == 0 and store.stats()["errors"] == fault.raised
    finally:
        store.close()


def test_a_full_disk_under_the_incident_store_loses_no_incident(small_fs: Path) -> None:
    store = IncidentStore(small_fs / "state")
    try:
        store.incident_changed(incident_change(1))
        assert store.flush(10)
        filler = fill(small_fs)
        # ~18 KiB a body; 30 fit once space is back. An update of an incident already pending
        # replaces it (the store keeps the latest state), so incident 2 is stored as changed.
        changes = [incident_change(i, "z" * 18_000) for i in range(2, 32)]
        for c in changes:
            store.incident_changed(c)
        wait_until(store.problems, 20, message="the incident store to report the full disk")
        later = incident_change(2, "updated while the disk was full")
        later.incident["alerts"] = 7
        store.incident_changed(later)
        filler.unlink()
        assert store.flush(30)
        assert stored_incidents(store) == {f"{i:032x}" for i in range(1, 32)}
        assert store.get(f"{2:032x}")["alerts"] == 7  # type: ignore[index]
        assert store.problems() == []
    finally:
        store.close()


def test_an_incident_store_corrupted_while_running_is_replaced(tmp_path: Path) -> None:
    store = IncidentStore(tmp_path)
    try:
        fault = Faulty(store, "_write", sqlite3.DatabaseError("database disk image is malformed"),
                       times=1)
        changes = [incident_change(i) for i in range(1, 11)]
        for c in changes:
            store.incident_changed(c)
        assert store.flush(20)
        assert fault.raised == 1
        assert stored_incidents(store) == {c.incident["id"] for c in changes}
        assert store.stats()["quarantined"] == 1
        assert list(store.path.parent.glob("incidents.db.corrupt-*"))
    finally:
        store.close()


def test_the_store_is_bounded_in_bytes_and_counts_evictions(tmp_path: Path) -> None:
    store = AlertStore(tmp_path, StoreSettings(max_bytes=200_000, max_count=0))
    try:
        big = tuple("z" * 1000 for _ in range(10))  # ~2x10 KB of argv per alert body
        alerts = [make_alert(args=big) for _ in range(60)]
        for a in alerts:
            store.emit(a)
        assert store.flush(10)
        stats = store.stats()
        assert stats["stored_bytes"] <= 200_000
        assert stats["evicted"] == 60 - stats["stored"] > 0
        kept = [s.id for s in store.query(AlertQuery(limit=1000)).items]
        assert kept == [a.id for a in reversed(alerts)][:len(kept)]  # the newest stay
    finally:
        store.close()


def test_the_syslog_queue_is_bounded_in_bytes(tmp_path: Path) -> None:
    q = DiskQueue(tmp_path / "q.db", max_items=1000, max_bytes=10_000)
    dropped = q.push([(i, b"m" * 1000) for i in range(25)])
    assert dropped == 15 and len(q) == 10 and q.bytes == 10_000
    assert q.push([(0, b"n" * 3000)]) == 3 and q.bytes == 10_000
    q.close()


# ---------------------------------------------------------------------------- health


def test_delivery_reports_every_failing_sink(rsyslog: Rsyslog, tmp_path: Path) -> None:
    state = tmp_path / "state"
    (state / "alerts").mkdir(parents=True)
    # a sink that cannot start at all: its queue file's path is a directory
    blocked = SyslogCollector(address="127.0.0.1", port=rsyslog.tcp, protocol="tcp",
                              name="blocked")
    (state / "alerts" / "syslog-blocked.db").mkdir()
    settings = AlertsSettings(journald=JournaldSettings(enabled=False),
                              store=StoreSettings(enabled=True),
                              syslog=(tcp(rsyslog), blocked))
    delivery = AlertDelivery.from_settings(settings, state)
    try:
        assert any("syslog.blocked is disabled" in p for p in delivery.problems())
        fwd = delivery.sinks[f"syslog.{tcp(rsyslog).queue_name}"]
        assert isinstance(fwd, SyslogForwarder)
        Faulty(fwd._disk, "push", sqlite3.OperationalError("database or disk is full"))
        assert delivery.store is not None
        Faulty(delivery.store, "_insert", sqlite3.OperationalError("disk I/O error"))
        delivery.emit(make_alert())
        wait_until(lambda: len(delivery.problems()) == 3, 10, message="three problems")
        problems = delivery.problems()
        assert any(p.startswith("alert sink store:") and "disk I/O error" in p
                   for p in problems), problems
        assert any("database or disk is full" in p for p in problems), problems
    finally:
        delivery.close(2)


def test_queue_pages_damaged_on_disk_while_open_are_replaced(tmp_path: Path) -> None:
    """Real damage, no injection: pages overwritten under an open queue (a disk error, a
    stray write). The next push finds SQLITE_CORRUPT, moves the file aside and succeeds on a
    fresh one: every user of DiskQueue (syslog, NATS) gets this."""
    path = tmp_path / "q.db"
    q = DiskQueue(path, 100)
    q.push([(1, b"a" * 5000) for _ in range(20)])
    q.close()
    q = DiskQueue(path, 100)
    with path.open("r+b") as f:
        f.seek(4096 * 2)
        f.write(b"\xff" * 4096 * 3)
    try:
        assert q.push([(2, b"after")]) == 0
        assert len(q) == 1 and q.quarantined == 1
        assert [m for _, m in q.peek(10)] == [b"after"]
        assert list(tmp_path.glob("q.db.corrupt-*"))
    finally:
        q.close()
