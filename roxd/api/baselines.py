"""Baseline endpoints: list, show, lock, unlock, mode, accept, breakglass, export, import.
The engine belongs to the event loop: every call runs there (call_in_loop); its refusals
(unknown workload, bad mode, a bad import, a bad break-glass duration) are 404 / 422 with the
reason; with baselines off, 501."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from roxd.api.http import Request
from roxd.api.port import BaselinesApi, DaemonPort
from roxd.errors import ApiError

OFF = "process baselines are off: [baselines] enabled = false in roxd.toml"


class BaselineEndpoints:
    def __init__(self, daemon: DaemonPort) -> None:
        self.daemon = daemon

    def _call(self, fn: Callable[[BaselinesApi], Any]) -> Any:
        engine = self.daemon.baselines()
        if engine is None:
            raise ApiError(501, OFF)
        try:
            return self.daemon.call_in_loop(lambda: fn(engine))
        except ValueError as exc:  # BaselineError: unknown workload, bad mode
            status = 404 if "no baseline for workload" in str(exc) else 422
            raise ApiError(status, str(exc)) from None

    @staticmethod
    def _workload(body: dict[str, Any]) -> str:
        workload = body.get("workload")
        if not workload:
            raise ApiError(422, "give the workload (roxctl baselines list shows the keys)")
        return str(workload)

    def handlers(self) -> dict[str, Callable[[Request, dict[str, Any], Any], Any]]:
        def lock(_r: Request, _p: dict[str, Any], b: dict[str, Any]) -> Any:
            if b.get("all"):
                return self._call(lambda e: {"locked": [
                    e.lock(w["workload"])["workload"] for w in e.list()
                    if w["state"] == "learning"]})
            return self._call(lambda e: e.lock(self._workload(b)))

        def mode(_r: Request, _p: dict[str, Any], b: dict[str, Any]) -> Any:
            if not b.get("mode"):
                raise ApiError(422, "give the mode: learn, monitor or enforce")
            return self._call(lambda e: e.set_mode(self._workload(b), b["mode"]))

        def accept(_r: Request, _p: dict[str, Any], b: dict[str, Any]) -> Any:
            if not b.get("path"):
                raise ApiError(422, "give the executable path (or the element: 'outbound "
                                    "tcp/443 198.51.100.0/24', 'write /var/lib/app') to accept")
            return self._call(lambda e: e.accept(self._workload(b), b["path"]))

        def breakglass(_r: Request, _p: dict[str, Any], b: dict[str, Any]) -> Any:
            if "duration_s" not in b:
                raise ApiError(422, "give duration_s: how long the workload is exempt from "
                                    "enforce mode (0 ends an exemption now)")
            return self._call(lambda e: e.breakglass(self._workload(b), float(b["duration_s"]),
                                                     str(b.get("reason") or "")))

        return {
            "breakglassBaseline": breakglass,
            "listBaselines": lambda _r, _p, _b: self._call(
                lambda e: {"baselines": e.list(), "stats": e.stats()}),
            "getBaseline": lambda _r, p, _b: self._call(lambda e: e.get(p["workload"])),
            "lockBaselines": lock,
            "unlockBaseline": lambda _r, _p, b: self._call(
                lambda e: e.unlock(self._workload(b))),
            "setBaselineMode": mode,
            "acceptBaselineProcess": accept,
            "exportBaselines": lambda _r, p, _b: self._call(
                lambda e: e.export(p.get("workload"))),
            "importBaselines": lambda _r, _p, b: self._call(lambda e: e.import_(b)),
        }
