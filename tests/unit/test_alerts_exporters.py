"""Exporters without a server: node identity, the one record encoding (hostile bytes never
break a line), the JSON lines file with size rotation, the [alerts] keys of the exporters and
their wiring in AlertDelivery."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roxd.alerts.delivery import AlertDelivery
from roxd.alerts.jsonfile import JsonFileSink
from roxd.alerts.node import NodeIdentity
from roxd.alerts.record import encode_record, export_record
from roxd.alerts.settings import (
    AlertsSettings,
    JournaldSettings,
    JsonFileSettings,
    NatsSettings,
    NodeSettings,
    StoreSettings,
    parse_alerts_settings,
)
from roxd.errors import ConfigError
from tests.conftest import REPO, wait_until
from tests.system.alerts_factory import make_alert

pytestmark = pytest.mark.unit

NODE = NodeIdentity(hostname="node-1", machine_id="ab" * 16, kubernetes_node="")


# ---------------------------------------------------------------------------- node identity


def test_node_identity_reads_machine_id_and_kubernetes_node(tmp_path: Path) -> None:
    mid = tmp_path / "machine-id"
    mid.write_text("0123456789abcdef0123456789abcdef\n")
    node = NodeIdentity.detect(NodeSettings(hostname="h1"), env={"NODE_NAME": "worker-7"},
                               machine_id_path=mid)
    assert node.to_dict() == {"hostname": "h1", "machine_id": "0123456789abcdef0123456789abcdef",
                              "kubernetes_node": "worker-7"}
    assert node.name == node.token == "worker-7"
    configured = NodeIdentity.detect(NodeSettings(kubernetes_node="from-config"),
                                     env={"NODE_NAME": "worker-7"}, machine_id_path=mid)
    assert configured.kubernetes_node == "from-config"


def test_node_identity_without_machine_id_or_kubernetes(tmp_path: Path) -> None:
    node = NodeIdentity.detect(NodeSettings(hostname="db-1.prod.example.org"), env={},
                               machine_id_path=tmp_path / "absent")
    assert node.machine_id == "" and node.kubernetes_node == ""
    assert node.token == "db-1_prod_example_org"  # one NATS subject token: no dots
    assert NodeIdentity(hostname="a b*>").token == "a_b__"


# ---------------------------------------------------------------------------- the record

HOSTILE = ("line1\nline2", "cr\rhere", "nul\x00", "esc\x1b[31m", "nel\x85", "ls\u2028ps\u2029",
           "bad utf8 \udcff\udcfe", "quote\"back\\slash", "\ufffd replaced", "emoji \U0001f600")


def test_hostile_arguments_stay_on_one_line() -> None:
    alert = make_alert(args=("sh", "-c", *HOSTILE))
    line = encode_record(export_record(alert, NODE))
    assert b"\n" not in line and b"\r" not in line
    text = line.decode("utf-8")  # valid UTF-8
    assert len(text.splitlines()) == 1  # no separator Python's splitlines() honours either
    back = json.loads(text)
    assert back["node"] == NODE.to_dict()
    assert back["type"] == "alert" and back["kind"] == "match" and back["id"] == alert.id
    args = back["process"]["args"]
    assert args[2:6] == ["line1\nline2", "cr\rhere", "nul\x00", "esc\x1b[31m"]
    assert args[6:8] == ["nel\x85", "ls\u2028ps\u2029"]
    assert args[8] == "bad utf8 ??"  # lone surrogates are not UTF-8: replaced
    assert args[9:] == list(HOSTILE[7:])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(), min_size=1, max_size=5))
def test_any_text_is_one_json_line(args: list[str]) -> None:
    line = encode_record(export_record(make_alert(args=tuple(args)), NODE))
    text = line.decode("utf-8")
    assert len(text.splitlines()) == 1
    assert len(json.loads(text)["process"]["args"]) == len(args)


# ---------------------------------------------------------------------------- JSON lines file


def lines_of(*paths: Path) -> list[dict[str, object]]:
    out = []
    for p in paths:
        if p.exists():
            out += [json.loads(x) for x in p.read_bytes().split(b"\n") if x]
    return out


def test_file_gets_one_line_per_alert_with_mode_0640(tmp_path: Path) -> None:
    path = tmp_path / "log" / "alerts.jsonl"
    sink = JsonFileSink(JsonFileSettings(path=str(path)), NODE)
    alerts = [make_alert(args=("x", *HOSTILE)) for _ in range(3)]
    try:
        for a in alerts:
            sink.emit(a)
        assert sink.flush(10)
    finally:
        sink.close(5)
    assert [r["id"] for r in lines_of(path)] == [a.id for a in alerts]
    assert path.stat().st_mode & 0o777 == 0o640
    assert sink.stats()["sent"] == 3 and sink.stats()["failed"] == 0


def test_file_rotates_by_size_and_keeps_n(tmp_path: Path) -> None:
    path = tmp_path / "alerts.jsonl"
    sink = JsonFileSink(JsonFileSettings(path=str(path), max_bytes=8192, keep=2), NODE)
    alerts = [make_alert(args=("x", str(i))) for i in range(60)]
    try:
        for a in alerts:
            sink.emit(a)
        assert sink.flush(10)
    finally:
        sink.close(5)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["alerts.jsonl", "alerts.jsonl.1", "alerts.jsonl.2"]
    for p in tmp_path.iterdir():
        assert p.stat().st_size <= 8192
    kept = lines_of(path.with_name("alerts.jsonl.2"), path.with_name("alerts.jsonl.1"), path)
    ids = [a.id for a in alerts]
    # the newest alerts, in order, with nothing missing between the oldest kept and the last
    assert [r["id"] for r in kept] == ids[len(ids) - len(kept):]
    assert sink.stats()["rotations"] >= 3 and sink.stats()["sent"] == 60


def test_file_removed_by_someone_else_is_recreated(tmp_path: Path) -> None:
    path = tmp_path / "alerts.jsonl"
    sink = JsonFileSink(JsonFileSettings(path=str(path)), NODE)
    try:
        sink.emit(make_alert())
        assert sink.flush(10)
        path.rename(tmp_path / "moved-by-logrotate")
        b = make_alert()
        sink.emit(b)
        assert sink.flush(10)
    finally:
        sink.close(5)
    assert [r["id"] for r in lines_of(path)] == [b.id]


def test_unwritable_file_counts_failures_and_logs_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "alerts.jsonl"
    sink = JsonFileSink(JsonFileSettings(path=str(path)), NODE)
    try:
        path.unlink()
        path.mkdir()  # the path is now a directory: every open fails
        with caplog.at_level(logging.WARNING, logger="roxd.alerts.file"):
            for _ in range(3):
                sink.emit(make_alert())
            wait_until(lambda: sink.stats()["failed"] == 3, 10, message="3 failures")
    finally:
        sink.close(5)
    assert len([r for r in caplog.records if r.name == "roxd.alerts.file"]) == 1


# ---------------------------------------------------------------------------- settings


def test_exporter_settings_parse() -> None:
    s = parse_alerts_settings({
        "node": {"kubernetes_node": "worker-1"},
        "file": [{"path": "/var/log/roxd/alerts.jsonl", "max_bytes": 1048576, "keep": 3}],
        "nats": [{"servers": ["nats://10.0.0.1:4222", "tls://10.0.0.2:4222"],
                  "subject_prefix": "sec.roxd", "stream": "SEC"}],
    }, "t.toml")
    assert s.node.kubernetes_node == "worker-1"
    assert s.file == (JsonFileSettings("/var/log/roxd/alerts.jsonl", 1048576, 3),)
    assert s.nats[0].servers == ("nats://10.0.0.1:4222", "tls://10.0.0.2:4222")
    assert s.nats[0].queue_name == "sec.roxd-SEC"


@pytest.mark.parametrize(("raw", "needle"), [
    ({"file": [{"path": "relative.jsonl"}]}, "alerts.file[0].path must be an absolute path"),
    ({"file": [{"path": "/a", "max_bytes": 10}]}, "max_bytes must be at least 4096"),
    ({"file": [{"path": "/a"}, {"path": "/a"}]}, "same path"),
    ({"file": [{"path": "/a", "keep": -1}]}, "must not be negative"),
    ({"nats": [{"servers": ["http://x:4222"]}]}, "not a nats:// or tls:// URL"),
    ({"nats": [{"servers": []}]}, "at least one server"),
    ({"nats": [{"subject_prefix": "a.*"}]}, "subject_prefix"),
    ({"nats": [{"stream": "A.B"}]}, "alerts.nats[0].stream"),
    ({"nats": [{"cert": "/c"}]}, "cert and key go together"),
    ({"nats": [{"user": "u", "token": "t"}]}, "not both"),
    ({"nats": [{}, {}]}, "share a queue"),
    ({"nats": [{"servers": "nats://x"}]}, "must be a list of strings"),
    ({"node": {"name": "x"}}, "unknown key alerts.node.name"),
])
def test_bad_exporter_settings_are_one_clear_error(raw: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_alerts_settings(raw, "t.toml")
    assert needle in str(err.value)


# ---------------------------------------------------------------------------- wiring


def quiet(**kw: object) -> AlertsSettings:
    return AlertsSettings(journald=JournaldSettings(enabled=False),
                          store=StoreSettings(enabled=False), **kw)  # type: ignore[arg-type]


def test_delivery_builds_the_file_exporter_behind_noise_control(tmp_path: Path) -> None:
    path = tmp_path / "alerts.jsonl"
    d = AlertDelivery.from_settings(quiet(file=(JsonFileSettings(path=str(path)),)),
                                    tmp_path / "state")
    a = make_alert()
    try:
        d.emit(a)
        d.emit(a)  # identical: folded by noise control, not written twice
        wait_until(lambda: d.stats().get("file0.sent") == 1, 10, message="file0.sent")
    finally:
        d.close(5)  # closes the fold window: its summary is the second line
    [record, summary] = lines_of(path)
    assert record["id"] == a.id and set(record["node"]) == {"hostname", "machine_id",
                                                            "kubernetes_node"}
    assert (summary["kind"], summary["count"]) == ("folded", 1)


def test_without_nats_py_the_nats_exporter_is_left_out_with_one_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "nats", None)  # import nats -> ImportError
    with caplog.at_level(logging.ERROR, logger="roxd.alerts"):
        d = AlertDelivery.from_settings(quiet(nats=(NatsSettings(),)), tmp_path / "state")
    d.close(1)
    assert not any(name.startswith("nats") for name in d.sinks)
    [line] = [r.getMessage() for r in caplog.records]
    assert "nats.roxd-ROXD_ALERTS disabled" in line and "nats-py" in line


@pytest.mark.parametrize(("name", "cls"), [("file", JsonFileSettings), ("nats", NatsSettings)])
def test_shipped_config_examples_show_the_defaults(name: str, cls: type) -> None:
    text = (REPO / "config" / "roxd.toml").read_text()
    block = text.split(f"# [[alerts.{name}]]")[1].split("\n\n")[0]
    raw = tomllib.loads("\n".join(line[2:] for line in block.splitlines()[1:]))
    [parsed] = getattr(parse_alerts_settings({name: [raw]}, "roxd.toml"), name)
    required = {"path": raw["path"]} if name == "file" else {}
    assert parsed == cls(**required)
    assert set(raw) == {f.name for f in dataclasses.fields(cls)}


def test_generic_webhooks_carry_the_node_like_every_exporter() -> None:
    from roxd.alerts.settings import WebhookSettings
    from roxd.alerts.webhooks import WebhookSink

    node = NodeIdentity(hostname="db-1.example.org", machine_id="ab" * 16,
                        kubernetes_node="worker-3")
    sink = WebhookSink(WebhookSettings(url="http://127.0.0.1:9/x"), node=node,
                       post=lambda *_a, **_k: 200)
    try:
        payload = sink.payload(make_alert())
    finally:
        sink.close(0.1)
    assert payload["node"] == {"hostname": "db-1.example.org", "machine_id": "ab" * 16,
                               "kubernetes_node": "worker-3"}
    assert set(payload) >= {"type", "kind", "summary", "node", "id", "rule", "event"}
