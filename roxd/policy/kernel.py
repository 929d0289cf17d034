"""KernelPolicy: rules x containers -> the kernel's maps, and the kernel's verdicts -> rules.

Told of rule-set changes (`apply_rules`) and container changes (`containers_changed`, a
listener any thread may call), it computes what every policy map must hold and hands the
sensor's map writers the new contents (they apply diffs). The same tables answer the two
questions the rest of roxd asks of the kernel's decisions:

* which rule killed this process (`rule_of_verdict`): verdicts carry their rule set's
  generation, so a kill made just before a reload still names the rule that made it;
* what rule-driven kills may hit (`kill_guard`: host kills on or off, protected processes),
  which the pipeline hands the responder with every match;
* what to do with an exec the kernel held (SIGSTOPped because its cgroup was new): decided
  by `ExecKillTable.lookup`, the same lookup the kernel does, on the table just written.

Not thread-safe apart from `containers_changed`: the event loop owns it, as it owns the sensor.
"""

from __future__ import annotations

import logging
import signal
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from roxd.baselines.files import merged as merged_watches
from roxd.enforce.kill import KillOutcome, kill_pid
from roxd.enforce.protect import KillGuard, ProtectedProcesses
from roxd.model import ConnectEvent, Container, ExecEvent, FileWatchSet
from roxd.policy.file_watch import file_watch_entries
from roxd.policy.kill_tables import (
    BASELINE_VERDICT,
    BaselineTable,
    ExecKillTable,
    RuleSlots,
    build_baseline_table,
    build_connect_kill_table,
    build_exec_kill_table,
    split_verdict,
)
from roxd.policy.netenf import (
    NETWORK_VERDICT,
    NetworkSummary,
    NetworkTable,
    build_network_table,
)
from roxd.policy.netenf_kernel import NetworkHook, Probe
from roxd.policy.sightings import FoldSightings
from roxd.policy.wakeups import urgent_mask
from roxd.rules.ruleset import RuleSet
from roxd.sensor.maps import (
    BaselineAllow,
    BaselineCgroups,
    ExecKillEntries,
    FileWatchEntries,
    LpmEntries,
)
from roxd.sensor.records import Decoded

log = logging.getLogger(__name__)

EPERM = 1

ContainerList = list[tuple[int, Container]]
Signaller = Callable[[int, int], KillOutcome]  # (pid, signal) -> outcome, by pidfd


class KernelMaps(Protocol):
    """The sensor's map writers (roxd.sensor.program.Sensor implements them)."""

    def set_container_cgroups(self, cgroup_ids: Iterable[int]) -> None: ...
    def set_known_cgroups(self, cgroup_ids: Iterable[int]) -> None: ...
    def add_known_cgroup(self, cgroup_id: int) -> None: ...
    def set_hold_unknown(self, until_ns: int) -> None: ...  # a lease; 0: off
    def set_exec_kills(self, entries: ExecKillEntries) -> None: ...
    def set_connect_kills(self, by_port: LpmEntries, any_port: LpmEntries) -> None: ...
    def set_file_watches(self, entries: FileWatchEntries) -> None: ...
    def set_syscall_watches(self, names: Iterable[str] | None) -> None: ...
    def set_ring_urgent(self, mask: int) -> None: ...  # policy/wakeups.py
    def clear_folds(self) -> None: ...
    def mark_quiet(self, decoded: Decoded, window_ns: int) -> None: ...
    def set_baselines(self, cgroups: BaselineCgroups, allow: BaselineAllow) -> None: ...


class Baselines(Protocol):
    """What the policy needs of roxd.baselines.BaselineEngine."""

    def enforcing(self) -> Mapping[str, frozenset[str]]: ...
    def enforcing_network(self) -> Mapping[str, frozenset[str]]: ...
    def workload_of(self, container: Container) -> str: ...


class NoBaselines:
    """Baselines off: nothing enforced."""

    def enforcing(self) -> Mapping[str, frozenset[str]]:
        return {}

    def enforcing_network(self) -> Mapping[str, frozenset[str]]:
        return {}

    def workload_of(self, container: Container) -> str:
        return ""


@dataclass
class PolicyCounters:
    map_write_errors: int = 0  # a map full (or refused): counted and logged, never fatal
    rule_applies: int = 0
    container_syncs: int = 0
    held_killed: int = 0
    held_continued: int = 0
    quiet_marks: int = 0
    unknown_verdicts: int = 0  # a verdict whose generation is no longer remembered
    network_refused: int = 0  # connects the cgroup hook refused that roxd saw fail (EPERM)
    network_table_errors: int = 0  # the hook's maps refused a write (counted, never fatal)


class GuardedMaps:
    """The sensor's map writers, each call kept from stopping roxd: a map that is full (bcc
    raises a bare Exception, E2BIG) or refuses a write is counted and logged, at most once a
    minute per writer, and the rest of the policy is still written. What did not reach the
    kernel is still decided in userspace: a rule whose kill entry is missing kills by pidfd,
    a cgroup missing from known_cgroups is held once more."""

    LOG_EVERY_S = 60.0

    def __init__(self, maps: KernelMaps, counters: PolicyCounters,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._maps = maps
        self._counters = counters
        self._clock = clock
        self._logged: dict[str, float] = {}
        self.errors_by_writer: dict[str, int] = {}

    def __getattr__(self, name: str) -> Callable[..., None]:
        """The guarded writer, built once per name and kept as an attribute (so later calls
        find it without coming here: a closure per call cost about a µs per fold mark)."""
        write = getattr(self._maps, name)

        def guarded(*args: object) -> None:
            try:
                write(*args)
            except Exception as exc:  # bcc raises bare Exception for a full map
                self._counters.map_write_errors += 1
                self.errors_by_writer[name] = self.errors_by_writer.get(name, 0) + 1
                now = self._clock()
                if now - self._logged.get(name, -self.LOG_EVERY_S) >= self.LOG_EVERY_S:
                    self._logged[name] = now
                    log.error("kernel map write %s failed (%s): the rest of the policy is "
                              "in place; what is missing is decided in userspace (%d such "
                              "errors so far)", name, exc, self.errors_by_writer[name])

        setattr(self, name, guarded)
        return guarded


def _send(pid: int, sig: int) -> KillOutcome:
    return kill_pid(pid, sig=sig)


class KernelPolicy:
    HISTORY = 16  # rule-set generations whose verdicts are still named (reloads in flight)
    HOLD_LEASE_S = 5.0  # renewed every second; a loop stalled this long stops holding

    def __init__(self, maps: KernelMaps, *, enforce_in_kernel: bool, fold_window_ns: int,
                 containers: Callable[[], ContainerList],
                 known_cgroups: Callable[[], Iterable[int]] = tuple,
                 signal_pid: Signaller = _send, host_kills: bool = False,
                 protected_comms: Sequence[str] = (),
                 protected_exes: Sequence[str] = (),
                 baselines: Baselines | None = None,
                 file_watches: FileWatchSet | None = None,
                 peer_owners: Callable[[], Mapping[str, str]] = dict,
                 monitor: bool = False) -> None:
        """enforce_in_kernel: False in monitor mode or where bpf_send_signal is missing (the
        kill tables then stay empty). monitor: [rules] monitor, nothing is enforced at all
        (the two cases of enforce_in_kernel False differ for the ring's wake-ups: without
        bpf_send_signal a kill rule kills by pidfd and its records are urgent; in monitor
        mode nothing is). containers: the attributed containers now (the
        resolver). known_cgroups: every cgroup id classified so far (the cgroup index).
        host_kills ([enforce] host_kills, off by default): kill host processes too; off, no
        SCOPE_HOST kill entry is written and userspace kills spare the host.
        protected_comms / protected_exes: added to the built-in protected processes.
        baselines: the workloads whose locked process (and network) baselines the kernel
        enforces. file_watches: watched beside the rules' file watches (the file baselines'
        trees). peer_owners: address -> peer name (`workload:<key>`, `host`) now, the
        communication map's address book, to resolve learned peers to addresses."""
        self.counters = PolicyCounters()
        self._monotonic_ns = time.monotonic_ns  # CLOCK_MONOTONIC, as bpf_ktime_get_ns
        self._guarded = GuardedMaps(maps, self.counters)
        self._maps: KernelMaps = self._guarded  # type: ignore[assignment]
        self._enforce = enforce_in_kernel
        self._monitor = monitor
        self._ring_urgent = 0
        self._fold_window_ns = fold_window_ns
        self._sightings = FoldSightings()  # a key is marked at its second quiet verdict
        self._containers = containers
        self._known_cgroups = known_cgroups
        self._signal = signal_pid
        self._host_kills = host_kills
        self.kill_guard = KillGuard(host_kills, ProtectedProcesses.with_extra(protected_comms,
                                                                             protected_exes))
        self._rules: RuleSet | None = None
        self._generation = 0
        self._slots: OrderedDict[int, RuleSlots] = OrderedDict()
        self._exec_table = ExecKillTable({})
        self._container_cgroups: frozenset[int] = frozenset()
        self._hold = False
        self._containers_dirty = True  # set from any thread; read by the loop
        self._baselines: Baselines = baselines or NoBaselines()
        self._file_watches = file_watches or FileWatchSet()
        self._baseline_table = BaselineTable({})
        self._workload_numbers: dict[str, int] = {}
        self._peer_owners = peer_owners
        self._net_hook: NetworkHook | None = None
        self._net_probe = Probe(False, "not probed (the sensor has not started)")
        self._net_table = NetworkSummary()
        self._net_logged: set[str] = set()

    # ------------------------------------------------------------------ inputs

    def apply_rules(self, rules: RuleSet) -> None:
        """A new rule set (start, reload, enable/disable): new watch sets, a new generation of
        kill verdicts, and no fold verdict of the old set survives."""
        self._rules = rules
        self._generation += 1
        exec_specs = rules.exec_kill_specs() if self._enforce else []
        connect_specs = rules.connect_kill_specs() if self._enforce else []
        slots = RuleSlots.number(self._generation,
                                 [s.rule_id for s in (*exec_specs, *connect_specs)]
                                 + ([BASELINE_VERDICT] if self._enforce else []))
        self._slots[slots.generation] = slots
        while len(self._slots) > self.HISTORY:
            self._slots.popitem(last=False)
        self._maps.set_file_watches(file_watch_entries(
            merged_watches(rules.file_watch_set(), self._file_watches)))
        self._maps.set_syscall_watches(rules.syscall_watch_set())
        self._ring_urgent = urgent_mask(rules, kills_in_kernel=self._enforce,
                                        host_kills=self._host_kills, monitor=self._monitor)
        self._maps.set_ring_urgent(self._ring_urgent)
        self._maps.clear_folds()  # old "no rule cares" verdicts may no longer hold
        self._sightings.clear()
        self.counters.rule_applies += 1
        self._sync(self._containers())

    def set_network_hook(self, hook: NetworkHook | None, probe: Probe) -> None:
        """The cgroup connect hook, attached (or None and why not): network baselines in
        enforce mode are refused in the kernel only with it."""
        self._net_hook = hook
        self._net_probe = probe
        self._containers_dirty = True

    def refused_sends(self, boot_to_wall_ns: int) -> list[Decoded]:
        """UDP sends the hook refused since the last call, as connect events (protocol udp,
        EPERM) for the pipeline: unconnected sendto/sendmsg has no tracepoint of roxd's, so
        without this a refused send would be counted and never alerted. Each is claimed by
        on_event (take_refusal) like a refused connect; one that is not is dropped here."""
        if self._net_hook is None:
            return []
        out = []
        for tid, refusal, ktime_ns in self._net_hook.sendmsg_refusals():
            family = "ipv6" if ":" in refusal.address else "ipv4"
            event = ConnectEvent(time_ns=boot_to_wall_ns + ktime_ns, pid=tid, tid=tid, uid=0,
                                 cgroup_id=refusal.cgroup_id, comm="", family=family,
                                 daddr=refusal.address, dport=refusal.port, errno=EPERM,
                                 protocol="udp")
            out.append(Decoded(event))
        return out

    def forget_refusal(self, tid: int) -> None:
        """Drop a refusal no event claimed (its handling failed): never reported twice."""
        if self._net_hook is not None:
            self._net_hook.take_refusal(tid)

    def close_network_hook(self) -> None:
        """Detach the hook (stop): connects are no longer refused."""
        if self._net_hook is not None:
            self._net_hook.close()

    @property
    def network_enforcement(self) -> Mapping[str, object]:
        """What enforce mode does to a connect outside the network baseline on this host."""
        effective = self._net_hook is not None and self._enforce
        reason = self._net_probe.detail if self._enforce else (
            "monitor mode or no bpf_send_signal: nothing is enforced in the kernel")
        return {"available": self._net_probe.available, "detail": self._net_probe.detail,
                "effective": "refuse in kernel (EPERM)" if effective else "alert only",
                "reason": reason}

    def containers_changed(self) -> None:
        """A container appeared, changed or went, or a baseline was locked, unlocked or
        changed mode (any thread): the kernel learns of it before the next event is handled,
        or at the next refresh()."""
        self._containers_dirty = True

    # ------------------------------------------------------------------ per event

    def on_event(self, decoded: Decoded, container: Container | None) -> str | None:
        """The loop's one call per event, after attribution: bring pending container changes
        into the kernel, release a held exec, and name the rule the kernel killed for (None
        when it killed for none)."""
        self.refresh()
        if decoded.held and isinstance(decoded.event, ExecEvent):
            return self._release_held(decoded.event, container)
        event = decoded.event
        if (isinstance(event, ConnectEvent) and event.errno == EPERM
                and self._net_hook is not None):
            # the hook left a verdict for this thread only if it was the one that refused
            refusal = self._net_hook.take_refusal(event.tid)
            if refusal is not None and refusal.cgroup_id == event.cgroup_id \
                    and refusal.port == event.dport:
                self.counters.network_refused += 1
                return NETWORK_VERDICT
        return self.rule_of_verdict(decoded.kill_slot) if decoded.kill_slot else None

    def quiet(self, decoded: Decoded) -> bool:
        """No rule cares about this event: fold identical ones in the kernel for a while, from
        the second time this key is judged quiet (policy/sightings.py: most keys never come
        again, and a mark is a syscall). True when a mark was written."""
        key = decoded.fold_key
        if key is None or self._fold_window_ns <= 0 or not self._sightings.second(key):
            return False
        self._maps.mark_quiet(decoded, self._fold_window_ns)
        self.counters.quiet_marks += 1
        return True

    def renew_hold(self) -> None:
        """Extend the hold lease (housekeeping, every second): the kernel holds execs of
        unclassified cgroups only while the lease runs, so a roxd that hangs, is stopped or
        dies stops holding within HOLD_LEASE_S instead of stopping every new cgroup's execs
        for good."""
        until = self._monotonic_ns() + int(self.HOLD_LEASE_S * 1e9) if self._hold else 0
        self._maps.set_hold_unknown(until)

    def refresh(self) -> None:
        """Apply pending container changes (also called by housekeeping)."""
        if self._containers_dirty and self._rules is not None:
            self._containers_dirty = False
            self._sync(self._containers())

    # ------------------------------------------------------------------ answers

    def rule_of_verdict(self, value: int) -> str | None:
        generation, index = split_verdict(value)
        slots = self._slots.get(generation)
        rule_id = slots.rule_of(index) if slots is not None else None
        if rule_id is None and value:
            self.counters.unknown_verdicts += 1
            log.warning("kernel verdict %#x names no remembered rule (generation %d)",
                        value, generation)
        return rule_id

    def snapshot(self) -> Mapping[str, object]:
        """What the kernel was told, for status and tests."""
        protected = self.kill_guard.protected
        return {"generation": self._generation, "hold_unknown": self._hold,
                "ring_urgent": self._ring_urgent,
                "host_kills": self._host_kills,
                "protected_comms": list(protected.comms),
                "protected_exes": list(protected.exes),
                "exec_kill_entries": len(self._exec_table.entries),
                "baseline_cgroups": len(self._baseline_table.cgroups),
                "baseline_allow_entries": self._baseline_table.allow_entries,
                "container_cgroups": len(self._container_cgroups),
                "network_enforcement": dict(self.network_enforcement),
                "network_cgroups": self._net_table.cgroups,
                "network_allow_entries": self._net_table.entries,
                "network_workloads": self._net_table.workloads,
                "network_left_out": list(self._net_table.left_out),
                "network_unresolved_peers": self._net_table.unresolved,
                "network_kernel": self._net_hook.stats() if self._net_hook is not None
                else {},
                "map_write_errors_by_writer": dict(self._guarded.errors_by_writer),
                **vars(self.counters)}

    @property
    def exec_table(self) -> ExecKillTable:
        return self._exec_table

    # ------------------------------------------------------------------ internals

    def _sync(self, containers: ContainerList) -> None:
        assert self._rules is not None
        self.counters.container_syncs += 1
        self._container_cgroups = frozenset(cg for cg, _ in containers)
        self._maps.set_container_cgroups(self._container_cgroups)
        if not self._enforce:
            self._exec_table = ExecKillTable({})
            self._baseline_table = BaselineTable({})
            self._maps.set_hold_unknown(0)
            self._maps.set_exec_kills({})
            self._maps.set_connect_kills({}, {})
            self._maps.set_baselines({}, set())
            self._write_network(NetworkTable())
            self._hold = False
            return
        slots = self._slots[next(reversed(self._slots))]
        exec_specs = self._rules.exec_kill_specs()
        protected = self.kill_guard.protected
        self._exec_table = build_exec_kill_table(exec_specs, containers, slots,
                                                 host=self._host_kills,
                                                 protected_comms=protected.comms,
                                                 protected_exes=protected.exes)
        self._maps.set_exec_kills(self._exec_table.entries)
        # Rules that apply to some containers but not to the host cannot be decided for a
        # cgroup roxd has not classified yet: hold such execs (see process.bpf.c). With host
        # kills off, a rule for the host and every container is not held for: an exec in a
        # container cgroup not classified yet is looked up as a host one (no entry), not
        # killed in the kernel, and killed from userspace by pidfd once attributed.
        enforcing = self._baselines.enforcing()
        self._baseline_table = build_baseline_table(
            enforcing, self._baselines.workload_of, containers, self._workload_numbers,
            slots.verdict_of(BASELINE_VERDICT))
        self._maps.set_baselines(self._baseline_table.cgroups, self._baseline_table.entries())
        if self._net_hook is not None:
            self._write_network(build_network_table(
                self._baselines.enforcing_network(), self._baselines.workload_of,
                containers, self._workload_numbers, self._peer_owners()))
        # A replica of an enforcing workload is enforced from its first exec: held like
        # container-scoped kill rules until roxd has classified its cgroup.
        hold = bool(enforcing) or any(
            not (s.scope.matches_container(None) and s.scope.matches_any_container())
            for s in exec_specs)
        if hold:
            self._maps.set_known_cgroups(set(self._known_cgroups()) | self._container_cgroups)
        self._hold = hold
        self.renew_hold()
        connect = build_connect_kill_table(self._rules.connect_kill_specs(), containers, slots,
                                           host=self._host_kills)
        self._maps.set_connect_kills(connect.by_port, connect.any_port)

    def _write_network(self, table: NetworkTable) -> None:
        """Hand the hook its maps; a refused write is counted and logged, never fatal (the
        anomaly is still alerted)."""
        for key in set(table.left_out) - self._net_logged:
            log.error("network baseline of %s not enforced in the kernel: the hook's maps are "
                      "full (%d addresses, %d prefixes, %d cgroups written); its anomalies are "
                      "alerted only", key, len(table.exact), len(table.allow),
                      len(table.cgroups))
        self._net_logged = set(table.left_out)
        if self._net_hook is None:
            self._net_table = table.summary()
            return
        try:
            self._net_hook.set_network(table.cgroups, table.exact, table.allow)
        except Exception as exc:  # bcc raises bare Exception for a full map
            self.counters.network_table_errors += 1
            log.error("network baseline maps not written (%s): enforced cgroups removed, "
                      "anomalies are alerted only", exc)
            try:  # never leave a cgroup enforced with a partial allow-list
                self._net_hook.set_network({}, set(), set())
            except Exception as exc2:
                log.error("could not clear the enforced cgroups either: %s", exc2)
            table = NetworkTable()
        self._net_table = table.summary()

    def _release_held(self, event: ExecEvent, container: Container | None) -> str | None:
        """An exec the kernel stopped because its cgroup was new to roxd. Its cgroup is now
        classified and the tables rewritten (refresh): decide it as the kernel would have,
        with the kernel's own lookup on the table just written, then kill or continue it.
        Returns the rule id when killed."""
        self._maps.add_known_cgroup(event.cgroup_id)
        is_container = container is not None or event.cgroup_id in self._container_cgroups
        found = (self._exec_table.lookup(event.cgroup_id, is_container, event.filename)
                 or self._baseline_table.lookup(event.cgroup_id, event.filename))
        rule_id = self.rule_of_verdict(found) if found else None
        if rule_id is not None:
            outcome = self._signal(event.pid, signal.SIGKILL)
            if outcome.killed:
                self.counters.held_killed += 1
                return rule_id
            log.warning("held exec of %s (pid %d) matched %s but could not be killed: %s",
                        event.filename, event.pid, rule_id, outcome.reason)
            return None
        outcome = self._signal(event.pid, signal.SIGCONT)
        self.counters.held_continued += 1
        if not outcome.killed and "exited" not in outcome.reason:
            log.warning("could not continue held pid %d: %s", event.pid, outcome.reason)
        return None


__all__ = ["NETWORK_VERDICT", "KernelMaps", "KernelPolicy", "PolicyCounters"]
