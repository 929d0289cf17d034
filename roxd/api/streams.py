"""Live streams of events and alerts: chunked JSON lines (default) or server-sent events.

Each stream is a bounded subscription to a daemon topic; the topic's filter runs on the
publisher's thread, so filters stay cheap dictionary lookups. A reader too slow for its queue
misses items and is told how many with a `{"type":"dropped","count":N}` item.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from roxd.api.http import Request, StreamResponse
from roxd.text import json_dumps

HEARTBEAT_S = 5.0
NDJSON = "application/x-ndjson"
SSE = "text/event-stream"


def wants_sse(req: Request, params: dict[str, Any]) -> bool:
    if "format" in params:
        return bool(params["format"] == "sse")
    return SSE in (req.headers.get("Accept") or "")


def stream(topic: Any, accept: Callable[[dict[str, Any]], bool], params: dict[str, Any],
           sse: bool, closing: threading.Event, maxsize: int, kind: str) -> StreamResponse:
    sub = topic.subscribe(accept, maxsize)
    max_items = params.get("max_items")
    deadline = (time.monotonic() + params["max_seconds"]) if "max_seconds" in params else None

    def encode(item: dict[str, Any]) -> bytes:
        data = json_dumps(item, separators=(",", ":"))
        if sse:
            return f"event: {item.get('type', kind)}\ndata: {data}\n\n".encode()
        return data.encode() + b"\n"

    def chunks() -> Iterator[bytes | None]:
        sent = 0
        told_dropped = 0
        last = time.monotonic()
        try:
            while not closing.is_set():
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    return
                wait = 1.0 if deadline is None else max(0.0, min(1.0, deadline - now))
                item = sub.get(wait)
                if sub.dropped > told_dropped:
                    yield encode({"type": "dropped", "count": sub.dropped - told_dropped})
                    told_dropped = sub.dropped
                if item is None:
                    if time.monotonic() - last >= HEARTBEAT_S:
                        last = time.monotonic()
                        yield None
                    continue
                if kind == "alert" and "type" not in item:
                    item = {"type": "alert", **item}
                yield encode(item)
                last = time.monotonic()
                sent += 1
                if max_items is not None and sent >= max_items:
                    return
        finally:
            topic.unsubscribe(sub)

    return StreamResponse(SSE if sse else NDJSON, chunks(),
                          heartbeat=b": keepalive\n\n" if sse else b"\n")


def event_filter(params: dict[str, Any]) -> Callable[[dict[str, Any]], bool]:
    from roxd.api.alerts import container_matches

    types = set(params["type"].split(",")) if "type" in params else None
    container = params.get("container")
    pid = params.get("pid")

    def accept(record: dict[str, Any]) -> bool:
        if types is not None and record.get("type") not in types:
            return False
        if pid is not None and record.get("process", {}).get("pid") != pid:
            return False
        return container is None or container_matches(record.get("container"), container)

    return accept
