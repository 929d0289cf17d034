"""Status, health and metrics: snapshots of the daemon, never a lock on its loop.

Kernel counters belong to the sensor, which only the loop thread touches: they are read there
(`call_in_loop`) at most once a second and cached, however many clients ask.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from typing import Any

from roxd import __version__
from roxd.api.port import DaemonPort, KernelStats
from roxd.model import rfc3339

log = logging.getLogger(__name__)

STATS_TTL_S = 1.0
RATE_WINDOW_S = 10.0


class StatusReporter:
    def __init__(self, daemon: DaemonPort) -> None:
        self.daemon = daemon
        self._lock = threading.Lock()
        self._cached: tuple[float, KernelStats] | None = None
        self._samples: collections.deque[tuple[float, int, int]] = collections.deque(maxlen=64)

    # ------------------------------------------------------------------ kernel counters

    def kernel_stats(self) -> KernelStats | None:
        with self._lock:
            now = time.monotonic()
            if self._cached is not None and now - self._cached[0] < STATS_TTL_S:
                return self._cached[1]
            try:
                stats = self.daemon.kernel_stats()
            except Exception as exc:
                log.warning("kernel counters not read: %s", exc)
                return self._cached[1] if self._cached else None
            self._cached = (now, stats)
            return stats

    # ------------------------------------------------------------------ event rate

    def sample(self) -> None:
        """Called about once a second by the server's housekeeping thread."""
        c = self.daemon.activity()
        self._samples.append((time.monotonic(), c.events, c.alerts))

    def rates(self) -> tuple[float, float]:
        """(events/s, alerts/s) over the last RATE_WINDOW_S seconds."""
        samples = list(self._samples)
        if len(samples) < 2:
            return 0.0, 0.0
        newest = samples[-1]
        oldest = next((s for s in samples if newest[0] - s[0] <= RATE_WINDOW_S), samples[0])
        span = newest[0] - oldest[0]
        if span <= 0:
            return 0.0, 0.0
        return (newest[1] - oldest[1]) / span, (newest[2] - oldest[2]) / span

    # ------------------------------------------------------------------ documents

    def status(self, api: dict[str, Any], containers: int, quarantined: int) -> dict[str, Any]:
        d = self.daemon
        facts = d.facts
        stats = self.kernel_stats()
        events_rate, alerts_rate = self.rates()
        rules = d.rules()
        programs = d.programs()
        activity = d.activity()
        kernel = dict(stats.counters) if stats else {}
        return {
            "version": __version__,
            "pid": os.getpid(),
            "started_at": rfc3339(int(facts.started_at * 1e9)),
            "uptime_s": round(time.time() - facts.started_at, 3),
            "monitor": facts.monitor,
            "config": facts.config_source,
            "features": dict(facts.features),
            # seconds per start-up stage, wall and CPU, and process start to READY
            "startup": dict(facts.startup()) if facts.startup is not None else None,
            "programs": {
                "attached": list(programs.attached),
                "count": len(programs.attached),
                "load_seconds": round(programs.load_seconds, 3),
            },
            "events": {"total": activity.events, "per_second": round(events_rate, 2),
                       "quiet_marks": activity.quiet_marks,
                       "subscribers": d.events_topic.subscribers},
            "alerts": {"total": activity.alerts, "per_second": round(alerts_rate, 2)},
            "kernel": kernel,
            "drops": {
                "total": sum(v for k, v in kernel.items() if k.endswith("_dropped")),
                "by_cause": {"ringbuf_full": {k.removesuffix("_dropped"): v
                                              for k, v in kernel.items()
                                              if k.endswith("_dropped")}},
                "by_cgroup": {str(k): v for k, v in (stats.drops_by_cgroup if stats
                                                     else {}).items()},
                "decode_errors": stats.decode_errors if stats else 0,
                "handler_errors": stats.handler_errors if stats else 0,
            },
            "rules": {
                "version": rules.version if rules else None,
                "count": len(rules.rules) if rules else 0,
                "enabled": sum(1 for r in rules.rules if r.enabled) if rules else 0,
                "files": list(rules.files) if rules else [],
                "overrides": dict(d.rule_overrides()),
                "effective_actions": rules.effective_action_notes(
                    host_kills=bool(d.policy().get("host_kills", False))) if rules else {},
            },
            "containers": {"running": containers, "quarantined": quarantined,
                           "unattributed_events": activity.unattributed},
            "api": api,
        }

    def health(self) -> tuple[bool, list[str], list[str]]:
        """(ok, problems, degraded). Problems make roxd unhealthy (503: it is not watching);
        degraded parts are reported but roxd still watches (200): an alert sink that cannot
        deliver, named with why."""
        d = self.daemon
        problems = []
        if not d.programs().attached:
            problems.append("no eBPF programs attached")
        if d.rules() is None:
            problems.append("no rules loaded")
        if d.stopping():
            problems.append("stopping")
        try:
            degraded = list(d.alert_sink_problems())
        except Exception as exc:
            degraded = [f"alert sinks cannot report their state: {exc}"]
        return not problems, problems, degraded
