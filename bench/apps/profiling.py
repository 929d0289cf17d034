"""--app-profile: what roxd costs while an application runs, in CPU time (holds on a loaded
machine better than a throughput ratio does).

Per run of an application under a roxd agent, in alternate repetitions: the kernel time of
roxd's BPF programs and the top programs by that time (kernel.bpf_stats_enabled=1 for the
phase, restored after; the counters cost each program run two clock reads, so ratios taken
with --app-profile carry that too and are marked so), or a py-spy sample of roxd's userspace
(`py-spy record --nonblocking`) summed per roxd module: where roxd's own CPU goes for that
application."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from bench import bpfstats
from bench.cleanup import Cleanup

SYSCTL = Path("/proc/sys/kernel/bpf_stats_enabled")


def enable_bpf_stats(cleanup: Cleanup) -> None:
    old = SYSCTL.read_text().strip()
    SYSCTL.write_text("1")
    cleanup.push("kernel.bpf_stats_enabled", lambda: SYSCTL.write_text(old))


def py_spy() -> str | None:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return found if Path(found).exists() else None


class RunProfile:
    """Started just before one application run, finished just after it."""

    def __init__(self, pid: int, out: Path, seconds: float, sample: bool) -> None:
        """sample: py-spy this run instead of reading BPF stats. Never both: py-spy reads
        roxd's memory with process_vm_readv(), which roxd's own programs trace, so its
        sampling would show up as BPF time (and as events) charged to the application."""
        self.pid = pid
        self.out = out
        self.before = None if sample else bpfstats.read(pid)
        self.spy: subprocess.Popen[bytes] | None = None
        exe = py_spy()
        if sample and exe:
            self.spy = subprocess.Popen(
                [exe, "record", "--nonblocking", "-r", "50", "-d", str(int(seconds) + 2),
                 "-p", str(pid), "-f", "raw", "-o", str(out)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def finish(self, names: dict[int, str]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        if self.before is not None:
            deltas = bpfstats.delta(self.before, bpfstats.read(self.pid))
            by_name: Counter[str] = Counter()
            for prog_id, d in deltas.items():
                by_name[names.get(prog_id, str(prog_id)).rsplit("__", 1)[-1]] += d.ns
            result = {"bpf_s": round(sum(d.ns for d in deltas.values()) / 1e9, 4),
                      "bpf_runs": sum(d.runs for d in deltas.values()),
                      "bpf_top": [[n, round(ns / 1e9, 4)] for n, ns in by_name.most_common(5)]}
        if self.spy is not None:
            self.spy.send_signal(signal.SIGINT)  # as Ctrl-C: py-spy writes what it sampled
            try:
                self.spy.wait(15)
            except subprocess.TimeoutExpired:
                self.spy.kill()
                self.spy.wait()
            result["pyspy_top_modules"] = top_modules(self.out)
        return result


def top_modules(path: Path, n: int = 6) -> list[list[Any]]:
    """Share of py-spy samples per roxd module: the innermost roxd/ frame of each stack (so
    time in the standard library or bcc is charged to the roxd code that called it)."""
    if not path.exists():
        return []
    counts: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        total += int(count)
        frames = [f for f in stack.split(";") if "roxd/" in f]
        counts[_module(frames[-1]) if frames else "(outside roxd)"] += int(count)
    path.unlink()
    return [[m, round(c / total, 3)] for m, c in counts.most_common(n)] if total else []


def _module(frame: str) -> str:
    """'handle (roxd/rules/engine.py:120)' -> 'roxd/rules/engine.py'."""
    inside = frame[frame.rfind("(") + 1:].rstrip(")")
    path = inside.rsplit(":", 1)[0]
    return path[path.find("roxd/"):]
