"""Local alert store: filters, paging, retention by count and age, restarts, live feed."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from roxd.alerts.settings import StoreSettings
from roxd.alerts.store import AlertQuery, AlertStore
from roxd.model import Phase, Severity
from tests.system.alerts_factory import DB, make_alert, rule

pytestmark = pytest.mark.unit

DAY = 86_400 * 10**9


def fill(store: AlertStore) -> None:
    now = time.time_ns()
    specs = [
        (rule("a", phase=Phase.FOOTHOLD, severity=Severity.INFO), None),
        (rule("b", phase=Phase.PERSISTENCE, severity=Severity.WARNING), None),
        (rule("c", phase=Phase.OBJECTIVES, severity=Severity.CRITICAL), DB),
    ]
    for i in range(30):
        r, container = specs[i % 3]
        kwargs = {"container": container} if container else {}
        store.emit(make_alert(rule_ref=r, time_ns=now - (30 - i) * 10**9, **kwargs))
    assert store.flush(10)


def test_filters_and_get(tmp_path: Path) -> None:
    store = AlertStore(tmp_path)
    try:
        fill(store)
        assert store.count() == 30
        page = store.query(AlertQuery(limit=1000))
        assert len(page.items) == 30 and page.next_cursor is None
        assert [i.seq for i in page.items] == sorted((i.seq for i in page.items), reverse=True)
        assert {i.data["rule"]["id"] for i in store.query(AlertQuery(rule_id="b")).items} == {"b"}
        assert len(store.query(AlertQuery(phase=Phase.OBJECTIVES)).items) == 10
        assert len(store.query(AlertQuery(container="db")).items) == 10
        assert len(store.query(AlertQuery(container=DB.id[:12])).items) == 10
        assert len(store.query(AlertQuery(container="web")).items) == 20
        assert len(store.query(AlertQuery(min_severity=Severity.WARNING)).items) == 20
        assert len(store.query(AlertQuery(min_severity=Severity.ERROR)).items) == 10
        times = sorted(i.time_ns for i in page.items)
        mid = times[15]
        assert len(store.query(AlertQuery(since_ns=mid)).items) == 15
        assert len(store.query(AlertQuery(until_ns=mid)).items) == 15
        assert len(store.query(AlertQuery(container="web", rule_id="a", since_ns=mid)).items) == 5
        one = page.items[7]
        got = store.get(one.id)
        assert got is not None and got.data == one.data and got.data["kind"] == "match"
        assert store.get("nope") is None
    finally:
        store.close()


def test_cursor_and_offset_paging(tmp_path: Path) -> None:
    store = AlertStore(tmp_path)
    try:
        fill(store)
        seen: list[int] = []
        cursor = None
        while True:
            page = store.query(AlertQuery(limit=7, cursor=cursor))
            seen += [i.seq for i in page.items]
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert len(seen) == 30 and len(set(seen)) == 30
        assert seen == sorted(seen, reverse=True)
        second = store.query(AlertQuery(limit=7, offset=7)).items
        assert [i.seq for i in second] == seen[7:14]
    finally:
        store.close()


def test_retention_by_count(tmp_path: Path) -> None:
    store = AlertStore(tmp_path, StoreSettings(max_count=10))
    try:
        ids = []
        for _ in range(25):
            a = make_alert()
            ids.append(a.id)
            store.emit(a)
        assert store.flush(10)
        kept = [i.id for i in store.query(AlertQuery(limit=100)).items]
        assert kept == list(reversed(ids[-10:]))
        assert store.stats()["pruned"] == 15
    finally:
        store.close()


def test_retention_by_age_and_restart_survival(tmp_path: Path) -> None:
    now = time.time_ns()
    store = AlertStore(tmp_path, StoreSettings(max_age_days=0))
    old = [make_alert(time_ns=now - 10 * DAY) for _ in range(5)]
    fresh = [make_alert(time_ns=now - DAY) for _ in range(5)]
    for a in old + fresh:
        store.emit(a)
    store.close()
    # restart with a 7-day retention: the old ones go, the fresh ones survive
    store = AlertStore(tmp_path, StoreSettings(max_age_days=7))
    try:
        kept = {i.id for i in store.query(AlertQuery()).items}
        assert kept == {a.id for a in fresh}
        assert store.get(fresh[0].id) is not None
        assert store.get(old[0].id) is None
        # sequence numbers keep growing after a restart
        before = max(i.seq for i in store.query(AlertQuery()).items)
        store.emit(make_alert())
        assert store.flush(10)
        assert store.query(AlertQuery(limit=1)).items[0].seq > before
    finally:
        store.close()


def test_subscribe_sees_new_alerts_in_order(tmp_path: Path) -> None:
    store = AlertStore(tmp_path)
    try:
        sub = store.subscribe(maxsize=3)
        alerts = [make_alert() for _ in range(5)]
        for a in alerts:
            store.emit(a)
        assert store.flush(10)
        got = [sub.get(timeout=5) for _ in range(3)]
        assert [g.id for g in got if g] == [a.id for a in alerts[:3]]
        assert sub.dropped == 2 and sub.get(timeout=0.01) is None
        sub.close()
        store.emit(make_alert())
        assert store.flush(10)
        assert sub.get(timeout=0.05) is None
    finally:
        store.close()


def test_duplicate_ids_are_stored_once(tmp_path: Path) -> None:
    store = AlertStore(tmp_path)
    try:
        a = make_alert()
        store.emit(a)
        store.emit(a)
        assert store.flush(10)
        assert store.count() == 1
    finally:
        store.close()
