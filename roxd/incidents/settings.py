"""[incidents] in roxd.toml: how alerts are tied into incidents (docs/incidents.md)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class IncidentsSettings:
    # An open incident with no new alert for this long is closed (seconds).
    quiet_window_s: float = 1800.0
    # Timeline entries kept per incident; beyond, alerts are counted (an alert that reaches a
    # new phase is always kept).
    max_timeline: int = 500
    # SQLite store in <state_dir>/incidents/incidents.db (survives restarts; the API reads it).
    store: bool = True
    # Closed incidents older than this are deleted from the store; 0 = kept forever.
    max_age_days: float = 90.0
    # One journal entry per incident change (opened, phase added, closed).
    journald: bool = True

    def check(self) -> list[str]:
        problems = []
        if self.quiet_window_s <= 0:
            problems.append("quiet_window_s must be > 0")
        if self.max_timeline < 1:
            problems.append("max_timeline must be >= 1")
        if self.max_age_days < 0:
            problems.append("max_age_days must be >= 0")
        return problems
