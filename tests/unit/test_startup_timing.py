"""The start-up stage timings (roxd/startup_timing.py): their structure, never their values."""

from __future__ import annotations

import json
import threading
import time

import pytest

from roxd.startup_timing import (
    COMPILE_THREAD,
    MAIN,
    StageTime,
    StartupClock,
    process_age_s,
    timed,
)


def _burn_cpu(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_a_stage_records_wall_and_its_own_threads_cpu() -> None:
    clock = StartupClock()
    with clock.stage("busy"):
        _burn_cpu(0.02)
    with clock.stage("asleep"):
        time.sleep(0.02)
    busy, asleep = clock.stages
    assert (busy.name, busy.thread, asleep.name) == ("busy", MAIN, "asleep")
    assert busy.cpu_s >= 0.02 and busy.wall_s >= busy.cpu_s * 0.5
    # sleeping costs wall time, not CPU: the two columns are measured apart
    assert asleep.wall_s >= 0.02 and asleep.cpu_s < asleep.wall_s


def test_a_stage_that_raises_is_still_recorded() -> None:
    clock = StartupClock()
    with pytest.raises(RuntimeError), clock.stage("failing"):
        raise RuntimeError("boom")
    assert [s.name for s in clock.stages] == ["failing"]


def test_another_threads_cpu_is_not_charged_to_the_main_stage() -> None:
    # the compile thread's CPU belongs to its own stages: a main-thread stage that waits for
    # it (bpf compile wait) costs wall time, not CPU
    done: list[StageTime] = []
    clock = StartupClock()

    def work() -> None:
        with timed(done, "bpf compile", COMPILE_THREAD):
            _burn_cpu(0.05)

    worker = threading.Thread(target=work)
    with clock.stage("bpf compile wait"):
        worker.start()
        worker.join()
    clock.add(*done)
    wait, compile_ = clock.stages
    assert compile_.thread == COMPILE_THREAD and compile_.cpu_s >= 0.05
    assert wait.cpu_s < compile_.cpu_s


def test_ready_adds_the_interpreter_stage_and_totals() -> None:
    clock = StartupClock()
    with clock.stage("config"):
        pass
    clock.ready()
    d = clock.to_dict()
    assert d["ready_s"] is not None and d["process_cpu_s"] is not None
    names = [s["name"] for s in d["stages"]]  # type: ignore[index]
    assert names == ["interpreter", "config"]
    for stage in d["stages"]:  # type: ignore[attr-defined]
        assert set(stage) == {"name", "wall_s", "cpu_s", "thread"}
        assert stage["wall_s"] >= 0 and stage["cpu_s"] >= 0
    # the process is older than the clock: its age covers every main-thread stage
    assert d["ready_s"] >= sum(s["wall_s"] for s in d["stages"]  # type: ignore[attr-defined]
                               if s["thread"] == MAIN) - 0.002
    clock.ready()  # asked twice: still one interpreter stage
    assert [s.name for s in clock.stages].count("interpreter") == 1
    assert json.loads(clock.to_json()) == clock.to_dict()


def test_process_age_is_read_from_proc() -> None:
    age = process_age_s()
    assert age is not None and age > 0


def test_summary_names_the_longest_stages_and_marks_overlapped_ones() -> None:
    clock = StartupClock()
    clock.add(StageTime("rules", 0.2, 0.1, MAIN), StageTime("bpf compile", 2.0, 1.9,
                                                             COMPILE_THREAD),
              StageTime("api", 0.01, 0.0, MAIN))
    text = clock.summary(top=2)
    assert text.startswith("start-up: bpf compile 2.00s (cpu 1.90s, overlapped), rules 0.20s")
    assert "api" not in text
    clock.ready_s = 3.0
    assert clock.summary().startswith("start-up 3.00s: ")


@pytest.mark.parametrize("ready_s", [3.925001, 3.9245, 3.92499, 0.0049, 12.3456789])
def test_the_summary_and_status_agree_on_ready_seconds(ready_s: float) -> None:
    """The READY line and /v1/status must not disagree in the second decimal: CI once read
    "start-up 3.93s" beside a status of 3.925 (rounded twice, differently)."""
    clock = StartupClock()
    clock.ready_s = ready_s
    logged = clock.to_dict()["ready_s"]
    assert isinstance(logged, float)
    assert clock.summary().startswith(f"start-up {logged:.2f}s")


def test_the_ready_line_carries_the_summary() -> None:
    from roxd.rules.ruleset import RuleSet
    from roxd.startup_line import ReadyFacts, ready_line

    facts = dict(tracepoints=("sched:sched_process_exec",),
                 rules=RuleSet(rules=(), version="v1", files=()), kills_in_kernel=True,
                 monitor=False, runtime="docker", containers=0, api_socket="/run/x.sock")
    assert ready_line(ReadyFacts(**facts, startup="start-up 1.00s: rules 0.10s (cpu 0.05s)")
                      ).endswith("api /run/x.sock; start-up 1.00s: rules 0.10s (cpu 0.05s)")
    assert ready_line(ReadyFacts(**facts)).endswith("api /run/x.sock")
