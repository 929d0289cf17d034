"""Where roxd's start-up to READY goes: seconds per stage, wall and CPU (issue 22).

Wall seconds on a busy host say little (another process may hold the CPU); the CPU seconds of
the thread that ran a stage say what the stage itself costs. The eBPF compile runs on its own
thread while the main thread reads rules and scans containers, so the stages of the two
threads overlap and their wall seconds do not add up to the time to READY; `ready_s` is
measured from the process's own start (/proc/self/stat), interpreter start-up included.

The READY log line carries a short summary; `roxctl status` (`startup`) and the log line
"start-up stages: {...}" carry every stage.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

MAIN = "main"
COMPILE_THREAD = "bpf-compile"


@dataclass(frozen=True)
class StageTime:
    name: str
    wall_s: float
    cpu_s: float  # CPU seconds of the thread that ran it (user + system)
    thread: str  # MAIN, or COMPILE_THREAD for the work overlapped with the main thread

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "wall_s": round(self.wall_s, 3),
                "cpu_s": round(self.cpu_s, 3), "thread": self.thread}


@contextmanager
def timed(into: list[StageTime], name: str, thread: str = MAIN) -> Iterator[None]:
    """Append the stage's wall and thread-CPU seconds to `into`, also when it raises."""
    wall, cpu = time.monotonic(), time.thread_time()
    try:
        yield
    finally:
        into.append(StageTime(name, time.monotonic() - wall, time.thread_time() - cpu, thread))


def process_age_s() -> float | None:
    """Seconds since this process was started by the kernel (before the interpreter ran),
    from /proc/self/stat field 22 (start time in clock ticks since boot) and CLOCK_BOOTTIME;
    None where /proc says nothing."""
    try:
        with open("/proc/self/stat") as f:
            stat = f.read()
        # the command name (field 2) may hold spaces and parentheses: split after its ')'
        start_ticks = int(stat.rsplit(")", 1)[1].split()[19])
        ticks = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
    return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / ticks)


@dataclass
class StartupClock:
    """The stages of one start, in the order they ended. Threads append under a lock."""

    stages: list[StageTime] = field(default_factory=list)
    ready_s: float | None = None  # process start to READY; None until ready() is called
    process_cpu_s: float | None = None  # every thread's CPU up to READY (os.times)
    # where the eBPF bytecode came from: {"origin": "cache" | "compiled", "note": why the
    # compiled-object cache was not used or not written}; None before the sensor started
    bpf_object: dict[str, str] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # when the clock was made (first thing in main()): what came before is the interpreter's
    # start-up and roxd.main's imports, one thread, so the process CPU then is its CPU
    _made_at: float = field(default_factory=time.monotonic, repr=False)
    _made_cpu: float = field(default_factory=lambda: sum(os.times()[:2]), repr=False)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        done: list[StageTime] = []
        try:
            with timed(done, name):
                yield
        finally:
            self.add(*done)

    def add(self, *stages: StageTime) -> None:
        with self._lock:
            self.stages.extend(stages)

    def ready(self) -> None:
        """Mark READY; the time from the process's start to this clock's making becomes the
        first stage, "interpreter" (Python start-up, roxd.main's imports)."""
        age = process_age_s()
        since_made = time.monotonic() - self._made_at
        self.process_cpu_s = sum(os.times()[:2])
        with self._lock:
            if age is not None and not any(s.name == "interpreter" for s in self.stages):
                self.stages.insert(0, StageTime("interpreter", max(0.0, age - since_made),
                                                self._made_cpu, MAIN))
            self.ready_s = age

    def to_dict(self) -> dict[str, object]:
        with self._lock:
            stages = [s.to_dict() for s in self.stages]
        return {"ready_s": None if self.ready_s is None else round(self.ready_s, 3),
                "process_cpu_s": (None if self.process_cpu_s is None
                                  else round(self.process_cpu_s, 3)),
                "bpf_object": None if self.bpf_object is None else dict(self.bpf_object),
                "stages": stages}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    def summary(self, top: int = 4) -> str:
        """`start-up 3.42s: bpf compile 2.31s (cpu 2.20s, overlapped), rules 0.41s, ...`: the
        longest stages by wall seconds."""
        with self._lock:
            stages = sorted(self.stages, key=lambda s: s.wall_s, reverse=True)[:top]
        # from the same 1 ms rounding as to_dict(), so the line and /v1/status never disagree
        # in the second decimal (3.9249 s read 3.92 in one and 3.925 -> 3.93... in the other)
        head = "start-up" if self.ready_s is None else f"start-up {round(self.ready_s, 3):.2f}s"
        if self.bpf_object is not None:
            head += f" (eBPF {self.bpf_object['origin']})"
        parts = [f"{s.name} {s.wall_s:.2f}s (cpu {s.cpu_s:.2f}s"
                 f"{', overlapped' if s.thread != MAIN else ''})" for s in stages]
        return f"{head}: " + ", ".join(parts) if parts else head
