"""The posture scan as a service of the daemon: one scan at a time on a worker thread (it is
slow I/O: the engine, /proc, stat, auditctl), the last report kept, rescans on a schedule and
when the running containers change, and every check that goes from PASS to WARN logged and
handed to `on_regressions` (the daemon raises a `roxd.posture-regression` alert for each:
roxd/posture/alerts.py).

    service = PostureService(runtime, interval_s=3600)
    service.start()
    report = service.report(refresh=False)      # the last scan, or a scan now when none yet
    service.containers_changed()                # a rescan soon (debounced)
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Mapping

from roxd.posture.alerts import ContainerRef, Regression, regressions
from roxd.posture.checks import run_checks
from roxd.posture.facts import ListeningSource, PostureFacts, gather, with_listening
from roxd.posture.model import Report, Result
from roxd.runtime.base import EngineInventory

log = logging.getLogger(__name__)

CHANGE_DEBOUNCE_S = 2.0  # container starts come in bursts: one rescan after them


class PostureService:
    def __init__(self, engine: EngineInventory, interval_s: float = 3600.0,
                 gather_facts: Callable[[EngineInventory], PostureFacts] = gather) -> None:
        self.engine = engine
        self.interval_s = interval_s
        self._gather = gather_facts
        self._lock = threading.Lock()  # one scan at a time
        self._last: Report | None = None
        self._last_ids: frozenset[str] = frozenset()  # the containers of that scan
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._due_change: float | None = None
        self._thread: threading.Thread | None = None
        self.scans = 0
        self.regressions = 0  # PASS -> WARN transitions seen (per check and container)
        # told of the regressions of every scan after the first (on the scan's thread)
        self.on_regressions: Callable[[list[Regression]], None] | None = None
        self._regressed: dict[str, frozenset[str]] = {}  # container id -> CIS ids (_remember)
        # what each container listens on (the daemon's listener table), for 5.9; None: the
        # scan says it was given none
        self.listening: ListeningSource | None = None

    # ------------------------------------------------------------------ scanning

    def scan(self) -> Report:
        """Scan now (blocks for the scan) and keep the report."""
        with self._lock:
            started = time.time()
            facts = with_listening(self._gather(self.engine), self.listening)
            version = (facts.info or {}).get("ServerVersion")
            report = run_checks(facts, started=started, host_facts={
                "hostname": socket.gethostname(), "engine_version": version,
                "engine_error": facts.engine_error or None,
                "containers": len(facts.containers)})
            refs = {c.name: ContainerRef(str(c.inspect.get("Id") or ""), c.name,
                                         int((c.inspect.get("State") or {}).get("Pid") or 0))
                    for c in facts.containers}
            found = regressions(self._last, report, refs, seen_before=self._last_ids)
            self._last_ids = frozenset(r.id for r in refs.values())
            self._log_changes(self._last, report, found)
            self._last = report
            self.scans += 1
            self._remember(found, report, refs)
        if found and self.on_regressions is not None:
            try:
                self.on_regressions(found)
            except Exception:  # the alert path failing must not stop the scans
                log.exception("posture regression alerts failed")
        return report

    def _remember(self, found: list[Regression], report: Report,
                  refs: Mapping[str, ContainerRef]) -> None:
        """Keep, per container, the checks that regressed for it and still name it (the
        risk score's posture_regressions factor); forget the ones that no longer do. A new
        dict each time: the API's threads read it without the scan's lock."""
        regressed = {cid: set(ids) for cid, ids in self._regressed.items()}
        for r in found:
            if r.container_id:
                regressed.setdefault(r.container_id, set()).add(r.finding.check.id)
        warned = {f.check.id: set(f.outcome.items) for f in report.findings
                  if f.outcome.result is Result.WARN}
        names = {ref.id: name for name, ref in refs.items()}
        kept: dict[str, frozenset[str]] = {}
        for cid, ids in regressed.items():
            name = names.get(cid)
            still = frozenset(c for c in ids if name and name in warned.get(c, ()))
            if still:
                kept[cid] = still
        self._regressed = kept

    def regressed_checks(self, container_id: str) -> list[str]:
        """The CIS ids that went from PASS to WARN naming this container since roxd started,
        and still name it in the last scan."""
        return sorted(self._regressed.get(container_id, ()))

    def last(self) -> Report | None:
        return self._last

    def report(self, refresh: bool = False) -> Report:
        """The last scan; a scan now when none has finished yet or with refresh. A caller that
        arrives while the first scan runs waits for it instead of starting another."""
        if not refresh:
            last = self._last
            if last is not None:
                return last
            with self._lock:
                if self._last is not None:
                    return self._last
        return self.scan()

    def _log_changes(self, before: Report | None, after: Report,
                     found: list[Regression]) -> None:
        if before is None:
            c = after.counts()
            log.info("posture scan: %d checks, %d PASS, %d WARN, %d INFO, %d NOTE",
                     len(after.findings), c["PASS"], c["WARN"], c["INFO"], c["NOTE"])
            return
        for r in found:
            f = r.finding
            self.regressions += 1
            where = f" for container {r.container_name}" if r.container_name else ""
            log.warning("posture regression: CIS %s %s went from PASS to WARN%s: %s",
                        f.check.id, f.check.title, where, f.outcome.reason,
                        extra={"cis_id": f.check.id, "items": list(f.outcome.items)})

    # ------------------------------------------------------------------ schedule

    def containers_changed(self) -> None:
        """The running containers changed: rescan after a short debounce."""
        if self._due_change is None:  # the first change of a burst sets the time: no starving
            self._due_change = time.monotonic() + CHANGE_DEBOUNCE_S
            self._wake.set()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="posture", daemon=True)
            self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10.0)

    def _run(self) -> None:
        next_due = time.monotonic()  # a first scan at start
        while not self._stop.is_set():
            now = time.monotonic()
            due = min(next_due, self._due_change or next_due)
            if now >= due:
                self._due_change = None
                try:
                    self.scan()
                except Exception:  # never lose the thread: the next round retries
                    log.exception("posture scan failed")
                next_due = time.monotonic() + self.interval_s
                continue
            self._wake.wait(due - now)
            self._wake.clear()
