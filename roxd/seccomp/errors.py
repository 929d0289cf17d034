"""Errors a user can cause with seccomp profiles and learning; each ends as one message."""

from __future__ import annotations

from dataclasses import dataclass

from roxd.errors import RoxdError


@dataclass
class ProfileError(RoxdError):
    """A seccomp profile that is not valid JSON, or names an unknown syscall or action."""

    source: str  # file path, or a description such as "generated profile"
    message: str

    def __str__(self) -> str:
        return f"seccomp profile {self.source}: {self.message}"


@dataclass
class SeccompTargetError(RoxdError):
    """A container or image the user named that cannot be found or used."""

    target: str
    message: str

    def __str__(self) -> str:
        return f"{self.target}: {self.message}"


@dataclass
class ApplyError(RoxdError):
    """Applying a profile failed; `rolled_back` says whether the original runs again."""

    container: str
    message: str
    rolled_back: bool

    def __str__(self) -> str:
        state = ("the original container is running again under its name" if self.rolled_back
                 else "ROLLBACK INCOMPLETE: check the container by hand")
        return f"apply to {self.container} failed: {self.message}; {state}"


class SeccompUnavailable(RoxdError):
    """libseccomp's Python binding is missing."""


class SeccompBusy(TimeoutError):
    """A seccomp call did not finish in time on the service's worker (the container engine
    is slow or hung). `started`: the worker had begun it, so it may still complete; otherwise
    it was withdrawn before it ran and nothing changed."""

    def __init__(self, timeout: float, started: bool) -> None:
        self.timeout = timeout
        self.started = started
        super().__init__(
            f"the seccomp call did not finish within {timeout:g}s (the container engine is "
            + ("slow or hung): it may still complete" if started
               else "slow or hung, an earlier call still runs): withdrawn, nothing changed"))
