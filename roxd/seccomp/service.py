"""SeccompService: the one object the daemon and the API use for seccomp.

learn → (kernel bitmaps, read by poll) → store → profile → validate → apply / exec; enforce
(in-kernel kill) and watch (denials under an applied profile).

Thread-safe, and nothing of it runs long on the daemon's event loop (issue 23 item 12): every
public method holds the service's lock; what talks to the container engine (the refresh behind
poll(), the API's calls) runs on the service's own worker thread. `poll()` (the loop) queues a
refresh there and waits at most `poll_wait` for it: with the engine hung, poll() returns the
events queued so far and the rest come with a later poll(). `call()` (the API) waits at most
its timeout and says whether the call was withdrawn or may still complete.

It owns no client and no cgroup index of its own: containers are inspected, and recreated
with a profile, through the shared `ContainerRuntime`; cgroup ids become paths (and running
containers' pids become cgroup ids) through the shared `CgroupIndex` of the attribution stage.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

from roxd.containers.cgroups import CgroupIndex, find_cgroup2_mount
from roxd.containers.paths import parse_cgroup_path
from roxd.offloop import DaemonWorker
from roxd.runtime import ContainerMetadata, ContainerRuntime, as_runtime
from roxd.seccomp import profile as profiles
from roxd.seccomp import store as stores
from roxd.seccomp.apply import ApplyResult
from roxd.seccomp.control import SeccompEnforcement
from roxd.seccomp.errors import SeccompBusy, SeccompTargetError
from roxd.seccomp.learner import (
    CG_ENFORCE,
    CG_LEARN,
    CG_PROVISIONAL,
    CG_WATCH,
    KIND_KILL,
    SyscallTracer,
)
from roxd.seccomp.syscalls import all_numbers, name_of, number_of, split_known
from roxd.seccomp.validate import Comparison, Validation, compare, find_docker_default, validate
from roxd.seccomp.wrapper import exec_with_profile

log = logging.getLogger(__name__)

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


def _locked(method: F) -> F:
    """Hold the service's lock for the whole call (reentrant: reads call refresh())."""

    @functools.wraps(method)
    def wrapper(self: SeccompService, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)

    return cast(F, wrapper)

LEARN_LABEL = "roxd.learn"


@dataclass(frozen=True)
class SeccompEvent:
    """A syscall killed in enforce mode, or denied by an applied profile (EPERM)."""

    kind: str  # "killed" | "denied"
    container_id: str
    container_name: str
    syscall: str
    count: int  # new since the last report
    pid: int

    def describe(self) -> str:
        verb = ("killed at sys_enter (SIGKILL)" if self.kind == "killed"
                else "denied by seccomp (EPERM)")
        return (f"{self.container_name}: {self.syscall} {verb} x{self.count}, "
                f"last pid {self.pid}")


@dataclass
class _Tracked:
    cgroup_id: int
    path: str
    container_id: str
    name: str
    image_id: str
    image_ref: str
    flags: int
    window: str
    written: frozenset[int] = field(default_factory=frozenset)


@dataclass(frozen=True)
class ProfileReport:
    profile: dict[str, Any]
    validation: Validation
    comparison: Comparison
    learned: stores.LearnedSet
    warnings: tuple[str, ...]


class SeccompService:
    """Implements roxd.seccomp.control.SeccompControl (the responder's seccomp action).

    `runtime`: the shared ContainerRuntime (a docker SDK client is still accepted and wrapped).
    `index`: the shared CgroupIndex (the daemon passes `attribution.index`); without it, an
    index of its own over `cgroup_root` (default: the host's cgroup2 mount), for the CLI and
    tests.
    """

    def __init__(self, state_dir: Path, runtime: ContainerRuntime, *, honor_label: bool = False,
                 tracer: SyscallTracer | None = None, index: CgroupIndex | None = None,
                 cgroup_root: str | None = None, poll_wait: float = 0.5) -> None:
        # public methods hold it: the loop's poll (through the worker), the API's calls (the
        # worker) and the responder's enforce (the slow-actions worker) never interleave
        self._lock = threading.RLock()
        self._events_lock = threading.Lock()  # _pending_events: poll() must never wait on
        self._worker = DaemonWorker("roxd-seccomp")
        self._refreshing: Future[None] | None = None
        self.poll_wait = poll_wait
        self.store = stores.LearnedStore(state_dir)
        self._runtime = as_runtime(runtime)
        self._honor_label = honor_label
        self._tracer = tracer or SyscallTracer()
        if index is None:
            index = CgroupIndex(cgroup_root or find_cgroup2_mount().mount_point,
                                min_refresh_interval=0.2)
        self._index = index
        self._root = index.root
        self._tracked: dict[int, _Tracked] = {}
        self._enforced: dict[str, frozenset[int]] = {}  # container id -> denied numbers
        self._watched: dict[str, frozenset[int]] = {}  # container id -> allowed numbers
        self._event_counts: dict[tuple[int, int, int], int] = {}
        self._pending_events: list[SeccompEvent] = []
        self._gone: dict[int, _Tracked] = {}  # finished cgroups, for late event attribution
        self._docker_default = None
        self._sync()

    # ------------------------------------------------------------------ learning

    @_locked
    def learn(self, target: str) -> dict[str, Any]:
        """Start learning a container (id/name) or every new container of an image."""
        container = self._find_container(target)
        sel = self.store.selection()
        if container is not None:
            cid = container.id
            self.store.save_selection(stores.Selection(sel.images, sel.containers | {cid}))
            result: dict[str, Any] = {"container": cid, "name": container.display_name}
            if container.running:
                tracked = self._track_running(container, CG_LEARN, stores.WINDOW_RUNNING)
                result["window"] = stores.WINDOW_RUNNING
                result["note"] = ("learning a running container misses runc's calls after the "
                                  "filter is loaded: restart it to learn from the start")
                result["cgroup_id"] = tracked.cgroup_id
            else:
                result["window"] = stores.WINDOW_FILTER
            self._sync()
            return result
        image_id = self._image_id(target)
        self.store.save_selection(stores.Selection(sel.images | {image_id}, sel.containers))
        self._sync()
        return {"image": image_id, "ref": target, "window": stores.WINDOW_FILTER}

    @_locked
    def stop_learning(self, target: str) -> None:
        sel = self.store.selection()
        container = self._find_container(target)
        if container is not None:
            cid = container.id
            sel = stores.Selection(sel.images, sel.containers - {cid})
            for t in list(self._tracked.values()):
                if t.container_id == cid:
                    self._read_learned(t)
                    self._set_flags(t, t.flags & ~CG_LEARN)
        else:
            sel = stores.Selection(sel.images - {self._image_id(target)}, sel.containers)
        self.store.save_selection(sel)
        self._sync()

    @_locked
    def learned(self, target: str) -> stores.LearnedSet:
        """The learned set of a container (id/name) or an image (ref/id), merged. A read:
        it refreshes the learned sets but leaves new kill/deny events queued for poll()."""
        self.refresh()
        container = self._find_container(target)
        if container is not None:
            found = self.store.get("container", container.id)
        else:
            found = self.store.get("image", self._image_id(target))
        if found is None:
            raise SeccompTargetError(target, "nothing learned yet")
        return found

    @_locked
    def diff(self, a: str, b: str) -> stores.Diff:
        return stores.diff(self.learned(a), self.learned(b), a, b)

    # ------------------------------------------------------------------ profiles

    @_locked
    def profile(self, target: str, *, kill: bool = False) -> ProfileReport:
        learned = self.learned(target)
        warnings = []
        if not learned.complete:
            warnings.append("learned (partly) from a running container: runc's calls after the "
                            "filter is loaded may be missing; restart it under learning")
        if learned.unknown_numbers:
            warnings.append("recorded syscalls this libseccomp cannot name (they stay denied): "
                            + ", ".join(map(str, sorted(learned.unknown_numbers))))
        doc = profiles.generate(
            learned.names, kill=kill,
            comment=f"roxd: learned from {', '.join(sorted(learned.containers)) or target}")
        prof = profiles.from_document(doc, f"profile for {target}")
        return ProfileReport(doc, validate(prof), compare(prof, self.docker_default()),
                             learned, tuple(warnings))

    def docker_default(self) -> profiles.Profile | None:
        if self._docker_default is None:
            self._docker_default = find_docker_default()
        return self._docker_default

    @_locked
    def check(self, target: str, profile: profiles.Profile) -> list[str]:
        """Syscalls the container made (as learned) that the profile would deny."""
        learned = self.learned(target)
        allowed = profile.allowed_names() | profile.conditional_names()
        return sorted(learned.names - allowed)

    @_locked
    def apply(self, target: str, profile: profiles.Profile, *, settle_s: float = 1.0,
              watch: bool = True) -> ApplyResult:
        validate(profile)  # never hand Docker a profile libseccomp refuses
        result = self._runtime.apply_seccomp(target, profile.to_json(), settle_s=settle_s)
        if watch and result.running:
            self.watch(result.new_id, profile)
        return result

    def exec_with_profile(self, profile: profiles.Profile, argv: Sequence[str]) -> None:
        exec_with_profile(profile, argv)

    # ------------------------------------------------------------------ enforce and watch

    @_locked
    def enforce(self, target: str,
                profile: profiles.Profile | None = None) -> SeccompEnforcement:
        """Kill (SIGKILL at sys_enter) any process of the container that makes a syscall
        outside the profile (default: the container's learned set). Applies to the container's
        processes that run after its seccomp filter was installed, now and after restarts."""
        container = self._require_container(target)
        cid = container.id
        allowed = (_numbers(profile.allowed_names() | profile.conditional_names())
                   if profile is not None else _numbers(self.learned(target).names))
        deny = all_numbers() - allowed
        self._enforced[cid] = deny
        tracked = self._track_running(container, CG_ENFORCE, stores.WINDOW_RUNNING)
        self._sync()
        return SeccompEnforcement(container=cid, cgroup_id=tracked.cgroup_id, denied=len(deny),
                                  allowed=len(allowed))

    @_locked
    def release(self, target: str) -> None:
        cid = self._require_container(target).id
        self._enforced.pop(cid, None)
        self._watched.pop(cid, None)
        for t in list(self._tracked.values()):
            if t.container_id == cid:
                self._set_flags(t, t.flags & ~(CG_ENFORCE | CG_WATCH))
        self._sync()

    @_locked
    def watch(self, target: str, profile: profiles.Profile) -> None:
        """Report syscalls the applied profile denies (EPERM at sys_exit) in this container."""
        container = self._require_container(target)
        self._watched[container.id] = _numbers(profile.allowed_names()
                                                  | profile.conditional_names())
        self._track_running(container, CG_WATCH, stores.WINDOW_RUNNING, arm=False)
        self._sync()

    # ------------------------------------------------------------------ the loop

    def poll(self) -> list[SeccompEvent]:
        """Classify new cgroups, save learned sets, retire dead cgroups, report kills and
        denials. The daemon's loop alone calls it: it hands out every event queued since the
        last call, once. The work (a container inspect per new cgroup) runs on the worker;
        poll() waits for it at most `poll_wait`, so a hung engine never holds the loop: what a
        refresh still running finds comes with a later poll(). Cheap when nothing is
        selected."""
        if self._refreshing is None or self._refreshing.done():
            try:
                self._refreshing = self._worker.submit(self.refresh)
            except RuntimeError:  # closed: nothing more to learn
                self._refreshing = None
        refreshing = self._refreshing
        if refreshing is not None:
            try:
                refreshing.result(timeout=self.poll_wait)
            except FutureTimeout:
                log.debug("seccomp refresh still running (container engine slow)")
            except Exception:  # refresh's own error: logged here, the next poll retries
                log.exception("seccomp refresh failed")
                self._refreshing = None
        with self._events_lock:
            events, self._pending_events = self._pending_events, []
        return events

    def call(self, fn: Callable[[SeccompService], T], timeout: float = 30.0) -> T:
        """Run fn(self) on the service's worker, never on the caller's thread, and wait at
        most `timeout`: SeccompBusy then (withdrawn if it had not started)."""
        future = self._worker.submit(fn, self)
        try:
            return future.result(timeout)
        except FutureTimeout:
            withdrawn = future.cancel()
            if not withdrawn and future.done():
                return future.result()
            raise SeccompBusy(timeout, started=not withdrawn) from None

    def refresh(self) -> None:
        """poll() without handing out events: new kills and denials are queued for the
        daemon's next poll(). What reads (profile, check, diff, enforce) call: a read never
        consumes the events whose alerts the daemon raises."""
        with self._lock:
            if not self._tracer.loaded:
                return
            states = self._classify_pending()
            for cg, tracked in list(self._tracked.items()):
                st = states.get(cg)
                if tracked.flags & CG_LEARN and st is not None:
                    self._save(tracked, st.learned)
                if not os.path.isdir(self._abs(tracked.path)):
                    self._retire(tracked)
            self._queue_events(self._events())

    def _queue_events(self, events: list[SeccompEvent]) -> None:
        with self._events_lock:
            self._pending_events.extend(events)

    @_locked
    def status(self) -> dict[str, Any]:
        sel = self.store.selection()
        return {
            "selection": {"images": sorted(sel.images), "containers": sorted(sel.containers),
                          "label": LEARN_LABEL if self._honor_label else None},
            "programs": list(self._tracer.attached),
            "cgroups": [{"cgroup_id": t.cgroup_id, "container": t.name, "id": t.container_id,
                         "image": t.image_ref, "modes": _modes(t.flags), "window": t.window,
                         "learned": len(t.written)} for t in self._tracked.values()],
            "learned": {"containers": [s.to_dict() for s in self.store.all("container")],
                        "images": [s.to_dict() for s in self.store.all("image")]},
            "counters": self._tracer.counters(),
        }

    def close(self) -> None:
        self._worker.shutdown()
        # a call held by a hung engine ends by the engine's timeout; do not wait for ever
        if not self._lock.acquire(timeout=30.0):
            log.warning("seccomp: a call still waits for the container engine; learned sets "
                        "of this run since the last poll are not saved")
            return
        try:
            for t in list(self._tracked.values()):
                if t.flags & CG_LEARN:
                    st = self._tracer.state(t.cgroup_id)
                    if st is not None:
                        self._save(t, st.learned)
            self._tracer.close()
        finally:
            self._lock.release()

    def __enter__(self) -> SeccompService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internals

    def _wanted(self, container: ContainerMetadata) -> int:
        sel = self.store.selection()
        cid = container.id
        flags = 0
        labels = container.labels
        if (cid in sel.containers or container.image_id in sel.images
                or (self._honor_label and labels.get(LEARN_LABEL) == "true")):
            flags |= CG_LEARN
        if cid in self._enforced:
            flags |= CG_ENFORCE
        if cid in self._watched:
            flags |= CG_WATCH
        return flags

    def _classify_pending(self) -> dict[int, Any]:
        states = {s.cgroup_id: s for s in self._tracer.states()}
        for st in states.values():
            if st.provisional and st.cgroup_id not in self._tracked:
                self._classify(st.cgroup_id, st.first_tgid)
        return states

    def _path_of(self, cg: int, pid: int = 0) -> str | None:
        """The cgroup's path from the shared index: known already, else by the pid seen in
        it (one stat), else by a (rate-limited) walk."""
        path = self._index.known_path_of(cg)
        if path is None and pid and self._index.lookup_pid(pid, expected_id=cg) is not None:
            path = self._index.known_path_of(cg)
        return path if path is not None else self._index.path_of(cg)

    def _classify(self, cg: int, pid: int = 0) -> None:
        path = self._path_of(cg, pid)
        ref = parse_cgroup_path(path) if path else None
        container = None
        if ref is not None and ref.runtime == self._runtime.name:
            container = self._inspect(ref.container_id)
        flags = self._wanted(container) if container else 0
        if not flags or path is None or container is None:
            log.debug("seccomp: cgroup %s (%s) is not selected", cg, path)
            self._tracer.drop_state(cg)
            return
        tracked = self._new_tracked(cg, path, container, flags, stores.WINDOW_FILTER)
        self._set_flags(tracked, flags)
        log.info("seccomp: %s (%s) %s from its filter installation", tracked.name,
                 tracked.container_id[:12], "/".join(_modes(flags)))

    def _track_running(self, container: ContainerMetadata, flag: int, window: str,
                       arm: bool = True) -> _Tracked:
        cg = self._index.lookup_pid(container.pid) if container.pid else None
        path = self._index.known_path_of(cg) if cg is not None else None
        if cg is None or not path:
            raise SeccompTargetError(container.display_name, "the container is not running")
        if self._tracer.loaded:
            self._classify_pending()  # a provisional state must not be overwritten unseen
        tracked = self._tracked.get(cg) or self._new_tracked(cg, path, container, 0, window)
        self._tracer.load()
        self._set_flags(tracked, tracked.flags | flag)
        if arm:
            self._tracer.arm_tasks(cg, _procs(self._abs(path)))
            self._tracer.arm_tasks(cg, _procs(self._abs(path)))  # again: forks in between
        return tracked

    def _new_tracked(self, cg: int, path: str, container: ContainerMetadata, flags: int,
                     window: str) -> _Tracked:
        tracked = _Tracked(cg, path, container.id, container.display_name,
                           container.image_id or "", container.image or "", flags, window)
        self._tracked[cg] = tracked
        return tracked

    def _set_flags(self, t: _Tracked, flags: int) -> None:
        t.flags = flags
        self._tracer.set_state(t.cgroup_id, flags, deny=self._enforced.get(t.container_id, ()),
                               allowed=self._watched.get(t.container_id, ()))

    def _save(self, t: _Tracked, numbers: frozenset[int]) -> None:
        if numbers == t.written:
            return
        names, unknown = split_known(numbers)
        self.store.record(stores.LearnedSet(
            key=t.container_id, kind="container", names=names, unknown_numbers=unknown,
            windows=frozenset({t.window}), image_id=t.image_id,
            image_refs=frozenset({t.image_ref}) if t.image_ref else frozenset(),
            containers=frozenset({t.name})))
        t.written = numbers

    def _read_learned(self, t: _Tracked) -> None:
        st = self._tracer.state(t.cgroup_id)
        if st is not None:
            self._save(t, st.learned)

    def _retire(self, t: _Tracked) -> None:
        if t.flags & CG_LEARN:
            self._read_learned(t)
        self._queue_events(self._events())
        self._tracer.drop_state(t.cgroup_id)
        self._tracked.pop(t.cgroup_id, None)
        self._gone[t.cgroup_id] = t
        log.info("seccomp: cgroup of %s is gone", t.name)
        self._sync()

    def _events(self) -> list[SeccompEvent]:
        out = []
        for ev in self._tracer.events():
            key = (ev.cgroup_id, ev.nr, ev.kind)
            new = ev.count - self._event_counts.get(key, 0)
            if new <= 0:
                continue
            self._event_counts[key] = ev.count
            t = self._tracked.get(ev.cgroup_id) or self._gone.get(ev.cgroup_id)
            e = SeccompEvent("killed" if ev.kind == KIND_KILL else "denied",
                             t.container_id if t else "", t.name if t else f"cgroup {ev.cgroup_id}",
                             name_of(ev.nr) or f"syscall {ev.nr}", new, ev.last_pid)
            log.warning("seccomp: %s", e.describe(),
                        extra={"container_id": e.container_id, "syscall": e.syscall})
            out.append(e)
        return out

    def _sync(self) -> None:
        """Attach exactly the program groups the current selection needs."""
        sel = self.store.selection()
        provisional = (self._honor_label or not sel.empty or bool(self._enforced)
                       or bool(self._watched))
        flags = 0
        for t in self._tracked.values():
            flags |= t.flags
        groups = []
        if provisional or flags & (CG_LEARN | CG_ENFORCE):
            groups += ["arming", "syscall"]
        if flags & CG_WATCH:
            groups.append("exit")
        if groups or self._tracer.loaded:
            if groups:
                self._tracer.load()
            self._tracer.set_provisional(provisional)
        self._tracer.set_groups(groups)

    def _find_container(self, target: str) -> ContainerMetadata | None:
        return self._inspect(target)

    def _require_container(self, target: str) -> ContainerMetadata:
        found = self._inspect(target)
        if found is None:
            raise SeccompTargetError(target, "no such container")
        return found

    def _inspect(self, target: str) -> ContainerMetadata | None:
        return self._runtime.inspect(target)

    def _image_id(self, ref: str) -> str:
        found = self._runtime.image_id(ref)
        if found is None:
            raise SeccompTargetError(ref, "no such container or image")
        return found

    def _abs(self, path: str) -> str:
        return self._root.rstrip("/") + "/" + path.strip("/")


def _numbers(names: Iterable[str]) -> frozenset[int]:
    return frozenset(n for n in (number_of(x) for x in names) if n is not None)


def _procs(cgroup_dir: str) -> list[int]:
    try:
        with open(os.path.join(cgroup_dir, "cgroup.procs")) as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def _modes(flags: int) -> list[str]:
    names = ((CG_PROVISIONAL, "provisional"), (CG_LEARN, "learn"), (CG_ENFORCE, "enforce"),
             (CG_WATCH, "watch"))
    return [n for bit, n in names if flags & bit]
