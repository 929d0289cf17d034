"""The event loop never waits on a hung container runtime: an isolate (a Docker inspect and
nft in the container's netns) whose engine does not answer runs on the slow-actions worker;
the loop goes on handling events, the kill of the same match lands at once, and the one
alert comes with every outcome once the isolate returns."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from roxd.alerts.dispatch import AlertDispatcher
from roxd.enforce.response import Responder
from roxd.model import Outcome
from roxd.pipeline import EventTaps, Pipeline, SlowActions
from roxd.pubsub import Topic
from tests.unit.test_pipeline import RULES, Rig, exec_record, rig  # noqa: F401

pytestmark = pytest.mark.faults

KILL_AND_ISOLATE = """
[[rule]]
id = "t.nc-kill-isolate"
name = "nc is killed and its container isolated"
description = "nc in a container."
phase = "lateral_movement"
severity = "warning"
mitre = ["T1059"]
event = "exec"
actions = ["alert", "kill", "isolate"]
[rule.when]
exe_basename = "ncat"
"""


class HungQuarantine:
    """A quarantine whose engine does not answer until the test lets it (dockerd stopped
    with SIGSTOP looks like this from roxd: a read that blocks)."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.threads: list[str] = []

    def is_quarantined(self, container_id: str) -> bool:
        return False

    def isolate(self, container_id: str, name: str | None, reason: str) -> None:
        self.threads.append(threading.current_thread().name)
        self.entered.set()
        assert self.release.wait(30)


def test_a_hung_engine_never_blocks_the_loop(rig: Rig) -> None:  # noqa: F811
    rig.rule_file.write_text(RULES + KILL_AND_ISOLATE)
    rig.rules.reload()
    quarantine = HungQuarantine()
    slow = SlowActions()
    pipeline = Pipeline(enricher=rig.enricher, rules=lambda: rig.rules.current,
                        policy=rig.policy,
                        responder=Responder(quarantine=quarantine,  # type: ignore[arg-type]
                                            guard=rig.policy.kill_guard),
                        alerts=AlertDispatcher(rig.delivery), taps=EventTaps(Topic("events")),
                        slow=slow)
    handled: list[Any] = []
    loop = threading.Thread(target=lambda: handled.extend(
        pipeline.handle(exec_record(rig.web_cgroup, "/usr/bin/ncat", "ncat", pid=4243))
        for _ in range(1)))
    try:
        loop.start()
        assert quarantine.entered.wait(10)
        loop.join(10)
        assert not loop.is_alive(), "the loop waited for the hung engine"
        # the loop goes on: more events are handled while the isolate still hangs
        more = pipeline.handle(exec_record(rig.web_cgroup, "/bin/cat", "cat", "/etc/passwd"))
        assert more.event is not None
        [first] = handled
        assert first.deferred == 1 and first.alerts == ()
        # no alert without the isolate's outcome yet (the cat's own alert came at once)
        assert [a.rule.id for a in rig.recorded.alerts] == ["t.cat-passwd"]
        assert slow.pending == 1
        assert quarantine.threads == ["roxd-actions"]
        quarantine.release.set()
        for _ in range(200):
            if slow.finish_pending():
                break
            threading.Event().wait(0.05)
    finally:
        quarantine.release.set()
        slow.close(5)
    rig.delivery.noise.tick()
    [alert] = [a for a in rig.recorded.alerts if a.rule.id == "t.nc-kill-isolate"]
    got = [(a.action.value, a.outcome) for a in alert.actions]
    assert [a for a, _ in got] == ["alert", "kill", "isolate"]  # the rule's order
    assert dict(got)["isolate"] is Outcome.DONE
    assert dict(got)["kill"] in (Outcome.DONE, Outcome.FAILED)  # ran inline (pid 4243: gone)


def test_a_swamped_worker_runs_the_action_inline_never_losing_the_alert(
        rig: Rig) -> None:  # noqa: F811
    rig.rule_file.write_text(RULES + KILL_AND_ISOLATE)
    rig.rules.reload()
    quarantine = HungQuarantine()
    quarantine.release.set()  # answers at once
    slow = SlowActions(max_pending=1)
    slow.close(1)  # closed: every submit is refused
    pipeline = Pipeline(enricher=rig.enricher, rules=lambda: rig.rules.current,
                        policy=rig.policy,
                        responder=Responder(quarantine=quarantine,  # type: ignore[arg-type]
                                            guard=rig.policy.kill_guard),
                        alerts=AlertDispatcher(rig.delivery), taps=EventTaps(Topic("events")),
                        slow=slow)
    out = pipeline.handle(exec_record(rig.web_cgroup, "/usr/bin/ncat", "ncat", pid=4244))
    assert out.deferred == 0 and len(out.alerts) == 1
    assert {a.action.value for a in out.alerts[0].actions} == {"alert", "kill", "isolate"}
