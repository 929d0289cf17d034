"""Issue 22, batched ring-buffer wake-ups: which records the kernel must still wake roxd for
at once (roxd/policy/wakeups.py -> ring_urgent in bpf/process.bpf.c). A record a rule may
answer with a kill by pidfd (or any action roxd takes itself) must not wait for the batched
poll; records only alerted on, or killed in the kernel before they were written, may."""

from __future__ import annotations

import ctypes as ct
from pathlib import Path

import pytest

from roxd.policy.kernel import KernelPolicy
from roxd.policy.wakeups import CONTAINERS, HOST, urgent_mask
from roxd.rules.active import ActiveRules
from roxd.rules.ruleset import RuleSet
from roxd.sensor import program
from roxd.sensor.program import RING_POLL_MARGIN_MS, Sensor, SensorConfig, sensor_cflags
from tests.unit.test_pipeline import FakeMaps

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]


def rule(rule_id: str, event: str, actions: str, when: str, scope: str = "",
         extra: str = "") -> str:
    return f'''
[[rule]]
id = "{rule_id}"
name = "{rule_id}"
description = "Test rule."
phase = "objectives"
severity = "critical"
mitre = ["T1496"]
event = "{event}"
actions = [{actions}]
{extra}
[rule.when]
{when}
{scope}
'''


def load(tmp_path: Path, *texts: str) -> RuleSet:
    path = tmp_path / "rules.toml"
    path.write_text("".join(texts))
    return ActiveRules([path]).load()


ARGV_KILL = rule("t.argv-kill", "exec", '"alert", "kill"', 'cmdline = { contains = ["x-miner"] }')
NAME_KILL = rule("t.name-kill", "exec", '"alert", "kill"', 'exe_basename = ["xmrig"]',
                 "[rule.scope]\nhost = false")
ALERT_ONLY = [rule("t.exec-alert", "exec", '"alert"', 'exe_basename = ["nc"]'),
              rule("t.file-alert", "file", '"alert"', 'path = ["/etc/shadow"]')]


def test_alert_only_rules_and_kernel_kills_wake_nothing(tmp_path: Path) -> None:
    rules = load(tmp_path, NAME_KILL, *ALERT_ONLY)
    assert urgent_mask(rules, kills_in_kernel=True, host_kills=True, monitor=False) == 0


def test_a_kernel_kill_rule_is_urgent_where_the_kernel_cannot_kill(tmp_path: Path) -> None:
    # no bpf_send_signal: the kill is done by pidfd in userspace, after the record is read
    rules = load(tmp_path, NAME_KILL)
    assert urgent_mask(rules, kills_in_kernel=False, host_kills=True,
                       monitor=False) == CONTAINERS


def test_monitor_mode_makes_no_place_urgent(tmp_path: Path) -> None:
    # [rules] monitor: every kill, isolate and container kill is a "would", nothing runs on
    # because a record waited for the batched poll (kernel kills are off there too)
    isolate = rule("t.isolate", "connect", '"alert", "isolate"', 'dport = [4444]')
    container_kill = rule("t.ckill", "exec", '"alert", "kill"', 'exe_basename = ["nc"]',
                          extra='kill_target = "container"')
    rules = load(tmp_path, ARGV_KILL, NAME_KILL, isolate, container_kill, *ALERT_ONLY)
    assert urgent_mask(rules, kills_in_kernel=False, host_kills=True,
                       monitor=False) == CONTAINERS | HOST
    assert urgent_mask(rules, kills_in_kernel=False, host_kills=True, monitor=True) == 0


def test_the_policy_in_monitor_mode_writes_no_urgent_place(tmp_path: Path) -> None:
    # the daemon builds the policy with monitor from [rules] monitor; without
    # bpf_send_signal (enforce_in_kernel off too, but kills by pidfd) the places stay urgent
    for monitor, want in ((True, 0), (False, CONTAINERS)):
        maps = FakeMaps()
        policy = KernelPolicy(maps, enforce_in_kernel=False, fold_window_ns=0,
                              containers=list, host_kills=False, monitor=monitor)
        policy.apply_rules(ActiveRules([REPO / "rules"]).load())
        assert maps.ring_urgent == want
        assert policy.snapshot()["ring_urgent"] == want


def test_a_userspace_kill_wakes_for_containers_and_for_the_host_only_with_host_kills(
        tmp_path: Path) -> None:
    rules = load(tmp_path, ARGV_KILL, *ALERT_ONLY)
    assert urgent_mask(rules, kills_in_kernel=True, host_kills=False,
                       monitor=False) == CONTAINERS
    assert urgent_mask(rules, kills_in_kernel=True, host_kills=True, monitor=False) == (
        CONTAINERS | HOST)


def test_disabled_and_monitor_rules_wake_nothing(tmp_path: Path) -> None:
    rules = load(tmp_path, rule("t.off", "exec", '"alert", "kill"',
                                'cmdline = { contains = ["x"] }', extra="enabled = false"),
                 rule("t.dry", "exec", '"alert", "kill"', 'cmdline = { contains = ["y"] }',
                      extra="monitor = true"))
    assert urgent_mask(rules, kills_in_kernel=True, host_kills=True, monitor=False) == 0


def test_any_ring_event_counts_and_seccomp_does_not(tmp_path: Path) -> None:
    rules = load(tmp_path, rule("t.file-kill", "file", '"alert", "kill"',
                                'path = ["/etc/shadow"]', "[rule.scope]\nhost = false"))
    assert urgent_mask(rules, kills_in_kernel=True, host_kills=True, monitor=False) == CONTAINERS


def test_the_shipped_pack_wakes_for_containers_only(tmp_path: Path) -> None:
    # objectives.crypto-miner-arguments kills by pidfd in containers (host kills off)
    rules = ActiveRules([REPO / "rules"]).load()
    assert urgent_mask(rules, kills_in_kernel=True, host_kills=False,
                       monitor=False) == CONTAINERS


def test_the_policy_writes_the_mask_with_every_rule_set(tmp_path: Path) -> None:
    maps = FakeMaps()
    policy = KernelPolicy(maps, enforce_in_kernel=True, fold_window_ns=0,
                          containers=list, host_kills=False)
    policy.apply_rules(load(tmp_path, ARGV_KILL))
    assert maps.ring_urgent == CONTAINERS
    policy.apply_rules(load(tmp_path, *ALERT_ONLY))
    assert maps.ring_urgent == 0


class FakeRing:
    """bcc's ring-buffer calls. `queue`: records in the ring now; `during`: records that
    arrive while the next epoll_wait sleeps, each flagged whether it wakes the consumer (as
    the kernel does with BPF_RB_NO_WAKEUP); epoll_wait returns early only for one that does."""

    def __init__(self, sensor: Sensor) -> None:
        self.sensor = sensor
        self.queue: list[bool] = []
        self.during: list[bool] = []
        self.timeouts: list[int] = []
        self.slept_ms = 0
        self.awake_while_waiting: list[bytes] = []

    def ring_buffer_poll(self, timeout_ms: int) -> None:
        self.timeouts.append(timeout_ms)
        self.awake_while_waiting.append(bytes(self.sensor._consumer_flag or b""))
        self.queue += self.during
        self.during = []
        if any(self.queue):
            self.ring_buffer_consume()
        else:
            self.slept_ms += timeout_ms  # epoll_wait returns on its timeout, reading nothing

    def ring_buffer_consume(self) -> None:
        junk = ct.create_string_buffer(8)  # the real callback: counted, then undecodable
        for _ in self.queue:
            self.sensor._ring_callback(None, ct.addressof(junk), len(junk))
        self.queue = []


def fake_sensor(batch_ms: int, monkeypatch: pytest.MonkeyPatch) -> tuple[Sensor, FakeRing]:
    sensor = Sensor(SensorConfig(ring_batch_ms=batch_ms), lambda _d: None)
    ring = FakeRing(sensor)
    sensor._bpf = ring
    sensor._consumer_flag = bytearray(8)  # type: ignore[assignment]  # the mmapped u32

    def monotonic() -> float:  # the fake epoll_wait's sleeps are the only time that passes
        return ring.slept_ms / 1000

    monkeypatch.setattr(program.time, "monotonic", monotonic)
    return sensor, ring


def awake(sensor: Sensor) -> bool:
    return bytes(sensor._consumer_flag or b"")[:4] == (1).to_bytes(4, "little")


def test_records_written_without_a_wake_up_are_read_within_the_window(
        monkeypatch: pytest.MonkeyPatch) -> None:
    sensor, ring = fake_sensor(10, monkeypatch)
    window = 10 + RING_POLL_MARGIN_MS
    sensor.poll(100)  # idle: the daemon's long wait
    assert ring.timeouts == [100]
    ring.during = [True, False, False]  # the first record of a burst wakes, the rest do not
    sensor.poll(100)
    assert sensor._records == 3 and ring.timeouts[-1] == 100
    assert awake(sensor)  # between two reads: the kernel need not wake it
    ring.during = [False]  # written within the window, no wake-up
    sensor.poll(100)
    assert ring.timeouts[-1] == window and sensor._records == 4  # read at the window's end
    sensor.poll(100)  # a whole window with nothing: the burst is over
    assert ring.timeouts[-1] == window and not awake(sensor)
    sensor.poll(100)
    assert ring.timeouts[-1] == 100  # back to the long wait, where only a wake-up comes
    # it never slept saying it was awake
    assert set(ring.awake_while_waiting) == {bytes(8)}


def test_records_written_while_awake_are_read_before_sleeping(
        monkeypatch: pytest.MonkeyPatch) -> None:
    sensor, ring = fake_sensor(10, monkeypatch)
    ring.queue = [False, False]  # the kernel saw "awake" and sent no wake-up
    sensor.poll(100)
    assert sensor._records == 2 and ring.timeouts == []  # read at once, no wait


def test_a_record_read_by_drain_also_opens_a_window(monkeypatch: pytest.MonkeyPatch) -> None:
    sensor, ring = fake_sensor(10, monkeypatch)
    ring.queue = [True]
    sensor.drain = ring.ring_buffer_consume  # type: ignore[method-assign]
    sensor.drain()
    sensor.poll(100)
    assert ring.timeouts == [10 + RING_POLL_MARGIN_MS]


def test_batching_off_is_the_plain_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    sensor, ring = fake_sensor(0, monkeypatch)
    ring.queue = [True]
    sensor.poll(100)
    sensor.poll(100)
    assert ring.timeouts == [100, 100]


def test_cflags_carry_the_window() -> None:
    flags = sensor_cflags(SensorConfig(ring_batch_ms=7))
    assert "-DRING_BATCH_NS=7000000ULL" in flags
    assert "-DRING_BATCH_NS=0ULL" in sensor_cflags(SensorConfig(ring_batch_ms=0))
