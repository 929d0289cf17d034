"""A kernel kill right across a rule reload is reported against the rule that killed.

The real programs, loaded in this process: the kernel kills an exec by its in-kernel table and
writes the verdict into the record; the record waits in the ring buffer while a reload
renumbers the kill rules (the rule's old index now belongs to another rule); then the record is
read. Its verdict names its own rule set's generation, so the alert names the right rule.
Before roxd/policy/ the slot table was renumbered from 1 on every reload and this alert named
whichever rule took the old slot.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from roxd.alerts.dispatch import AlertDispatcher
from roxd.containers.attribution import ContainerAttribution
from roxd.enforce.response import Responder
from roxd.model import Alert
from roxd.pipeline import EventTaps, Handled, Pipeline
from roxd.policy.kernel import KernelPolicy
from roxd.policy.kill_tables import split_verdict
from roxd.pubsub import Topic
from roxd.rules.active import ActiveRules
from roxd.sensor.program import Sensor, SensorConfig
from roxd.sensor.records import Decoded

pytestmark = pytest.mark.kernel


def kill_rule(rule_id: str, basename: str) -> str:
    return f'''
[[rule]]
id = "{rule_id}"
name = "kill {basename}"
description = "Test rule: {basename} is killed at exec, in the kernel."
phase = "objectives"
severity = "critical"
mitre = ["T1496"]
event = "exec"
actions = ["alert", "kill"]
[rule.when]
exe_basename = "{basename}"
'''


class Collected:
    def __init__(self) -> None:
        self.alerts: list[Alert] = []

    def emit(self, alert: Alert) -> None:
        self.alerts.append(alert)


def test_kill_across_a_reload_names_the_rule_that_killed(tmp_path: Path) -> None:
    target = tmp_path / "roxd-xr-target"
    shutil.copy("/bin/true", target)
    rule_file = tmp_path / "rules.toml"
    rule_file.write_text(kill_rule("t.first", "roxd-xr-first")
                         + kill_rule("t.target", "roxd-xr-target"))
    rules = ActiveRules([rule_file])
    rules.load()
    attribution = ContainerAttribution.from_host(docker_url=None)
    attribution.start()
    collected = Collected()
    handled: list[Handled] = []
    pipeline: list[Pipeline] = []

    def on_record(decoded: Decoded) -> None:
        handled.append(pipeline[0].handle(decoded))

    sensor = Sensor(SensorConfig(cache_dir=tmp_path / "cache"), on_record)
    sensor.start()
    try:
        policy = KernelPolicy(sensor, enforce_in_kernel=True, fold_window_ns=0,
                              containers=attribution.resolver.containers,
                              known_cgroups=attribution.index.known_ids,
                              host_kills=True)  # the target is this test's own host process
        pipeline.append(Pipeline(
            enricher=attribution.enricher, rules=lambda: rules.current, policy=policy,
            responder=Responder(guard=policy.kill_guard), alerts=AlertDispatcher(collected),
            taps=EventTaps(Topic("events"))))
        policy.apply_rules(rules.current)
        rules.add_listener(policy.apply_rules)

        # the kernel kills it at exec; its record waits in the ring buffer (no poll yet)
        done = subprocess.run([str(target)], check=False)
        assert done.returncode == -9

        # a reload: t.target moves from index 2 to 3; index 2 now belongs to t.middle
        rule_file.write_text(kill_rule("t.other", "roxd-xr-other")
                             + kill_rule("t.middle", "roxd-xr-middle")
                             + kill_rule("t.target", "roxd-xr-target"))
        rules.reload()

        for _ in range(50):
            sensor.poll(100)
            ours = [h for h in handled
                    if h.event.process.exe.endswith("roxd-xr-target")
                    or getattr(h.event.event, "filename", "").endswith("roxd-xr-target")]
            if ours:
                break
        assert ours, "the exec record never arrived"
        record = ours[0]
        assert record.killed_by == "t.target"
        assert [m.rule.id for m in record.matches] == ["t.target"]
        alert = next(a for a in collected.alerts if a.rule.id == "t.target")
        kill = next(a for a in alert.actions if a.action.value == "kill")
        assert kill.in_kernel and kill.outcome.value == "done"
        assert not any(a.rule.id == "t.middle" for a in collected.alerts)
        # and the kernel now holds the new generation for the same binary
        generations = {split_verdict(v)[0] for v in policy.exec_table.entries.values()}
        assert len(generations) == 1 and policy.counters.unknown_verdicts == 0
    finally:
        sensor.close()
        attribution.stop()


def test_a_really_full_kernel_map_is_counted_and_roxd_goes_on(tmp_path: Path) -> None:
    """exec_kill holds 16,384 entries; a rule with 17,000 basenames for every container needs
    17,000. The real map refuses the rest; the policy counts it and keeps writing the other
    maps (on the old code the bare exception from bcc escaped). The rule admits the host and
    every container, so the exec hold stays off: this test never stops a process on the host.
    (Such a rule set is refused at load by the capacity check; the policy is driven directly
    here to fill the real map.)"""
    rule_file = tmp_path / "rules.toml"
    names = ", ".join(f'"roxd-full-{i}"' for i in range(17_000))
    rule_file.write_text(kill_rule("t.many", "roxd-full-map").replace(
        'exe_basename = "roxd-full-map"', f"exe_basename = [{names}]"))
    rules = ActiveRules([rule_file])
    rules.load()
    sensor = Sensor(SensorConfig(cache_dir=tmp_path / "cache"), lambda _d: None)
    sensor.start()
    try:
        policy = KernelPolicy(sensor, enforce_in_kernel=True, fold_window_ns=0,
                              containers=list, known_cgroups=tuple)
        policy.apply_rules(rules.current)
        snap = policy.snapshot()
        assert snap["hold_unknown"] is False
        assert snap["map_write_errors_by_writer"].get("set_exec_kills", 0) >= 1
        assert snap["exec_kill_entries"] == 17_000  # what the policy wanted
    finally:
        sensor.close()
