"""cgroup id -> Container: the cgroup index, the path parser and runtime metadata, combined.

Answers are cached per cgroup id (bounded, least recently used out first). Metadata that
arrives after an answer was cached (the container's first events raced its start event) replaces
the cached Container, so later events carry the name, image and labels. Thread-safe: the
runtime's event thread writes, the event loop reads.
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
from roxd.containers.paths import ContainerRef, parse_cgroup_path
from roxd.model import Container

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Entry:
    path: str
    ref: ContainerRef | None
    container: Container | None
    gone_at: float | None = None  # when the runtime said the container was removed


def build_container(
    ref: ContainerRef, path: str, meta: ContainerMetadata | None
) -> Container:
    if meta is None:
        return Container(id=ref.container_id, runtime=ref.runtime, cgroup_path=path,
                         pod=ref.pod_uid)
    return Container(
        id=ref.container_id,
        runtime=ref.runtime,
        name=meta.name,
        image=meta.image,
        image_id=meta.image_id,
        labels=dict(meta.labels),
        cgroup_path=path,
        pod=ref.pod_uid,
        healthcheck=tuple(meta.healthcheck),
        build_step=meta.build_step,
    )


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
        self._cache: OrderedDict[int, _Entry] = OrderedDict()
        self._by_container: dict[str, set[int]] = {}
        self._updates = 0  # counts metadata_changed calls, to catch one racing a resolve
        self._version = 0  # bumped whenever containers() would answer differently
        self._change_listeners: list[Callable[[], None]] = []
        for source in self._sources.values():
            source.add_listener(self._listener_for(source))

    # ------------------------------------------------------------------ public

    def resolve(self, cgroup_id: int, pid: int | None = None) -> Container | None:
        """The container of a cgroup id, or None for the host (or an id not found).

        `pid`, when given, is a process seen in that cgroup: its /proc/<pid>/cgroup finds a new
        cgroup by one stat instead of a walk of the whole hierarchy.
        """
        with self._lock:
            entry = self._cache.get(cgroup_id)
            if entry is not None:
                if entry.gone_at is not None and self._clock() - entry.gone_at > self.gone_grace:
                    self._cache.pop(cgroup_id, None)
                    self._unlink(cgroup_id, entry)
                else:
                    self._cache.move_to_end(cgroup_id)
                    return entry.container
        path = self.index.known_path_of(cgroup_id)
        if (
            path is None
            and pid
            and self.index.lookup_pid(pid, expected_id=cgroup_id) is not None
        ):
            path = self.index.known_path_of(cgroup_id)
        if path is None:
            path = self.index.path_of(cgroup_id)  # a walk, rate-limited
        if path is None:
            # Not (yet) in the hierarchy: answer "host" without caching it, so the next event
            # of this cgroup gets another chance once the index knows the id.
            return None
        ref = parse_cgroup_path(path)
        with self._lock:
            updates_before = self._updates
        meta = self._metadata(ref) if ref is not None else None
        container = build_container(ref, path, meta) if ref is not None else None
        # A late event of a cgroup already removed (the index learns of removals only at its
        # next walk): answer it, but as gone, so containers() does not list a dead cgroup.
        alive = ref is None or self.index.lookup_path(path) == cgroup_id
        with self._lock:
            current = self._cache.get(cgroup_id)
            if current is not None:  # another thread got there first; keep its answer
                return current.container
            gone_at = None if alive else self._clock()
            self._store(cgroup_id, _Entry(path, ref, container, gone_at))
            raced = self._updates != updates_before
        if raced and ref is not None:
            # Metadata changed while we looked it up: apply the newest to what we just stored.
            self.metadata_changed(ref.runtime, ref.container_id)
            with self._lock:
                entry = self._cache.get(cgroup_id)
                return entry.container if entry is not None else container
        return container

    def containers(self) -> list[tuple[int, Container]]:
        """(cgroup id, Container) for every container cgroup known now: a container's own
        cgroup and any of its sub-cgroups seen, from events, from the runtime's scan and event
        stream, and from `prime()`. Removed containers are left out."""
        with self._lock:
            return [
                (cgroup_id, entry.container)
                for cgroup_id, entry in self._cache.items()
                if entry.container is not None and entry.gone_at is None
            ]

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

    def cgroup_ids_of(self, container_id: str) -> set[int]:
        """The cgroup ids cached for a container (its own, and any sub-cgroups seen)."""
        with self._lock:
            return set(self._by_container.get(container_id, ()))

    def __len__(self) -> int:
        with self._lock:
            return len(self._cache)

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
                entry = self._cache.get(cgroup_id)
                if entry is None or entry.ref is None or entry.ref.runtime != runtime:
                    continue
                stale = new_path is not None and entry.path == new_path and cgroup_id != new_cgroup
                if meta is None or stale:
                    # A restarted container gets a new directory (a new id) at the same path:
                    # the old one is as gone as a removed container's.
                    if entry.gone_at is not None:
                        continue
                    # Removed: keep the last known answer for late events, for a grace period.
                    self._cache[cgroup_id] = _Entry(entry.path, entry.ref, entry.container, now)
                else:
                    container = build_container(entry.ref, entry.path, meta)
                    if container == entry.container and entry.gone_at is None:
                        continue
                    self._cache[cgroup_id] = _Entry(entry.path, entry.ref, container)
                self._changed()
            if new_cgroup is not None and new_cgroup in self._cache:
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

    def _store(self, cgroup_id: int, entry: _Entry) -> None:
        self._cache[cgroup_id] = entry
        if entry.ref is not None:
            self._by_container.setdefault(entry.ref.container_id, set()).add(cgroup_id)
        if entry.container is not None and entry.gone_at is None:
            self._changed()
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
        if entry.container is not None and entry.gone_at is None:
            self._changed()
        if entry.ref is None:
            return
        ids = self._by_container.get(entry.ref.container_id)
        if ids is not None:
            ids.discard(cgroup_id)
            if not ids:
                del self._by_container[entry.ref.container_id]
