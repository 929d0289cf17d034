"""Seccomp endpoints: they call the seccomp service on its own worker thread (`call`), never
on the event loop: its container-engine calls can take the engine's whole timeout, or longer
(apply recreates a container). Where the host has none (no container runtime, no libseccomp),
501 and why."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from roxd.api.http import Request
from roxd.api.port import CallTimeout, DaemonPort, SeccompApi
from roxd.errors import ApiError, RoxdError
from roxd.seccomp.errors import SeccompBusy

CALL_TIMEOUT_S = 30.0

NOT_AVAILABLE = ("seccomp is not available on this host: it needs a container runtime and "
                 "libseccomp (see roxd's start-up log for which one is missing)")


def jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    if hasattr(value, "to_dict"):
        return jsonable(value.to_dict())
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [jsonable(v) for v in value]
        return sorted(items, key=str) if isinstance(value, set | frozenset) else items
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


class SeccompEndpoints:
    def __init__(self, daemon: DaemonPort) -> None:
        self.daemon = daemon

    def _call(self, fn: Callable[[SeccompApi], Any]) -> Any:
        service = self.daemon.seccomp()
        if service is None:
            raise ApiError(501, NOT_AVAILABLE)
        try:
            return jsonable(service.call(fn, timeout=CALL_TIMEOUT_S))
        except SeccompBusy as exc:  # 504 "may still apply" or 503 "withdrawn, nothing changed"
            raise CallTimeout("the seccomp call", exc.timeout, exc.started) from None
        except RoxdError as exc:
            raise ApiError(422, str(exc)) from None

    def handlers(self) -> dict[str, Callable[[Request, dict[str, Any], Any], Any]]:
        def profile_of(s: Any, target: str, kill: bool) -> Any:
            from roxd.seccomp import profile as profiles

            report = s.profile(target, kill=kill)
            return profiles.from_document(report.profile, f"profile for {target}")

        return {
            "getSeccomp": lambda _r, _p, _b: self._call(lambda s: s.status()),
            "getSeccompProfile": lambda _r, p, _b: self._call(
                lambda s: s.profile(p["target"], kill=p.get("kill", False))),
            "seccompLearn": lambda _r, _p, b: self._call(lambda s: s.learn(b["target"])),
            "seccompStop": lambda _r, _p, b: self._call(
                lambda s: s.stop_learning(b["target"]) or {"stopped": b["target"]}),
            "seccompApply": lambda _r, _p, b: self._call(lambda s: s.apply(
                b["target"], profile_of(s, b["target"], b.get("kill", False)))),
            "seccompEnforce": lambda _r, _p, b: self._call(lambda s: s.enforce(b["target"])),
            "seccompRelease": lambda _r, _p, b: self._call(
                lambda s: s.release(b["target"]) or {"released": b["target"]}),
        }
