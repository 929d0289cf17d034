"""Break-glass (issue 15): a time-limited exemption of one workload from enforce mode, audited,
expiring on its own, surviving a restart (or expiring safely across it), shown in `show`."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from roxd.baselines.breakglass import (
    BREAKGLASS_RULE,
    BreakglassChange,
    breakglass_actions,
    breakglass_event,
)
from roxd.baselines.engine import BaselineEngine, BaselineError
from roxd.baselines.settings import BaselineSettings
from roxd.model import Outcome
from tests.unit.test_baselines import Clock, exec_in, web

pytestmark = pytest.mark.unit
KEY = "image:nginx/web"


def enforcing_engine(tmp_path: Path, clock: Clock) -> tuple[BaselineEngine, list[Any]]:
    eng = BaselineEngine(BaselineSettings(window_s=60.0, startup_grace_s=0.0,
                                          default_mode="enforce"), tmp_path,
                         clock=clock.wall, monotonic=clock.monotonic)
    audits: list[BreakglassChange] = []
    eng.add_audit(audits.append)
    eng.observe(exec_in(web(), "/usr/sbin/nginx"))
    eng.lock(KEY)
    return eng, audits


def test_breakglass_exempts_then_expires_on_its_own(tmp_path: Path) -> None:
    clock = Clock()
    eng, audits = enforcing_engine(tmp_path, clock)
    changed: list[int] = []
    eng.add_listener(lambda: changed.append(1))
    assert KEY in eng.enforcing()
    shown = eng.breakglass(KEY, 1800, "incident 42")
    assert shown["enforced_mode"] == "monitor" and shown["effective_mode"] == "enforce"
    assert shown["breakglass_until_ns"] == clock.ns + 1800 * 10**9
    assert shown["breakglass_reason"] == "incident 42"
    assert eng.enforcing() == {} and eng.enforcing_network() == {}  # nothing in the kernel
    assert changed  # the policy rewrites the kernel's maps
    facts = eng.observe(exec_in(web(), "/bin/sh"))
    assert facts is not None and facts.verdict == "anomaly" and facts.mode == "monitor"
    assert [(a.what, a.reason) for a in audits] == [("granted", "incident 42")]
    clock.advance(1799)
    eng.tick()
    assert KEY not in eng.enforcing()
    clock.advance(2)
    assert KEY in eng.enforcing()  # past its end: never honoured, even before tick()
    eng.tick()
    assert [a.what for a in audits] == ["granted", "expired"]
    assert eng.get(KEY)["breakglass_until_ns"] is None
    assert eng.observe(exec_in(web(), "/bin/sh")).mode == "enforce"  # type: ignore[union-attr]


def test_zero_ends_an_exemption_now(tmp_path: Path) -> None:
    clock = Clock()
    eng, audits = enforcing_engine(tmp_path, clock)
    eng.breakglass(KEY, 600)
    eng.breakglass(KEY, 0)
    assert KEY in eng.enforcing()
    assert [a.what for a in audits] == ["granted", "ended"]
    eng.breakglass(KEY, 0)  # nothing to end: nothing said
    assert len(audits) == 2


def test_it_survives_a_restart_or_expires_safely_across_it(tmp_path: Path) -> None:
    clock = Clock()
    eng, _ = enforcing_engine(tmp_path, clock)
    eng.breakglass(KEY, 600, "deploy")
    eng.save_if_changed()
    again = BaselineEngine(eng.settings, tmp_path, clock=clock.wall, monotonic=clock.monotonic)
    assert KEY not in again.enforcing()
    assert again.get(KEY)["breakglass_reason"] == "deploy"
    clock.advance(601)  # roxd was down while it ended
    later = BaselineEngine(eng.settings, tmp_path, clock=clock.wall, monotonic=clock.monotonic)
    audits: list[BreakglassChange] = []
    later.add_audit(audits.append)
    assert KEY in later.enforcing()  # enforced from the first moment
    later.tick()
    assert [a.what for a in audits] == ["expired"]


def test_bad_requests_say_what_is_wrong(tmp_path: Path) -> None:
    eng, audits = enforcing_engine(tmp_path, Clock())
    with pytest.raises(BaselineError, match="between 0"):
        eng.breakglass(KEY, -1)
    with pytest.raises(BaselineError, match="monitor"):
        eng.breakglass(KEY, 8 * 86400)
    with pytest.raises(BaselineError, match="no baseline for workload"):
        eng.breakglass("image:no/such", 60)
    assert audits == []


def test_the_audit_alert_names_the_workload_and_the_change() -> None:
    change = BreakglassChange(KEY, "granted", 123, "incident 42")
    event = breakglass_event(change, web())
    assert event.event.args["workload"] == KEY  # type: ignore[union-attr]
    assert event.event.args["change"] == "granted"  # type: ignore[union-attr]
    actions = breakglass_actions(change)
    assert actions[0].outcome is Outcome.DONE and "incident 42" in actions[0].reason
    assert BREAKGLASS_RULE.id.startswith("baseline.")


# ---------------------------------------------------------------------------- new digests


def _versioned(digest: str, image: str = "nginx:1.25") -> Any:
    return dataclasses.replace(web(), image_id=digest, image=image)


def test_a_new_digest_reopens_learning_when_configured(tmp_path: Path) -> None:
    clock = Clock()
    eng = BaselineEngine(BaselineSettings(window_s=60.0, startup_grace_s=0.0,
                                          default_mode="enforce", reopen_on_new_digest=True),
                         tmp_path, clock=clock.wall, monotonic=clock.monotonic)
    audits: list[BreakglassChange] = []
    eng.add_audit(audits.append)
    eng.observe(exec_in(_versioned("sha256:v1"), "/usr/sbin/nginx"))
    eng.lock(KEY)
    assert eng.observe(exec_in(_versioned("sha256:v1"), "/bin/new")).verdict == "anomaly"  # type: ignore[union-attr]
    clock.advance(5)
    facts = eng.observe(exec_in(_versioned("sha256:v2", "nginx:1.26"), "/bin/new"))
    assert facts is not None and facts.verdict == "learning"  # learning again
    assert KEY not in eng.enforcing()
    assert [(a.what, a.rule.id) for a in audits] == [("reopened", "baseline.reopened")]
    assert "sha256:v2" in audits[0].reason
    shown = eng.get(KEY)
    assert shown["state"] == "learning" and shown["image_ids"] == ["sha256:v1", "sha256:v2"]
    assert shown["image"] == "nginx:1.26"
    # an old replica still running the old digest does not reopen it again
    clock.advance(61)
    eng.tick()
    assert eng.get(KEY)["state"] == "locked"
    eng.observe(exec_in(_versioned("sha256:v1"), "/usr/sbin/nginx"))
    assert eng.get(KEY)["state"] == "locked" and len(audits) == 1


def test_off_a_new_digest_changes_nothing_but_is_remembered(tmp_path: Path) -> None:
    clock = Clock()
    eng = BaselineEngine(BaselineSettings(window_s=60.0, startup_grace_s=0.0,
                                          default_mode="enforce"),
                         tmp_path, clock=clock.wall, monotonic=clock.monotonic)
    audits: list[BreakglassChange] = []
    eng.add_audit(audits.append)
    eng.observe(exec_in(_versioned("sha256:v1"), "/usr/sbin/nginx"))
    eng.lock(KEY)
    facts = eng.observe(exec_in(_versioned("sha256:v2"), "/bin/new"))
    assert facts is not None and facts.verdict == "anomaly" and audits == []
    assert eng.get(KEY)["image_ids"] == ["sha256:v1", "sha256:v2"]
    eng.save_if_changed()
    again = BaselineEngine(eng.settings, tmp_path, clock=clock.wall, monotonic=clock.monotonic)
    assert again.get(KEY)["image_ids"] == ["sha256:v1", "sha256:v2"]
