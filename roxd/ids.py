"""Random ids (version-4 UUIDs as 32 hex digits, like uuid.uuid4().hex) for alerts and
incidents, drawn from a pool of os.urandom bytes.

uuid.uuid4() makes one getrandom() syscall per id; with syscall tracepoints attached on the
host (roxd's own, other agents') a syscall is slow, and an alert storm raised one id per
alert: py-spy showed it as a large part of the alert path (issue 22). One syscall per 256
ids instead; the bytes are the same kernel randomness."""

from __future__ import annotations

import os
import threading

_POOL_IDS = 256
_lock = threading.Lock()
_pool = b""
_at = 0


def new_id() -> str:
    global _pool, _at
    with _lock:
        if _at >= len(_pool):
            _pool, _at = os.urandom(16 * _POOL_IDS), 0
        raw = bytearray(_pool[_at:_at + 16])
        _at += 16
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    return raw.hex()
