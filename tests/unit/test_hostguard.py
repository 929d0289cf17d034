"""The session's host guard sees what it must: a changed device mode, a stopped orphan."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import time

import pytest

from tests.hostguard import read_host_state

pytestmark = pytest.mark.unit


def test_a_changed_device_mode_is_reported() -> None:
    before = read_host_state()
    assert ("/dev/null", "crw-rw-rw-") in before.device_modes
    tampered = dataclasses.replace(
        before, device_modes=tuple((p, "crwSr--r--" if p == "/dev/null" else m)
                                   for p, m in before.device_modes))
    assert any("/dev/null" in p for p in tampered.changes_since(before))
    assert before.changes_since(before) == []


def test_a_stopped_orphan_is_reported() -> None:
    before = read_host_state()
    # a grandchild that stops itself and whose parent exits: re-parented, stopped
    script = "sh -c 'kill -STOP $$; exit 0' >/dev/null 2>&1 & echo $!"
    child = subprocess.Popen(["sh", "-c", script], stdout=subprocess.PIPE, text=True)
    out, _ = child.communicate(timeout=10)
    orphan = int(out.strip())
    try:
        deadline = time.monotonic() + 5
        while True:
            problems = read_host_state().changes_since(before)
            if problems or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        # re-parented to init here (no subreaper in between) or to a subreaper: say which
        if os.getppid() != 1 and not any(str(orphan) in p for p in problems):
            with open(f"/proc/{orphan}/stat") as f:
                ppid = f.read().rpartition(")")[2].split()[1]
            assert ppid != "1", "a stopped orphan of init was not reported"
            pytest.skip(f"the orphan went to subreaper {ppid}, not init: nothing to see here")
        assert any(str(orphan) in p for p in problems), problems
    finally:
        os.kill(orphan, signal.SIGKILL)


def test_a_mount_left_behind_and_a_changed_sysctl_are_reported(tmp_path: object) -> None:
    before = read_host_state()
    target = f"{tmp_path}/mnt"
    os.mkdir(target)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "roxd-guard-test", target],
                   check=True)
    try:
        assert any(target in p for p in read_host_state().changes_since(before))
    finally:
        subprocess.run(["umount", target], check=True)
    assert read_host_state().changes_since(before) == []
    flipped = dataclasses.replace(before, sysctls=tuple(
        (k, "1" if k == "kernel/kptr_restrict" and v != "1" else v) for k, v in before.sysctls))
    if flipped.sysctls != before.sysctls:
        assert any("sysctls" in p for p in flipped.changes_since(before))
    gone = dataclasses.replace(before, containers=frozenset({"roxd-test-leftover"}))
    assert any("roxd-test-leftover" in p for p in gone.changes_since(before))
