"""A worker thread for calls that must not run on roxd's event loop (container engine calls).

`DaemonWorker` runs submitted calls one at a time, in order, each with a
`concurrent.futures.Future` the caller may wait on with a timeout, or cancel while it is still
queued. Unlike ThreadPoolExecutor's workers, its thread is a daemon thread: Python joins
executor threads at exit, so a call blocked on a hung dockerd would hold roxd's stop for the
engine's whole timeout. Here `shutdown()` cancels what is queued and leaves the running call
behind.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")


class DaemonWorker:
    def __init__(self, name: str) -> None:
        self._queue: queue.SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]]
                                       | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Queue fn(*args); RuntimeError once shut down."""
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the worker is shut down")
            self._queue.put((future, fn, args))
        return future

    def shutdown(self) -> None:
        """Cancel what is queued; the call running now (if any) finishes on its own."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                break
            future, fn, args = item
            if self._closed:  # shut down: what is still queued never runs
                future.cancel()
                continue
            if not future.set_running_or_notify_cancel():
                continue  # cancelled by its caller while queued
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # handed to the caller through the future
                future.set_exception(exc)
