"""cgroup id -> Container: the cgroup index, the path parser and runtime metadata, combined.

Answers are cached per cgroup id. Running containers' cgroups are pinned: cgroup churn (short
lived host cgroups, containers that come and go) never pushes a running container out of
`containers()`, which `roxctl containers`, isolation and the kernel's container set are built
from. Everything else (host cgroups, removed containers kept for late events) is bounded,
least recently used out first; pinned entries leave when the runtime says the container is
gone, or when a sweep finds their cgroup directory removed. Metadata that arrives after an
answer was cached (the container's first events raced its start event) replaces the cached
Container, so later events carry the name, image and labels. Thread-safe: the runtime's event
thread writes, the event loop reads.

Cgroup paths that name no runtime ("/default/web", the path `ctr run` gives a container of
containerd's `default` namespace) are offered to the metadata sources, which claim the ones
their runtime reported. Events from cgroups that look like containers but could not be
attributed (no runtime knows them) are counted: `unattributed`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from roxd.containers.cgroups import CgroupIndex
from roxd.containers.metadata import ContainerMetadata, MetadataSource
from roxd.containers.paths import ContainerRef, looks_like_container, parse_cgroup_path
from roxd.model import Container

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Entry:
    path: str
    ref: ContainerRef | None
    container: Container | None
    gone_at: float | None = None  # when the runtime said the container was removed
    unresolved: bool = False  # looks like a container, but no runtime could attribute it

    @property
    def live(self) -> bool:
        """A container not known to be gone: pinned, never evicted by churn."""
        return self.container is not None and self.gone_at is None


def build_container(
    ref: ContainerRef, path: str, meta: ContainerMetadata | None
) -> Container:
    if meta is None:
        return Container(id=ref.container_id, runtime=ref.runtime, cgroup_path=path,
                         pod_uid=ref.pod_uid)
    return Container(
        id=ref.container_id,
        runtime=ref.runtime,
        name=meta.name,
        image=meta.image,
        image_id=meta.image_id,
        labels=dict(meta.labels),
        cgroup_path=path,
        pod=meta.pod,
        pod_uid=meta.pod_uid or ref.pod_uid,
        namespace=meta.namespace,
        pod_labels=dict(meta.pod_labels),
        annotations=dict(meta.annotations),
        runtime_namespace=meta.runtime_namespace,
        healthcheck=tuple(meta.healthcheck),
        build_step=meta.build_step,
    )


def _claim(sources: Iterable[MetadataSource], path: str) -> ContainerRef | None:
    """The container a source says owns this cgroup path (one that names no runtime)."""
    for source in sources:
        claim = getattr(source, "claim", None)
        if claim is None:
            continue
        try:
            container_id = claim(path)
        except Exception as exc:  # a source must never break attribution
            log.debug("%s claim of %s failed: %s", source.runtime, path, exc)
            continue
        if container_id:
            return ContainerRef(source.runtime, container_id)
    return None


class ContainerResolver:
    def __init__(
        self,
        index: CgroupIndex,
        sources: Iterable[MetadataSource] = (),
        *,
        capacity: int = 8192,
        gone_grace: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.index = index
        self._sources = {s.runtime: s for s in sources}
        self.capacity = capacity
        self.gone_grace = gone_grace
        self._clock = clock
        self._lock = threading.Lock()
        # host cgroups and removed containers: bounded by `capacity`, LRU out first
        self._cache: OrderedDict[int, _Entry] = OrderedDict()
        # running containers' cgroups: never evicted by churn (issue 23 item 11)
        self._pinned: dict[int, _Entry] = {}
        self._sweep_at = 64  # sweep pinned cgroups whose directory vanished past this many
        self.unattributed = 0  # events of container-looking cgroups no runtime attributed
        self._by_container: dict[str, set[int]] = {}
        self._updates = 0  # counts metadata_changed calls, to catch one racing a resolve
        self._version = 0  # bumped whenever containers() would answer differently
        self._change_listeners: list[Callable[[], None]] = []
        for source in self._sources.values():
            source.add_listener(self._listener_for(source))

    # ------------------------------------------------------------------ public

    def resolve(self, cgroup_id: int, pid: int | None = None,
                ppid: int | None = None) -> Container | None:
        """The container of a cgroup id, or None for the host (or an id not found).

        `pid`, when given, is a process seen in that cgroup: its /proc/<pid>/cgroup finds a new
        cgroup by one stat instead of a walk of the whole hierarchy. `ppid`, its parent, is
        tried the same way when the process itself is already gone: a short-lived child (a
        container's `sh -c` that exits at once) read late, while the walk is rate-limited,
        would otherwise be answered "host" although its parent still runs in that cgroup.
        Either answer counts only when the process is still in the event's cgroup.
        """
        # the usual answer, a running container's cgroup (pinned entries are live and never
        # evicted), read without the lock: a dict read is atomic and entries are immutable,
        # so this is the answer the locked path gives just before or after a concurrent
        # change (issue 22: two per exec)
        entry = self._pinned.get(cgroup_id)
        if entry is not None and not entry.unresolved:
            return entry.container
        with self._lock:
            entry = self._get(cgroup_id)
            if entry is not None:
                if entry.gone_at is not None and self._clock() - entry.gone_at > self.gone_grace:
                    self._cache.pop(cgroup_id, None)
                    self._unlink(cgroup_id, entry)
                else:
                    if cgroup_id in self._cache:
                        self._cache.move_to_end(cgroup_id)
                    if entry.unresolved:
                        self.unattributed += 1
                    return entry.container
        path = self.index.known_path_of(cgroup_id)
        for hint in (pid, ppid):
            if (
                path is None
                and hint
                and self.index.lookup_pid(hint, expected_id=cgroup_id) is not None
            ):
                path = self.index.known_path_of(cgroup_id)
        if path is None:
            path = self.index.path_of(cgroup_id)  # a walk, rate-limited
        if path is None:
            # Not (yet) in the hierarchy: answer "host" without caching it, so the next event
            # of this cgroup gets another chance once the index knows the id.
            return None
        ref = parse_cgroup_path(path) or _claim(self._sources.values(), path)
        with self._lock:
            updates_before = self._updates
        meta = self._metadata(ref) if ref is not None else None
        container = build_container(ref, path, meta) if ref is not None else None
        # a container whose runtime did not name it, or a path shaped like one nobody claims
        unresolved = (meta is None and ref is not None) or (ref is None
                                                            and looks_like_container(path))
        # A late event of a cgroup already removed (the index learns of removals only at its
        # next walk): answer it, but as gone, so containers() does not list a dead cgroup.
        alive = ref is None or self.index.lookup_path(path) == cgroup_id
        with self._lock:
            if unresolved:
                self.unattributed += 1
            current = self._get(cgroup_id)
            if current is not None:  # another thread got there first; keep its answer
                return current.container
            gone_at = None if alive else self._clock()
            self._store(cgroup_id, _Entry(path, ref, container, gone_at, unresolved))
            raced = self._updates != updates_before
            sweep = len(self._pinned) > self._sweep_at
        if sweep:
            self.sweep()
        if raced and ref is not None:
            # Metadata changed while we looked it up: apply the newest to what we just stored.
            self.metadata_changed(ref.runtime, ref.container_id)
            with self._lock:
                entry = self._get(cgroup_id)
                return entry.container if entry is not None else container
        return container

    def containers(self) -> list[tuple[int, Container]]:
        """(cgroup id, Container) for every container cgroup known now: a container's own
        cgroup and any of its sub-cgroups seen, from events, from the runtime's scan and event
        stream, and from `prime()`. Removed containers are left out."""
        with self._lock:
            return [
                (cgroup_id, entry.container)
                for cgroup_id, entry in self._pinned.items()
                if entry.container is not None
            ]

    def sweep(self) -> int:
        """Mark gone the pinned cgroups whose directory no longer exists (a container removed
        without its runtime saying so: no metadata source for it, or an event lost). One stat
        each, outside the lock. Returns how many were marked. Runs by itself whenever the
        pinned set doubled since the last sweep; and from the daemon's housekeeping."""
        with self._lock:
            pinned = [(cid, e.path) for cid, e in self._pinned.items()]
        vanished = [cid for cid, path in pinned if self.index.lookup_path(path) != cid]
        now = self._clock()
        with self._lock:
            marked = 0
            for cgroup_id in vanished:
                entry = self._pinned.get(cgroup_id)
                if entry is None:
                    continue
                self._put(cgroup_id, _Entry(entry.path, entry.ref, entry.container, now,
                                            entry.unresolved))
                self._changed()
                marked += 1
            self._sweep_at = max(64, 2 * len(self._pinned))
        return marked

    def add_change_listener(self, listener: Callable[[], None]) -> None:
        """Call `listener()` whenever `containers()` would answer differently. It runs on the
        thread that made the change (the event loop or the runtime's event thread), under the
        resolver's lock: it must only take note (set a flag), never call back in here."""
        self._change_listeners.append(listener)

    @property
    def version(self) -> int:
        """Changes whenever `containers()` would answer differently (a cheap "anything new?")."""
        with self._lock:
            return self._version

    def prime(self) -> int:
        """Resolve every container cgroup in the index now (at start: containers that were
        already running, of every runtime). Returns how many container cgroups were found."""
        found = 0
        for cgroup_id, path in self.index.snapshot():
            if parse_cgroup_path(path) is not None and self.resolve(cgroup_id) is not None:
                found += 1
        return found

    def sweep_vanished(self) -> None:
        """`sweep()` as a periodic job (nothing to return)."""
        self.sweep()

    def stats(self) -> dict[str, int]:
        """For status and metrics: pinned (running) cgroups, cached others, unattributed."""
        with self._lock:
            return {"running_cgroups": len(self._pinned), "cached_cgroups": len(self._cache),
                    "unattributed": self.unattributed}

    def cgroup_ids_of(self, container_id: str) -> set[int]:
        """The cgroup ids cached for a container (its own, and any sub-cgroups seen)."""
        with self._lock:
            return set(self._by_container.get(container_id, ()))

    def __len__(self) -> int:
        with self._lock:
            return len(self._cache) + len(self._pinned)

    # ------------------------------------------------------------------ metadata updates

    def metadata_changed(self, runtime: str, container_id: str) -> None:
        """Rebuild the cached Containers of one container from its runtime's current metadata."""
        source = self._sources.get(runtime)
        meta = source.get(container_id) if source is not None else None
        new_cgroup = None
        if meta is not None and meta.pid:
            # Learn the container's cgroup now, by one stat: its first events need no walk, and
            # containers() lists it before it produced any event.
            new_cgroup = self.index.lookup_pid(meta.pid)
        new_path = self.index.known_path_of(new_cgroup) if new_cgroup is not None else None
        with self._lock:
            self._updates += 1
            ids = list(self._by_container.get(container_id, ()))
            now = self._clock()
            for cgroup_id in ids:
                entry = self._get(cgroup_id)
                if entry is None or entry.ref is None or entry.ref.runtime != runtime:
                    continue
                stale = new_path is not None and entry.path == new_path and cgroup_id != new_cgroup
                if meta is None or stale:
                    # A restarted container gets a new directory (a new id) at the same path:
                    # the old one is as gone as a removed container's.
                    if entry.gone_at is not None:
                        continue
                    # Removed: keep the last known answer for late events, for a grace period.
                    self._put(cgroup_id, _Entry(entry.path, entry.ref, entry.container, now,
                                                entry.unresolved))
                else:
                    container = build_container(entry.ref, entry.path, meta)
                    if container == entry.container and entry.gone_at is None:
                        continue
                    self._put(cgroup_id, _Entry(entry.path, entry.ref, container))
                self._changed()
            if new_cgroup is not None:
                known = self._get(new_cgroup)
                if known is not None and known.ref is None:
                    # answered "host" before its runtime reported it (a path that names no
                    # runtime, claimed only now): forget that answer and resolve again
                    self._cache.pop(new_cgroup, None)
                elif known is not None:
                    new_cgroup = None
        if new_cgroup is not None:
            self.resolve(new_cgroup)
        if ids:
            log.debug("container %s: metadata updated for %d cgroups", container_id[:12], len(ids))

    def _listener_for(self, source: MetadataSource) -> Callable[[str], None]:
        runtime = source.runtime

        def listener(container_id: str) -> None:
            self.metadata_changed(runtime, container_id)

        return listener

    def _metadata(self, ref: ContainerRef) -> ContainerMetadata | None:
        source = self._sources.get(ref.runtime)
        if source is None:
            return None
        try:
            return source.get(ref.container_id)
        except Exception as exc:  # a source must never break attribution
            log.debug("metadata lookup for %s failed: %s", ref.container_id[:12], exc)
            return None

    # ------------------------------------------------------------------ cache (lock held)

    def _get(self, cgroup_id: int) -> _Entry | None:
        entry = self._pinned.get(cgroup_id)
        return entry if entry is not None else self._cache.get(cgroup_id)

    def _put(self, cgroup_id: int, entry: _Entry) -> None:
        """Place an entry where it belongs: pinned while live, else in the bounded LRU."""
        if entry.live:
            self._cache.pop(cgroup_id, None)
            self._pinned[cgroup_id] = entry
        else:
            self._pinned.pop(cgroup_id, None)
            self._cache[cgroup_id] = entry
            self._cache.move_to_end(cgroup_id)
            self._evict()

    def _store(self, cgroup_id: int, entry: _Entry) -> None:
        self._put(cgroup_id, entry)
        if entry.ref is not None:
            self._by_container.setdefault(entry.ref.container_id, set()).add(cgroup_id)
        if entry.live:
            self._changed()

    def _evict(self) -> None:
        while len(self._cache) > self.capacity:
            old_id, old = self._cache.popitem(last=False)
            self._unlink(old_id, old)

    def _changed(self) -> None:
        self._version += 1
        for listener in self._change_listeners:
            try:
                listener()
            except Exception:  # a listener only takes note; never let it break attribution
                log.exception("container change listener failed")

    def _unlink(self, cgroup_id: int, entry: _Entry) -> None:
        if entry.live:
            self._changed()
        if entry.ref is None:
            return
        ids = self._by_container.get(entry.ref.container_id)
        if ids is not None:
            ids.discard(cgroup_id)
            if not ids:
                del self._by_container[entry.ref.container_id]
