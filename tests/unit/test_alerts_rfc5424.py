"""RFC 5424 formatting: header, PRI, structured data and §6.3.3 escaping."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from roxd.alerts.dispatch import summary
from roxd.alerts.rfc5424 import MAX_VALUE, escape_param, format_message, sd_element
from roxd.model import Phase, Severity, rfc3339
from roxd.text import printable, to_bytes
from tests.system.alerts_factory import make_alert, rule
from tests.system.rfc5424_parse import parse_5424, parse_sd

pytestmark = pytest.mark.unit


def test_header_and_structured_data() -> None:
    a = make_alert(rule_ref=rule(severity=Severity.CRITICAL, phase=Phase.LATERAL_MOVEMENT),
                   args=("sh", "-c", 'echo "a]b" \\ c'))
    m = parse_5424(format_message(a, hostname="node 1", app_name="roxd", facility="local0",
                                  procid=42))
    assert m.pri == 16 * 8 + 2
    assert (m.timestamp, m.hostname, m.app_name, m.procid, m.msgid) == (
        rfc3339(a.time_ns), "node1", "roxd", "42", "alert")
    assert set(m.sd) == {"roxd@32473", "rule@32473", "container@32473", "process@32473"}
    assert m.param("roxd@32473", "alert") == a.id
    assert m.param("roxd@32473", "actions") == "alert:done,kill:done"
    assert m.param("rule@32473", "phase") == "lateral_movement"
    assert m.params("rule@32473", "mitre") == ["T1053.003", "T1059"]
    assert m.param("container@32473", "name") == "web"
    assert m.param("process@32473", "args") == 'sh -c echo "a]b" \\ c'
    assert m.msg == summary(a)


def test_host_alert_has_no_container_element_and_connect_has_its_own() -> None:
    m = parse_5424(format_message(make_alert(container=None, connect=True), hostname="h"))
    assert "container@32473" not in m.sd
    assert m.param("connect@32473", "dport") == "4444"


def test_empty_values_are_left_out() -> None:
    assert sd_element("x", [("a", ""), ("b", None), ("c", 0)]) == '[x@32473 c="0"]'


@given(st.text(min_size=1, max_size=MAX_VALUE))
def test_escaped_values_parse_back(value: str) -> None:
    """Values parse back as the printable() text of the value: control characters as \\xNN
    (roxd/text.py), '"', '\\' and ']' through §6.3.3 escaping."""
    sd, rest = parse_sd(sd_element("t", [("v", value)]))
    assert sd == {"t@32473": [("v", printable(value, MAX_VALUE))]} and rest == ""
    if len(printable(value)) <= MAX_VALUE:
        assert to_bytes(sd["t@32473"][0][1]) == value.encode("utf-8", "surrogateescape")


def test_long_values_are_cut() -> None:
    assert len(escape_param("x" * 5000)) == MAX_VALUE
