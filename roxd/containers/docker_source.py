"""Container names, images and labels from a container runtime, kept current.

A background thread scans the running containers, then follows the runtime's event stream
(start, die, destroy, rename); when the runtime goes away (dockerd restarted, socket missing)
it logs one warning, keeps attribution working from cgroup paths alone, and reconnects with
exponential backoff. It talks to the runtime only through `roxd.runtime.ContainerRuntime`
(one client, shared with enforcement and seccomp); the Docker SDK lives in
roxd/runtime/docker_engine.py.

Images are never pulled: this module only reads (ping, list, inspect, events).

The inspect of a container never seen before (a resolver cache miss: the first event of a new
container can precede the engine's start event) is asked from the event loop's `get()`, but
runs on a worker thread of this source (one at a time, at most `max_pending` queued): the
caller waits at most `miss_wait` for it, and not at all while the engine is known to be slow
(the last inspect outlived `miss_wait`). An answer that comes after the caller gave up is kept
and announced to the listeners like a runtime event, so the resolver attributes the
container's later events with name, image and labels ("attributed later"; issue 23 item 12).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import Future

from roxd.containers.metadata import ContainerMetadata, MetadataListener
from roxd.offloop import DaemonWorker
from roxd.runtime import (
    DEFAULT_DOCKER_URL,
    ContainerRuntime,
    DockerRuntime,
    EventStream,
    RuntimeControlError,
    RuntimeEvent,
)
from roxd.runtime.docker_engine import error_reason as _reason
from roxd.runtime.docker_engine import metadata_from_inspect

__all__ = ["DEFAULT_DOCKER_URL", "DockerMetadataSource", "RuntimeMetadataSource",
           "metadata_from_inspect"]

log = logging.getLogger(__name__)

_EVENTS = ("start", "die", "destroy", "rename")


def _under(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


class DockerMetadataSource:
    """Metadata of a runtime's containers, kept current from its event stream. Any
    ContainerRuntime (Docker, podman's compatible service, containerd), despite the name.

    `runtime` is the shared ContainerRuntime (the source never closes it); the old form
    `DockerMetadataSource(base_url=...)` builds a DockerRuntime of its own, closed by `stop()`.
    `start()` launches the background thread and returns at once; `stop()` ends it.
    `get()` answers from memory, and asks the engine (once per `miss_ttl`) for an id it has
    never seen while the engine is reachable: the first exec in a new container happens before
    dockerd even reports the start. That inspect runs on the source's own worker thread; `get()`
    waits for it at most `miss_wait` seconds (0 while the engine is slow), so a hung engine
    never holds the caller (the event loop) for the engine's `timeout`.
    """

    runtime = "docker"  # MetadataSource: which runtime's ids (set from the runtime's name)

    def __init__(
        self,
        runtime: ContainerRuntime | str | None = None,
        *,
        base_url: str | None = None,
        timeout: float = 5.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        inspect_on_miss: bool = True,
        miss_ttl: float = 30.0,
        miss_wait: float = 1.0,
        max_pending: int = 64,
        owns_runtime: bool = False,
    ) -> None:
        if isinstance(runtime, str):  # the old positional base_url
            runtime, base_url = None, runtime
        self._owns_runtime = runtime is None or owns_runtime
        self._runtime: ContainerRuntime = (
            runtime if runtime is not None
            else DockerRuntime(base_url or DEFAULT_DOCKER_URL, timeout=timeout))
        self.runtime = self._runtime.name
        self.base_url = self._runtime.url
        self.timeout = timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.inspect_on_miss = inspect_on_miss
        self.miss_ttl = miss_ttl
        self.miss_wait = miss_wait  # the longest a get() waits for an inspect on a miss
        self.max_pending = max_pending  # inspects queued for the worker, at most
        self._lock = threading.Lock()
        self._inspect_lock = threading.Lock()
        self._meta: dict[str, ContainerMetadata] = {}
        self._misses: dict[str, float] = {}  # id -> monotonic time the engine didn't know it
        # inspects on a miss, queued or running on the worker (one at a time: the engine's
        # client is shared with the event thread, whose inspects take `_inspect_lock` too)
        self._pending: dict[str, Future[ContainerMetadata | None]] = {}
        self._given_up: set[str] = set()  # ids whose get() stopped waiting: announce later
        self._worker: DaemonWorker | None = None
        self._engine_slow = False  # the last miss inspect took longer than miss_wait
        self.miss_stats = {"inspects": 0, "gave_up": 0, "not_waited": 0, "skipped": 0}
        self._listeners: list[MetadataListener] = []
        self._client: ContainerRuntime | None = None  # set while connected
        self._stream: EventStream | None = None
        self._connected = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned = False

    # ------------------------------------------------------------------ public

    def add_listener(self, listener: MetadataListener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._run, name=f"roxd-{self.runtime}-events", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        with self._lock:
            stream = self._stream
        if stream is not None:
            try:
                stream.close()  # unblocks the thread's read of the event stream
            except Exception as exc:
                log.debug("closing the docker event stream: %s", exc)
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("docker event thread did not stop within %.1f s", timeout)
            self._thread = None
        with self._lock:
            worker, self._worker = self._worker, None
        if worker is not None:
            worker.shutdown()  # a hung inspect ends by the engine's timeout, unwaited
        if self._owns_runtime:
            self._runtime.close()

    @property
    def client_runtime(self) -> ContainerRuntime:
        """The runtime this source reads (shared; never closed by the source unless it
        built it)."""
        return self._runtime

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        """True once the engine answered and the running containers were scanned."""
        return self._connected.wait(timeout)

    def get(self, container_id: str) -> ContainerMetadata | None:
        with self._lock:
            meta = self._meta.get(container_id)
            if meta is not None or not self.inspect_on_miss or not self._connected.is_set():
                return meta
            missed = self._misses.get(container_id)
            if missed is not None and time.monotonic() - missed < self.miss_ttl:
                return None
            client = self._client
            if client is None or self._stopping.is_set():
                return None
            future = self._pending.get(container_id)
            if future is None:
                if len(self._pending) >= self.max_pending:
                    # the engine is far behind: attribute by cgroup only (the resolver keeps
                    # that answer; the engine's own event for the container, or the rescan
                    # after its stream reconnects, brings the name, image and labels)
                    self.miss_stats["skipped"] += 1
                    return None
                if self._worker is None:
                    self._worker = DaemonWorker(f"roxd-{self.runtime}-inspect")
                future = self._worker.submit(self._inspect_miss, client, container_id)
                self._pending[container_id] = future
            wait = 0.0 if self._engine_slow else self.miss_wait
        if wait > 0:
            try:
                return future.result(timeout=wait)
            except TimeoutError:
                pass
        with self._lock:
            if container_id in self._pending:
                self._given_up.add(container_id)  # the worker announces the answer
                # the engine is slow (or hung): the next misses do not wait at all, until an
                # inspect answers within miss_wait again
                self._engine_slow = True
                self.miss_stats["not_waited" if wait == 0 else "gave_up"] += 1
                return None
            return self._meta.get(container_id)  # answered just now

    def _inspect_miss(self, client: ContainerRuntime,
                      container_id: str) -> ContainerMetadata | None:
        """On the worker: one inspect, its answer kept; listeners told when get() gave up."""
        started = time.monotonic()
        answered = False
        try:
            with self._inspect_lock:
                meta = client.inspect(container_id)
            answered = True  # the engine answered (None: it does not know the id)
        except Exception as exc:  # any runtime's surprise: a miss, never a stuck pending id
            log.debug("%s inspect %s failed: %s", self.runtime, container_id[:12], _reason(exc))
            meta = None
        took = time.monotonic() - started
        with self._lock:
            self.miss_stats["inspects"] += 1
            if answered:
                self._engine_slow = took > self.miss_wait
            elif took > self.miss_wait:
                self._engine_slow = True
            # else: a quick failure (connection refused: a hung engine's full accept queue,
            # a socket gone) says nothing about how fast the engine answers: it never
            # clears "known slow", or the next miss would wait again behind a hung inspect
            self._pending.pop(container_id, None)
            announce = container_id in self._given_up
            self._given_up.discard(container_id)
            if meta is None:
                self._misses[container_id] = time.monotonic()
                if len(self._misses) > 4096:
                    self._misses.clear()
            else:
                self._meta.setdefault(container_id, meta)
        if announce and meta is not None:
            self._notify(container_id)  # the resolver rebuilds what it cached meanwhile
        return meta

    def containers(self) -> list[ContainerMetadata]:
        with self._lock:
            return list(self._meta.values())

    def claim(self, path: str) -> str | None:
        """The id of the container whose cgroup (as its runtime reported it) is `path` or an
        ancestor of it: cgroup paths that name no runtime ("/default/web" from `ctr run`).
        A path the runtime may know but has not reported yet (the container's first exec
        raced its start event) is asked once, when the runtime can guess an id from it."""
        path = "/" + path.strip("/")
        with self._lock:
            for meta in self._meta.values():
                if meta.cgroup_path and _under(path, meta.cgroup_path):
                    return meta.id
        guess = getattr(self._runtime, "id_for_cgroup", None)
        candidate = guess(path) if guess is not None else None
        if not candidate:
            return None
        meta = self.get(candidate)
        if meta is not None and meta.cgroup_path and _under(path, meta.cgroup_path):
            return meta.id
        return None

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        backoff = self.backoff_initial
        while not self._stopping.is_set():
            client = None
            try:
                client = self._connect()
                since = int(time.time()) - 1  # replay what happens while we scan
                self._scan(client)
                with self._lock:
                    self._client = client
                self._set_connected()
                backoff = self.backoff_initial
                stream = client.events(since=since, actions=_EVENTS)
                with self._lock:
                    self._stream = stream
                if self._stopping.is_set():
                    break
                for event in stream:
                    if self._stopping.is_set():
                        break
                    self._handle(client, event)
                if not self._stopping.is_set():
                    log.info(
                        "docker event stream at %s ended; reconnecting", self.base_url,
                        extra={"docker_url": self.base_url},
                    )
            except Exception as exc:  # the engine may fail in any way; never crash the daemon
                if not self._stopping.is_set():
                    self._set_unreachable(exc)
            finally:
                self._connected.clear()
                with self._lock:
                    stream, self._stream = self._stream, None
                    if self._client is client:
                        self._client = None
                if stream is not None:  # the runtime (and its client) stays: it is shared
                    try:
                        stream.close()
                    except Exception as exc:
                        log.debug("closing the docker event stream: %s", exc)
            self._stopping.wait(backoff)
            backoff = min(backoff * 2, self.backoff_max)

    def _connect(self) -> ContainerRuntime:
        self._runtime.ping()  # the reachability check; RuntimeUnavailableError when down
        return self._runtime

    def _scan(self, client: ContainerRuntime) -> None:
        found: dict[str, ContainerMetadata] = {}
        for cid in client.running_ids():
            meta = self._inspect(client, cid)
            if meta is not None:
                found[meta.id] = meta
        with self._lock:
            gone = set(self._meta) - set(found)
            changed = [cid for cid, m in found.items() if self._meta.get(cid) != m]
            self._meta = found
            self._misses.clear()
        log.info(
            "%s: %d running containers at %s", self.runtime, len(found), self.base_url,
            extra={"docker_url": self.base_url, "containers": len(found)},
        )
        for cid in [*changed, *gone]:
            self._notify(cid)

    def _handle(self, client: ContainerRuntime, event: RuntimeEvent) -> None:
        action, cid = event.action, event.container_id
        if not cid or action not in _EVENTS:
            return
        log.debug("docker event %s %s", action, cid[:12])
        if action == "destroy":
            with self._lock:
                removed = self._meta.pop(cid, None)
                self._misses[cid] = time.monotonic()  # listeners' get() need not ask again
            if removed is not None:
                self._notify(cid)
            return
        meta = self._inspect(client, cid)
        if meta is None:
            return
        with self._lock:
            old = self._meta.get(cid)
            self._meta[cid] = meta
            self._misses.pop(cid, None)
        if old != meta:
            self._notify(cid)

    def _inspect(self, client: ContainerRuntime, container_id: str) -> ContainerMetadata | None:
        try:
            with self._inspect_lock:
                return client.inspect(container_id)
        except RuntimeControlError as exc:
            log.debug("docker inspect %s failed: %s", container_id[:12], _reason(exc))
            return None

    def _notify(self, container_id: str) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(container_id)
            except Exception:
                log.exception("container metadata listener failed for %s", container_id[:12])

    def _set_connected(self) -> None:
        if self._warned:
            log.info(
                "%s reachable again at %s: container names, images and labels are back",
                self._runtime.label, self.base_url, extra={"docker_url": self.base_url},
            )
        self._warned = False
        self._connected.set()

    def _set_unreachable(self, exc: BaseException) -> None:
        self._connected.clear()
        reason = _reason(exc)
        if not self._warned:
            self._warned = True
            # a runtime that is simply not installed here (no socket) is not worth a warning
            absent = self.base_url.startswith("unix://") and not os.path.exists(
                self.base_url.removeprefix("unix://"))
            log.log(
                logging.INFO if absent and self.runtime != "docker" else logging.WARNING,
                "%s not reachable at %s (%s): container attribution falls back to the cgroup "
                "path only (runtime and id; no name, image or labels); retrying in the "
                "background",
                self._runtime.label, self.base_url, reason,
                extra={"runtime": self.runtime, "docker_url": self.base_url, "reason": reason},
            )
        else:
            log.debug("%s still not reachable at %s: %s", self.runtime, self.base_url, reason)


# The name says what it is: a metadata source for any ContainerRuntime.
RuntimeMetadataSource = DockerMetadataSource
