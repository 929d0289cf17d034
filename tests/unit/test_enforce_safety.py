"""Enforcement safety (issue 23, items 3, 8 and 10) against real processes this test starts.

- 3: a process that renames itself (prctl PR_SET_NAME) after exec is still the process of the
  event: identity is its start time (/proc/<pid>/stat field 22, bounded by the event's time),
  held by a pidfd, never its name. A process that started after the event (the pid was
  reused) is never hit.
- 8: an action that raises something no one expected (a runtime client's connection error, a
  container's netns vanishing mid-isolate) fails that action, with the reason; the others
  still run and report.
- 10: protected processes (pid 1, roxd and its ancestors, the runtime daemons, sshd,
  systemd*, configurable) are never killed, and kills on the host are opt-in: the shipped
  pack does not kill an operator's `grep -r cryptonight /var/log`.

Only this test's own children are signalled, and each is killed and reaped in `finally`.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from roxd.config import shipped_rules_dir
from roxd.enforce.response import Responder
from roxd.model import (
    ActionKind,
    Container,
    EnrichedEvent,
    ExecEvent,
    Outcome,
    Phase,
    Process,
    RuleMatch,
    RuleRef,
    Severity,
)
from roxd.rules.active import ActiveRules

pytestmark = pytest.mark.unit

RULE = RuleRef(id="t.kill", name="kill", phase=Phase.OBJECTIVES, severity=Severity.CRITICAL,
               mitre=(), description="test")
CONTAINER = Container(id="ab" * 32, runtime="docker", name="evil")
EXEC_COMM = os.path.basename(sys.executable)[:15]  # the name a child has at exec

# A child that sets its own name after exec, as a miner hiding as a kernel thread does, then
# says so and waits to be killed.
RENAMER = """
import ctypes, sys, time
name = sys.argv[1].encode()
if name:
    ctypes.CDLL(None, use_errno=True).prctl(15, ctypes.c_char_p(name), 0, 0, 0)  # PR_SET_NAME
print("ready", flush=True)
time.sleep(120)
"""


@contextlib.contextmanager
def child(rename_to: str = "") -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen([sys.executable, "-c", RENAMER, rename_to], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        if rename_to:
            with open(f"/proc/{proc.pid}/comm") as f:
                assert f.read().strip() == rename_to[:15]
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def exec_event(pid: int, *, comm: str = EXEC_COMM, time_ns: int | None = None,
               container: Container | None = CONTAINER,
               args: tuple[str, ...] = (EXEC_COMM,)) -> EnrichedEvent:
    """The exec of `pid` as roxd saw it: the name it had at exec, the time of the exec."""
    ev = ExecEvent(time_ns=time.time_ns() if time_ns is None else time_ns, pid=pid,
                   ppid=os.getpid(), uid=0, gid=0, cgroup_id=0, comm=comm,
                   filename=sys.executable, args=args, args_truncated=False)
    return EnrichedEvent(ev, container, Process(pid=pid, ppid=os.getpid(), uid=0,
                                                exe=sys.executable, comm=comm, args=args,
                                                cgroup_id=0))


def died(proc: subprocess.Popen[str], timeout: float = 5.0) -> bool:
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return False
    return True


# ---------------------------------------------------------------------- 3: identity


@pytest.mark.parametrize("kill_target", ["process", "process-tree"])
def test_a_process_that_renames_itself_is_still_killed(kill_target: str) -> None:
    with child(rename_to="kworker/0:1") as proc:
        event = exec_event(proc.pid)  # its name at exec: EXEC_COMM
        (result,) = Responder().respond(
            RuleMatch(RULE, (ActionKind.KILL,), kill_target=kill_target), event)
        assert result.outcome is Outcome.DONE, result
        assert died(proc) and proc.returncode == -9


@pytest.mark.parametrize("kill_target", ["process", "process-tree"])
def test_a_reused_pid_is_never_killed(kill_target: str) -> None:
    """The event is two seconds older than the process now holding its pid: same name, same
    pid, another process (it started after the event)."""
    with child() as proc:
        event = exec_event(proc.pid, time_ns=time.time_ns() - 2_000_000_000)
        (result,) = Responder().respond(
            RuleMatch(RULE, (ActionKind.KILL,), kill_target=kill_target), event)
        assert result.outcome is Outcome.FAILED, result
        assert "reused" in result.reason
        assert not died(proc, 0.3), "a process that started after the event was killed"


# ---------------------------------------------------------------------- 8: unexpected errors


class VanishingQuarantine:
    """Quarantine.isolate as it fails when the container's init exits between the runtime's
    inspect and the stat of its netns."""

    def is_quarantined(self, container_id: str) -> bool:
        return False

    def isolate(self, container_id: str, name: str | None, reason: str) -> None:
        raise FileNotFoundError(2, "No such file or directory", "/proc/4242/ns/net")


def test_an_action_that_raises_fails_alone_and_the_others_still_report() -> None:
    with child() as proc:
        responder = Responder(quarantine=VanishingQuarantine())  # type: ignore[arg-type]
        match = RuleMatch(RULE, (ActionKind.ALERT, ActionKind.ISOLATE, ActionKind.KILL))
        results = responder.respond(match, exec_event(proc.pid))
        got = {r.action: r for r in results}
        assert [r.action for r in results] == [ActionKind.ALERT, ActionKind.ISOLATE,
                                               ActionKind.KILL]
        assert got[ActionKind.ALERT].outcome is Outcome.DONE
        assert got[ActionKind.ISOLATE].outcome is Outcome.FAILED
        assert "FileNotFoundError" in got[ActionKind.ISOLATE].reason
        assert "/proc/4242/ns/net" in got[ActionKind.ISOLATE].reason
        assert got[ActionKind.KILL].outcome is Outcome.DONE  # the kill after it still ran
        assert died(proc)


# ---------------------------------------------------------------------- 10: protected, opt-in


def test_the_shipped_pack_does_not_kill_a_host_grep_for_cryptonight() -> None:
    """An operator's `grep -r cryptonight /var/log` on the host matches the shipped
    objectives.crypto-miner-arguments rule (alert, kill): with the default settings it is
    alerted, never killed."""
    rules = ActiveRules([shipped_rules_dir()]).load()
    with child() as proc:
        event = exec_event(proc.pid, container=None,
                           args=("grep", "-r", "cryptonight", "/var/log"))
        matches = [m for m in rules.match(event)
                   if m.rule.id == "objectives.crypto-miner-arguments"]
        assert matches, "the shipped rule should still match (and alert)"
        results = Responder().respond(matches[0], event)
        kill = next(r for r in results if r.action is ActionKind.KILL)
        assert kill.outcome is not Outcome.DONE, kill
        assert "host kills off" in kill.reason
        assert not died(proc, 0.3), "the operator's grep was killed"
        # the same process in a container is a miner: killed
        in_container = exec_event(proc.pid, args=("grep", "-r", "cryptonight", "/var/log"))
        results = Responder().respond(matches[0], in_container)
        assert next(r for r in results if r.action is ActionKind.KILL).outcome is Outcome.DONE
        assert died(proc)


def host_kills_on(**protected: tuple[str, ...]) -> Responder:
    from roxd.enforce.protect import KillGuard, ProtectedProcesses

    return Responder(guard=KillGuard(host_kills=True,
                                     protected=ProtectedProcesses.with_extra(**protected)))


@pytest.mark.parametrize("kill_target", ["process", "process-tree"])
def test_a_protected_host_process_is_never_killed(kill_target: str) -> None:
    with child(rename_to="sshd") as proc:  # on the host, named as the ssh daemon
        event = exec_event(proc.pid, comm="sshd", container=None)
        (result,) = host_kills_on().respond(
            RuleMatch(RULE, (ActionKind.KILL,), kill_target=kill_target), event)
        assert result.outcome is Outcome.FAILED and result.reason.startswith(
            "protected process"), result
        assert "sshd" in result.reason
        assert not died(proc, 0.3), "sshd was killed"


def test_configured_protected_comms_and_exes() -> None:
    with child(rename_to="backup-agent") as proc:
        event = exec_event(proc.pid, comm="backup-agent", container=None)
        match = RuleMatch(RULE, (ActionKind.KILL,))
        (result,) = host_kills_on(comms=("backup-*",)).respond(match, event)
        assert result.outcome is Outcome.FAILED and "protected process" in result.reason
        exe = os.path.realpath(f"/proc/{proc.pid}/exe")
        (result,) = host_kills_on(exes=(exe,)).respond(match, event)
        assert result.outcome is Outcome.FAILED and exe in result.reason
        assert not died(proc, 0.2)
        (result,) = host_kills_on().respond(match, event)  # opted in, not protected: killed
        assert result.outcome is Outcome.DONE, result
        assert died(proc)


def test_roxd_itself_its_ancestors_and_pid_1_are_never_killed() -> None:
    """Checked without sending anything: the guard answers before any signal."""
    from roxd.enforce.protect import ProtectedProcesses

    guard = ProtectedProcesses()
    assert "pid 1" in (guard.reason(1) or "")
    assert "roxd itself" in (guard.reason(os.getpid()) or "")
    assert "ancestor of roxd" in (guard.reason(os.getppid()) or "")
    with child() as proc:
        assert guard.reason(proc.pid) is None


def test_names_protect_host_processes_only() -> None:
    """A container process calling itself sshd is not the host's ssh daemon: in a container,
    a name protects nothing (else renaming would be an escape from every kill)."""
    with child(rename_to="sshd") as proc:
        (result,) = host_kills_on().respond(RuleMatch(RULE, (ActionKind.KILL,)),
                                            exec_event(proc.pid, comm="sshd"))
        assert result.outcome is Outcome.DONE, result
        assert died(proc)


BYTE_RENAMER = r"""
import ctypes, sys, time
ctypes.CDLL(None).prctl(15, ctypes.c_char_p(b"\xff\xfe(x) y"), 0, 0, 0)  # PR_SET_NAME
print("ready", flush=True)
time.sleep(60)
"""


def test_a_comm_that_is_not_utf8_neither_breaks_nor_escapes_a_kill() -> None:
    """A process controls its own comm, bytes and parentheses included: reading its start
    time and its protection must not fail on them (a strict UTF-8 read raised, the kill was
    lost), and it is still killed."""
    from roxd.enforce.kill import kill_pid, start_ticks
    from roxd.enforce.protect import ProtectedProcesses

    proc = subprocess.Popen([sys.executable, "-c", BYTE_RENAMER], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        with open(f"/proc/{proc.pid}/comm", "rb") as f:
            assert f.read().startswith(b"\xff\xfe(x) y")
        ticks = start_ticks(proc.pid)
        assert isinstance(ticks, int) and ticks > 0
        outcome = kill_pid(proc.pid, expect_start_ticks=ticks,
                           protect=ProtectedProcesses.with_extra(("sshd",)))
        assert outcome.killed, outcome.reason
        assert died(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
