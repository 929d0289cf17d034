"""The seccomp commands other stages may give, as a typed port (no bcc, no libseccomp here).

`Responder` (roxd/enforce/response.py) moves a container to enforce mode through
`SeccompControl`; `SeccompService` implements it. Unit tests hand the responder a fake.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class SeccompEnforcement:
    """A container now in enforce mode: `denied` syscall numbers are killed at sys_enter."""

    container: str  # container id
    cgroup_id: int
    denied: int  # how many syscall numbers are denied
    allowed: int  # how many are allowed


class SeccompControl(Protocol):
    def enforce(self, target: str) -> SeccompEnforcement:
        """Kill (SIGKILL at sys_enter) any process of the container (id or name) that makes a
        syscall outside its learned set; a RoxdError (e.g. nothing learned yet) otherwise."""
        ...
