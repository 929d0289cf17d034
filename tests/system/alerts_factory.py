"""Alerts built from model.py's records, for the alert sink tests."""

from __future__ import annotations

import itertools
import time
import uuid

from roxd.model import (
    ActionKind,
    ActionResult,
    Alert,
    Ancestor,
    ConnectEvent,
    Container,
    EnrichedEvent,
    ExecEvent,
    Outcome,
    Phase,
    Process,
    RuleRef,
    Severity,
)

_pids = itertools.count(4000)

WEB = Container(id="a" * 64, runtime="docker", name="web", image="nginx:1.25",
                cgroup_path="/docker/" + "a" * 64)
DB = Container(id="b" * 64, runtime="docker", name="db", image="postgres:16")


def rule(rule_id: str = "persistence.cron_write", *, phase: Phase = Phase.PERSISTENCE,
         severity: Severity = Severity.WARNING,
         mitre: tuple[str, ...] = ("T1053.003", "T1059")) -> RuleRef:
    return RuleRef(id=rule_id, name=f"Rule {rule_id}", phase=phase, severity=severity,
                   mitre=mitre, description="test rule")


def make_alert(*, rule_ref: RuleRef | None = None, container: Container | None = WEB,
               exe: str = "/usr/bin/crontab", args: tuple[str, ...] = ("crontab", "-e"),
               time_ns: int | None = None, connect: bool = False,
               actions: tuple[ActionResult, ...] | None = None,
               alert_id: str | None = None) -> Alert:
    now = time_ns if time_ns is not None else time.time_ns()
    pid = next(_pids)
    cgroup = 777 if container else 1
    if connect:
        event: ExecEvent | ConnectEvent = ConnectEvent(
            time_ns=now, pid=pid, tid=pid, uid=0, cgroup_id=cgroup, comm="nc", family="ipv4",
            daddr="10.1.2.3", dport=4444, errno=0)
    else:
        event = ExecEvent(time_ns=now, pid=pid, ppid=1, uid=0, gid=0, cgroup_id=cgroup,
                          comm=exe.rsplit("/", 1)[-1][:15], filename=exe, args=args,
                          args_truncated=False)
    process = Process(pid=pid, ppid=1, uid=0, exe=exe, comm=exe.rsplit("/", 1)[-1][:15],
                      args=args, cgroup_id=cgroup,
                      ancestors=(Ancestor(pid=1, exe="/bin/sh", args=("sh", "-c", "x")),))
    enriched = EnrichedEvent(event=event, container=container, process=process)
    if actions is None:
        actions = (ActionResult(ActionKind.ALERT, Outcome.DONE),
                   ActionResult(ActionKind.KILL, Outcome.DONE, in_kernel=True))
    return Alert(id=alert_id or uuid.uuid4().hex, time_ns=now,
                 rule=rule_ref or rule(), event=enriched, actions=actions,
                 first_ns=now, last_ns=now)


# ------------------------------------------------------------------ hostile input
# What a process in a container controls: its executable's path (any bytes but NUL and "/"
# in a name), its argv (any bytes but NUL), and its parent's path. os.readlink() on
# /proc/<pid>/exe gives a non-UTF-8 byte as a lone surrogate (surrogateescape), the kernel's
# strings come as bytes.

HOSTILE_EXE = "/tmp/\udcff\udcfe/sh"  # b"/tmp/\xff\xfe/sh" as os.readlink() returns it
HOSTILE_ARGS = (
    "sh", "-c",
    "line1\nline2\r<13>1 - forged",  # a forged syslog line
    "\x1b[2J\x1b]0;pwned\x07\x9b31m",  # clear screen, set title (OSC), C1 CSI
    "nul\x00byte\x7f",
    'sd"quote]bracket\\backslash',
    "<!channel> <https://evil.example|Release quarantine> &amp; *bold* _it_ ~s~ `code`",
    "\u202eevil\u2028line",  # bidi override, Unicode line separator
    "bad\udc80utf8",
    "A" * 10_000,
)


def hostile_alert(**kw: object) -> Alert:
    """An alert whose every process string is hostile; its parent's path too."""
    from dataclasses import replace

    a = make_alert(exe=HOSTILE_EXE, args=HOSTILE_ARGS, **kw)  # type: ignore[arg-type]
    ev = a.event
    process = replace(ev.process, comm="sh\x1b[2J\udcff",
                      ancestors=(Ancestor(pid=1, exe="/tmp/\udcff\udcfe/parent\n",
                                          args=("parent\x1b[H", "\udcfe")),))
    return replace(a, event=replace(ev, process=process))
