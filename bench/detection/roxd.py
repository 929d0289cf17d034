"""One roxd for the whole benchmark: the shipped config and rules, --print-alerts read by a
thread and kept per container id for the runner to take its test's alerts from."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def alert_time_ns(alert: dict[str, Any]) -> int:
    """The alerted event's time (wall clock, microseconds) in ns; the alert's own time if the
    event has none."""
    text = (alert.get("event") or {}).get("time") or alert.get("time")
    if not text:
        return 0
    dt = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    return int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1000


@dataclass
class Roxd:
    workdir: Path
    config: Path
    rules: list[Path]
    monitor: bool = True
    proc: subprocess.Popen[str] | None = None
    alerts: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    host_alerts: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def stderr_path(self) -> Path:
        return self.workdir / "roxd-stderr.log"

    def start(self, timeout: float = 120.0) -> None:
        args = [sys.executable, "-m", "roxd", "--config", str(self.config),
                "--state-dir", str(self.workdir / "state"),
                "--socket", str(self.workdir / "roxd.sock"), "--print-alerts"]
        for r in self.rules:
            args += ["--rules", str(r)]
        if self.monitor:
            args.append("--monitor")
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE,
                                     stderr=self.stderr_path.open("w"), text=True, env=env,
                                     cwd=REPO)
        threading.Thread(target=self._read, daemon=True, name="roxd-alerts").start()
        deadline = time.monotonic() + timeout
        while "roxd is watching" not in self.stderr():
            if self.proc.poll() is not None:
                raise RuntimeError(f"roxd exited with {self.proc.returncode}:\n"
                                   f"{self.stderr()[-3000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"roxd not watching after {timeout}s:\n"
                                   f"{self.stderr()[-3000:]}")
            time.sleep(0.2)

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError:
                continue
            if obj.get("type") != "alert":
                continue
            cid = (obj.get("container") or {}).get("id")
            with self._lock:
                if cid:
                    self.alerts.setdefault(cid, []).append(obj)
                else:
                    self.host_alerts += 1

    def alerts_of(self, container_id: str, start_ns: int, end_ns: int) -> list[dict[str, Any]]:
        """The container's alerts whose event happened in [start_ns, end_ns]."""
        with self._lock:
            mine = list(self.alerts.get(container_id, ()))
        return [a for a in mine if start_ns <= alert_time_ns(a) <= end_ns]

    def wait_drained(self, timeout: float = 15.0) -> bool:
        """Block until roxd has handled every event the kernel emitted up to now: the test's
        evidence (a dropped script, the container's writable layer) must still exist when roxd
        judges it, and on this shared 2-core machine roxd can lag the kernel by seconds, longer
        than the test's cleanup and the container's removal take. Kernel counters in
        /v1/status are cached for up to a second, so the first read after one second covers
        `now`. False (and the test goes on) when roxd does not catch up in time."""
        from roxd.api.client import ApiClient  # stdlib only; the bench may run without roxd
        deadline = time.monotonic() + timeout
        time.sleep(1.05)
        try:
            with ApiClient(str(self.workdir / "roxd.sock")) as api:
                status = api.get("/v1/status")
                target = sum(v for k, v in status["kernel"].items() if k.endswith("_emitted"))
                while status["events"]["total"] < target:
                    if time.monotonic() > deadline:
                        return False
                    time.sleep(0.1)
                    status = api.get("/v1/status")
        except (OSError, KeyError, ValueError):
            return False
        time.sleep(0.1)  # the last event counted is being handled: let it reach the rules
        return True

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
