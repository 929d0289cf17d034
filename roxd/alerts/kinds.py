"""The three kinds of alert roxd emits, and their stable identifiers.

- `match`: a rule matched an event (count 1, or more when the kernel or the noise control
  folded identical ones into it before it was first emitted).
- `folded`: the noise control's end-of-window summary of identical alerts that were held back
  after the first one was emitted; `count` says how many.
- `throttled`: the per-container rate limit's end-of-window marker; `count` says how many
  alerts of that container were suppressed. Its rule id is THROTTLED_RULE_ID.

The MESSAGE_IDs (journald) never change: `journalctl MESSAGE_ID=<id>` finds every alert of a
kind on any host and any roxd version. The syslog MSGID carries the kind's short name.
"""

from __future__ import annotations

from typing import Literal

from roxd.model import Alert

AlertKind = Literal["match", "folded", "throttled"]

THROTTLED_RULE_ID = "roxd.throttled"
FOLDED_MARK = "folded-"  # Alert.id prefix of a fold summary (then 32 hex digits)

MESSAGE_IDS: dict[AlertKind, str] = {
    "match": "4e06e42e5d764ad493df524c45b3ab33",
    "folded": "fe11a98d7015422bb8ba23776a647f79",
    "throttled": "d2736e2f5a4a4861ad799bfd38bcf228",
}

MSGIDS: dict[AlertKind, str] = {
    "match": "alert",
    "folded": "alert-folded",
    "throttled": "alert-throttled",
}


def alert_kind(alert: Alert) -> AlertKind:
    if alert.rule.id == THROTTLED_RULE_ID:
        return "throttled"
    if alert.id.startswith(FOLDED_MARK):
        return "folded"
    return "match"
