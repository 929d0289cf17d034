"""roxd's ready line: one readable line that says what was attached, what is enforced and
where the API listens (the shipped rule pack, the tracepoint names a real start attaches)."""

from __future__ import annotations

from pathlib import Path

import pytest

from roxd.rules.active import ActiveRules
from roxd.rules.ruleset import KillPath
from roxd.startup_line import ReadyFacts, attached_summary, ready_line

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]
ATTACHED = ("sched:sched_process_exec", "sched:sched_process_exit", "sched:sched_process_fork",
            "syscalls:sys_enter_connect", "syscalls:sys_enter_openat", "syscalls:sys_enter_bpf")


def pack() -> ActiveRules:
    rules = ActiveRules([REPO / "rules"])
    rules.load()
    return rules


def test_attached_programs_in_words() -> None:
    assert attached_summary(ATTACHED) == "process exec, exit, fork; 3 syscalls"
    assert attached_summary(("syscalls:sys_enter_bpf", "sock:inet_sock_set_state")) == \
        "1 syscall; inet_sock_set_state"
    assert attached_summary(()) == "none"


def test_ready_line_counts_rules_and_in_kernel_kills() -> None:
    rules = pack().current
    facts = ReadyFacts(ATTACHED, rules, kills_in_kernel=True, monitor=False, runtime="docker",
                       containers=3, api_socket="/run/roxd/roxd.sock")
    line = ready_line(facts)
    in_kernel = sum(1 for r in rules.rules if r.enabled and not r.monitor
                    and r.kill_path is KillPath.IN_KERNEL)
    assert in_kernel > 0  # the shipped pack kills some execs in the kernel
    assert line.startswith("roxd is watching: 6 programs attached (process exec, exit, fork; "
                           "3 syscalls), ")
    assert f"{len(rules.rules)} rules (" in line and f"{in_kernel} kill in kernel" in line
    assert line.endswith("runtime docker, 3 containers, api /run/roxd/roxd.sock")
    assert "\n" not in line
    monitor = ready_line(ReadyFacts(ATTACHED, rules, kills_in_kernel=True, monitor=True,
                                    runtime="none", containers=0, api_socket="/s"))
    assert "monitor mode: nothing is killed" in monitor and "kill in kernel" not in monitor
    old_kernel = ready_line(ReadyFacts(ATTACHED, rules, kills_in_kernel=False, monitor=False,
                                       runtime="docker", containers=0, api_socket="/s"))
    assert "kills in userspace only" in old_kernel  # never claims kernel kills it cannot do
