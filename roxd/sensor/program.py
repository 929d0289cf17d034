"""Compile, load and attach roxd's eBPF programs with bcc; read their ring buffer and maps.

The sensor knows the kernel and nothing else: it hands decoded records to a callback and
takes orders (fold a key, kill these exes) through small typed methods. It never imports the
rule engine.
"""

from __future__ import annotations

import contextlib
import ctypes as ct
import dataclasses
import logging
import mmap
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from roxd.errors import SensorError
from roxd.model import ConnectEvent, ExecEvent, ExitEvent, FileEvent, SyscallEvent
from roxd.sensor import btf, records
from roxd.sensor.bitwords import merged, read_words, write_words
from roxd.sensor.headers import HeaderTree
from roxd.sensor.inbound import InboundProbe
from roxd.sensor.loader import (
    BccObject,
    attach_deferred,
    default_bpf_dir,
    load_cached,
    optional_tracepoints,
)
from roxd.sensor.loader import (  # re-exported from their old home
    release_compiler_memory as release_compiler_memory,
)
from roxd.sensor.maps import (
    BaselineAllow,
    BaselineCgroups,
    ExecKillEntries,
    FileWatchEntries,
    LpmEntries,
)
from roxd.sensor.records import Decoded, DecodeError
from roxd.sensor.udp_send import UdpSendHooks, attach_udp_send
from roxd.startup_timing import COMPILE_THREAD, StageTime, timed

log = logging.getLogger(__name__)

EventCallback = Callable[[Decoded], None]

# A batched poll (Sensor.poll) waits this much longer than the kernel's batch window, so a
# record the kernel decided not to wake for just before the window closed is in the ring
# when the wait ends.
RING_POLL_MARGIN_MS = 2
# A read that handed over at least this many records lingers before the next wait (Sensor.
# _linger): records arrive faster than roxd wakes for them, a storm. One record per read is
# a consumer that keeps up with a slow stream, whose urgent records should wake it at once.
LINGER_MIN_BATCH = 2
# A linger lasts no longer than it takes records, at the rate of the last read, to fill this
# share of the ring buffer (Sensor._linger_seconds); the span a rate is taken over is at least
# LINGER_MIN_SPAN_S (two reads a clock tick apart are not an infinite rate).
LINGER_RING_SHARE = 0.25
LINGER_MIN_SPAN_S = 1e-4


def _mark_exited(read: list[Decoded]) -> None:
    """In place: each exec whose process's exit record comes after it in `read` becomes
    `exited` (records of one read are in the order the kernel wrote them). Exit records are
    written for a whole process only (group_dead); an exit before an exec of the same pid is
    an earlier process's, and leaves the exec as it is."""
    last_exit: dict[int, int] = {}
    for i, decoded in enumerate(read):
        if type(decoded.event) is ExitEvent:
            last_exit[decoded.event.pid] = i
    if not last_exit:
        return
    for i, decoded in enumerate(read):
        event = decoded.event
        if type(event) is ExecEvent and last_exit.get(event.pid, -1) > i:
            # (built directly: dataclasses.replace introspects the fields, µs per record)
            read[i] = Decoded(event, decoded.fold_key, decoded.kill_slot,
                              decoded.args_captured, decoded.held, True)


@dataclass(frozen=True)
class SensorConfig:
    bpf_dir: Path = field(default_factory=default_bpf_dir)
    cache_dir: Path = Path("/var/cache/roxd")
    ringbuf_pages: int = 1024  # power of two; 4 MiB with 4 KiB pages
    # Batched ring-buffer wake-ups (bpf/roxd.bpf.c ring_flags): an ordinary record wakes the
    # consumer only if none did for this long; the others wait for the next timed poll, at
    # most this long plus RING_POLL_MARGIN_MS. 0: every record may wake it (the kernel's own
    # policy), as before.
    ring_batch_ms: int = 20
    # After a read that handed over LINGER_MIN_BATCH records or more less than this long
    # after the last read, the consumer stays "awake" this long and reads again (Sensor.
    # _linger): records written meanwhile, urgent ones included, wake nobody, so a stream is
    # read in batches, not one wake-up per exec. 0: off. Needs ring_batch_ms > 0.
    ring_linger_ms: float = 5.0
    max_args: int = 32
    cgroup_root: str = ""  # cgroup v2 root for the inbound programs; "" = find it
    inbound: bool = True  # attach the inbound programs (inbound.bpf.c)
    # one report per (cgroup, peer, port) of UDP datagrams sent without connect, per interval
    udp_send_interval_s: float = 10.0
    # compile the raw sys_exit watch of module syscalls (only where their tracepoints are
    # missing; syscalls.bpf.c): it costs every system call on the host
    module_syscalls_raw: bool = False


@dataclass(frozen=True)
class SensorStats:
    counters: Mapping[str, int]  # STAT_NAMES -> total over CPUs
    drops_by_cgroup: Mapping[int, int]
    decode_errors: int
    callback_errors: int

    @property
    def dropped(self) -> int:
        return sum(v for k, v in self.counters.items() if k.endswith("_dropped"))


class Sensor:
    """One bcc object holding every roxd program. Not thread-safe: one event loop owns it."""

    def __init__(self, config: SensorConfig, on_event: EventCallback) -> None:
        self._config = config
        self._on_event = on_event
        self._bpf = None  # bcc.BPF once started
        self._clock_offset_ns = 0
        self._decode_errors = 0
        self._callback_errors = 0
        self._records = 0  # records handed to the callback (by poll or drain)
        # _records when a full batch window last passed with no record: any record read
        # since may be followed by records written without a wake-up (see poll())
        self._idle_mark = 0
        # _records when poll() last started a wait or a linger: a poll that finds it moved by
        # LINGER_MIN_BATCH or more read a batch the last time, a burst: it lingers first
        self._read_mark = 0
        # when the last read that found records ended (time.monotonic), and whether the last
        # wait's read came within ring_linger_ms of the read before: wake-ups closer than a
        # linger is long, a stream. Only then does a linger start (_linger): an exec and its
        # exit now and then are no stream, and a linger after them would find nothing and
        # cost a timer wake-up each (issue 22, measured).
        self._found_at = float("-inf")
        self._burst = False
        # bytes the callback was handed, the count at the last read that found records, and
        # the rate of that read (bytes per second since the read before it): a linger never
        # lets the ring fill past LINGER_RING_SHARE at that rate (_linger_seconds)
        self._bytes = 0
        self._bytes_mark = 0
        self._byte_rate = 0.0
        self._lingering = False  # the last linger read LINGER_MIN_BATCH records or more
        self._read: list[Decoded] = []  # decoded by the callback, not yet handed over
        # ring_consumer (roxd.bpf.c) mapped into memory: "awake" costs a store, no bpf()
        self._consumer_flag: mmap.mmap | None = None
        self._awake = False  # what the flag says
        self.headers: HeaderTree | None = None
        self.attached: tuple[str, ...] = ()
        self.load_seconds = 0.0
        self.inbound = InboundProbe()  # accepted connections, listeners (inbound.py)
        self.udp_send: UdpSendHooks | None = None
        self.udp_send_error = ""  # why the UDP send hooks are not attached, when they are not
        # compile and load (on the compile thread when prewarmed), the wait for it, attach
        self.stages: tuple[StageTime, ...] = ()
        # "cache" (bytecode from the compiled-object cache) or "compiled", and why the cache
        # was not used or not written ("" when it was)
        self.bpf_origin = ""
        self.bpf_cache_note = ""

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if not _is_power_of_two(self._config.ringbuf_pages):
            raise SensorError(
                f"ring buffer pages must be a power of two, not {self._config.ringbuf_pages}")
        cflags = sensor_cflags(self._config)
        main: list[StageTime] = []
        # the shared bcc loader: tracefs, headers, source, bcc import, timed compile, memory
        try:
            with timed(main, "bpf compile wait"):  # the main thread waits for the compile
                loaded = _take_prewarmed(self._config, cflags)
            if loaded is None:
                loaded = _compile(self._config, cflags)
            else:
                started = time.monotonic()
                try:
                    with timed(main, "bpf attach"):
                        attach_deferred(loaded.bpf)
                except Exception as exc:  # bcc raises bare Exception for attach failures
                    loaded.bpf.cleanup()
                    raise SensorError(f"attaching the eBPF programs failed: {exc}") from exc
                loaded = dataclasses.replace(
                    loaded, load_seconds=loaded.load_seconds + time.monotonic() - started)
        except SensorError as exc:
            if not self._config.inbound:
                raise
            # a kernel without sk_storage (before 5.2) refuses the inbound maps, and with
            # them the whole object: load the rest without them and say so
            self._config = dataclasses.replace(self._config, inbound=False)
            loaded = _compile(self._config, sensor_cflags(self._config))
            self.inbound.off(f"refused with the rest of the programs: {exc}")
        with timed(main, "sensor rings and cgroup hooks"):
            self._started_from(loaded)
        self.stages = (*loaded.stages, *main)

    def _started_from(self, loaded: BccObject) -> None:
        self.headers = loaded.headers
        log.info("kernel headers: %s", self.headers.describe())
        self._bpf = loaded.bpf
        self.load_seconds = loaded.load_seconds
        self.bpf_origin, self.bpf_cache_note = loaded.origin, loaded.cache_note
        source = loaded.source
        self.attached = tuple(tp.decode() for tp in getattr(self._bpf, "tracepoint_fds", {})) \
            or self._tracepoints_in(source)
        # raw tracepoints bcc attached at load (the opt-in module syscall watch)
        self.attached = (*self.attached, *(f"raw_tracepoint:{tp.decode()}" for tp in
                                           getattr(self._bpf, "raw_tracepoint_fds", {})))
        if self._config.module_syscalls_raw:
            if "raw_tracepoint:sys_exit" in self.attached:
                log.warning("module syscalls watched by a raw sys_exit program "
                            "(sensor.module_syscalls_raw): every system call pays for it")
            else:
                log.info("sensor.module_syscalls_raw has no effect: this kernel has "
                         "tracepoints for the module syscalls")
        seed = self._bpf["args_hash_seed"]
        seed[ct.c_int(0)] = ct.c_uint64(int.from_bytes(os.urandom(8), "little"))
        self._resync_clock()
        self._bpf["events"].open_ring_buffer(self._ring_callback)
        if self._config.ring_batch_ms > 0:
            self._consumer_flag = _map_consumer_flag(self._bpf)
        if self._config.inbound:
            self.inbound.attach(self._bpf, self._config.cgroup_root or _cgroup2_root())
        elif self.inbound.status.state == "off" and self.inbound.status.reason == "not attached":
            self.inbound.off("turned off ([netmap] inbound = false, or the map is off)")
        self._attach_udp_send()
        log.info("eBPF programs attached in %.2fs (%d tracepoints)", self.load_seconds,
                 len(self.attached))
        log.debug("eBPF programs attached: %s", ", ".join(self.attached))

    def _attach_udp_send(self) -> None:
        """The cgroup hooks for UDP sends without connect (udp_send.py); a host where they
        cannot attach keeps every other program, and says what it cannot see."""
        try:
            self.udp_send = attach_udp_send(self._bpf, self._config.udp_send_interval_s)
        except SensorError as exc:
            self.udp_send_error = str(exc)
            log.warning("UDP datagrams sent without connect() are not seen: %s", exc)
            return
        self.attached = (*self.attached, *self.udp_send.attached)

    @property
    def started(self) -> bool:
        return self._bpf is not None

    @property
    def bcc(self):
        """The loaded bcc object (None before start), for programs loaded apart from the
        tracepoints: the cgroup connect hook (roxd/policy/netenf_kernel.py)."""
        return self._bpf

    def detach(self) -> None:
        """Stop tracing (maps stay readable): after this, counters and ring buffer are final."""
        bpf = self._require()
        self.inbound.detach()
        if self.udp_send is not None:
            self.udp_send.close()
        for tp in self.attached:
            if tp.startswith("cgroup:"):
                continue
            if tp.startswith("raw_tracepoint:"):
                with contextlib.suppress(Exception):  # already detached
                    bpf.detach_raw_tracepoint(tp=tp.partition(":")[2].encode())
                continue
            try:
                bpf.detach_tracepoint(tp=tp.encode())
            except Exception as exc:  # already detached
                log.debug("detach %s: %s", tp, exc)

    def close(self) -> None:
        if self.udp_send is not None:
            self.udp_send.close()
        if self._consumer_flag is not None:
            self._consumer_flag.close()
            self._consumer_flag = None
        if self._bpf is not None:
            self.inbound.detach()
            self._bpf.cleanup()
            self._bpf = None

    def __enter__(self) -> Sensor:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ events

    def poll(self, timeout_ms: int) -> None:
        """Wait up to timeout_ms for records and hand each to the callback.

        With batched wake-ups (ring_batch_ms > 0, bpf/roxd.bpf.c ring_flags) the kernel wakes
        this wait only when it must: never while the consumer says it is awake (it reads the
        ring again before it sleeps: the read just below), and for a sleeping one only for an
        urgent record, the first record after a quiet ring_batch_ms, or a full 1/8 of the
        ring. Every other record follows a wake-up by less than ring_batch_ms, so after any
        record the wait is cut to ring_batch_ms plus a margin, and it ends with a read of the
        ring whether or not a wake-up came (epoll_wait returning on its timeout reads
        nothing). A whole window without records ends the batch: a later record is at least
        ring_batch_ms after its CPU's last wake-up, so it wakes the consumer itself.
        """
        bpf = self._require()
        batch_ms = self._config.ring_batch_ms
        if batch_ms <= 0:
            bpf.ring_buffer_poll(timeout_ms)
            self._hand_over()
            return
        if self._linger():
            return
        before = self._read_mark = self._records
        window = batch_ms + RING_POLL_MARGIN_MS
        if before != self._idle_mark:
            timeout_ms = min(timeout_ms, window)
        self._set_awake(False)
        bpf.ring_buffer_consume()  # written while we said we were awake: no wake-up came
        started = time.monotonic()
        if self._records == before:
            bpf.ring_buffer_poll(timeout_ms)
            bpf.ring_buffer_consume()
        self._hand_over()
        if self._records != before:
            now = time.monotonic()
            self._burst = (now - self._found_at) * 1000 < self._config.ring_linger_ms
            self._mark_read(now)
        # (a record read made the callback say "awake": true until the next wait)
        # a wait cut short by a signal proves nothing: only a whole window without records
        # (less the margin's last millisecond: the clock's rounding, not a signal's cut)
        if self._records == before and (time.monotonic() - started) * 1000 >= window - 1:
            self._idle_mark = self._records

    def _linger(self) -> bool:
        """After reads that show a stream of records, stay awake ring_linger_ms, read again.

        A consumer that keeps up with a stream sleeps between records, so each urgent record
        wakes it: an irq_work and a scheduler wake-up inside the traced program (about 10 us
        per exec measured, docs/performance.md), and in roxd a pass of the daemon's loop
        whose code and data the traced workload has pushed out of the CPU's caches meanwhile
        (150-400 us of roxd CPU per exec at 200-500 execs/s against about 50 in a storm's
        batches, measured). While the flag says awake the kernel sends no wake-up at all, so
        a storm's records collect during the linger and are read together. The cost: a record
        written during a linger waits for its end (at most ring_linger_ms, an urgent one
        included). A linger starts after a wait's read of LINGER_MIN_BATCH records or more
        that came within ring_linger_ms of the read before it (records arrive faster than a
        linger is long, so it will likely find some), and goes on while each linger reads
        LINGER_MIN_BATCH or more. Records that come one per wake-up (a lone exec, a kill now
        and then) or a pair further apart than a linger (an exec and its exit now and then)
        still wake roxd at once and cost no timer wake-up. True when the linger read records (the
        caller's loop runs; the next poll lingers again if they were enough).
        """
        linger_ms = self._config.ring_linger_ms
        lingering, self._lingering = self._lingering, False
        if linger_ms <= 0 or self._records - self._read_mark < LINGER_MIN_BATCH:
            return False
        if not (lingering or self._burst):
            return False
        self._read_mark = self._records
        if not self._awake:  # (a drain's records: the flag is set by any read)
            self._set_awake(True)
        time.sleep(self._linger_seconds(linger_ms))
        self._require().ring_buffer_consume()
        self._hand_over()
        if self._records != self._read_mark:  # the wait after it is timed from here
            self._mark_read(time.monotonic())
        self._lingering = self._records - self._read_mark >= LINGER_MIN_BATCH
        return self._records != self._read_mark

    def _mark_read(self, now: float) -> None:
        """A read found records: its byte rate (since the last such read) and its time."""
        elapsed = max(now - self._found_at, LINGER_MIN_SPAN_S)
        self._byte_rate = (self._bytes - self._bytes_mark) / elapsed
        self._bytes_mark = self._bytes
        self._found_at = now

    def _linger_seconds(self, linger_ms: float) -> float:
        """ring_linger_ms, or less where records at the last read's rate would fill more than
        LINGER_RING_SHARE of the ring meanwhile: nobody reads the ring during a linger (no
        wake-up can end a sleep), so a small ring (ringbuf_pages) in a storm would drop
        records a linger's length would have let in (measured: 4 pages, 5 ms)."""
        seconds = linger_ms / 1000
        room = self._config.ringbuf_pages * mmap.PAGESIZE * LINGER_RING_SHARE
        if self._byte_rate * seconds > room:
            seconds = room / self._byte_rate
        return seconds

    def _set_awake(self, awake: bool) -> None:
        self._awake = awake
        if self._consumer_flag is not None:
            self._consumer_flag[0:8] = _AWAKE if awake else _ASLEEP

    def drain(self) -> None:
        """Hand over whatever is in the ring buffer now, without waiting."""
        self._require().ring_buffer_consume()
        self._hand_over()

    def _ring_callback(self, _ctx: object, data: int, size: int) -> int:
        """bcc's callback, once per record of a read: decoded and kept for _hand_over."""
        self._records += 1
        self._bytes += size
        if not self._awake:  # reading records: no wake-up needed until the next wait
            self._set_awake(True)
        raw = ct.string_at(data, size)
        try:
            self._read.append(records.decode(raw, self._clock_offset_ns, self._config.max_args))
        except DecodeError as exc:
            self._decode_errors += 1
            log.warning("undecodable ring-buffer record: %s", exc)
        return 0

    def _hand_over(self) -> None:
        """The records of the last read, in order, to the callback.

        Handed over after the read, not from inside bcc's callback, so that each exec can
        carry what the rest of the read says about it: an exec whose process's exit comes
        later in the same read is `exited` (the exit record is written at the end of the
        process's life: /proc has nothing left of it, and the drift check need not look;
        a read of a storm's batch holds most execs with their exits)."""
        read = self._read
        if not read:
            return
        self._read = []
        if len(read) > 1:
            _mark_exited(read)
        on_event = self._on_event
        for decoded in read:
            try:
                on_event(decoded)
            except Exception:  # one bad event must not stop the stream; count and log it
                self._callback_errors += 1
                log.exception("event handler failed")

    # ------------------------------------------------------------------ map writers
    # Only roxd/policy/ calls these (it computes what the maps must hold); each applies the
    # difference to what the kernel holds now.

    def mark_quiet(self, decoded: Decoded, window_ns: int) -> None:
        """No rule cares about this event: fold identical ones in the kernel for window_ns."""
        if decoded.fold_key is None or window_ns <= 0:
            return
        table = self._folds_for(decoded)
        key = table.Key.from_buffer_copy(decoded.fold_key)
        leaf = table.Leaf()
        leaf.quiet_until_ns = time.monotonic_ns() + window_ns
        leaf.folded = 0
        table[key] = leaf

    def clear_folds(self) -> None:
        """Forget every quiet mark (the rule set changed, old verdicts no longer hold)."""
        bpf = self._require()
        for name in ("exec_folds", "connect_folds", "syscall_folds", "file_folds"):
            bpf[name].clear()

    def set_container_cgroups(self, cgroup_ids: Iterable[int]) -> None:
        """Tell the kernel which cgroups are containers (for container-scoped kills)."""
        self._replace_cgroup_set("container_cgroups", cgroup_ids)

    def set_known_cgroups(self, cgroup_ids: Iterable[int]) -> None:
        """Every cgroup roxd has classified (host or container): execs elsewhere are held."""
        self._replace_cgroup_set("known_cgroups", cgroup_ids)

    def _replace_cgroup_set(self, name: str, cgroup_ids: Iterable[int]) -> None:
        """Make the u64 -> u8 map `name` hold exactly cgroup_ids, touching only what changed."""
        table = self._require()[name]
        wanted = set(cgroup_ids)
        current = {k.value for k in table}
        for cg in current - wanted:
            del table[table.Key(cg)]
        for cg in wanted - current:
            table[table.Key(cg)] = ct.c_uint8(1)

    def add_known_cgroup(self, cgroup_id: int) -> None:
        table = self._require()["known_cgroups"]
        table[table.Key(cgroup_id)] = ct.c_uint8(1)

    def set_hold_unknown(self, until_ns: int) -> None:
        """Hold execs in unclassified cgroups until `until_ns` (CLOCK_MONOTONIC, as
        bpf_ktime_get_ns; 0: off). A lease: the policy renews it while it needs the hold."""
        table = self._require()["hold_unknown"]
        table[ct.c_int(0)] = ct.c_uint64(max(0, until_ns))

    def set_exec_kills(self, entries: ExecKillEntries) -> None:
        """Replace the in-kernel exec kill table: {(cgroup id or scope, exe hash): verdict}."""
        bpf = self._require()
        table = bpf["exec_kill"]
        kinds = bpf["exec_kill_kinds"]
        current = {(k.cgroup_id, k.hash) for k in table}
        old_kinds, new_kinds = _kill_kinds(current), _kill_kinds(entries)
        # the kernel skips lookups for kinds the gate does not name: the gate is a superset
        # of what the table holds at every moment
        kinds[ct.c_int(0)] = ct.c_uint32(old_kinds | new_kinds)
        for scope, h in current - set(entries):
            key = table.Key()
            key.cgroup_id, key.hash = scope, h
            del table[key]
        for (scope, h), slot in entries.items():
            key = table.Key()
            key.cgroup_id, key.hash = scope, h
            table[key] = ct.c_uint32(slot)
        kinds[ct.c_int(0)] = ct.c_uint32(new_kinds)

    def set_baselines(self, cgroups: BaselineCgroups, allow: BaselineAllow) -> None:
        """Replace the enforced process baselines: allow entries first (a cgroup enforced
        before its allow-list exists would kill learned execs), cgroups after; on removal,
        cgroups first."""
        bpf = self._require()
        allow_table = bpf["baseline_allow"]
        current_allow = {(int(k.cgroup_id), int(k.hash)) for k in allow_table}
        for workload, h in allow - current_allow:
            key = allow_table.Key()
            key.cgroup_id, key.hash = workload, h
            allow_table[key] = ct.c_uint8(1)
        table = bpf["baseline_cgroups"]
        current = {int(k.value): (int(v.workload), int(v.verdict)) for k, v in table.items()}
        for cg in set(current) - set(cgroups):
            del table[table.Key(cg)]
        for cg, (workload, verdict) in cgroups.items():
            if current.get(cg) != (workload, verdict):
                leaf = table.Leaf()
                leaf.workload, leaf.verdict = workload, verdict
                table[table.Key(cg)] = leaf
        for workload, h in current_allow - allow:
            key = allow_table.Key()
            key.cgroup_id, key.hash = workload, h
            del allow_table[key]

    def set_connect_kills(self, by_port: LpmEntries, any_port: LpmEntries) -> None:
        """Replace the in-kernel connect kill tries: {(prefix bits, key bytes): verdict}."""
        bpf = self._require()
        for name, entries in (("connect_kill_port", by_port), ("connect_kill_any", any_port)):
            table = bpf[name]
            current = {(k.prefixlen, bytes(k.data)) for k in table}
            for prefixlen, data in current - set(entries):
                del table[self._lpm_key(table, prefixlen, data)]
            for (prefixlen, data), slot in entries.items():
                table[self._lpm_key(table, prefixlen, data)] = ct.c_uint32(slot)

    def set_syscall_watches(self, names: Iterable[str] | None) -> None:
        """Which sensitive syscalls reach userspace (names as in records.SYSCALL_NAMES, None:
        all; unknown names are ignored, they may be syscalls this build does not trace)."""
        table = self._require()["syscall_watch"]
        if names is None:
            names = records.SYSCALL_IDS
        wanted = {records.SYSCALL_IDS[n] for n in names if n in records.SYSCALL_IDS}
        for sc in range(1, len(records.SYSCALL_NAMES)):
            table[ct.c_int(sc)] = ct.c_uint8(1 if sc in wanted else 0)

    def set_ring_urgent(self, mask: int) -> None:
        """Which records wake roxd at once whatever the batching (roxd/policy/wakeups.py)."""
        self._require()["ring_urgent"][ct.c_int(0)] = ct.c_uint32(mask)

    def set_file_watches(self, entries: FileWatchEntries) -> None:
        """Replace the kernel's file watch maps (see bpf/file.bpf.c): the LPM trie of exact
        paths and prefixes, the basename hashes, the watch-everything mask, the gates."""
        bpf = self._require()
        paths, names = entries.paths, entries.names
        gates = bpf["file_gate_bits"]
        old_words = read_words(gates)
        # open the gates for the new entries before they exist, close them after the old
        # entries are gone: a gate may pass too much for a moment, never too little
        union = merged(old_words, entries.gate_words)
        write_words(gates, union, old_words)
        watch_all = bpf["file_watch_all"]
        watch_all[ct.c_int(1)] = ct.c_uint32(int(watch_all[ct.c_int(1)].value)
                                             | entries.gates_off)
        table = bpf["file_watch_paths"]
        offset = table.Key.data.offset
        current = {ct.string_at(ct.addressof(k) + offset, k.prefixlen // 8) for k in table}
        for data in current - set(paths):
            del table[self._path_key(table, data)]
        for data, mask in paths.items():
            table[self._path_key(table, data)] = ct.c_uint32(mask)
        table = bpf["file_watch_names"]
        current_names = {int(k.value) for k in table}
        for h in current_names - set(names):
            del table[table.Key(h)]
        for h, mask in names.items():
            table[table.Key(h)] = ct.c_uint32(mask)
        watch_all[ct.c_int(0)] = ct.c_uint32(entries.everything)
        write_words(gates, entries.gate_words, union)
        watch_all[ct.c_int(1)] = ct.c_uint32(entries.gates_off)
        log.info("file watches: %d paths/prefixes, %d basenames%s%s", len(paths), len(names),
                 ", every path" if entries.everything else "",
                 f", gates off {entries.gates_off}" if entries.gates_off else "")

    @staticmethod
    def _path_key(table, data: bytes):
        key = table.Key()
        key.prefixlen = len(data) * 8
        ct.memmove(ct.addressof(key) + type(key).data.offset, data, len(data))
        return key

    @staticmethod
    def _lpm_key(table, prefixlen: int, data: bytes):
        key = table.Key()
        key.prefixlen = prefixlen
        ct.memmove(ct.addressof(key) + type(key).data.offset, data, len(data))
        return key

    # ------------------------------------------------------------------ state

    def stats(self) -> SensorStats:
        bpf = self._require()
        table = bpf["stats"]
        counters: dict[str, int] = {}
        for index, name in enumerate(records.STAT_NAMES):
            counters[name] = sum(int(v) for v in table[ct.c_int(index)])
        counters.update(self.inbound.stats())  # accept_*, listen_* (inbound.bpf.c)
        drops = {int(k.value): int(v.value) for k, v in bpf["cgroup_drops"].items()}
        return SensorStats(counters, drops, self._decode_errors, self._callback_errors)

    def resync_clock(self) -> None:
        self._resync_clock()

    def _resync_clock(self) -> None:
        # CLOCK_MONOTONIC (bpf_ktime_get_ns) -> wall clock; re-sampled periodically so a
        # stepped wall clock is followed within one period.
        self._clock_offset_ns = time.time_ns() - time.monotonic_ns()

    # ------------------------------------------------------------------ helpers

    def _require(self):
        if self._bpf is None:
            raise SensorError("sensor is not started")
        return self._bpf

    def _folds_for(self, decoded: Decoded):
        event = decoded.event
        if isinstance(event, ConnectEvent):
            name = "connect_folds"
        elif isinstance(event, SyscallEvent):
            name = "syscall_folds"
        elif isinstance(event, FileEvent):
            name = "file_folds"
        else:
            name = "exec_folds"
        return self._require()[name]

    @staticmethod
    def _optional_tracepoints(source: str, tracefs: Path | None) -> list[str]:
        """-DHAVE_TP_<name> for each optional probe this kernel has (loader.py)."""
        return optional_tracepoints(source, tracefs)

    @staticmethod
    def _tracepoints_in(source: str) -> tuple[str, ...]:
        return tuple(f"{c}:{e}" for c, e in re.findall(r"TRACEPOINT_PROBE\((\w+),\s*(\w+)\)",
                                                         source))


# ring_consumer (roxd.bpf.c): {awake, pending}; both writes clear pending, since the consumer
# writes them just before it reads the ring
_AWAKE, _ASLEEP = (1).to_bytes(4, "little") + bytes(4), bytes(8)


def _map_consumer_flag(bpf) -> mmap.mmap | None:
    """ring_consumer's {awake, pending} in shared memory (a BPF_F_MMAPABLE array maps its
    values at offset 0). Every kernel with a BPF ring buffer (5.8) maps it (5.5); should
    mmap fail all the same, the flag stays 0: roxd counts as asleep, `pending` is never
    cleared, and every due wake-up is forced (correct, dearer)."""
    try:
        return mmap.mmap(bpf["ring_consumer"].map_fd, mmap.PAGESIZE, mmap.MAP_SHARED,
                         mmap.PROT_READ | mmap.PROT_WRITE)
    except (OSError, ValueError) as exc:
        log.info("ring_consumer cannot be mapped (%s): every wake-up decision treats roxd "
                 "as asleep", exc)
        return None


def _cgroup2_root() -> str:
    from roxd.containers.cgroups import find_cgroup2_mount
    from roxd.errors import CgroupError

    try:
        return find_cgroup2_mount().mount_point
    except CgroupError as exc:
        return f"(none: {exc})"
def _btf_flags(cache_dir: Path | None = None) -> list[str]:
    """-DTASK_MM_OFF=... from the running kernel's BTF: argv, exit codes and the namespace
    pid are then read where they are cheapest (process.bpf.c); without BTF the older
    programs run."""
    try:
        found = btf.offsets(cache_dir=cache_dir)
    except btf.BtfError as exc:
        log.info("no kernel BTF (%s): argv captured at sys_enter_execve, exit codes at "
                 "exit_group, namespace pids from /proc", exc)
        return []
    return [f"-D{macro}={offset}" for macro, offset in sorted(found.items())]


def sensor_cflags(config: SensorConfig) -> list[str]:
    return [
        f"-I{config.bpf_dir}",
        f"-DRINGBUF_PAGES={config.ringbuf_pages}",
        f"-DRING_BATCH_NS={max(0, config.ring_batch_ms) * 1_000_000}ULL",
        f"-DRING_CPUS={max(1, os.cpu_count() or 1)}",
        f"-DMAX_ARGS={config.max_args}",
        f"-DROXD_TGID={os.getpid()}",  # roxd's own syscalls (bpf() all day) are skipped
        "-Wno-macro-redefined",
        "-Wno-unused-function",
        *(["-DMODULE_SYSCALLS_RAW"] if config.module_syscalls_raw else []),
        *([] if config.inbound else ["-DROXD_NO_INBOUND"]),
        *_btf_flags(config.cache_dir),
    ]


def _compile(config: SensorConfig, cflags: list[str], attach: bool = True) -> BccObject:
    """Load through the compiled-object cache (loader.load_cached): a compile only when the
    cache has no object for these inputs."""
    return load_cached(config.bpf_dir, "roxd.bpf.c", cache_dir=config.cache_dir,
                       what="the eBPF programs", cflags=cflags,
                       source_flags=optional_tracepoints, attach=attach)


# ---------------------------------------------------------------------------- prewarm
# bcc has no way to load a precompiled object (iovisor/bcc#2367): a start whose inputs the
# compiled-object cache has no object for (loader.load_cached) compiles roxd.bpf.c with clang,
# most of roxd's time to READY then. The compile (or the cached load) runs in C with the GIL
# released, so the daemon starts it on a thread first thing and reads rules, connects to the
# container runtime and scans containers meanwhile; Sensor.start() takes the result when its
# inputs (the config and cflags) are the same, and compiles itself otherwise. The programs
# are loaded (verified) on that thread too, and attached by start(), as before: no event of
# the start-up seconds queues up unread (a test's storm right after READY found roxd still
# working off that backlog, and its folding came too late).

@dataclass
class _Prewarm:
    config: SensorConfig
    cflags: list[str]  # set by the thread, read after join()
    thread: threading.Thread
    result: BccObject | None = None
    error: BaseException | None = None
    stages: list[StageTime] = field(default_factory=list)


_prewarm: _Prewarm | None = None
_prewarm_lock = threading.Lock()


def prewarm(config: SensorConfig) -> None:
    """Start compiling and loading the programs for `config` on a thread (see above). A
    compile already under way for the same config is kept: roxd.main starts it before the
    daemon is even imported, and Daemon.run() asks again (tests start a Daemon directly)."""
    global _prewarm
    if not _is_power_of_two(config.ringbuf_pages):
        return  # start() reports it
    with _prewarm_lock:
        if _prewarm is not None and _prewarm.config == config:
            return

    def run() -> None:
        assert job is not None
        try:
            # the BTF walk for the -D offsets (about 0.1 s) is on this thread too
            with timed(job.stages, "bpf flags (BTF)", COMPILE_THREAD):
                job.cflags = sensor_cflags(config)
            job.result = _compile(config, job.cflags, attach=False)
        except BaseException as exc:  # handed to start(), which raises it
            job.error = exc

    job = _Prewarm(config, [], threading.Thread(target=run, name=COMPILE_THREAD,
                                                daemon=True))
    with _prewarm_lock:
        discard_prewarmed()
        _prewarm = job
    job.thread.start()


def _take_prewarmed(config: SensorConfig, cflags: list[str]) -> BccObject | None:
    global _prewarm
    with _prewarm_lock:
        job, _prewarm = _prewarm, None
    if job is None:
        return None
    job.thread.join()
    if job.config != config or job.cflags != cflags:
        if job.result is not None:
            job.result.bpf.cleanup()
        return None
    if job.error is not None:
        raise job.error
    if job.result is None:
        return None
    return dataclasses.replace(job.result, stages=(*job.stages, *job.result.stages))


def discard_prewarmed() -> None:
    """Detach a prewarmed object nobody took (the daemon failed before its sensor started)."""
    global _prewarm
    job, _prewarm = _prewarm, None
    if job is not None:
        job.thread.join()
        if job.result is not None:
            job.result.bpf.cleanup()


def _kill_kinds(keys: Iterable[tuple[int, int]]) -> int:
    """exec_kill_kinds bits (process.bpf.c) for a set of (scope, hash) keys."""
    bits = 0
    for scope, _ in keys:
        bits |= (KILL_HAS_HOST if scope == records.SCOPE_HOST else KILL_HAS_CONTAINER
                 if scope == records.SCOPE_ANY_CONTAINER else KILL_HAS_CGROUP)
    return bits


KILL_HAS_CGROUP, KILL_HAS_CONTAINER, KILL_HAS_HOST = 1, 2, 4  # process.bpf.c


def _is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0
