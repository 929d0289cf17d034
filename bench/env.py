"""What every phase shares: settings, the cleanup stack, the containers and the binaries."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.agents import RoxdAgent
from bench.cleanup import Cleanup
from bench.containers import Containers


@dataclass(frozen=True)
class Settings:
    reps: int = 5
    exec_iters: int = 6000
    connect_iters: int = 50000
    syscall_iters: int = 8_000_000
    idle_containers: int = 5
    learning: bool = True
    capacity_iters: int = 3000  # execs per generator per capacity step
    capacity_small_ringbuf_pages: int = 4
    ladder: tuple[float, ...] = (0.5, 0.25, 0.125, 0.0625)  # fractions of the maximum rate
    kill_execs: int = 1000
    userspace_kills: int = 200
    agents: tuple[str, ...] = ("none", "roxd", "auditd", "bpftrace")
    phases: tuple[str, ...] = ("overhead", "latency", "capacity", "profile", "startup", "apps")
    # the apps phase (bench/apps/phase.py): its own repetitions and run length
    app_reps: int = 3
    app_seconds: float = 20.0
    apps: tuple[str, ...] = ("nginx", "redis", "postgres", "compile")
    app_agents: tuple[str, ...] = ("none", "roxd", "roxd-baselines", "auditd", "bpftrace")
    app_profile: bool = False  # BPF run time and py-spy of roxd per application run


@dataclass
class Env:
    settings: Settings
    cleanup: Cleanup
    containers: Containers
    workdir: Path
    cache_dir: Path
    roxd_source: Path
    against_source: Path | None = None  # --against REV: a second roxd, run side by side
    notes: list[str] = field(default_factory=list)
    idle: list[Any] = field(default_factory=list)
    _roxd_runs: int = 0

    def roxd(self, variant: str = "roxd", bench_rules: bool = False,
             source: Path | None = None, **sensor: Any) -> RoxdAgent:
        """A roxd agent (not started); sensor keys override [sensor] of the default config."""
        self._roxd_runs += 1
        return RoxdAgent(workdir=self.workdir / f"roxd-{self._roxd_runs}-{variant}",
                         cleanup=self.cleanup, cache_dir=self.cache_dir,
                         source=source or self.roxd_source, bench_rules=bench_rules,
                         sensor=sensor, name=variant)

    def note(self, text: str) -> None:
        print(f"bench: note: {text}", flush=True)
        self.notes.append(text)


def log(text: str) -> None:
    print(f"bench: {text}", flush=True)
