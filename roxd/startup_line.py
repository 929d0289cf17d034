"""The one line roxd logs when it is ready: what it attached, what it enforces, where it
listens. An operator reading `journalctl -u roxd` sees the state of the host in it; the full
list of tracepoints is logged at debug level beside it.

    roxd is watching: 62 programs attached (process exec, exit, fork; 59 syscalls), 80 rules
    (78 enabled, 12 kill in kernel), runtime docker, 3 containers, api /run/roxd/roxd.sock;
    start-up 3.42s: bpf compile 2.31s (cpu 2.20s, overlapped), ...
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from roxd.rules.ruleset import KillPath, RuleSet


def attached_summary(tracepoints: Sequence[str]) -> str:
    """`sched:sched_process_exec`, ... -> "process exec, exit, fork; 59 syscalls": the
    process lifecycle by name, syscall entry points counted, anything else by name."""
    process = [tp.split(":", 1)[1].removeprefix("sched_process_") for tp in tracepoints
               if tp.startswith("sched:sched_process_")]
    syscalls = sum(1 for tp in tracepoints if tp.startswith("syscalls:"))
    other = [tp.split(":", 1)[-1] for tp in tracepoints
             if not tp.startswith(("sched:sched_process_", "syscalls:"))]
    parts = []
    if process:
        parts.append("process " + ", ".join(process))
    if syscalls:
        parts.append(f"{syscalls} syscall{'s' if syscalls != 1 else ''}")
    if other:
        parts.append(", ".join(other))
    return "; ".join(parts) or "none"


@dataclass(frozen=True)
class ReadyFacts:
    tracepoints: tuple[str, ...]
    rules: RuleSet
    kills_in_kernel: bool  # not monitor mode, and the kernel has bpf_send_signal
    monitor: bool
    runtime: str  # the runtime's name: docker, none
    containers: int
    api_socket: str
    # "start-up 3.42s: bpf compile 2.31s (cpu 2.20s, overlapped), ..." (startup_timing.py)
    startup: str = ""


def ready_line(f: ReadyFacts) -> str:
    enabled = [r for r in f.rules.rules if r.enabled]
    in_kernel = sum(1 for r in enabled if r.kill_path is KillPath.IN_KERNEL and not r.monitor)
    if f.monitor:
        kills = "monitor mode: nothing is killed"
    elif f.kills_in_kernel:
        kills = f"{in_kernel} kill in kernel"
    else:
        kills = "kills in userspace only (no bpf_send_signal)"
    n = len(f.tracepoints)
    return (f"roxd is watching: {n} program{'s' if n != 1 else ''} attached "
            f"({attached_summary(f.tracepoints)}), {len(f.rules.rules)} rules "
            f"({len(enabled)} enabled, {kills}; version {f.rules.version[:12]}), "
            f"runtime {f.runtime}, {f.containers} containers, api {f.api_socket}"
            + (f"; {f.startup}" if f.startup else ""))
