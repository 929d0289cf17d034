"""GET /v1/posture and /v1/inventory/*: the CIS posture report and the host's inventory.

Both are slow I/O (the engine, /proc, stat): they run on the API connection's own thread,
never on the event loop.
"""

from __future__ import annotations

from typing import Any

from roxd.api.http import Request
from roxd.api.port import DaemonPort
from roxd.errors import ApiError
from roxd.posture.formats import docker_bench_document
from roxd.runtime.base import RuntimeControlError, RuntimeUnavailableError


class PostureEndpoints:
    def __init__(self, daemon: DaemonPort) -> None:
        self.daemon = daemon

    def handlers(self) -> dict[str, Any]:
        return {"getPosture": self.posture,
                "listInventoryContainers": self.containers,
                "listInventoryImages": self.images}

    def posture(self, _req: Request, p: dict[str, Any], _body: Any) -> Any:
        try:
            report = self.daemon.posture(refresh=bool(p.get("refresh", False)))
        except RuntimeControlError as exc:
            raise ApiError(503, f"posture scan failed: {exc}") from exc
        if report is None:
            raise ApiError(503, "posture scanning is off in this daemon "
                                "(posture.enabled = false)")
        if p.get("format") == "docker-bench":
            return docker_bench_document(report)
        return report.to_dict()

    def containers(self, _req: Request, p: dict[str, Any], _body: Any) -> Any:
        try:
            records = self.daemon.inventory_containers(bool(p.get("all", False)))
        except RuntimeUnavailableError as exc:
            raise ApiError(503, str(exc)) from exc
        except RuntimeControlError as exc:
            raise ApiError(503, f"inventory failed: {exc}") from exc
        return [r.to_dict() for r in records]

    def images(self, _req: Request, _p: dict[str, Any], _body: Any) -> Any:
        try:
            records = self.daemon.inventory_images()
        except RuntimeControlError as exc:
            raise ApiError(503, str(exc)) from exc
        return [r.to_dict() for r in records]
