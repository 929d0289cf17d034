"""Fan-out of events and alerts to live subscribers (API streams), never blocking the loop.

Each subscriber has a bounded queue; when a slow reader lets it fill, further items are
dropped for that subscriber and counted, and the reader is told how many it missed.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Filter = Callable[[dict[str, Any]], bool]


@dataclass
class Subscription:
    queue: queue.Queue[dict[str, Any]]
    accept: Filter
    dropped: int = 0
    closed: bool = False

    def get(self, timeout: float) -> dict[str, Any] | None:
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            return None


@dataclass
class Topic:
    name: str
    _subs: list[Subscription] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    published: int = 0

    def subscribe(self, accept: Filter | None = None, maxsize: int = 10_000) -> Subscription:
        sub = Subscription(queue.Queue(maxsize), accept or (lambda _item: True))
        with self._lock:
            self._subs.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        sub.closed = True
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)

    @property
    def active(self) -> bool:
        return bool(self._subs)

    @property
    def subscribers(self) -> int:
        with self._lock:
            return len(self._subs)

    def publish(self, item: dict[str, Any]) -> None:
        self.published += 1
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            try:
                if not sub.accept(item):
                    continue
            except Exception:  # a broken filter only hurts its own subscriber
                continue
            try:
                sub.queue.put_nowait(item)
            except queue.Full:
                sub.dropped += 1
