"""Every class of bad input gives one clear RuleError naming the file, the line and the rule."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from roxd.errors import RuleError
from roxd.rules import load_rule_set, validate_paths

pytestmark = pytest.mark.unit


def good_rule(id: str = "t.bad", **replace: str) -> str:
    fields = {
        "id": f'"{id}"',
        "name": '"n"',
        "description": '"d"',
        "phase": '"foothold"',
        "severity": '"warning"',
        "mitre": '["T1059"]',
        "event": '"exec"',
        "actions": '["alert"]',
    }
    fields.update(replace)
    lines = ["[[rule]]"] + [f"{k} = {v}" for k, v in fields.items() if v != "DROP"]
    return "\n".join(lines) + "\n"


PREFIX = '# a comment\n\n[[list]]\nname = "shells"\nitems = ["sh"]\n\n'

# (case id, file text, text on the expected line, expected rule id, words in the message)
CASES = [
    ("toml-syntax", PREFIX + "[[rule]]\nid = \n", "id = ", None, "TOML"),
    ("toml-duplicate-key", PREFIX + good_rule() + 'id = "again"\n', 'id = "again"', None, "TOML"),
    (
        "unknown-key",
        PREFIX + good_rule(colour='"red"') + "[rule.when]\n",
        "colour",
        "t.bad",
        "unknown key 'colour'",
    ),
    (
        "wrong-type",
        PREFIX + good_rule(severity="3") + "[rule.when]\n",
        "severity = 3",
        "t.bad",
        "severity",
    ),
    (
        "enabled-not-bool",
        PREFIX + good_rule(enabled='"yes"') + "[rule.when]\n",
        "enabled",
        "t.bad",
        "true or false",
    ),
    (
        "unknown-phase",
        PREFIX + good_rule(phase='"recon"') + "[rule.when]\n",
        "phase",
        "t.bad",
        "unknown phase 'recon'",
    ),
    (
        "unknown-severity",
        PREFIX + good_rule(severity='"loud"') + "[rule.when]\n",
        "severity",
        "t.bad",
        "unknown severity",
    ),
    (
        "unknown-action",
        PREFIX + good_rule(actions='["alert", "nuke"]') + "[rule.when]\n",
        "actions",
        "t.bad",
        "unknown action 'nuke'",
    ),
    (
        "bad-mitre",
        PREFIX + good_rule(mitre='["execution"]') + "[rule.when]\n",
        "mitre",
        "t.bad",
        "MITRE",
    ),
    (
        "no-event",
        PREFIX + good_rule(event="DROP") + "[rule.when]\n",
        'id = "t.bad"',
        "t.bad",
        "missing 'event'",
    ),
    (
        "unknown-event",
        PREFIX + good_rule(event='"open"') + "[rule.when]\n",
        "event",
        "t.bad",
        "unknown event type 'open'",
    ),
    ("no-when", PREFIX + good_rule(), 'id = "t.bad"', "t.bad", "missing 'when'"),
    (
        "regex",
        PREFIX + good_rule() + '[rule.when]\ncmdline = { regex = "(" }\n',
        "[rule.when]",
        "t.bad",
        "does not compile",
    ),
    (
        "unknown-list",
        PREFIX + good_rule() + '[rule.when]\nexe_basename = "@shellz"\n',
        "[rule.when]",
        "t.bad",
        "unknown list 'shellz'",
    ),
    (
        "unknown-macro",
        PREFIX + good_rule() + '[rule.when]\nmacro = "nope"\n',
        "[rule.when]",
        "t.bad",
        "unknown macro 'nope'",
    ),
    (
        "field-not-for-event",
        PREFIX + good_rule() + "[rule.when]\ndport = 22\n",
        "[rule.when]",
        "t.bad",
        "'dport' is not available on exec events",
    ),
    (
        "unknown-field",
        PREFIX + good_rule() + '[rule.when]\nexe_name = "sh"\n',
        "[rule.when]",
        "t.bad",
        "unknown field 'exe_name'",
    ),
    (
        "unknown-operator",
        PREFIX + good_rule() + '[rule.when]\nexe = { like = "sh" }\n',
        "[rule.when]",
        "t.bad",
        "unknown operator 'like'",
    ),
    (
        "operator-for-kind",
        PREFIX + good_rule(event='"connect"') + "[rule.when]\n" "dport = { glob = 22 }\n",
        "[rule.when]",
        "t.bad",
        "does not apply to 'dport'",
    ),
    (
        "value-type",
        PREFIX + good_rule(event='"connect"') + '[rule.when]\ndport = "22"\n',
        "[rule.when]",
        "t.bad",
        "compares integers",
    ),
    (
        "bad-cidr",
        PREFIX + good_rule(event='"connect"') + "[rule.when]\n"
        'daddr = { cidr = "10.0.0.0/33" }\n',
        "[rule.when]",
        "t.bad",
        "not a network",
    ),
    (
        "float-value",
        PREFIX + good_rule() + "[rule.when]\nuid = 1.5\n",
        "uid = 1.5",
        "t.bad",
        "not a float",
    ),
    (
        "bad-id",
        PREFIX + good_rule(id="Not An Id") + "[rule.when]\n",
        'id = "Not An Id"',
        "Not An Id",
        "'id'",
    ),
    (
        "exception-field-for-event",
        PREFIX + good_rule() + "[rule.when]\n[[rule.exception]]\n"
        'name = "e"\nfields = ["dport"]\nvalues = [[22]]\n',
        "[[rule.exception]]",
        "t.bad",
        "not available on exec events",
    ),
    (
        "exception-width",
        PREFIX + good_rule() + "[rule.when]\n[[rule.exception]]\n"
        'name = "e"\nfields = ["image", "exe"]\nvalues = [["nginx"]]\n',
        "values = [[",
        "t.bad",
        "array of 2 value(s)",
    ),
    (
        "unknown-section",
        PREFIX + '[[rules]]\nid = "x"\n',
        "[[rules]]",
        None,
        "unknown section 'rules'",
    ),
    ("section-not-array", PREFIX + '[rule]\nid = "x"\n', "[rule]", None, "array of tables"),
    (
        "list-append-unknown",
        PREFIX + '[[list]]\nname = "nope"\nappend = true\nitems = ["a"]\n',
        'name = "nope"',
        None,
        "no such list",
    ),
    (
        "list-redefined",
        PREFIX + '[[list]]\nname  = "shells"\nitems = ["bash"]\n',
        'name  = "shells"',
        None,
        "already defined",
    ),
    (
        "list-cycle",
        '[[list]]\nname = "a"\nitems = ["@b"]\n[[list]]\nname = "b"\n' 'items = ["@a"]\n',
        'items = ["@b"]',
        None,
        "cycle",
    ),
    (
        "macro-cycle",
        '[[macro]]\nname = "a"\ncondition = { macro = "b" }\n[[macro]]\n'
        'name = "b"\ncondition = { macro = "a" }\n',
        'condition = { macro = "b" }',
        None,
        "macro cycle",
    ),
    (
        "override-unknown",
        PREFIX + '[[override]]\nid = "t.ghost"\nenabled = false\n',
        'id = "t.ghost"',
        "t.ghost",
        "unknown rule id",
    ),
    (
        "override-empty",
        PREFIX + good_rule() + '[rule.when]\n[[override]]\nid  = "t.bad"\n',
        'id  = "t.bad"',
        "t.bad",
        "must set",
    ),
    (
        "exception-unknown-rule",
        PREFIX + '[[exception]]\nrule = "t.ghost"\nname = "e"\n' 'values = [["x"]]\n',
        'rule = "t.ghost"',
        "t.ghost",
        "unknown rule id",
    ),
    (
        "exception-unknown-name",
        PREFIX + good_rule() + "[rule.when]\n[[exception]]\n"
        'rule = "t.bad"\nname = "nope"\nvalues = [["x"]]\n',
        'name = "nope"',
        "t.bad",
        "no exception named 'nope'",
    ),
]


def expected_line(text: str, marker: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), 1) if marker in line)


@pytest.mark.parametrize(
    ("text", "marker", "rule_id", "words"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_bad_input_gives_one_clear_rule_error(
    tmp_path: Path, text: str, marker: str, rule_id: str | None, words: str
) -> None:
    path = tmp_path / "user.toml"
    path.write_text(text)
    with pytest.raises(RuleError) as caught:
        load_rule_set([path])
    error = caught.value
    assert error.file == str(path)
    assert error.line == expected_line(text, marker), str(error)
    assert error.rule_id == rule_id
    assert words in error.message
    assert str(error).startswith(f"{path}:{error.line}:")
    assert validate_paths([path]) and validate_paths([path])[0] == error


def test_duplicate_rule_id_across_files_names_both_places(tmp_path: Path) -> None:
    first, second = tmp_path / "10-pack.toml", tmp_path / "20-user.toml"
    body = good_rule(id="t.dup") + "[rule.when]\n"
    first.write_text(body)
    second.write_text("# mine\n" + body)
    with pytest.raises(RuleError) as caught:
        load_rule_set([tmp_path])
    error = caught.value
    assert (error.file, error.line, error.rule_id) == (str(second), 3, "t.dup")
    assert "duplicate rule id" in error.message and f"{first}:2" in error.message


def test_missing_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RuleError, match="no such rules file"):
        load_rule_set([tmp_path / "absent.toml"])


def test_not_utf8_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'# caf\xe9\n[[list]]\nname = "a"\nitems = []\n')
    with pytest.raises(RuleError, match="UTF-8"):
        load_rule_set([path])


def test_validate_collects_every_error_of_every_file(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text(
        good_rule(id="t.one", phase='"nope"')
        + "[rule.when]\n"
        + good_rule(id="t.two", severity='"loud"')
        + "[rule.when]\n"
    )
    (tmp_path / "b.toml").write_text("[[rule]\n")
    errors = validate_paths([tmp_path])
    assert [(Path(e.file).name, e.rule_id) for e in errors] == [
        ("a.toml", "t.one"),
        ("a.toml", "t.two"),
        ("b.toml", None),
    ]
    assert errors[1].line == 16  # the `severity` line of the second rule


def test_load_is_all_or_nothing(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text(good_rule(id="t.fine") + "[rule.when]\n")
    (tmp_path / "b.toml").write_text(good_rule(id="t.broken") + '[rule.when]\nexe = "@nope"\n')
    with pytest.raises(RuleError) as caught:
        load_rule_set([tmp_path])
    assert caught.value.rule_id == "t.broken"
    assert validate_paths([tmp_path / "a.toml"]) == []


def test_disabled_rules_are_validated_too(tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    path.write_text(good_rule(enabled="false") + '[rule.when]\nexe = { regex = "[" }\n')
    assert [e.rule_id for e in validate_paths([path])] == ["t.bad"]


def test_unused_broken_macro_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text('[[macro]]\nname = "m"\ncondition = { exe = "@missing" }\n')
    (error,) = validate_paths([path])
    assert error.line == 3 and "unknown list 'missing'" in error.message
    assert "macro 'm'" in str(error)


def test_shipped_pack_validates() -> None:
    assert validate_paths([Path(__file__).resolve().parents[2] / "rules"]) == []


def test_error_message_is_one_line(tmp_path: Path) -> None:
    text = textwrap.dedent(PREFIX + good_rule() + "[rule.when]\ndport = 22\n")
    path = tmp_path / "x.toml"
    path.write_text(text)
    (error,) = validate_paths([path])
    assert "\n" not in str(error)


def test_deep_nesting_is_an_error_not_a_recursion_error(tmp_path: Path) -> None:
    path = tmp_path / "deep.toml"
    chain = "".join(
        f'[[macro]]\nname = "m{i}"\ncondition = {{ macro = "m{i + 1}" }}\n' for i in range(40)
    )
    path.write_text(chain + '[[macro]]\nname = "m40"\ncondition = { exe = "x" }\n')
    with pytest.raises(RuleError, match="nest more than"):
        load_rule_set([path])
    path.write_text('[rule]\n' + "a = " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(RuleError):
        load_rule_set([path])
