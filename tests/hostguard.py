"""What the test suite could disturb on the host it runs on, read before and after a session.

The suite runs as root against the real kernel: a test that fchmod'ed /dev/null (found on a
machine after `make test`: every non-root write to /dev/null then failed) or that leaves a
process stopped must fail the run, not pass and leave the host broken. Only facts no test may
change are read; each is compared as a whole.
"""

from __future__ import annotations

import os
import stat
import subprocess
from dataclasses import dataclass

DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty")


@dataclass(frozen=True)
class HostState:
    device_modes: tuple[tuple[str, str], ...]
    stopped_orphans: frozenset[tuple[int, str]]  # (pid, "comm argv") stopped, parent init
    host_roxd_tables: tuple[str, ...]  # nft tables named roxd* in the host's own netns

    def changes_since(self, before: HostState) -> list[str]:
        problems = []
        if self.device_modes != before.device_modes:
            problems.append(f"device modes changed: {before.device_modes} -> "
                            f"{self.device_modes}")
        new_orphans = self.stopped_orphans - before.stopped_orphans
        if new_orphans:
            problems.append(f"processes left stopped with no parent: {sorted(new_orphans)}")
        if self.host_roxd_tables != before.host_roxd_tables:
            problems.append(f"roxd nft tables in the host's netns: {self.host_roxd_tables}")
        return problems


def _device_modes() -> tuple[tuple[str, str], ...]:
    out = []
    for path in DEVICES:
        try:
            out.append((path, stat.filemode(os.stat(path).st_mode)))
        except OSError:
            out.append((path, "absent"))
    return tuple(out)


def _stopped_orphans() -> frozenset[tuple[int, str]]:
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                raw = f.read()
        except OSError:
            continue
        comm = raw[raw.find("(") + 1:raw.rfind(")")]
        fields = raw.rpartition(")")[2].split()
        if fields and fields[0] in ("T", "t") and fields[1] == "1":
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    argv = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                argv = ""
            found.add((int(entry), f"{comm} [{argv}] session {fields[4]}"))
    return frozenset(found)


def _host_roxd_tables() -> tuple[str, ...]:
    try:
        out = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True,
                             timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    return tuple(sorted(line for line in out.splitlines() if " roxd" in line))


def read_host_state() -> HostState:
    return HostState(_device_modes(), _stopped_orphans(), _host_roxd_tables())
