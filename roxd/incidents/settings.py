"""[incidents] in roxd.toml: how alerts are tied into incidents (docs/incidents.md)."""

from __future__ import annotations

from dataclasses import dataclass

from roxd.vocabulary import PHASES

RESPONSES = ("off", "isolate")


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
    # Response by incident policy (off by default): "off" or "isolate" (network quarantine of
    # every container the incident touches, once each). It acts when the incident has reached
    # `response_min_phases` distinct phases, or any phase in `response_on_phases`.
    response: str = "off"
    response_min_phases: int = 3
    response_on_phases: tuple[str, ...] = ("objectives",)

    def check(self) -> list[str]:
        problems = []
        if self.quiet_window_s <= 0:
            problems.append("quiet_window_s must be > 0")
        if self.max_timeline < 1:
            problems.append("max_timeline must be >= 1")
        if self.max_age_days < 0:
            problems.append("max_age_days must be >= 0")
        if self.response not in RESPONSES:
            problems.append(f"response must be one of {', '.join(RESPONSES)}, not "
                            f"{self.response!r}")
        if not 0 <= self.response_min_phases <= len(PHASES):
            problems.append(f"response_min_phases must be 0..{len(PHASES)} (0 = not by count)")
        unknown = [p for p in self.response_on_phases if p not in PHASES]
        if unknown:
            problems.append(f"response_on_phases: unknown phase(s) {', '.join(unknown)}; "
                            f"phases are {', '.join(PHASES)}")
        return problems
