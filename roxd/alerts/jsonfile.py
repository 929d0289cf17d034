"""JSON lines file: one alert per line, for Fluent Bit, Vector, Filebeat or Promtail to tail.

    sink = JsonFileSink(JsonFileSettings(path="/var/log/roxd/alerts.jsonl"), node)
    sink.emit(alert)        # appends to a bounded queue; the writer thread writes the line

Each line is `record.encode_record(export_record(alert, node))` plus "\\n", written with one
write() on a file opened O_APPEND (mode 0640), so a tailer never sees half a line from roxd.
Rotation by size: before a line would take the file past `max_bytes`, path.(N-1) → path.N, …,
path → path.1 (rename, as logrotate does, so tailers that follow inodes finish the old file),
and a new path is created; at most `keep` rotated files stay. A line longer than `max_bytes`
is still written, alone in its file. When someone else moved or removed the file (logrotate),
the next write re-creates it.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from roxd.alerts.node import NodeIdentity
from roxd.alerts.record import encode_record, export_record
from roxd.alerts.settings import JsonFileSettings
from roxd.alerts.worker import QueueWorker, SinkCounters
from roxd.model import Alert

log = logging.getLogger("roxd.alerts.file")

FILE_MODE = 0o640
DIR_MODE = 0o750


class JsonFileSink:
    def __init__(self, settings: JsonFileSettings, node: NodeIdentity) -> None:
        self.settings = settings
        self.path = Path(settings.path)
        self.node = node
        self._fd: int | None = None
        self._ino = 0
        self._size = 0
        self._failing = False
        self._counters = SinkCounters("rotations")
        self._open()  # an unwritable path is a start error: the sink is left out, logged
        self._worker = QueueWorker(f"roxd-file-{self.path.name}", self._write,
                                   settings.queue_max, self._counters)

    def emit(self, alert: Alert) -> None:
        self._worker.put(alert)

    def stats(self) -> dict[str, int]:
        return self._counters.snapshot()

    def flush(self, timeout: float = 10.0) -> bool:
        return self._worker.wait_idle(timeout)

    def close(self, timeout: float = 5.0) -> None:
        self._worker.close(timeout)
        self._close_fd()

    # ------------------------------------------------------------------ writer thread

    def _write(self, alert: Alert) -> bool:
        line = encode_record(export_record(alert, self.node)) + b"\n"
        try:
            if self._fd is None or self._moved_away():
                self._open()
            if self._size and self._size + len(line) > self.settings.max_bytes:
                self._rotate()
            assert self._fd is not None
            written = os.write(self._fd, line)
            self._size += written
            if written != len(line):
                raise OSError(f"short write ({written} of {len(line)} bytes)")
        except OSError as exc:
            self._close_fd()
            if not self._failing:
                log.warning("alert file %s: cannot write (%s); alerts are counted as failed "
                            "until it can", self.path, exc)
                self._failing = True
            return False
        if self._failing:
            log.info("alert file %s: writing again", self.path)
            self._failing = False
        return True

    def _open(self) -> None:
        self._close_fd()
        self.path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                     FILE_MODE)
        st = os.fstat(fd)
        self._fd, self._ino, self._size = fd, st.st_ino, st.st_size

    def _moved_away(self) -> bool:
        try:
            return os.stat(self.path).st_ino != self._ino
        except FileNotFoundError:
            return True

    def _rotate(self) -> None:
        self._close_fd()
        keep = self.settings.keep
        if keep == 0:
            self.path.unlink(missing_ok=True)
        else:
            for i in range(keep - 1, 0, -1):
                older = self._rotated(i)
                if older.exists():
                    os.replace(older, self._rotated(i + 1))
            os.replace(self.path, self._rotated(1))
        self._counters.add("rotations")
        self._open()

    def _rotated(self, i: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{i}")

    def _close_fd(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
