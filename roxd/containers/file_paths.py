"""Where a file event's path points: relative paths resolved while the process still lives.

The kernel reports the path as the process gave it and resolves nothing (bpf/file.bpf.c). Here a
relative path is joined to /proc/<pid>/cwd (AT_FDCWD) or to the directory fd's link
/proc/<pid>/fd/<dfd>, and the result is normalized lexically ("." and ".." and doubled
slashes). Symlinks are not followed: the links read from /proc are already the process's view
inside its own mount namespace and root, which is what rules about /etc/shadow mean in a
container. A process gone before roxd looks keeps `resolved` None for a relative path.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import replace

from roxd.model import FileEvent
from roxd.text import from_bytes

AT_FDCWD = -100


def resolve_path(path: str, pid: int, dfd: int = AT_FDCWD, proc: str = "/proc") -> str | None:
    """The absolute, lexically normalized form of `path` for process `pid`; None if unknown."""
    if not path:
        return None
    if path.startswith("/"):
        return _normalize(path)
    link = f"{proc}/{pid}/cwd" if dfd == AT_FDCWD else f"{proc}/{pid}/fd/{dfd}"
    try:
        base = from_bytes(os.readlink(os.fsencode(link)))  # \xNN for non-UTF-8 bytes
    except OSError:
        return None
    if not base.startswith("/"):  # "pipe:[...]", "anon_inode:..." or a deleted directory
        return None
    return _normalize(posixpath.join(base.removesuffix(" (deleted)"), path))


def _normalize(path: str) -> str:
    out = posixpath.normpath(path)
    return "/" + out.lstrip("/")  # normpath keeps a leading "//"


def resolve_file_event(event: FileEvent, proc: str = "/proc") -> FileEvent:
    if event.resolved is not None:
        return event
    resolved = resolve_path(event.path, event.pid, event.dfd, proc)
    return replace(event, resolved=resolved) if resolved is not None else event
