"""What a container runtime knows about a container beyond its cgroup path.

The resolver talks to a runtime only through `MetadataSource`, so it never imports a runtime's
SDK (only roxd/runtime/docker_engine.py imports `docker`) and unit tests can hand it a fake.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from roxd.runtime.base import ContainerMetadata

__all__ = ["ContainerMetadata", "MetadataListener", "MetadataSource"]


# Called with a container id whenever what the source knows about it changes: it appeared
# (started, found by a scan), was renamed, or was removed (then `get` returns None).
MetadataListener = Callable[[str], None]


class MetadataSource(Protocol):
    runtime: str  # which runtime's ids this source knows ("docker")

    def get(self, container_id: str) -> ContainerMetadata | None:
        """What is known now; may ask the runtime once for an id it has never seen."""
        ...

    def add_listener(self, listener: MetadataListener) -> None: ...
