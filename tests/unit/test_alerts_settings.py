"""[alerts] configuration: defaults, lists of tables, errors that name the key."""

from __future__ import annotations

import tomllib

import pytest

from roxd.alerts.settings import AlertsSettings, parse_alerts_settings
from roxd.errors import ConfigError

pytestmark = pytest.mark.unit

FULL = """
[alerts.journald]
enabled = false
[alerts.store]
max_age_days = 7
max_count = 500
[alerts.noise]
fold_window_s = 30
per_container_per_minute = 10
[[alerts.syslog]]
address = "127.0.0.1"
port = 6514
protocol = "tls"
ca = "/etc/roxd/ca.pem"
server_name = "collector.example"
[[alerts.syslog]]
port = 514
[[alerts.webhooks]]
url = "https://events.example/v2/enqueue"
kind = "pagerduty"
routing_key = "abc"
min_severity = "error"
"""


def parse(text: str) -> AlertsSettings:
    return parse_alerts_settings(tomllib.loads(text)["alerts"], "roxd.toml")


def test_defaults() -> None:
    s = parse_alerts_settings({}, "x")
    assert s.journald.enabled and s.store.enabled
    assert s.syslog == () and s.webhooks == ()
    assert s.noise.fold_window_s == 60.0


def test_full_section() -> None:
    s = parse(FULL)
    assert not s.journald.enabled
    assert (s.store.max_age_days, s.store.max_count) == (7.0, 500)
    assert s.noise.per_container_per_minute == 10
    assert [c.protocol for c in s.syslog] == ["tls", "udp"]
    assert s.syslog[0].queue_name == "tls-127.0.0.1-6514"
    assert s.webhooks[0].kind == "pagerduty" and s.webhooks[0].min_severity == "error"


@pytest.mark.parametrize(("text", "needle"), [
    ("[alerts.nope]\nx=1", "unknown key alerts.nope"),
    ("[alerts.store]\nmax_count='x'", "alerts.store.max_count must be an integer"),
    ("[alerts.store]\nmax_cont=1", "unknown key alerts.store.max_cont"),
    ("[[alerts.syslog]]\nprotocol='relp'", "alerts.syslog[0].protocol"),
    ("[[alerts.syslog]]\nport=0", "alerts.syslog[0].port"),
    ("[[alerts.syslog]]\ncert='c.pem'", "cert and key go together"),
    ("[[alerts.syslog]]\n[[alerts.syslog]]", "share a queue"),
    ("[[alerts.webhooks]]\nurl='ftp://x'", "alerts.webhooks[0].url"),
    ("[[alerts.webhooks]]\nurl='http://x'\nkind='teams'", "alerts.webhooks[0].kind"),
    ("[[alerts.webhooks]]\nurl='http://x'\nmin_severity='high'", "min_severity"),
    ("[[alerts.webhooks]]\nurl='http://x'\nkind='pagerduty'", "routing_key"),
    ("[alerts.noise]\nfold_window_s=-1", "must not be negative"),
    ("[alerts]\nsyslog = 3", "array of tables"),
])
def test_errors_name_the_key(text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse(text)
    assert needle in str(err.value)


def test_noise_rule_limits_must_name_a_rule_and_a_number() -> None:
    from roxd.alerts.settings import parse_alerts_settings
    from roxd.errors import ConfigError
    ok = parse_alerts_settings({"noise": {"rule_limits": ["foothold.shell-in-container=5"]}},
                               "roxd.toml")
    assert ok.noise.rule_limit_map() == {"foothold.shell-in-container": 5}
    for bad in (["foothold.shell-in-container"], ["=5"], ["x=five"], ["x=-1"]):
        with pytest.raises(ConfigError, match="rule_limits"):
            parse_alerts_settings({"noise": {"rule_limits": bad}}, "roxd.toml")
