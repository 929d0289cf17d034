"""Whatever a rules file holds, the loader answers with a RuleSet or a RuleError, never with
another exception (a traceback would reach the operator instead of one clear line)."""

from __future__ import annotations

from pathlib import Path

import pytest
import toml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from roxd.errors import RuleError
from roxd.model import ConnectEvent, EnrichedEvent, ExecEvent, Process
from roxd.rules import RuleSet, load_rule_set, validate_paths

pytestmark = pytest.mark.unit

# Generating nested documents costs Hypothesis far more than loading them: keep the structures
# small and the example counts moderate so the unit suite stays fast.
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Words the loader knows, so random documents reach deep into the schema, not just the top.
WORDS = [
    "list",
    "macro",
    "rule",
    "exception",
    "override",
    "name",
    "items",
    "append",
    "replace",
    "condition",
    "id",
    "description",
    "phase",
    "severity",
    "mitre",
    "event",
    "enabled",
    "monitor",
    "actions",
    "when",
    "scope",
    "all",
    "any",
    "not",
    "exe",
    "exe_basename",
    "args",
    "params",
    "cmdline",
    "parent_exe",
    "ancestor_basename",
    "uid",
    "daddr",
    "dport",
    "image",
    "label.app",
    "host",
    "containers",
    "labels",
    "runtime",
    "fields",
    "comps",
    "values",
    "in",
    "not_in",
    "equals",
    "glob",
    "prefix",
    "regex",
    "cidr",
    "not_cidr",
    "contains",
    "foothold",
    "warning",
    "exec",
    "connect",
    "syscall",
    "alert",
    "kill",
    "T1059",
    "@shells",
    "@@x",
    "*",
    "(",
    "10.0.0.0/8",
    "::ffff:1.2.3.4",
    "rule.x",
    "sh",
]
keys = st.one_of(st.sampled_from(WORDS), st.text(min_size=1, max_size=8))
scalars = st.one_of(
    st.sampled_from(WORDS),
    st.text(max_size=12),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.booleans(),
    st.floats(allow_nan=False),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(keys, inner, max_size=3)),
    max_leaves=8,
)
documents = st.dictionaries(
    st.one_of(st.sampled_from(["list", "macro", "rule", "exception", "override"]), keys),
    st.one_of(st.lists(st.dictionaries(keys, values, max_size=6), max_size=2), values),
    max_size=3,
)

FIELD_NAMES = st.sampled_from(
    [
        "exe",
        "exe_basename",
        "args",
        "cmdline",
        "uid",
        "daddr",
        "dport",
        "image",
        "label.app",
        "container",
        "all",
        "any",
        "not",
        "macro",
        "bogus",
    ]
)
OPERATORS = st.sampled_from(["in", "not_in", "equals", "glob", "regex", "cidr", "prefix", "x"])
operands = st.one_of(scalars, st.lists(scalars, max_size=3))
conditions = st.dictionaries(
    FIELD_NAMES,
    st.one_of(operands, st.dictionaries(OPERATORS, operands, max_size=2)),
    min_size=1,  # the toml package drops an empty table, and `when` is mandatory
    max_size=3,
)

RULE_KEYS = {
    # Valid headers (the other tests break those), so examples reach conditions and scope.
    "id": st.sampled_from(["t.a", "t.b"]),
    "name": st.just("n"),
    "description": st.just("d"),
    "phase": st.just("foothold"),
    "severity": st.just("warning"),
    "mitre": st.just(["T1059"]),
    "event": st.sampled_from(["exec", "connect", "syscall", "file"]),
    "actions": st.sampled_from([["alert"], ["alert", "kill"], ["nuke"], []]),
    "when": conditions,
    "scope": st.dictionaries(
        st.sampled_from(["host", "containers", "image", "name", "labels", "runtime", "x"]),
        operands,
        max_size=3,
    ),
    "exception": st.lists(
        st.fixed_dictionaries(
            {"name": st.sampled_from(["e", "f"]), "fields": st.lists(FIELD_NAMES, max_size=2)},
            optional={"values": st.lists(st.lists(operands, max_size=2), max_size=2)},
        ),
        max_size=2,
    ),
}
REQUIRED = ("id", "name", "description", "phase", "severity", "mitre", "event", "when")
near_valid_rules = st.fixed_dictionaries(
    {k: v for k, v in RULE_KEYS.items() if k in REQUIRED},
    optional={k: v for k, v in RULE_KEYS.items() if k not in REQUIRED},
)
near_valid_documents = st.fixed_dictionaries(
    {"rule": st.lists(near_valid_rules, min_size=1, max_size=3)},
    optional={
        "list": st.lists(
            st.fixed_dictionaries({"name": st.sampled_from(["shells", "x"]), "items": values}),
            max_size=2,
        ),
        "macro": st.lists(
            st.fixed_dictionaries(
                {"name": st.sampled_from(["m", "shells"]), "condition": conditions}
            ),
            max_size=2,
        ),
    },
)

SAMPLE_EVENTS = [
    EnrichedEvent(
        ExecEvent(1, 2, 1, 0, 0, 3, "sh", "/bin/sh", ("sh", "-c", "x"), False),
        None,
        Process(2, 1, 0, "/bin/sh", "sh", ("sh", "-c", "x"), 3),
    ),
    EnrichedEvent(
        ConnectEvent(1, 2, 2, 0, 3, "curl", "ipv4", "10.1.2.3", 22, 0),
        None,
        Process(2, 1, 0, "/usr/bin/curl", "curl", ("curl",), 3),
    ),
]


@pytest.fixture(scope="module")
def rules_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "fuzz.toml"


def check_loader(path: Path) -> RuleSet | RuleError:
    """Load path: the outcome must be a usable RuleSet or one RuleError naming the file;
    anything else (another exception) fails the test by escaping."""
    try:
        rule_set = load_rule_set([path])
    except RuleError as error:
        assert error.file == str(path)
        assert error.line is None or error.line >= 1
        assert str(error)
        outcome: RuleSet | RuleError = error
    else:
        assert isinstance(rule_set, RuleSet)
        for event in SAMPLE_EVENTS:  # whatever compiled must also evaluate
            rule_set.match(event)
        rule_set.exec_kill_specs()
        rule_set.effective_action_notes()
        outcome = rule_set
    assert all(isinstance(e, RuleError) for e in validate_paths([path]))
    return outcome


def render(document: dict) -> str:
    try:
        return toml.dumps(document)
    except Exception:  # the toml package cannot render every structure; not our concern
        assume(False)
        raise


@FUZZ
@given(document=documents)
def test_random_toml_documents(rules_file: Path, document: dict) -> None:
    rules_file.write_text(render(document))
    assert isinstance(check_loader(rules_file), RuleSet | RuleError)


@FUZZ
@given(document=near_valid_documents)
def test_random_near_valid_rules(rules_file: Path, document: dict) -> None:
    rules_file.write_text(render(document))
    assert isinstance(check_loader(rules_file), RuleSet | RuleError)


@FUZZ
@given(text=st.text(max_size=300))
def test_random_text(rules_file: Path, text: str) -> None:
    rules_file.write_text(text, encoding="utf-8", errors="surrogatepass")
    assert isinstance(check_loader(rules_file), RuleSet | RuleError)


@FUZZ
@given(data=st.binary(max_size=200))
def test_random_bytes(rules_file: Path, data: bytes) -> None:
    rules_file.write_bytes(data)
    assert isinstance(check_loader(rules_file), RuleSet | RuleError)


@settings(max_examples=200, deadline=None)
@given(
    prefix=st.sampled_from(['[[rule]]\nid = "t.a"\n', "[[list]]\n", 'x = "', "a = [", ""]),
    text=st.text(alphabet="[]{}=\"',.\n @#\\abcdeilnrstu0123456789", max_size=120),
)
def test_random_toml_like_text(rules_file: Path, prefix: str, text: str) -> None:
    rules_file.write_text(prefix + text)
    assert isinstance(check_loader(rules_file), RuleSet | RuleError)
