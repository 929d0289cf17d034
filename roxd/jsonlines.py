"""JSON lines on one stream, shared by threads: events (the loop), alerts (the loop, or noise
control's timer thread for fold summaries) and stats write whole lines under one lock, so
two records never interleave on `roxd --print-events --print-alerts` output."""

from __future__ import annotations

import threading
from typing import IO, Any

from roxd.text import json_dumps


class JsonLines:
    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self.broken = False  # the reader went away (EPIPE): the daemon stops

    def write(self, record: dict[str, Any]) -> None:
        line = json_dumps(record, separators=(",", ":")) + "\n"
        with self._lock:
            try:
                self._stream.write(line)
            except BrokenPipeError:
                self.broken = True

    def flush(self) -> None:
        with self._lock:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self.broken = True
