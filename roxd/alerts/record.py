"""The one JSON record every exporter writes for an alert, and its byte encoding.

    export_record(alert, node) -> {"type": "alert", "kind": "match", "summary": "...",
                                   "node": {"hostname", "machine_id", "kubernetes_node"},
                                   ...Alert.to_dict()}
    encode_record(record) -> b'{"type":"alert",...}'   (no newline in it, valid UTF-8)

Encoding is where hostile input is defused: a command line may carry newlines and control
bytes (bytes that are not UTF-8 arrive as \\xNN text, roxd/text.py), and a lone surrogate could
still come from elsewhere. JSON
escapes every control character; U+0085, U+2028 and U+2029 are escaped as well (some line
readers split on them); anything not encodable as UTF-8 becomes "?". One record, one line.
"""

from __future__ import annotations

import json
from typing import Any

from roxd.alerts.dispatch import summary
from roxd.alerts.kinds import alert_kind
from roxd.alerts.node import NodeIdentity
from roxd.model import Alert

# not escaped by JSON (not control characters below U+0020), yet line breaks to some readers
_LINE_BREAKERS = ("\x85", "\u2028", "\u2029")


def export_record(alert: Alert, node: NodeIdentity) -> dict[str, Any]:
    return {"type": "alert", "kind": alert_kind(alert), "summary": summary(alert),
            "node": node.to_dict(), **alert.to_dict()}


def encode_record(record: dict[str, Any]) -> bytes:
    text = json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str)
    for ch in _LINE_BREAKERS:
        if ch in text:
            text = text.replace(ch, f"\\u{ord(ch):04x}")
    return text.encode("utf-8", "replace")
