"""Kernel side of seccomp learning and enforcement: load bpf/seccomp.bpf.c, attach its program
groups only while they are needed, and read and write its per-cgroup state.

`SyscallTracer` knows the kernel and nothing else: cgroup ids and syscall numbers in, bitmaps
and counters out. Which container a cgroup is, and what to do with it, is decided above it.
"""

from __future__ import annotations

import contextlib
import ctypes as ct
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from roxd.errors import SensorError
from roxd.sensor.bitwords import merged, read_words, words_of, write_words
from roxd.sensor.loader import default_bpf_dir, load_bcc

log = logging.getLogger(__name__)

NR_MAX = 512
CG_PROVISIONAL = 1
CG_LEARN = 2
CG_ENFORCE = 4
CG_WATCH = 8
KIND_KILL = 1
KIND_DENIED = 2

GROUPS: dict[str, tuple[str, ...]] = {
    "arming": ("syscalls:sys_enter_seccomp", "syscalls:sys_exit_seccomp",
               "syscalls:sys_enter_prctl", "syscalls:sys_exit_prctl",
               "sched:sched_process_fork", "sched:sched_process_exit"),
    "syscall": ("raw:sys_enter",),
    "exit": ("raw:sys_exit",),
}
PER_SYSCALL_GROUPS = ("syscall", "exit")  # the programs that read the cgroup gate
CG_GATE_WORDS = 64  # bpf/seccomp.bpf.c: 4096 bits, cgroup id mod 4096


def _fn_name(tp: str) -> str:
    category, event = tp.split(":")
    if category == "raw":
        return f"raw_tracepoint__{event}"
    return f"tracepoint__{category}__{event}"


def _attach(bpf: Any, tp: str) -> None:
    category, event = tp.split(":")
    if category == "raw":
        bpf.attach_raw_tracepoint(tp=event.encode(), fn_name=_fn_name(tp).encode())
    else:
        bpf.attach_tracepoint(tp=tp.encode(), fn_name=_fn_name(tp).encode())


def _detach(bpf: Any, tp: str) -> None:
    category, event = tp.split(":")
    if category == "raw":
        bpf.detach_raw_tracepoint(tp=event.encode())
    else:
        bpf.detach_tracepoint(tp=tp.encode())


def gate_words(cgroup_ids: Iterable[int]) -> dict[int, int]:
    """The cgroup gate's words for these cgroups (bit cgroup_id mod 4096)."""
    return words_of(cg & (CG_GATE_WORDS * 64 - 1) for cg in cgroup_ids)


@dataclass(frozen=True)
class CgroupState:
    cgroup_id: int
    flags: int
    first_tgid: int
    armed_ns: int
    out_of_range: int
    kills: int
    learned: frozenset[int]

    @property
    def provisional(self) -> bool:
        return bool(self.flags & CG_PROVISIONAL)


@dataclass(frozen=True)
class SyscallEvent:
    """A syscall killed in enforce mode (kind KIND_KILL) or denied by seccomp (KIND_DENIED)."""

    cgroup_id: int
    nr: int
    kind: int
    count: int
    last_pid: int
    last_ns: int


def bitmap_words(numbers: Iterable[int]) -> list[int]:
    words = words_of(nr for nr in numbers if 0 <= nr < NR_MAX)
    return [words.get(i, 0) for i in range(NR_MAX // 64)]


def bitmap_numbers(words: Iterable[int]) -> frozenset[int]:
    out: set[int] = set()
    for index, word in enumerate(words):
        word = int(word)
        while word:
            low = word & -word
            out.add(index * 64 + low.bit_length() - 1)
            word ^= low
    return frozenset(out)


class SyscallTracer:
    """bpf/seccomp.bpf.c, loaded once; program groups attached on demand. One thread."""

    def __init__(self, bpf_dir: Path | None = None,
                 cache_dir: Path = Path("/var/cache/roxd")) -> None:
        self._bpf_dir = bpf_dir or default_bpf_dir()
        self._cache_dir = cache_dir
        self._bpf = None
        self._attached: set[str] = set()
        self.load_seconds = 0.0

    # ------------------------------------------------------------------ lifecycle

    def load(self) -> None:
        if self._bpf is not None:
            return
        # the shared bcc loader: tracefs, headers, source, bcc import, timed compile, memory
        loaded = load_bcc(self._bpf_dir, "seccomp.bpf.c", cache_dir=self._cache_dir,
                          what="seccomp.bpf.c",
                          cflags=["-Wno-unused-function", "-Wno-macro-redefined"])
        bpf = loaded.bpf
        # bcc attaches every (RAW_)TRACEPOINT_PROBE at load; we attach groups only on demand.
        for tps in GROUPS.values():
            for tp in tps:
                try:
                    _detach(bpf, tp)
                except Exception as exc:
                    log.debug("detach %s after load: %s", tp, exc)
        self._bpf = bpf
        self.load_seconds = loaded.load_seconds
        log.info("seccomp eBPF programs loaded in %.2fs (headers: %s)", self.load_seconds,
                 loaded.headers.describe())

    @property
    def loaded(self) -> bool:
        return self._bpf is not None

    def close(self) -> None:
        if self._bpf is not None:
            self.set_groups(())
            self._bpf.cleanup()
            self._bpf = None

    def set_groups(self, groups: Iterable[str]) -> None:
        """Attach exactly these program groups ("arming", "syscall", "exit")."""
        wanted = {tp for g in groups for tp in GROUPS[g]}
        if wanted and self._bpf is None:
            self.load()
        bpf = self._bpf
        if bpf is None:
            return
        for tp in sorted(self._attached - wanted):
            try:
                _detach(bpf, tp)
            except Exception as exc:
                log.debug("detach %s: %s", tp, exc)
            self._attached.discard(tp)
        if not any(tp in self._attached for g in PER_SYSCALL_GROUPS for tp in GROUPS[g]):
            # nothing reads the gate now: trim it to the cgroups that still have a state
            self._write_gate(gate_words(st.cgroup_id for st in self.states()), exact=True)
        # arming first, so a task cannot run the syscall program armed-less in between
        order = [tp for g in ("arming", "syscall", "exit") for tp in GROUPS[g] if tp in wanted]
        for tp in order:
            if tp in self._attached:
                continue
            try:
                _attach(bpf, tp)
            except Exception as exc:
                raise SensorError(f"attaching {tp} failed: {exc}") from exc
            self._attached.add(tp)

    @property
    def attached(self) -> tuple[str, ...]:
        return tuple(sorted(self._attached))

    # ------------------------------------------------------------------ settings and arms

    def set_provisional(self, on: bool) -> None:
        table = self._require()[b"settings"]
        leaf = table[ct.c_int(0)]
        leaf.provisional = 1 if on else 0
        table[ct.c_int(0)] = leaf

    def arm_tasks(self, cgroup_id: int, tgids: Iterable[int]) -> int:
        """Arm tasks that already run (a container learned or enforced while running)."""
        table = self._require()[b"armed"]
        n = 0
        for tgid in tgids:
            leaf = table.Leaf()
            leaf.cgroup_id = cgroup_id
            table[table.Key(tgid)] = leaf
            n += 1
        return n

    def forget_arms(self, cgroup_ids: Iterable[int]) -> None:
        drop = set(cgroup_ids)
        table = self._require()[b"armed"]
        for key, leaf in list(table.items()):
            if leaf.cgroup_id in drop:
                with contextlib.suppress(KeyError):
                    del table[key]

    # ------------------------------------------------------------------ cgroup states

    def set_state(self, cgroup_id: int, flags: int, *, deny: Iterable[int] = (),
                  allowed: Iterable[int] = ()) -> None:
        """Create or update a cgroup's state; learned bits and counters are kept."""
        self._write_gate(gate_words([cgroup_id]), exact=False)  # the gate opens first
        table = self._require()[b"cg_states"]
        key = table.Key(cgroup_id)
        try:
            leaf = table[key]
        except KeyError:
            leaf = table.Leaf()
            leaf.armed_ns = 0
        leaf.flags = flags
        for i, w in enumerate(bitmap_words(deny)):
            leaf.deny[i] = w
        for i, w in enumerate(bitmap_words(allowed)):
            leaf.allowed[i] = w
        table[key] = leaf

    def _write_gate(self, words: dict[int, int], *, exact: bool) -> None:
        """OR these bits into the cgroup gate, or (exact) make the gate exactly these bits:
        only while no per-syscall program runs, since the kernel sets bits concurrently."""
        table = self._require()[b"cg_gate"]
        current = read_words(table)
        write_words(table, words if exact else merged(current, words), current)

    def gate(self) -> dict[int, int]:
        """The cgroup gate's non-zero words (for tests and status)."""
        if self._bpf is None:
            return {}
        return read_words(self._bpf[b"cg_gate"])

    def drop_state(self, cgroup_id: int) -> None:
        table = self._require()[b"cg_states"]
        with contextlib.suppress(KeyError):
            del table[table.Key(cgroup_id)]
        self.forget_arms([cgroup_id])

    def states(self) -> list[CgroupState]:
        if self._bpf is None:
            return []
        out = []
        for key, leaf in self._bpf[b"cg_states"].items():
            out.append(CgroupState(
                cgroup_id=int(key.value), flags=int(leaf.flags),
                first_tgid=int(leaf.first_tgid), armed_ns=int(leaf.armed_ns),
                out_of_range=int(leaf.out_of_range), kills=int(leaf.kills),
                learned=bitmap_numbers(leaf.learned)))
        return out

    def state(self, cgroup_id: int) -> CgroupState | None:
        for st in self.states():
            if st.cgroup_id == cgroup_id:
                return st
        return None

    def events(self) -> list[SyscallEvent]:
        if self._bpf is None:
            return []
        return [SyscallEvent(int(k.cgroup_id), int(k.nr), int(k.kind), int(v.count),
                             int(v.last_pid), int(v.last_ns))
                for k, v in self._bpf[b"sc_events"].items()]

    def counters(self) -> dict[str, int]:
        if self._bpf is None:
            return {}
        table = self._bpf[b"counters"]
        names = ("arms", "kills", "denials", "out_of_range")
        return {n: sum(int(v) for v in table[ct.c_int(i)]) for i, n in enumerate(names)}

    def _require(self):
        if self._bpf is None:
            self.load()
        return self._bpf
