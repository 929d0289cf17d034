"""One definition per word: event kinds, phases, severities and access kinds live in
roxd.vocabulary; the engine's enums, roxctl, the rule schema, the sensor and the OpenAPI
document all use (or are checked against) those tuples."""

from __future__ import annotations

import io
import itertools
import re
from pathlib import Path
from typing import Any

import pytest

from roxd import vocabulary
from roxd.api import schemas

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]


def test_model_enums_are_the_vocabulary() -> None:
    from roxd.model import FILE_ACCESS_KINDS, Phase, Severity

    assert tuple(p.value for p in Phase) == vocabulary.PHASES
    assert tuple(s.value for s in Severity) == vocabulary.SEVERITIES
    assert [s.code for s in Severity] == list(range(8))  # RFC 5424 codes
    assert Severity.WARNING.code == 4
    assert FILE_ACCESS_KINDS == vocabulary.FILE_ACCESS_KINDS


def test_an_enum_that_drifts_from_the_vocabulary_fails_loudly() -> None:
    from enum import Enum

    from roxd.model import _check_vocabulary

    class Shuffled(str, Enum):
        A = "persistence"
        B = "foothold"

    with pytest.raises(ImportError, match="Shuffled"):
        _check_vocabulary(Shuffled, vocabulary.PHASES)


def test_rule_event_kinds_are_the_event_kinds_without_exit() -> None:
    assert set(vocabulary.RULE_EVENT_KINDS) == set(vocabulary.EVENT_KINDS) - {"exit"}
    assert len(set(vocabulary.EVENT_KINDS)) == len(vocabulary.EVENT_KINDS) == 6


def test_every_sensor_event_type_has_a_kind_of_the_vocabulary() -> None:
    from roxd.model import (
        ConnectEvent,
        ExecEvent,
        ExitEvent,
        FileEvent,
        SeccompEvent,
        SyscallEvent,
        event_kind,
    )

    events = [
        ExecEvent(time_ns=1, pid=2, ppid=1, uid=0, gid=0, cgroup_id=1, comm="sh",
                  filename="/bin/sh", args=("sh",), args_truncated=False),
        ExitEvent(time_ns=1, pid=2, cgroup_id=1, comm="sh", exit_code=0),
        ConnectEvent(time_ns=1, pid=2, tid=2, uid=0, cgroup_id=1, comm="nc", family="ipv4",
                     daddr="10.0.0.1", dport=80, errno=0),
        SyscallEvent(time_ns=1, pid=2, uid=0, cgroup_id=1, comm="x", syscall="ptrace"),
        FileEvent(time_ns=1, pid=2, uid=0, cgroup_id=1, comm="cat", operation="open",
                  path="/etc/shadow", access=("read",)),
        SeccompEvent(time_ns=1, pid=2, uid=0, cgroup_id=1, comm="x", syscall="mount",
                     verdict="killed"),
    ]
    assert tuple(event_kind(e) for e in events) == vocabulary.EVENT_KINDS


def test_engine_modules_import_the_vocabulary() -> None:
    from roxd import ctl
    from roxd.api import alerts
    from roxd.rules import fields
    from roxd.sensor import records

    assert ctl.PHASES is vocabulary.PHASES
    assert ctl.SEVERITIES is vocabulary.SEVERITIES
    assert ctl.EVENT_KINDS is vocabulary.EVENT_KINDS
    assert alerts.SEVERITIES is vocabulary.SEVERITIES
    assert fields.EVENT_TYPES is vocabulary.RULE_EVENT_KINDS
    from roxd.rules import schema
    assert schema.EVENT_TYPES is vocabulary.RULE_EVENT_KINDS  # what `event = ...` accepts
    assert records.ACCESS_NAMES is vocabulary.FILE_ACCESS_KINDS


def _walk(node: Any) -> Any:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _parameters(name: str) -> list[tuple[str, dict[str, Any]]]:
    return [(op.operation_id, schemas.resolve(p.schema)) for op in schemas.operations()
            for p in op.params if p.name == name]


def test_openapi_phase_and_severity_enums_are_the_vocabulary() -> None:
    phases, severities = _parameters("phase"), _parameters("severity")
    assert {op for op, _ in phases} == {"listAlerts", "streamAlerts", "listRules"}
    assert {op for op, _ in severities} == {"listAlerts", "streamAlerts"}
    for op, schema in phases:
        assert tuple(schema["enum"]) == vocabulary.PHASES, op
    for op, schema in severities:
        assert tuple(schema["enum"]) == vocabulary.SEVERITIES, op
    # no other enum anywhere in the document spells (part of) one of these vocabularies
    for node in _walk(schemas.document()):
        enum = set(node.get("enum", ()))
        for words in (vocabulary.PHASES, vocabulary.SEVERITIES, vocabulary.EVENT_KINDS):
            assert not enum & set(words) or enum == set(words), node


def _pattern_words(pattern: str) -> set[str]:
    """The alternatives of a `^(a|b|c)(,(a|b|c))*$` list pattern."""
    match = re.fullmatch(r"\^\(([\w|]+)\)\(,\(([\w|]+)\)\)\*\$", pattern)
    assert match and match.group(1) == match.group(2), pattern
    return set(match.group(1).split("|"))


def test_openapi_event_type_filter_is_the_event_kinds() -> None:
    (op, schema), = _parameters("type")
    assert op == "streamEvents"
    assert _pattern_words(schema["pattern"]) == set(vocabulary.EVENT_KINDS)
    param = next(p for o in schemas.operations() if o.operation_id == "streamEvents"
                 for p in o.params if p.name == "type")
    for kind in vocabulary.EVENT_KINDS:
        assert schemas.coerce_param(param, kind) == kind
    every = ",".join(vocabulary.EVENT_KINDS)
    assert schemas.coerce_param(param, every) == every
    with pytest.raises(Exception, match="400"):
        schemas.coerce_param(param, "exec,alert")


class RecordingApi:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def stream(self, path: str, params: dict[str, Any]) -> Any:
        self.calls.append((path, params))
        yield {"type": "file", "time": "2026-01-01T00:00:00Z"}


@pytest.mark.parametrize("kind", vocabulary.EVENT_KINDS)
def test_roxctl_events_accepts_every_event_kind(kind: str) -> None:
    from roxd.ctl import Out, build_parser, cmd_events

    args = build_parser().parse_args(["events", "--type", kind])
    assert args.type == [kind] and args.func is cmd_events
    api = RecordingApi()
    assert cmd_events(api, Out(True, io.StringIO()), args) == 0  # type: ignore[arg-type]
    assert api.calls[0][0] == "/v1/events/stream" and api.calls[0][1]["type"] == kind


def test_roxctl_events_repeats_type_and_refuses_unknown_kinds(
        capsys: pytest.CaptureFixture[str]) -> None:
    from roxd.ctl import build_parser

    parser = build_parser()
    args = parser.parse_args(["events", "--type", "file", "--type", "syscall"])
    assert args.type == ["file", "syscall"]
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["events", "--type", "alert"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_roxctl_phase_and_severity_choices_are_the_vocabulary() -> None:
    from roxd.ctl import build_parser

    parser = build_parser()
    for phase in vocabulary.PHASES:
        assert parser.parse_args(["alerts", "list", "--phase", phase]).phase == phase
        assert parser.parse_args(["rules", "list", "--phase", phase]).phase == phase
    for severity in vocabulary.SEVERITIES:
        assert parser.parse_args(["alerts", "list", "--severity", severity]).severity == severity
    from roxd.ctl import SEVERITY_COLORS
    assert tuple(SEVERITY_COLORS) == vocabulary.SEVERITIES


def _literal_copy(words: tuple[str, ...]) -> re.Pattern[str]:
    """A vocabulary's first four words written out as string literals, in order (a subset that
    means something else, like the file operations or the event kinds with a result, is not a
    copy)."""
    return re.compile(r"\s*,\s*".join(rf"['\"]{re.escape(w)}['\"]" for w in words[:4]))


def test_no_second_copy_of_a_vocabulary_in_the_code() -> None:
    vocabularies = {
        "PHASES": vocabulary.PHASES,
        "SEVERITIES": vocabulary.SEVERITIES,
        "EVENT_KINDS": vocabulary.EVENT_KINDS,
        "RULE_EVENT_KINDS": vocabulary.RULE_EVENT_KINDS,
        "FILE_ACCESS_KINDS": vocabulary.FILE_ACCESS_KINDS,
    }
    patterns = {name: _literal_copy(words) for name, words in vocabularies.items()}
    copies = []
    for path, (name, pattern) in itertools.product(sorted((REPO / "roxd").rglob("*.py")),
                                                   patterns.items()):
        if path.name == "vocabulary.py":
            continue
        if pattern.search(path.read_text()):
            copies.append(f"{path.relative_to(REPO)}: {name}")
    assert copies == []
