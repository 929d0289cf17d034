"""Times in queries: RFC 3339 ("2026-11-22T16:40:02Z") or an age ("30s", "15m", "2h", "7d")."""

from __future__ import annotations

import datetime as dt
import re
import time

from roxd.errors import ApiError

_AGE = re.compile(r"([0-9]{1,9})(s|m|h|d)")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_rfc3339_ns(text: str) -> int | None:
    try:
        stamp = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except (ValueError, TypeError):
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)
    try:
        whole = int(stamp.timestamp())
    except (OverflowError, OSError, ValueError):
        return None
    return whole * 1_000_000_000 + stamp.microsecond * 1000


def parse_time_ns(text: str, where: str, now_ns: int | None = None) -> int:
    m = _AGE.fullmatch(text)
    if m:
        now_ns = time.time_ns() if now_ns is None else now_ns
        # an age older than the epoch means "from the beginning": 0, never a negative number
        # too big for SQLite's 64-bit integers (999999999d was a 500)
        return max(0, now_ns - int(m.group(1)) * _UNIT[m.group(2)] * 1_000_000_000)
    value = parse_rfc3339_ns(text)
    if value is None:
        raise ApiError(400, f"{where} must be an RFC 3339 time (2026-11-22T16:40:02Z) or an "
                            f"age (30s, 15m, 2h, 7d), not {text[:40]!r}")
    return value
