"""Container-level actions moved to `roxd.runtime` (the ContainerRuntime port).

Kept so the old imports keep working: `DockerControl(base_url, timeout)` is a DockerRuntime
(pid_of, exists, pause, kill, stop, close), and `RuntimeControlError` is the runtime's error.
New code takes the daemon's shared runtime (`roxd.runtime.connect_runtime`) instead.
"""

from __future__ import annotations

from roxd.runtime import DockerRuntime, RuntimeControlError, RuntimeUnavailableError

DockerControl = DockerRuntime

__all__ = ["DockerControl", "RuntimeControlError", "RuntimeUnavailableError"]
