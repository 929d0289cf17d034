"""Make sure tracefs is mounted: bcc reads tracepoint formats from it.

Most hosts mount it at /sys/kernel/tracing (and under debugfs); minimal hosts and containers
may not. roxd mounts it when it can and says so; when it cannot, the error names the fix.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from pathlib import Path

from roxd.errors import SensorError

log = logging.getLogger(__name__)

TRACEFS = Path("/sys/kernel/tracing")
DEBUGFS_TRACEFS = Path("/sys/kernel/debug/tracing")


def tracefs_root() -> Path | None:
    for candidate in (TRACEFS, DEBUGFS_TRACEFS):
        if (candidate / "events").is_dir():
            return candidate
    return None


def ensure_tracefs() -> Path:
    root = tracefs_root()
    if root is not None:
        return root
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.mount(b"tracefs", str(TRACEFS).encode(), b"tracefs", 0, None) != 0:
        err = ctypes.get_errno()
        raise SensorError(
            f"tracefs is not mounted and mounting it at {TRACEFS} failed "
            f"({os.strerror(err)}); run `mount -t tracefs tracefs {TRACEFS}` as root")
    log.info("mounted tracefs at %s", TRACEFS)
    return TRACEFS
