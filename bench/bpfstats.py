"""Per-program BPF run time of one process's programs, read from /proc/<pid>/fdinfo.

`bpftool prog show` would answer too, but it calls bpf() hundreds of times per call, and roxd
traces bpf() itself: the measurement would add events to what it measures. fdinfo of a
program fd carries `prog_id`, `run_time_ns` and `run_cnt` (with kernel.bpf_stats_enabled=1)
and costs no bpf() call. Names come from one `bpftool prog show` before the measurement."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

# The programs one execve() of a new process and its exit run in roxd (bpf/process.bpf.c),
# whatever their number: the figure issue 22 targets. Summed as ns per run of each, so execs
# of other work on the host do not inflate it. sys_enter/sys_exit_execveat are the same
# programs for execveat() (not one more per exec); sys_enter_exit_group runs for processes
# that call exit_group() (libc's exit() does, the bench's no-libc binary does not): reported
# apart. Clone entry/exit (syscalls.bpf.c's namespace watch) and the file programs for a
# loader's opens are not the exec path's.
EXEC_PATH = ("sched_process_fork", "sched_process_exec", "sched_process_exit",
             "sys_enter_execve", "sys_exit_execve")
EXIT_GROUP = "sys_enter_exit_group"


@dataclass(frozen=True)
class ProgStat:
    prog_id: int
    run_time_ns: int
    run_cnt: int


def read(pid: int) -> dict[int, ProgStat]:
    """prog id -> counters for every BPF program fd the process holds."""
    out: dict[int, ProgStat] = {}
    fdinfo = Path(f"/proc/{pid}/fdinfo")
    for entry in fdinfo.iterdir():
        try:
            text = entry.read_text()
        except OSError:
            continue  # closed meanwhile
        if "prog_id:" not in text:
            continue
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        pid_ = int(fields["prog_id"])
        out[pid_] = ProgStat(pid_, int(fields.get("run_time_ns", "0")),
                             int(fields.get("run_cnt", "0")))
    return out


def names() -> dict[int, str]:
    """prog id -> name (bcc names a tracepoint program tracepoint__<category>__<event>;
    bpftool takes the full name from the program's BTF)."""
    text = subprocess.run(["bpftool", "--json", "prog", "show"], capture_output=True,
                          text=True, check=True).stdout
    return {p["id"]: p.get("name", str(p["id"])) for p in json.loads(text)}


def on_exec_path(name: str) -> bool:
    return name.rsplit("__", 1)[-1] in EXEC_PATH


def is_exit_group(name: str) -> bool:
    return name.rsplit("__", 1)[-1] == EXIT_GROUP


@dataclass(frozen=True)
class Delta:
    runs: int
    ns: int


def delta(before: dict[int, ProgStat], after: dict[int, ProgStat]) -> dict[int, Delta]:
    out = {}
    for i, b in after.items():
        a = before.get(i, ProgStat(i, 0, 0))
        if b.run_cnt - a.run_cnt:
            out[i] = Delta(b.run_cnt - a.run_cnt, b.run_time_ns - a.run_time_ns)
    return out
