"""Why a test that executed raised no alert in its phase, when the reason is known and out of
reach of rules over the events roxd traces. Keyed by test key (T1234.001-2) or technique.
Filled from measured runs; docs/detection.md shows the same reasons."""

from __future__ import annotations

MISS_REASONS: dict[str, str] = {}


def miss_reason(key: str, technique: str) -> str:
    return MISS_REASONS.get(key) or MISS_REASONS.get(technique) or ""
