"""Syslog forwarding to a real rsyslogd on loopback: RFC 5424 parsing with structured data
over UDP, TCP and TLS, and the disk queue across a collector outage and a forwarder restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from roxd.alerts.settings import SyslogCollector
from roxd.alerts.syslog import SyslogForwarder
from roxd.model import Phase, Severity
from tests.conftest import wait_until
from tests.system.alerts_factory import make_alert, rule
from tests.system.conftest import Rsyslog, TlsFiles
from tests.system.rfc5424_parse import parse_sd

pytestmark = pytest.mark.system


def collector(r: Rsyslog, tls: TlsFiles, protocol: str, **kw: object) -> SyslogCollector:
    port = {"udp": r.udp, "tcp": r.tcp, "tls": r.tls}[protocol]
    extra: dict[str, object] = {}
    if protocol == "tls":
        extra = {"ca": str(tls.ca), "server_name": tls.server_name,
                 "cert": str(tls.client_cert), "key": str(tls.client_key)}
    return SyslogCollector(address="127.0.0.1", port=port, protocol=protocol,
                           hostname="node-1", backoff_max_s=0.5, **{**extra, **kw})  # type: ignore[arg-type]


def alert_ids(r: Rsyslog) -> list[str]:
    out = []
    for fields in r.lines():
        sd, _ = parse_sd(fields[5])
        out.append(dict(sd["roxd@32473"])["alert"])
    return out


@pytest.mark.parametrize("protocol", ["udp", "tcp", "tls"])
def test_rsyslog_parses_rfc5424_with_structured_data(
        protocol: str, rsyslog: Rsyslog, tls_files: TlsFiles, tmp_path: Path) -> None:
    fwd = SyslogForwarder(collector(rsyslog, tls_files, protocol), tmp_path / "state")
    try:
        a = make_alert(rule_ref=rule("lateral.ssh_out", phase=Phase.LATERAL_MOVEMENT,
                                     severity=Severity.ERROR, mitre=("T1021.004", "T1078")),
                       args=("ssh", "-o", 'ProxyCommand="nc %h %p"', "a]b\\c"))
        fwd.emit(a)
        assert fwd.flush(20), fwd.stats()
        lines = wait_until(lambda: rsyslog.lines(), 20, message="the message at rsyslog")
    finally:
        fwd.close(5)
    assert fwd.stats()["sent"] == 1 and fwd.stats()["queued"] == 0
    [(inputname, version, app, msgid, pri, sd_text, msg)] = lines
    assert version == "1"  # rsyslog's RFC 5424 parser took it
    assert (app, msgid, pri) == ("roxd", "alert", str(4 * 8 + 3))
    assert inputname == ("imudp" if protocol == "udp" else "imtcp")
    sd, rest = parse_sd(sd_text)
    assert rest == ""
    assert dict(sd["roxd@32473"])["alert"] == a.id
    assert dict(sd["rule@32473"])["phase"] == "lateral_movement"
    assert [v for k, v in sd["rule@32473"] if k == "mitre"] == ["T1021.004", "T1078"]
    assert dict(sd["container@32473"])["name"] == "web"
    assert dict(sd["process@32473"])["args"] == 'ssh -o ProxyCommand="nc %h %p" a]b\\c'
    assert "lateral.ssh_out" in msg


@pytest.mark.parametrize("protocol", ["tcp", "tls"])
def test_outage_and_restart_deliver_all_in_order_once(
        protocol: str, rsyslog: Rsyslog, tls_files: TlsFiles, tmp_path: Path) -> None:
    state = tmp_path / "state"
    c = collector(rsyslog, tls_files, protocol)
    fwd = SyslogForwarder(c, state)
    try:
        first = make_alert()
        fwd.emit(first)
        wait_until(lambda: alert_ids(rsyslog) == [first.id], 20, message="the first alert")

        rsyslog.stop()
        alerts = [make_alert(args=("x", str(i))) for i in range(500)]
        for a in alerts:
            fwd.emit(a)
        wait_until(lambda: fwd.stats()["failed"] >= 1 and fwd.stats()["queued"] == 500, 20,
                   message="500 alerts queued on disk while the collector is down")
    finally:
        fwd.close(2)
    assert fwd.stats()["queued"] == 500

    # a new forwarder on the same state dir: roxd restarted while the collector was down
    fwd = SyslogForwarder(c, state)
    try:
        assert fwd.stats()["queued"] == 500
        rsyslog.start()
        wait_until(lambda: len(alert_ids(rsyslog)) >= 501 and fwd.stats()["queued"] == 0, 60,
                   message="the queued alerts at the collector")
        assert fwd.flush(5)
    finally:
        fwd.close(5)
    assert alert_ids(rsyslog) == [first.id] + [a.id for a in alerts]
    assert fwd.stats()["dropped"] == 0


def test_full_queue_drops_the_oldest_and_counts_them(
        rsyslog: Rsyslog, tls_files: TlsFiles, tmp_path: Path) -> None:
    rsyslog.stop()
    c = collector(rsyslog, tls_files, "tcp", queue_max=50)
    fwd = SyslogForwarder(c, tmp_path / "state")
    try:
        alerts = [make_alert(args=("x", str(i))) for i in range(80)]
        for a in alerts:
            fwd.emit(a)
        wait_until(lambda: fwd.stats()["dropped"] == 30, 20, message="30 dropped")
        rsyslog.start()
        wait_until(lambda: fwd.stats()["queued"] == 0, 60, message="queue drained")
        wait_until(lambda: len(alert_ids(rsyslog)) == 50, 20, message="50 at the collector")
    finally:
        fwd.close(5)
    assert alert_ids(rsyslog) == [a.id for a in alerts[30:]]


def test_tls_checks_the_collector_name(
        rsyslog: Rsyslog, tls_files: TlsFiles, tmp_path: Path) -> None:
    c = collector(rsyslog, tls_files, "tls", server_name="someone-else.roxd.test")
    fwd = SyslogForwarder(c, tmp_path / "state")
    try:
        fwd.emit(make_alert())
        wait_until(lambda: fwd.stats()["failed"] >= 2, 20, message="failed handshakes")
        assert fwd.stats()["sent"] == 0 and fwd.stats()["queued"] == 1
    finally:
        fwd.close(1)
    assert rsyslog.lines() == []


@pytest.mark.parametrize("protocol", ["udp", "tcp"])
def test_hostile_bytes_reach_rsyslog_escaped_one_line_each(
        protocol: str, rsyslog: Rsyslog, tls_files: TlsFiles, tmp_path: Path) -> None:
    """A non-UTF-8 exe path (and parent), newlines that would forge a syslog line, ESC
    sequences, NUL, '"', ']' and '\\' in argv, 10,000 characters: rsyslog parses each alert
    as one RFC 5424 message, and the alert after it arrives too."""
    from dataclasses import replace

    from tests.system.alerts_factory import hostile_alert

    fwd = SyslogForwarder(collector(rsyslog, tls_files, protocol), tmp_path / "state")
    bad = hostile_alert()
    child = make_alert(exe="/bin/cat", args=("cat", "/etc/shadow"))
    child = replace(child, event=replace(child.event, process=replace(
        child.event.process, ancestors=bad.event.process.ancestors)))
    try:
        for a in (bad, child, make_alert()):
            fwd.emit(a)
        assert fwd.flush(20), fwd.stats()
        lines = wait_until(lambda: len(x := rsyslog.lines()) >= 3 and x, 20,
                           message="three messages at rsyslog")
    finally:
        fwd.close(5)
    assert fwd.stats()["sent"] == 3 and fwd.stats()["failed"] == 0, fwd.stats()
    assert len(lines) == 3, lines  # no forged line, nothing split
    assert alert_ids(rsyslog) == [bad.id, child.id, a.id]
    raw = (rsyslog.workdir / "raw.log").read_bytes()
    assert b"\x1b" not in raw and b"\xff" not in raw and b"\r" not in raw
    assert len(raw.splitlines()) == 3
    [(_i, version, _app, _msgid, _pri, sd_text, msg), (*_, child_sd, _m), _] = lines
    assert version == "1"
    sd, rest = parse_sd(sd_text)
    assert rest == ""
    process = dict(sd["process@32473"])
    assert process["exe"] == "/tmp/\\xff\\xfe/sh"
    assert process["parent_exe"] == "/tmp/\\xff\\xfe/parent\\x0a"
    assert 'sd"quote]bracket\\backslash' in process["args"]
    assert "line1\\x0aline2\\x0d<13>1 - forged" in process["args"]
    assert "\\x1b[2J" in msg and "\x1b" not in msg
    assert dict(parse_sd(child_sd)[0]["process@32473"])["parent_exe"] == \
        "/tmp/\\xff\\xfe/parent\\x0a"


def test_incident_changes_reach_rsyslog_one_message_per_change(
        rsyslog: Rsyslog, tls_files: TlsFiles, tmp_path: Path) -> None:
    """Issue 16: incident changes go to syslog collectors like alerts (MSGID `incident`, PRI
    from the incident's severity): one message per change, none for plain updates."""
    from roxd.alerts.delivery import IncidentFeed
    from roxd.incidents.settings import IncidentsSettings
    from roxd.incidents.tracker import IncidentTracker
    from tests.unit.test_incidents import Clock, attack

    fwd = SyslogForwarder(collector(rsyslog, tls_files, "tcp"), tmp_path / "state")
    clock = Clock()
    tracker = IncidentTracker(IncidentsSettings(quiet_window_s=60), [IncidentFeed(fwd)],
                              clock=clock, timer=False)
    try:
        steps = attack()  # foothold, privilege escalation, persistence, objectives
        repeat = steps[1]  # the same phase again: an update, no message
        for a in (*steps[:2], repeat, *steps[2:]):
            clock.now = max(clock.now, a.time_ns)
            tracker.emit(a)
        clock.now += 120 * 1_000_000_000
        tracker.tick()  # quiet: closed
        assert fwd.flush(20), fwd.stats()
        lines = wait_until(lambda: rsyslog.lines() if len(rsyslog.lines()) >= 5 else None, 20,
                           message="five incident messages at rsyslog")
    finally:
        fwd.close(5)
    changes = []
    for _inputname, version, app, msgid, _pri, sd_text, msg in lines:
        assert (version, app, msgid) == ("1", "roxd", "incident")
        sd, rest = parse_sd(sd_text)
        assert rest == ""
        inc = dict(sd["incident@32473"])
        changes.append((inc["change"], inc.get("phase")))
        assert dict(sd["container@32473"])["name"] == "web"
        assert inc["id"][:12] in msg
    assert changes == [("opened", None), ("phase_added", "privilege_escalation"),
                       ("phase_added", "persistence"), ("phase_added", "objectives"),
                       ("closed", None)]
    last_pri = int(lines[-1][4])
    assert last_pri % 8 <= 2  # four phases reached: critical or more severe
