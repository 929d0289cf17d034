"""Noise control: folding identical alerts, per-container rate limit, counts that add up."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roxd.alerts.kinds import THROTTLED_RULE_ID, alert_kind
from roxd.alerts.noise import NoiseControl
from roxd.alerts.settings import NoiseSettings
from roxd.model import Alert, Severity
from tests.system.alerts_factory import DB, WEB, make_alert, rule

pytestmark = pytest.mark.unit

T0 = 1_800_000_000 * 10**9
SECOND = 10**9


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


class Recorder:
    def __init__(self) -> None:
        self.alerts: list[Alert] = []

    def emit(self, alert: Alert) -> None:
        self.alerts.append(alert)


def control(fold_s: float = 1.0, per_min: int = 0) -> tuple[NoiseControl, Recorder, Clock]:
    clock, out = Clock(), Recorder()
    nc = NoiseControl([out], NoiseSettings(fold_window_s=fold_s, per_container_per_minute=per_min,
                                    per_rule_per_minute=0),
                      clock=clock, timer=False)
    return nc, out, clock


def test_ten_thousand_identical_alerts_in_a_second_fold_into_a_handful() -> None:
    nc, out, clock = control(fold_s=0.25)
    for _ in range(10_000):
        nc.emit(make_alert(time_ns=clock.now))
        clock.now += 100_000  # 10,000 alerts over one second
    clock.now += SECOND
    nc.tick()
    assert len(out.alerts) == 8  # per 0.25 s window: the first at once, then one summary
    assert sum(a.count for a in out.alerts) == 10_000
    kinds = [alert_kind(a) for a in out.alerts]
    assert kinds == ["match", "folded"] * 4
    for summary in out.alerts[1::2]:
        assert summary.count == 2499
        assert summary.first_ns < summary.last_ns
        assert summary.id.startswith("folded-")
    assert nc.stats()["folded"] == 9996


def test_first_alert_goes_out_at_once_and_summary_when_window_closes() -> None:
    nc, out, clock = control(fold_s=10.0)
    first = make_alert(time_ns=clock.now)
    nc.emit(first)
    assert out.alerts == [first]
    for i in range(1, 6):
        clock.now = T0 + i * SECOND
        nc.emit(make_alert(time_ns=clock.now))
    nc.tick()
    assert len(out.alerts) == 1  # window still open
    clock.now = T0 + 10 * SECOND
    nc.tick()
    summary = out.alerts[1]
    assert (summary.count, summary.first_ns, summary.last_ns) == (5, T0 + SECOND, T0 + 5 * SECOND)
    assert summary.rule == first.rule


def test_a_single_alert_gets_no_summary() -> None:
    nc, out, clock = control(fold_s=1.0)
    nc.emit(make_alert())
    clock.now += 5 * SECOND
    nc.tick()
    nc.close()
    assert len(out.alerts) == 1


def test_different_args_container_or_rule_are_not_folded() -> None:
    nc, out, _ = control(fold_s=60.0)
    nc.emit(make_alert())
    nc.emit(make_alert(args=("crontab", "-l")))
    nc.emit(make_alert(container=DB))
    nc.emit(make_alert(container=None))
    nc.emit(make_alert(rule_ref=rule("other.rule")))
    nc.emit(make_alert(exe="/bin/crontab"))
    nc.emit(make_alert())  # the only repeat
    assert len(out.alerts) == 6
    nc.close()
    assert [a.count for a in out.alerts] == [1] * 6 + [1]


def test_rate_limit_emits_a_throttled_marker_per_container() -> None:
    nc, out, clock = control(fold_s=0, per_min=5)
    sev = [Severity.WARNING, Severity.CRITICAL, Severity.NOTICE]
    for i in range(20):
        clock.now = T0 + i * 10**8
        nc.emit(make_alert(args=("x", str(i)), time_ns=clock.now,
                           rule_ref=rule(severity=sev[i % 3], mitre=(f"T{i}",))))
    nc.emit(make_alert(container=DB))  # another container has its own budget
    assert len(out.alerts) == 6
    assert nc.stats()["throttled"] == 15
    clock.now = T0 + 61 * SECOND
    nc.tick()
    marker = out.alerts[-1]
    assert alert_kind(marker) == "throttled"
    assert marker.rule.id == THROTTLED_RULE_ID
    assert marker.count == 15
    assert marker.rule.severity == Severity.CRITICAL
    assert marker.event.container == WEB
    assert set(marker.rule.mitre) == {f"T{i}" for i in range(5, 20)}
    assert marker.first_ns == T0 + 5 * 10**8 and marker.last_ns == T0 + 19 * 10**8
    # the new window has a fresh budget
    nc.emit(make_alert(args=("new",)))
    assert out.alerts[-1].event.process.args == ("new",)


def test_close_flushes_open_windows() -> None:
    nc, out, _ = control(fold_s=60.0, per_min=1)
    for _ in range(3):
        nc.emit(make_alert())
    nc.emit(make_alert(args=("other",)))
    nc.close()
    assert sum(a.count for a in out.alerts) == 4
    assert {alert_kind(a) for a in out.alerts} == {"match", "throttled"}


def test_disabled_noise_control_passes_everything() -> None:
    nc, out, _ = control(fold_s=0, per_min=0)
    for _ in range(50):
        nc.emit(make_alert())
    assert len(out.alerts) == 50


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 2), st.integers(0, 3 * SECOND)),
                max_size=200),
       st.sampled_from([0.0, 0.5, 2.0]), st.sampled_from([0, 1, 3, 50]))
def test_counts_of_emitted_alerts_add_up_to_alerts_raised(
        steps: list[tuple[int, int, int]], fold_s: float, per_min: int) -> None:
    nc, out, clock = control(fold_s=fold_s, per_min=per_min)
    containers = [WEB, DB, None]
    for argv, where, gap in steps:
        clock.now += gap
        nc.emit(make_alert(args=("a", str(argv)), container=containers[where],
                           time_ns=clock.now))
    nc.close()
    assert sum(a.count for a in out.alerts) == len(steps)


# ---------------------------------------------------------------- issue 23 item 2, issue 21


def limited(tmp_path=None, per_min: int = 120, per_rule: int = 0,
            rule_limits: tuple[str, ...] = (), at: int = T0,
            ) -> tuple[NoiseControl, Recorder, Clock]:
    clock, out = Clock(), Recorder()
    clock.now = at
    nc = NoiseControl([out], NoiseSettings(fold_window_s=0, per_container_per_minute=per_min,
                                           per_rule_per_minute=per_rule,
                                           rule_limits=rule_limits),
                      clock=clock, timer=False, state_dir=tmp_path)
    return nc, out, clock


def flood(nc: NoiseControl, clock: Clock, n: int, rule_ref=None, container=WEB) -> None:
    for i in range(n):
        clock.now += 1_000_000
        nc.emit(make_alert(args=("x", str(i)), time_ns=clock.now, container=container,
                           rule_ref=rule_ref or rule("cheap.rule", severity=Severity.NOTICE)))


def test_a_flood_of_cheap_alerts_never_hides_the_first_alert_of_another_rule() -> None:
    nc, out, clock = limited(per_min=120)
    flood(nc, clock, 500)
    assert nc.stats()["throttled"] == 380
    shell = make_alert(args=("sh", "-i"), rule_ref=rule("foothold.reverse-shell-pipe",
                                                        severity=Severity.NOTICE))
    nc.emit(shell)
    assert out.alerts[-1] is shell  # the first of its rule in this container: emitted at once
    nc.emit(make_alert(args=("sh", "-i", "again"),
                       rule_ref=rule("foothold.reverse-shell-pipe", severity=Severity.NOTICE)))
    assert out.alerts[-1] is shell  # the second of the same rule and severity is throttled
    assert nc.stats()["throttled"] == 381


def test_a_higher_severity_than_any_emitted_in_the_window_is_never_throttled() -> None:
    nc, out, clock = limited(per_min=10)
    flood(nc, clock, 50)
    worse = make_alert(args=("cat", "/etc/shadow"),
                       rule_ref=rule("cheap.rule", severity=Severity.CRITICAL))
    nc.emit(worse)
    assert out.alerts[-1] is worse
    again = make_alert(args=("cat", "/etc/shadow", "2"),
                       rule_ref=rule("cheap.rule", severity=Severity.CRITICAL))
    nc.emit(again)
    assert out.alerts[-1] is worse  # not more severe than what was emitted: throttled


def test_per_rule_limit_throttles_one_rule_and_leaves_others_alone() -> None:
    nc, out, clock = limited(per_min=0, per_rule=3)
    flood(nc, clock, 10)
    flood(nc, clock, 2, rule_ref=rule("other.rule", severity=Severity.NOTICE))
    assert [a.rule.id for a in out.alerts] == ["cheap.rule"] * 3 + ["other.rule"] * 2
    clock.now += 61 * SECOND
    nc.tick()
    marker = out.alerts[-1]
    assert alert_kind(marker) == "throttled" and marker.count == 7
    assert sum(a.count for a in out.alerts) == 12


def test_a_rule_limit_overrides_the_per_rule_default() -> None:
    nc, out, clock = limited(per_min=0, per_rule=100, rule_limits=("cheap.rule=2",))
    flood(nc, clock, 10)
    assert len(out.alerts) == 2


def test_throttle_state_survives_a_restart(tmp_path) -> None:
    nc, out, clock = limited(tmp_path, per_min=5)
    flood(nc, clock, 20)
    nc.close()
    assert sum(a.count for a in out.alerts) == 20  # the marker was flushed at close
    assert len([a for a in out.alerts if alert_kind(a) == "match"]) == 5
    # a new roxd a few seconds later: the window and its budget go on
    nc2, out2, clock2 = limited(tmp_path, per_min=5, at=clock.now + 2 * SECOND)
    flood(nc2, clock2, 10)
    assert out2.alerts == []
    assert nc2.stats()["throttled"] == 10
    # ... and still never hides the first alert of another rule
    nc2.emit(make_alert(rule_ref=rule("new.rule", severity=Severity.NOTICE)))
    assert [a.rule.id for a in out2.alerts] == ["new.rule"]
    # once the window is over, a fresh budget
    clock2.now = clock.now + 61 * SECOND
    nc2.tick()
    flood(nc2, clock2, 1)
    assert out2.alerts[-1].rule.id == "cheap.rule"


def test_a_corrupt_throttle_file_is_set_aside_not_fatal(tmp_path) -> None:
    (tmp_path / "noise").mkdir()
    (tmp_path / "noise" / "throttle.json").write_text("{not json")
    nc, out, clock = limited(tmp_path, per_min=5)
    flood(nc, clock, 3)
    assert len(out.alerts) == 3
    assert list((tmp_path / "noise").glob("throttle.json.corrupt*"))


def test_rule_counts_show_emitted_folded_and_throttled_per_rule() -> None:
    clock, out = Clock(), Recorder()
    nc = NoiseControl([out], NoiseSettings(fold_window_s=10.0, per_container_per_minute=3),
                      clock=clock, timer=False)
    for _ in range(5):  # one emitted, four folded
        clock.now += SECOND
        nc.emit(make_alert(rule_ref=rule("fold.me")))
    flood(nc, clock, 6)  # two of its budget left... then throttled
    top = {r["rule"]: r for r in nc.rule_counts(since_ns=T0)}
    assert top["fold.me"]["raised"] == 5 and top["fold.me"]["folded"] == 4
    assert top["fold.me"]["emitted"] == 1
    assert top["cheap.rule"]["raised"] == 6
    assert top["cheap.rule"]["emitted"] + top["cheap.rule"]["throttled"] == 6
    assert top["cheap.rule"]["throttled"] >= 4
    assert nc.rule_counts(since_ns=clock.now + 61 * SECOND) == []  # minute resolution
