"""BaselineEngine: learns each workload's executables, locks, and judges every exec after.

Learned per workload: the executable path as executed (the path given to execve, so busybox
applets count apart: /bin/nslookup is not /bin/cat, and it is what the kernel hashes for its
allow-list), with first/last seen, a count, and the parents' executables; not arguments.

Lifecycle of a workload: `learning` from its first exec for `window_s`, then `locked`
(automatically when `auto_lock`, or by `lock()`); `unlock()` learns again. Once locked, its
mode decides: `learn` (keep adding), `monitor` (an exec outside the baseline is an anomaly),
`enforce` (the same, and the kernel kills it before its first instruction). Execs in a
container's first `startup_grace_s` join the baseline and are never anomalies.

The event loop owns it (observe, tick); the API's commands run on the loop through
call_in_loop. Baselines persist in <state_dir>/baselines.json (written by tick when changed,
atomically); a file that cannot be read is moved aside and said, never trusted in part.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from roxd.baselines import files
from roxd.baselines.breakglass import MAX_S as BREAKGLASS_MAX_S
from roxd.baselines.breakglass import BreakglassChange
from roxd.baselines.elements import Elements, LearnedProcess, intern_parents
from roxd.baselines.settings import MODES, BaselineSettings
from roxd.baselines.workload import workload_key
from roxd.model import (
    BaselineFacts,
    ConnectEvent,
    Container,
    EnrichedEvent,
    ExecEvent,
    FileEvent,
)

log = logging.getLogger(__name__)

FILE_NAME = "baselines.json"
FORMAT = 1
Listener = Callable[[], None]
Audit = Callable[[BreakglassChange], None]
# where a connect went, as a baseline element names it: "workload:<key>", "host", "loopback"
# or an external prefix ("203.0.113.0/24"); see peer_element()
PeerOf = Callable[[str], str]


def peer_element(protocol: str, port: int, peer: str, direction: str = "outbound") -> str:
    """One learned network element: `outbound tcp/5432 workload:shop/db` (a connect to the
    peer's port), `inbound tcp/8080 workload:shop/web` (an accept from the peer on the
    workload's own port 8080)."""
    return f"{direction} {protocol or 'ip'}/{port} {peer}"


class BaselineError(ValueError):
    """A request the engine refuses: unknown workload, bad mode, bad import."""


@dataclass
class Baseline:
    workload: str
    first_seen_ns: int
    mode: str | None = None  # None: from the config (default_mode / image_modes)
    locked_at_ns: int | None = None
    image: str | None = None
    processes: Elements = field(default_factory=Elements)  # executable -> seen, parents
    peers: Elements = field(default_factory=Elements)  # peer_element() -> seen
    file_dirs: dict[str, files.SeenDir] = field(default_factory=dict)  # written directories
    anomalies: int = 0
    # break-glass: enforce acts as monitor until this wall-clock time (roxd/baselines/
    # breakglass.py); persisted, so a restart neither loses nor extends it
    breakglass_until_ns: int | None = None
    breakglass_reason: str = ""
    # image digests (the runtime's image id) its containers ran, oldest first (at most 16):
    # one never seen reopens learning when [baselines] reopen_on_new_digest
    image_ids: list[str] = field(default_factory=list)
    # the facts observe() gave the last exec (not saved: BaselineFacts are immutable, shared
    # while nothing they say changed)
    last_exec_facts: BaselineFacts | None = field(default=None, repr=False, compare=False)

    @property
    def locked(self) -> bool:
        return self.locked_at_ns is not None

    def to_dict(self, effective_mode: str) -> dict[str, Any]:
        return {"workload": self.workload, "first_seen_ns": self.first_seen_ns,
                "mode": self.mode, "effective_mode": effective_mode,
                "state": "locked" if self.locked else "learning",
                "locked_at_ns": self.locked_at_ns, "image": self.image,
                "anomalies": self.anomalies,
                "breakglass_until_ns": self.breakglass_until_ns,
                "breakglass_reason": self.breakglass_reason,
                "image_ids": list(self.image_ids),
                "processes": {p: r.to_dict() for p, r in sorted(self.processes.items())},
                "peers": {p: r.to_dict() for p, r in sorted(self.peers.items())},
                "file_dirs": {d: r.to_dict() for d, r in sorted(self.file_dirs.items())}}


class BaselineEngine:
    def __init__(self, settings: BaselineSettings, state_dir: Path | str | None, *,
                 clock: Callable[[], int] = time.time_ns,
                 monotonic: Callable[[], float] = time.monotonic,
                 peer_of: PeerOf | None = None) -> None:
        self.settings = settings
        self._peer_of = peer_of  # None: network baselines off (no communication map)
        self._path = Path(state_dir) / FILE_NAME if state_dir is not None else None
        self._clock = clock
        self._monotonic = monotonic
        self._baselines: OrderedDict[str, Baseline] = OrderedDict()
        self._cgroup_seen: dict[int, float] = {}  # container cgroup -> first seen (monotonic)
        self._keys: dict[int, tuple[Container, str]] = {}  # id(container) -> its workload
        self._listeners: list[Listener] = []
        self._audits: list[Audit] = []
        self._dirty = False
        self.counters = {"observed": 0, "learned": 0, "anomalies": 0, "locked": 0,
                         "evicted": 0, "saves": 0, "save_errors": 0, "breakglass": 0,
                         "reopened": 0}
        self._load()

    # ------------------------------------------------------------------ per event

    def _workload(self, container: Container) -> str:
        """workload_key(), once per container object: the resolver hands out one object per
        container and a new one when its metadata (labels, name, image) changes, so the key
        of an object never changes; the entry keeps the object so its id is not reused."""
        entry = self._keys.get(id(container))
        if entry is not None and entry[0] is container:
            return entry[1]
        if len(self._keys) >= 4096:
            self._keys.clear()  # gone containers' objects: start over
        key = workload_key(container, self.settings.key_label)
        self._keys[id(container)] = (container, key)
        return key

    def observe(self, event: EnrichedEvent) -> BaselineFacts | None:
        """The baseline's verdict on one exec in a container (None on the host, for other
        events, or with baselines off); learning execs are added."""
        ev = event.event
        container = event.container
        if not self.settings.enabled or container is None:
            return None
        if type(ev) is not ExecEvent:  # (an exec first: the usual event, told by one test)
            if isinstance(ev, ConnectEvent):
                return self._observe_connect(event, ev, container)
            if isinstance(ev, FileEvent):
                return self._observe_file(ev, container)
            if not isinstance(ev, ExecEvent):
                return None
        self.counters["observed"] += 1
        key = self._workload(container)
        now = self._clock()
        base = self._baselines.get(key)
        if base is None:
            base = self._new(key, container, now)
        self._check_digest(base, container, now)
        path = ev.filename
        mode = self.enforced_mode(base)
        in_grace = self._in_grace(ev.cgroup_id)
        i = base.processes.seen(path, now)
        if i >= 0:
            self._add_parent(base.processes, i, event)
            verdict = "learned" if base.locked else "learning"
        elif not base.locked or mode == "learn" or in_grace:
            self._learn(base, path, event, now)
            verdict = "learning"
        else:
            base.anomalies += 1
            self.counters["anomalies"] += 1
            verdict = "anomaly"
        # the same facts as the previous exec of this workload (the usual case: a known
        # program, nothing learned or locked since) are the same immutable object
        learned = len(base.processes)
        last = base.last_exec_facts
        if (last is not None and last.verdict == verdict and last.mode == mode
                and last.learned == learned and last.locked_at_ns == base.locked_at_ns
                and last.first_seen_ns == base.first_seen_ns and last.workload == key):
            return last
        facts = base.last_exec_facts = BaselineFacts(
            workload=key, mode=mode, verdict=verdict, locked_at_ns=base.locked_at_ns,
            learned=learned, first_seen_ns=base.first_seen_ns)
        return facts

    def _observe_connect(self, event: EnrichedEvent, ev: ConnectEvent,
                         container: Container) -> BaselineFacts | None:
        """The same lifecycle for outbound connects: learned while learning (and in the
        startup grace), an anomaly once locked when the (protocol, port, peer) is new.
        Loopback is the container talking to itself: learned, never an anomaly."""
        if self._peer_of is None or not self.settings.network:
            return None
        self.counters["observed"] += 1
        key = self._workload(container)
        now = self._clock()
        base = self._baselines.get(key)
        if base is None:
            base = self._new(key, container, now)
        self._check_digest(base, container, now)
        peer = self._peer_of(ev.daddr)
        element = peer_element(ev.protocol, ev.dport, peer)
        mode = self.enforced_mode(base)
        in_grace = self._in_grace(ev.cgroup_id)  # first sight of a cgroup starts its grace
        return self._judge_peer(base, key, element, peer, mode, in_grace, now)

    def _observe_file(self, ev: FileEvent, container: Container) -> BaselineFacts | None:
        """The same lifecycle for the directories written below the watched trees
        (roxd/baselines/files.py): learned while learning and in the startup grace, an
        anomaly once locked when the directory is new."""
        trees = self.settings.file_trees
        directory = files.written_dir(ev, trees) if self.settings.files else None
        if directory is None:
            return None
        self.counters["observed"] += 1
        key = self._workload(container)
        now = self._clock()
        base = self._baselines.get(key) or self._new(key, container, now)
        mode = self.mode_of(base)
        in_grace = self._in_grace(ev.cgroup_id)
        known = base.file_dirs.get(directory)
        nearby: tuple[str, ...] = ()
        if known is not None:
            known.last_ns = now
            known.count += 1 + ev.folded
            verdict = "learned" if base.locked else "learning"
        elif not base.locked or mode == "learn" or in_grace:
            if len(base.file_dirs) < self.settings.max_file_dirs:
                base.file_dirs[directory] = files.SeenDir(now, now, 1 + ev.folded)
                self.counters["learned"] += 1
                self._dirty = True
            verdict = "learning"
        else:
            base.anomalies += 1
            self.counters["anomalies"] += 1
            verdict = "anomaly"
            nearby = files.nearby(base.file_dirs, directory, trees)
        return BaselineFacts(workload=key, mode=mode, verdict=verdict,
                             locked_at_ns=base.locked_at_ns, learned=len(base.file_dirs),
                             first_seen_ns=base.first_seen_ns,
                             element=files.element(directory), nearby=nearby)

    def observe_inbound(self, workload: str, container: Container | None, cgroup_id: int,
                        peer: str, port: int, protocol: str) -> BaselineFacts | None:
        """An accepted inbound connection of a workload (bpf/inbound.bpf.c), with the same
        lifecycle as outbound connects: `inbound <protocol>/<port> <peer>` is learned while
        learning (and in the startup grace), an anomaly once locked. Loopback is learned,
        never an anomaly. `container` None: the listener predates roxd and the workload came
        from the local address; then only an existing baseline is judged. Alert only: an
        accept has happened by the time the kernel reports it."""
        if self._peer_of is None or not self.settings.network or not self.settings.enabled:
            return None
        base = self._baselines.get(workload)
        now = self._clock()
        if base is None:
            if container is None:
                return None
            base = self._new(workload, container, now)
        self.counters["observed"] += 1
        element = peer_element(protocol, port, peer, "inbound")
        mode = self.mode_of(base)
        in_grace = cgroup_id != 0 and self._in_grace(cgroup_id)
        return self._judge_peer(base, workload, element, peer, mode, in_grace, now)

    def _judge_peer(self, base: Baseline, key: str, element: str, peer: str, mode: str,
                    in_grace: bool, now: int) -> BaselineFacts:
        """The lifecycle of one network element, outbound or inbound: learned while learning
        (and in the startup grace), an anomaly once locked; loopback is learned, never an
        anomaly."""
        if base.peers.seen(element, now) >= 0:
            verdict = "learned" if base.locked else "learning"
        elif not base.locked or mode == "learn" or peer == "loopback" or in_grace:
            if len(base.peers) < self.settings.max_peers:
                base.peers.add(element, LearnedProcess(now, now))
                self.counters["learned"] += 1
                self._dirty = True
            verdict = "learning"
        else:
            base.anomalies += 1
            self.counters["anomalies"] += 1
            verdict = "anomaly"
        return BaselineFacts(workload=key, mode=mode, verdict=verdict,
                             locked_at_ns=base.locked_at_ns, learned=len(base.peers),
                             first_seen_ns=base.first_seen_ns, element=element)

    def tick(self) -> None:
        """Lock the baselines whose window ended, end break-glass exemptions whose time is up,
        persist what changed (housekeeping)."""
        now_wall = self._clock()
        for base in self._baselines.values():
            if base.breakglass_until_ns is not None and now_wall >= base.breakglass_until_ns:
                self._end_breakglass(base, "expired")
        if self.settings.auto_lock:
            now = self._clock()
            window_ns = int(self.settings.window_s * 1e9)
            for base in self._baselines.values():
                if not base.locked and now - base.first_seen_ns >= window_ns:
                    self._lock(base, now)
        self.save_if_changed()

    # ------------------------------------------------------------------ for the kernel

    def enforcing(self) -> dict[str, frozenset[str]]:
        """Locked workloads in enforce mode and their learned paths: the kernel's allow-lists."""
        return {k: frozenset(b.processes) for k, b in self._baselines.items()
                if b.locked and self.enforced_mode(b) == "enforce"}

    def enforcing_network(self) -> dict[str, frozenset[str]]:
        """Locked workloads in enforce mode and their learned network elements: the cgroup
        connect hook's allow-lists (roxd/policy/netenf.py)."""
        if self._peer_of is None or not self.settings.network:
            return {}
        return {k: frozenset(b.peers) for k, b in self._baselines.items()
                if b.locked and self.enforced_mode(b) == "enforce"}

    def add_audit(self, audit: Audit) -> None:
        """Called for every break-glass grant, end and expiry (the daemon raises an alert)."""
        self._audits.append(audit)

    def add_listener(self, listener: Listener) -> None:
        """Called when `enforcing()` would answer differently (lock, unlock, mode, accept)."""
        self._listeners.append(listener)

    def workload_of(self, container: Container) -> str:
        return self._workload(container)

    # ------------------------------------------------------------------ commands

    def list(self) -> list[dict[str, Any]]:
        return [{"workload": k, "state": "locked" if b.locked else "learning",
                 "mode": self.mode_of(b), "enforced_mode": self.enforced_mode(b),
                 "breakglass_until_ns": self._breakglass_until(b),
                 "learned": len(b.processes),
                 "file_dirs": len(b.file_dirs),
                 "anomalies": b.anomalies, "first_seen_ns": b.first_seen_ns,
                 "locked_at_ns": b.locked_at_ns, "image": b.image}
                for k, b in self._baselines.items()]

    def get(self, key: str) -> dict[str, Any]:
        base = self._require(key)
        return {**base.to_dict(self.mode_of(base)), "enforced_mode": self.enforced_mode(base),
                "breakglass_until_ns": self._breakglass_until(base)}

    def breakglass(self, key: str, duration_s: float, reason: str = "") -> dict[str, Any]:
        """Exempt a workload from enforce mode for `duration_s` (0: end an exemption now).
        Audited: every grant and end reaches the audit listeners (an alert)."""
        if not 0 <= duration_s <= BREAKGLASS_MAX_S:
            raise BaselineError(f"break-glass duration must be between 0 (end it now) and "
                                f"{int(BREAKGLASS_MAX_S)} s, not {duration_s:g}; for longer, "
                                f"set the mode to monitor")
        if len(reason) > 512:
            raise BaselineError("break-glass reason: at most 512 characters")
        base = self._require(key)
        if duration_s == 0:
            if base.breakglass_until_ns is not None:
                self._end_breakglass(base, "ended")
            return self.get(key)
        base.breakglass_until_ns = self._clock() + int(duration_s * 1e9)
        base.breakglass_reason = reason
        self.counters["breakglass"] += 1
        log.warning("break-glass for %s until %s: %s", key,
                    time.strftime("%Y-%m-%d %H:%M:%S",
                                  time.localtime(base.breakglass_until_ns / 1e9)),
                    reason or "(no reason given)")
        self._changed(kernel=True)
        self._audit(BreakglassChange(key, "granted", base.breakglass_until_ns, reason))
        return self.get(key)

    def lock(self, key: str) -> dict[str, Any]:
        base = self._require(key)
        if not base.locked:
            self._lock(base, self._clock())
        return self.get(key)

    def unlock(self, key: str) -> dict[str, Any]:
        base = self._require(key)
        if base.locked:
            base.locked_at_ns = None
            base.first_seen_ns = self._clock()  # a new window
            self._changed(kernel=True)
        return self.get(key)

    def set_mode(self, key: str, mode: str) -> dict[str, Any]:
        if mode not in MODES:
            raise BaselineError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        base = self._require(key)
        base.mode = mode
        self._changed(kernel=True)
        return self.get(key)

    def accept(self, key: str, path: str) -> dict[str, Any]:
        """An operator accepts an anomaly: `path` (an executable, a network element as
        `show` lists it: `outbound tcp/5432 workload:shop/db`, or a written directory:
        `write /var/lib/app`) joins the workload's baseline."""
        base = self._require(key)
        if path.startswith(files.ELEMENT_PREFIX):  # a written directory: `write /etc/app`
            try:
                directory = files.directory_of(path)
            except ValueError as exc:
                raise BaselineError(f"cannot accept {path!r}: {exc}") from None
            if directory not in base.file_dirs:
                now = self._clock()
                base.file_dirs[directory] = files.SeenDir(now, now, 0)
                self._dirty = True
            return self.get(key)
        if path.startswith(("outbound ", "inbound ")):
            if path not in base.peers:
                now = self._clock()
                base.peers.add(path, LearnedProcess(now, now, 0))
                self._changed(kernel=True)  # an enforced workload's hook allows it at once
            return self.get(key)
        if path not in base.processes:
            now = self._clock()
            base.processes.add(sys.intern(path), LearnedProcess(now, now, 0))
            self._changed(kernel=True)
        return self.get(key)

    def export(self, key: str | None = None) -> dict[str, Any]:
        """Baselines as a JSON document (`roxctl baselines export`): one workload, or all.
        The same format the state file uses; import() takes it back."""
        bases = [self._require(key)] if key else list(self._baselines.values())
        return {"format": FORMAT, "baselines": [b.to_dict(self.mode_of(b)) for b in bases]}

    def import_(self, doc: Any) -> dict[str, Any]:
        """Replace the named workloads' baselines with the document's (others untouched).
        All or nothing: the whole document is checked first, and a bad one changes nothing
        and names what is wrong (BaselineError)."""
        if not isinstance(doc, Mapping) or not isinstance(doc.get("baselines"), list):
            raise BaselineError("an import is a JSON object with a `baselines` list (the "
                                "output of `roxctl baselines export`)")
        if doc.get("format", FORMAT) != FORMAT:
            raise BaselineError(f"format {doc.get('format')!r} is not {FORMAT}")
        parsed = []
        for i, d in enumerate(doc["baselines"]):
            try:
                if not isinstance(d, Mapping):
                    raise TypeError("not an object")
                parsed.append(_baseline_from(d))
            except (KeyError, TypeError, ValueError) as exc:
                what = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
                raise BaselineError(f"baselines[{i}]: {what}") from None
        for base in parsed:
            self._baselines[base.workload] = base
        if parsed:
            self._changed(kernel=True)  # locked ones in enforce mode reach the kernel
        return {"imported": [b.workload for b in parsed]}

    def mode_of(self, base: Baseline) -> str:
        return base.mode or self.settings.mode_for_image(base.image)

    def enforced_mode(self, base: Baseline) -> str:
        """The mode in force now: enforce acts as monitor while a break-glass runs (checked
        against the clock, so one that ended is never honoured, even before tick() ran)."""
        mode = self.mode_of(base)
        if mode == "enforce" and self._breakglass_until(base) is not None:
            return "monitor"
        return mode

    def _breakglass_until(self, base: Baseline) -> int | None:
        until = base.breakglass_until_ns
        return until if until is not None and self._clock() < until else None

    def _end_breakglass(self, base: Baseline, what: str) -> None:
        change = BreakglassChange(base.workload, what, base.breakglass_until_ns or 0,
                                  base.breakglass_reason)
        base.breakglass_until_ns = None
        base.breakglass_reason = ""
        log.warning("break-glass for %s %s: enforce mode applies again", base.workload, what)
        self._changed(kernel=True)
        self._audit(change)

    def _audit(self, change: BreakglassChange) -> None:
        for audit in self._audits:
            try:
                audit(change)
            except Exception:  # the exemption itself stands; the failure is logged
                log.exception("break-glass audit of %s failed", change.workload)

    def stats(self) -> dict[str, int]:
        locked = sum(1 for b in self._baselines.values() if b.locked)
        return {**self.counters, "workloads": len(self._baselines),
                "file_dirs": sum(len(b.file_dirs) for b in self._baselines.values()),
                "workloads_locked": locked, "workloads_enforcing": len(self.enforcing())}

    # ------------------------------------------------------------------ persistence

    def save_if_changed(self) -> None:
        if not self._dirty or self._path is None:
            return
        doc = {"format": FORMAT,
               "baselines": [b.to_dict(self.mode_of(b)) for b in self._baselines.values()]}
        tmp = self._path.with_suffix(".tmp")
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w") as f:
                json.dump(doc, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._path)
        except OSError as exc:
            self.counters["save_errors"] += 1
            log.error("baselines not saved to %s: %s (kept in memory, retried)", self._path,
                      exc.strerror)
            return
        self._dirty = False
        self.counters["saves"] += 1

    def _load(self) -> None:
        if self._path is None or not self._path.exists():
            return
        try:
            doc = json.loads(self._path.read_text())
            baselines = [_baseline_from(d) for d in doc["baselines"]]
            if doc.get("format") != FORMAT:
                raise ValueError(f"format {doc.get('format')!r}, expected {FORMAT}")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            aside = self._path.with_suffix(f".bad-{int(time.time())}")
            os.replace(self._path, aside)
            log.error("baselines file %s unreadable (%s): moved to %s; learning anew",
                      self._path, exc, aside)
            return
        for base in baselines:
            self._baselines[base.workload] = base
        log.info("baselines: %d workloads loaded from %s", len(baselines), self._path)

    # ------------------------------------------------------------------ internals

    def _new(self, key: str, container: Container, now: int) -> Baseline:
        base = Baseline(workload=key, first_seen_ns=now, image=container.image,
                        image_ids=[container.image_id] if container.image_id else [])
        self._baselines[key] = base
        while len(self._baselines) > self.settings.max_workloads:
            old_key, old = self._baselines.popitem(last=False)
            self.counters["evicted"] += 1
            log.warning("baselines: over %d workloads, forgot %s", self.settings.max_workloads,
                        old_key)
            if old.locked:
                self._changed(kernel=True)
        self._dirty = True
        return base

    def _check_digest(self, base: Baseline, container: Container, now: int) -> None:
        """A digest the baseline has not seen: remembered, and learning reopens when
        configured. Digests seen before (an old replica still running during a rolling
        update) change nothing, so two versions side by side never reopen it twice."""
        digest = container.image_id
        if not digest or digest in base.image_ids:
            return
        first = not base.image_ids
        base.image_ids.append(digest)
        del base.image_ids[:-16]
        self._dirty = True
        if first:
            return  # the workload's first digest (or one from before digests were kept)
        base.image = container.image or base.image
        if not self.settings.reopen_on_new_digest or not base.locked:
            return
        base.locked_at_ns = None
        base.first_seen_ns = now  # a new window
        self.counters["reopened"] += 1
        log.warning("baseline of %s reopened: new image digest %s (%s)", base.workload,
                    digest, container.image)
        self._changed(kernel=True)
        self._audit(BreakglassChange(base.workload, "reopened", 0,
                                     f"new image digest {digest} ({container.image})"))

    def _learn(self, base: Baseline, path: str, event: EnrichedEvent, now: int) -> None:
        if len(base.processes) >= self.settings.max_processes:
            return
        # interned: workloads built on the same images learn the same paths (/bin/sh)
        path = sys.intern(path)
        base.processes.add(path, LearnedProcess(now, now))
        # its index (seen with n=0 changes nothing: it was learned at `now`)
        self._add_parent(base.processes, base.processes.seen(path, now, 0), event)
        self.counters["learned"] += 1
        self._dirty = True
        if base.locked:  # learn mode after lock, or a grace exec: the kernel must allow it
            self._changed(kernel=True)

    @staticmethod
    def _add_parent(processes: Elements, i: int, event: EnrichedEvent) -> None:
        ancestors = event.process.ancestors
        parent = ancestors[0].exe if ancestors else ""
        if not parent:
            return
        parents = processes.parents_at(i)
        if parent not in parents and len(parents) < 16:
            processes.set_parents_at(i, intern_parents((*parents, parent)))

    def _in_grace(self, cgroup_id: int) -> bool:
        now = self._monotonic()
        first = self._cgroup_seen.setdefault(cgroup_id, now)
        if len(self._cgroup_seen) > 65536:  # bounded: forget the oldest half
            for cg in list(self._cgroup_seen)[:32768]:
                del self._cgroup_seen[cg]
        return now - first < self.settings.startup_grace_s

    def _lock(self, base: Baseline, now: int) -> None:
        base.locked_at_ns = now
        self.counters["locked"] += 1
        log.info("baseline of %s locked: %d processes, mode %s", base.workload,
                 len(base.processes), self.mode_of(base))
        self._changed(kernel=True)

    def _changed(self, *, kernel: bool) -> None:
        self._dirty = True
        if kernel:
            for listener in self._listeners:
                listener()

    def _require(self, key: str) -> Baseline:
        base = self._baselines.get(key)
        if base is None:
            raise BaselineError(f"no baseline for workload {key!r} (roxctl baselines list)")
        return base


def _baseline_from(d: Mapping[str, Any]) -> Baseline:
    mode = d.get("mode")
    if mode is not None and mode not in MODES:
        raise ValueError(f"workload {d.get('workload')!r}: mode {mode!r}")
    return Baseline(
        workload=str(d["workload"]), first_seen_ns=int(d["first_seen_ns"]), mode=mode,
        locked_at_ns=None if d.get("locked_at_ns") is None else int(d["locked_at_ns"]),
        image=d.get("image"), anomalies=int(d.get("anomalies", 0)),
        breakglass_until_ns=(None if d.get("breakglass_until_ns") is None
                             else int(d["breakglass_until_ns"])),
        breakglass_reason=str(d.get("breakglass_reason") or ""),
        image_ids=[str(x) for x in d.get("image_ids") or []],
        processes=Elements((str(p), LearnedProcess(
            int(r["first_ns"]), int(r["last_ns"]), int(r["count"]),
            intern_parents(tuple(dict.fromkeys(map(str, r.get("parents", ()))))[:16])))
                           for p, r in dict(d.get("processes", {})).items()),
        peers=Elements((str(p), LearnedProcess(int(r["first_ns"]), int(r["last_ns"]),
                                               int(r["count"])))
                       for p, r in dict(d.get("peers", {})).items()),
        file_dirs=files.dirs_from(d.get("file_dirs")))
