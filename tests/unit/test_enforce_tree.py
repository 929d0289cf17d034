"""kill_target = "process-tree" against a real tree that is still forking.

A shell that starts sleepers as fast as it can is the worst case for a walk-then-kill: any
child forked between the walk and the kill of its parent survives, re-parented. The tree is
stopped first, so none may survive. Real processes, no kernel programs; only this test's own
processes are signalled (the shell runs in a session of its own; survivors are counted, and
cleaned up, by that session id).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid

import psutil
import pytest

from roxd.enforce.protect import KillGuard
from roxd.enforce.response import Responder
from roxd.model import (
    ActionKind,
    EnrichedEvent,
    ExecEvent,
    Outcome,
    Phase,
    Process,
    RuleMatch,
    RuleRef,
    Severity,
)

pytestmark = pytest.mark.unit


def _session(sid: int) -> list[int]:
    """Live (not zombie) processes of session `sid`: the shell's whole tree, re-parented or not."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":  # state, ppid, pgrp, session
            found.append(int(entry))
    return found


def test_a_forking_tree_is_stopped_then_killed_whole() -> None:
    tag = f"roxd-tree-{uuid.uuid4().hex[:8]}"
    # sleepers named by the tag through argv[0] (exec -a is not in every sh: use a script arg)
    script = (f"i=0; while [ $i -lt 400 ]; do sh -c 'sleep 300' {tag} & i=$((i+1)); done; "
              "wait")
    shell = subprocess.Popen(["sh", "-c", script, tag], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while len(psutil.Process(shell.pid).children(recursive=True)) < 20:
            assert time.monotonic() < deadline, "the shell never started its sleepers"
            time.sleep(0.01)
        comm = psutil.Process(shell.pid).name()
        event = EnrichedEvent(
            event=ExecEvent(time_ns=time.time_ns(), pid=shell.pid, ppid=os.getpid(), uid=0,
                            gid=0, cgroup_id=0, comm=comm, filename="/bin/sh",
                            args=("sh", "-c", script), args_truncated=False),
            container=None,
            process=Process(pid=shell.pid, ppid=os.getpid(), uid=0, exe="/bin/sh",
                            comm=comm, args=("sh",), cgroup_id=0))
        rule = RuleRef(id="t.tree", name="tree", phase=Phase.OBJECTIVES,
                       severity=Severity.WARNING, mitre=(), description="test")
        match = RuleMatch(rule, (ActionKind.KILL,), kill_target="process-tree")
        # a host process: host kills are opt-in ([enforce] host_kills)
        (result,) = Responder(guard=KillGuard(host_kills=True)).respond(match, event)
        assert result.outcome is Outcome.DONE, result
        assert "stopped, then killed" in result.reason
        shell.wait(10)
        deadline = time.monotonic() + 5
        while True:
            alive = _session(shell.pid)
            if not alive or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert alive == [], f"{len(alive)} processes of the tree survived"
    finally:
        for pid in _session(shell.pid):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        if shell.poll() is None:
            shell.kill()
