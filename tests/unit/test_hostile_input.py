"""Hostile bytes from a container reach every sink safely: non-UTF-8 bytes, newlines, terminal
escape sequences, NUL, SD-PARAM specials, Slack markup, very long argv. Nothing raises, nothing
is lost (each undecodable byte is shown as \\xNN), no control character reaches a text sink,
and one bad alert never stops the alerts after it."""

from __future__ import annotations

import ctypes as ct
import json
import os
import re
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roxd.alerts.dispatch import LogSink, summary
from roxd.alerts.journald import JournaldSink, journal_fields
from roxd.alerts.rfc5424 import format_message
from roxd.alerts.settings import StoreSettings, WebhookSettings
from roxd.alerts.store import AlertQuery, AlertStore
from roxd.alerts.webhooks import WebhookSink, generic_payload, pagerduty_payload, slack_payload
from roxd.containers.process_table import ProcReader
from roxd.model import ExecEvent
from roxd.sensor import records
from roxd.text import from_bytes, json_dumps, printable, to_bytes
from tests.system.alerts_factory import hostile_alert, make_alert
from tests.system.rfc5424_parse import parse_sd

pytestmark = pytest.mark.unit

# C0 and C1 controls, DEL, lone surrogates, Unicode line/paragraph separators, bidi controls
UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def assert_safe(text: str) -> None:
    bad = UNSAFE.search(text)
    where = text[max(0, bad.start() - 40):bad.start() + 40] if bad else ""
    assert bad is None, f"{bad.group()!r} at {bad.start()} in {where!r}"
    text.encode("utf-8")  # strict: no surrogate left


# ---------------------------------------------------------------------------- the sources


def test_the_sensor_keeps_every_byte_of_a_non_utf8_path() -> None:
    rec = records.ExecRecord()
    rec.h.type, rec.h.pid, rec.h.comm = records.REC_EXEC, 42, b"\xff\x1b[2J"
    rec.filename = b"/tmp/\xff\xfe/sh"
    args = b"sh\0\xc3\x28\x1b[2J\0literal\\xff\0"
    ct.memmove(ct.addressof(rec) + records.ExecRecord.args.offset, args, len(args))
    rec.argc, rec.args_len, rec.args_captured = 3, len(args), 1
    ev = records.decode(bytes(rec)[: records.ExecRecord.args.offset + len(args)], 0).event
    assert isinstance(ev, ExecEvent)
    assert ev.filename == "/tmp/\\xff\\xfe/sh"  # was "/tmp/\ufffd\ufffd/sh": bytes lost
    assert ev.comm == "\\xff\x1b[2J"  # control characters stay (rules see them): sinks escape
    # a literal backslash that would read as an escape is itself escaped: nothing ambiguous
    assert ev.args == ("sh", "\\xc3(\x1b[2J", "literal\\x5cxff")


def test_proc_links_with_non_utf8_bytes_are_text_without_surrogates(tmp_path: Path) -> None:
    (tmp_path / "7").mkdir()
    os.symlink(b"/tmp/\xff\xfe/sh", os.fsencode(tmp_path / "7" / "exe"))
    (tmp_path / "7" / "cmdline").write_bytes(b"/tmp/\xff\xfe/sh\0-c\0\x1b[2J\0")
    (tmp_path / "7" / "stat").write_bytes(b"7 (s\xffh) S 1 " + b"0 " * 40 + b"\n")
    reader = ProcReader(str(tmp_path))
    assert reader.exe(7) == "/tmp/\\xff\\xfe/sh"  # was "/tmp/\udcff\udcfe/sh"
    assert reader.cmdline(7) == (("/tmp/\\xff\\xfe/sh", "-c", "\x1b[2J"), False)
    stat = reader.stat(7)
    assert stat is not None and stat[0] == "s\\xffh"


# ---------------------------------------------------------------------------- the sinks


def test_the_log_line_is_one_line_of_escaped_text() -> None:
    line = summary(hostile_alert())
    assert_safe(line)
    assert "/tmp/" not in line or "\\xff\\xfe" in line
    assert "\\x1b[2J" in line and "line1\\x0aline2\\x0d" in line
    LogSink().emit(hostile_alert())  # never raises


def strict_sendv(*fields: str) -> None:
    """python-systemd's sendv encodes every field as strict UTF-8."""
    for f in fields:
        f.encode("utf-8")


def test_journald_fields_are_escaped_and_the_next_alert_still_goes_out() -> None:
    sent: list[tuple[str, ...]] = []

    def sendv(*fields: str) -> None:
        strict_sendv(*fields)
        sent.append(fields)

    sink = JournaldSink(sendv=sendv)
    child = make_alert()
    child = replace(child, event=replace(child.event, process=hostile_alert().event.process))
    for a in (hostile_alert(), child, make_alert()):
        sink.emit(a)
    assert sink.flush(5)
    sink.close()
    assert sink.stats()["failed"] == 0 and sink.stats()["sent"] == 3
    fields = dict(f.split("=", 1) for f in sent[0] if not f.startswith("ROXD_MITRE="))
    for key, value in fields.items():
        assert_safe(value), key
    assert fields["ROXD_EXE"] == "/tmp/\\xff\\xfe/sh"
    assert fields["ROXD_PARENT_EXE"] == "/tmp/\\xff\\xfe/parent\\x0a"
    assert fields["ROXD_COMM"] == "sh\\x1b[2J\\xff"
    assert "\\x1b[2J\\x1b]0;pwned\\x07\\xc2\\x9b31m" in fields["ROXD_ARGS"]
    assert len(fields["ROXD_ARGS"]) <= 4000
    for long in ("x" * 9000, "é" * 9000, "\x1b" * 9000):  # `journalctl -o json` nulls > 4096 B
        args = next(f for f in journal_fields(make_alert(args=(long,)))
                    if f.startswith("ROXD_ARGS="))
        assert len(args.encode()) < 4096 and args.endswith("..."), len(args.encode())


def test_journal_fields_of_a_hostile_alert_encode() -> None:
    fields = journal_fields(hostile_alert())
    assert fields
    for f in fields:
        assert "\n" not in f.partition("=")[2]  # one field, one line: nothing forged
        assert f.encode("utf-8").decode("utf-8") == f  # no lone surrogate: sendv takes it


def test_rfc5424_carries_hostile_values_in_sd_params_and_msg() -> None:
    msg = format_message(hostile_alert(), hostname="node-1")  # was UnicodeEncodeError
    text = msg.decode("utf-8")
    assert_safe(text)
    header_end = text.index(" [")
    sd, rest = parse_sd(text[header_end + 1:])
    assert rest.startswith(" \ufeff")
    process = dict(sd["process@32473"])
    assert process["exe"] == "/tmp/\\xff\\xfe/sh"
    assert process["parent_exe"] == "/tmp/\\xff\\xfe/parent\\x0a"
    assert 'sd"quote]bracket\\backslash' in process["args"]  # §6.3.3 round trip
    assert len(process["args"]) <= 1024


def test_syslog_escapes_never_split_at_the_length_limit() -> None:
    for n in range(1000, 1030):
        a = make_alert(args=("x" * n, "\x1b" * 50))
        sd, _ = parse_sd(format_message(a, hostname="h").decode()[
            format_message(a, hostname="h").decode().index(" [") + 1:])
        args = dict(sd["process@32473"])["args"]
        assert len(args) <= 1024
        assert not re.search(r"\\x?[0-9a-f]?\.\.\.$", args), args


def test_slack_escapes_markup_and_stays_within_block_limits() -> None:
    p = slack_payload(hostile_alert())
    body = json.dumps(p, ensure_ascii=False)
    body.encode("utf-8")
    assert "<!channel>" not in body and "<https://evil" not in body
    assert "&lt;!channel&gt;" in body and "&amp;amp;" in body
    mrkdwn = [p["text"]]
    for block in p["blocks"]:
        for part in [block.get("text"), *block.get("fields", []), *block.get("elements", [])]:
            if part:
                assert_safe(part["text"].replace("\n", " "))
                if part["type"] == "mrkdwn":
                    mrkdwn.append(part["text"])
        limit = {"header": 150, "section": 3000, "context": 3000}[block["type"]]
        if block.get("text"):
            assert len(block["text"]["text"]) <= limit
        for f in block.get("fields", []):
            assert len(f["text"]) <= 2000
    assert_safe(p["text"])
    for text in mrkdwn:  # untrusted text only inside code: no bold, links or mentions
        assert re.search(r"[<>]", text) is None, text
        assert text.count("`") % 2 == 0, text


def test_json_sinks_carry_valid_unicode() -> None:
    for payload in (generic_payload(hostile_alert()),
                    pagerduty_payload(hostile_alert(), "key", "node-1")):
        body = json.dumps(payload)
        assert "\\udc" not in body  # a lone surrogate: strict JSON readers reject it
        json.dumps(payload, ensure_ascii=False).encode("utf-8")
    pd = pagerduty_payload(hostile_alert(), "key", "node-1")["payload"]["summary"]
    assert_safe(pd) and len(pd) <= 1024


def test_webhooks_post_a_hostile_alert_and_the_next_one() -> None:
    bodies: list[bytes] = []

    def post(url: str, body: bytes, timeout: float) -> int:
        bodies.append(body)
        return 200

    for kind in ("generic", "slack", "pagerduty"):
        bodies.clear()
        sink = WebhookSink(WebhookSettings(url="http://x", kind=kind, routing_key="k",
                                           min_severity="debug"), post=post)
        sink.emit(hostile_alert())
        sink.emit(make_alert())
        assert sink.flush(5)
        sink.close()
        assert sink.stats()["sent"] == 2 and len(bodies) == 2, kind
        body = bodies[0].decode("utf-8")
        assert "\\udc" not in body, kind


def test_the_store_keeps_the_escaped_alert(tmp_path: Path) -> None:
    store = AlertStore(tmp_path, StoreSettings())
    try:
        store.emit(hostile_alert())
        store.emit(make_alert())
        assert store.flush(5)
        page = store.query(AlertQuery())
        assert len(page.items) == 2
        proc = page.items[1].data["process"]
        assert proc["exe"] == "/tmp/\\xff\\xfe/sh"
        assert proc["ancestors"][0]["exe"] == "/tmp/\\xff\\xfe/parent\n"  # JSON keeps \n
        json.dumps(page.items[1].data, ensure_ascii=False).encode("utf-8")
    finally:
        store.close()


# ---------------------------------------------------------------------------- the representation


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=64) | st.lists(st.sampled_from(
    [b"\\", b"x", b"f", b"F", b"0", b"\xff", b"\xc3", b"\xa9", b"\x1b", b"\n", b"a"]),
    max_size=24).map(b"".join))
def test_from_bytes_is_lossless_and_printable_keeps_it_so(raw: bytes) -> None:
    text = from_bytes(raw)
    text.encode("utf-8")  # valid Unicode, always
    assert to_bytes(text) == raw
    shown = printable(text)
    assert_safe(shown)
    assert to_bytes(shown) == raw  # what a text sink shows still maps back to the bytes


def test_the_representation_by_example() -> None:
    assert from_bytes(b"/usr/bin/caf\xc3\xa9") == "/usr/bin/café"
    assert from_bytes(b"/tmp/\xff") == "/tmp/\\xff"
    assert from_bytes(b"/tmp/\\xff") == "/tmp/\\x5cxff"  # the literal text, unambiguous
    assert from_bytes(b"sed s/a\\.b/") == "sed s/a\\.b/"  # other backslashes as typed
    assert printable("a\nb\x1b[2J\x9b\u202e\udcff") == (
        "a\\x0ab\\x1b[2J\\xc2\\x9b\\xe2\\x80\\xae\\xff")
    assert printable("x" * 10 + "\x1b", 13) == "x" * 10 + "..."  # an escape is never cut
    assert json_dumps({"exe": "/tmp/\udcff"}) == '{"exe": "/tmp/\\\\xff"}'
    assert json_dumps({"s": "\U0001f600"}) == '{"s": "\\ud83d\\ude00"}'  # pairs stay
