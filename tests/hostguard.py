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


# sysctls a test could flip (forwarding for a netns test, core_pattern for an escape test,
# BPF and perf knobs for the sensor): read as text, compared as a whole
SYSCTLS = ("net/ipv4/ip_forward", "net/ipv4/conf/all/forwarding",
           "net/ipv6/conf/all/forwarding", "kernel/core_pattern",
           "kernel/unprivileged_bpf_disabled", "kernel/perf_event_paranoid",
           "kernel/kptr_restrict", "kernel/yama/ptrace_scope", "fs/suid_dumpable")
# mounts that come and go with containers the runtimes manage, not with a test's own mounts
RUNTIME_MOUNT_PREFIXES = ("/var/lib/docker/", "/run/docker/", "/var/run/docker/",
                          "/var/lib/containerd/", "/run/containerd/", "/var/lib/containers/",
                          "/run/containers/", "/run/user/", "/var/lib/machines/")


@dataclass(frozen=True)
class HostState:
    device_modes: tuple[tuple[str, str], ...]
    stopped_orphans: frozenset[tuple[int, str]]  # (pid, "comm argv") stopped, parent init
    host_roxd_tables: tuple[str, ...]  # nft tables named roxd* in the host's own netns
    sysctls: tuple[tuple[str, str], ...] = ()
    audit: str = ""  # `auditctl -s` enabled flag and `auditctl -l` rules, where auditd exists
    mounts: frozenset[str] = frozenset()  # mount points outside the runtimes' own trees
    containers: frozenset[str] = frozenset()  # this session's test containers still there

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
        if self.sysctls != before.sysctls:
            changed = sorted(set(self.sysctls) - set(before.sysctls))
            problems.append(f"sysctls changed: {changed}")
        if self.audit != before.audit:
            problems.append(f"audit state changed: {before.audit!r} -> {self.audit!r}")
        new_mounts = self.mounts - before.mounts
        if new_mounts:
            problems.append(f"mounts left behind: {sorted(new_mounts)}")
        new_containers = self.containers - before.containers
        if new_containers:
            problems.append(f"test containers left behind: {sorted(new_containers)}")
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


def _sysctls() -> tuple[tuple[str, str], ...]:
    out = []
    for name in SYSCTLS:
        try:
            with open(f"/proc/sys/{name}") as f:
                out.append((name, f.read().strip()))
        except OSError:
            out.append((name, "absent"))
    return tuple(out)


def _audit() -> str:
    parts = []
    for args in (["-s"], ["-l"]):
        try:
            done = subprocess.run(["auditctl", *args], capture_output=True, text=True,
                                  timeout=10)
        except (OSError, subprocess.SubprocessError):
            return ""  # no auditd tools on this host: nothing a test could have changed
        text = done.stdout
        if args == ["-s"]:  # counters (lost, backlog) move on their own: the switch only
            text = " ".join(w for w in text.split("\n") if w.startswith("enabled"))
        parts.append(text.strip())
    return " | ".join(parts)


def _mounts() -> frozenset[str]:
    found = set()
    try:
        with open("/proc/1/mountinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 4 and not fields[4].startswith(RUNTIME_MOUNT_PREFIXES):
                    found.add(fields[4])
    except OSError:
        pass
    return frozenset(found)


def _containers(session: str) -> frozenset[str]:
    try:
        out = subprocess.run(["docker", "ps", "-a", "--filter", f"label=roxd-test={session}",
                              "--format", "{{.Names}}"], capture_output=True, text=True,
                             timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return frozenset()
    return frozenset(out.split())


def read_host_state(session: str = "") -> HostState:
    return HostState(_device_modes(), _stopped_orphans(), _host_roxd_tables(), _sysctls(),
                     _audit(), _mounts(), _containers(session) if session else frozenset())
