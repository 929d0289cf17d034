"""The runtime that is not there: every action raises RuntimeUnavailableError with the reason,
every query answers "cannot tell"."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from roxd.runtime.base import ContainerMetadata, EventStream, RuntimeUnavailableError

if TYPE_CHECKING:
    from roxd.seccomp.apply import ApplyResult

NOT_CONFIGURED = "no container runtime configured (containers.docker_url is empty)"


class NoRuntime:
    name = "none"
    label = "no runtime"
    url = ""
    configured = False

    def __init__(self, reason: str = NOT_CONFIGURED) -> None:
        self.reason = reason

    def _unavailable(self) -> NoReturn:
        raise RuntimeUnavailableError(self.reason)

    def ping(self) -> None:
        self._unavailable()

    def version(self) -> str:
        self._unavailable()

    def inspect(self, container: str) -> ContainerMetadata | None:
        self._unavailable()

    def running_ids(self) -> list[str]:
        self._unavailable()

    def events(self, since: int | None = None, actions: Sequence[str] = ()) -> EventStream:
        self._unavailable()

    def image_id(self, image: str) -> str | None:
        self._unavailable()

    def info(self) -> dict[str, Any]:
        self._unavailable()

    def inspect_raw(self, container: str) -> dict[str, Any] | None:
        self._unavailable()

    def container_ids(self, all_states: bool = False) -> list[str]:
        self._unavailable()

    def images_raw(self) -> list[dict[str, Any]]:
        self._unavailable()

    def inspect_image_raw(self, image: str) -> dict[str, Any] | None:
        self._unavailable()

    def inspect_exec_raw(self, exec_id: str) -> dict[str, Any] | None:
        self._unavailable()

    def exists(self, container_id: str) -> bool:
        return True  # cannot tell: never forget state for want of a runtime

    def pid_of(self, container_id: str) -> int | None:
        return None

    def kill(self, container_id: str) -> None:
        self._unavailable()

    def stop(self, container_id: str) -> None:
        self._unavailable()

    def pause(self, container_id: str) -> None:
        self._unavailable()

    def apply_seccomp(self, container: str, profile_json: str, *,
                      settle_s: float = 1.0) -> ApplyResult:
        self._unavailable()

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"NoRuntime({self.reason!r})"
