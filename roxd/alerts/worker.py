"""A sink's own thread behind a bounded queue, so emit() never waits on I/O.

emit() only appends to a bounded in-memory queue; a full queue drops the alert and counts it.
The thread hands each alert to `deliver()`; close() lets it drain for up to a timeout.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Iterable

from roxd.model import Alert

log = logging.getLogger("roxd.alerts")


class SinkCounters:
    """sent / failed / queued / dropped (+ extra names), safe to bump from any thread."""

    def __init__(self, *extra: str) -> None:
        self._lock = threading.Lock()
        self._values = dict.fromkeys(("sent", "failed", "queued", "dropped", *extra), 0)

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._values[name] += n

    def set(self, name: str, value: int) -> None:
        with self._lock:
            self._values[name] = value

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._values)


def sink_problems(sinks: Iterable[tuple[str, object]]) -> list[str]:
    """"<name>: <problem>" for every sink that reports a problem of its own (`problems()`: a
    failing queue or store file, a stopped thread), for /v1/health. A report that fails is
    itself a problem: it never fails health."""
    out: list[str] = []
    for name, sink in sinks:
        report = getattr(sink, "problems", None)
        if report is None:
            continue
        try:
            out.extend(f"{name}: {p}" for p in report())
        except Exception as exc:
            out.append(f"{name}: cannot report its state: {exc}")
    return out


class QueueWorker:
    """One daemon thread that calls `deliver(alert)` for each queued alert, in order."""

    def __init__(self, name: str, deliver: Callable[[Alert], bool], queue_max: int,
                 counters: SinkCounters) -> None:
        self._deliver = deliver
        self._queue_max = max(1, queue_max)
        self._counters = counters
        self._items: collections.deque[Alert] = collections.deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._busy = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, alert: Alert) -> None:
        with self._cond:
            if self._stopping:
                self._counters.add("dropped")
                return
            if len(self._items) >= self._queue_max:
                self._counters.add("dropped")
                return
            self._items.append(alert)
            self._counters.set("queued", len(self._items))
            self._cond.notify()

    def stopping(self) -> bool:
        return self._stopping

    def wait_idle(self, timeout: float) -> bool:
        """True once every queued alert has been handled (delivered or failed)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._items or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout: float) -> None:
        self.wait_idle(timeout)
        with self._cond:
            self._stopping = True
            left = len(self._items)
            self._items.clear()
            self._counters.set("queued", 0)
            self._cond.notify_all()
        if left:
            self._counters.add("dropped", left)
            log.warning("%s: %d alerts still queued at shutdown were dropped",
                        self._thread.name, left)
        self._thread.join(max(0.1, timeout))

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._items and not self._stopping:
                    self._cond.wait()
                if self._stopping and not self._items:
                    return
                alert = self._items.popleft()
                self._busy = True
                self._counters.set("queued", len(self._items))
            try:
                ok = self._deliver(alert)
            except Exception:  # a sink bug must not kill its thread
                log.exception("%s: delivery failed", self._thread.name)
                ok = False
            self._counters.add("sent" if ok else "failed")
            with self._cond:
                self._busy = False
                self._cond.notify_all()
