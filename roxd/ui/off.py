"""The dashboard as the control API sees it, and the "off" one (the default): a socket client
asking for a login URL is told how to turn it on."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from roxd.errors import ApiError

if TYPE_CHECKING:
    from roxd.api.auth import Authorizer, PeerCred
    from roxd.api.endpoints import Endpoints
    from roxd.api.settings import ApiSettings


class DashboardPart(Protocol):
    def start(self, endpoints: Endpoints, authorizer: Authorizer,
              api: ApiSettings) -> None: ...
    def login(self, peer: PeerCred) -> dict[str, Any]: ...
    def describe(self) -> dict[str, Any]: ...  # for GET /v1/status
    def close(self) -> None: ...


class DashboardOff:
    def start(self, endpoints: Endpoints, authorizer: Authorizer, api: ApiSettings) -> None:
        pass

    def login(self, peer: PeerCred) -> dict[str, Any]:
        raise ApiError(501, "the dashboard is off in this daemon: set [dashboard] enabled = "
                            "true in roxd.toml and restart roxd (docs/dashboard.md)")

    def describe(self) -> dict[str, Any]:
        return {"enabled": False}

    def close(self) -> None:
        pass
