"""Run inside journald's private mount namespace: send alerts through JournaldSink.

Usage: python alerts_journald_send.py [--hostile]
(prints the sent alerts' to_dict() as JSON lines; --hostile: an alert whose process strings are
hostile, a child carrying that parent, then an ordinary alert)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from roxd.alerts.journald import JournaldSink
from roxd.model import ActionKind, ActionResult, Alert, Outcome, Phase, Severity
from tests.system.alerts_factory import hostile_alert, make_alert, rule


def hostile() -> list[Alert]:
    from dataclasses import replace

    bad = hostile_alert()
    child = make_alert(exe="/bin/cat", args=("cat", "/etc/shadow"))
    child = replace(child, event=replace(child.event, process=replace(
        child.event.process, ancestors=bad.event.process.ancestors)))
    return [bad, child, make_alert()]


def main() -> int:
    alerts = hostile() if "--hostile" in sys.argv else [
        make_alert(rule_ref=rule("persistence.cron_write", phase=Phase.PERSISTENCE,
                                 severity=Severity.ERROR, mitre=("T1053.003", "T1059"))),
        make_alert(rule_ref=rule("foothold.reverse_shell", phase=Phase.FOOTHOLD,
                                 severity=Severity.CRITICAL, mitre=("T1059.004",)),
                   container=None, connect=True, exe="/bin/nc", args=("nc", "10.1.2.3", "4444"),
                   actions=(ActionResult(ActionKind.KILL, Outcome.FAILED, "gone"),)),
    ]
    sink = JournaldSink()
    for a in alerts:
        sink.emit(a)
    ok = sink.flush(10)
    sink.close(5)
    for a in alerts:
        print(json.dumps(a.to_dict()))
    print(json.dumps({"stats": sink.stats(), "flushed": ok}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
