"""roxd's vocabularies, defined once: event kinds, attack phases, severities, file access kinds.

Standard library only and no roxd import, so that roxctl (which must never load the engine)
and the engine share the same words. `roxd.model` builds its `Phase` / `Severity` enums
against these tuples, the sensor decodes access bits in this order, the rule schema accepts
these event kinds, and tests tie roxd/api/openapi.json and bpf/common.h to them.
"""

from __future__ import annotations

# Every kind of event the sensor reports: the "type" of an event record (--print-events, the
# API's event stream, alerts' event part).
EVENT_KINDS: tuple[str, ...] = ("exec", "exit", "connect", "syscall", "file", "seccomp")

# The kinds a rule may name (`event = ...`): exits carry nothing a rule could match on.
RULE_EVENT_KINDS: tuple[str, ...] = ("exec", "connect", "syscall", "file", "seccomp")

# StackRox's Adversarial Intent Model: the five phases of an attack, in kill-chain order.
PHASES: tuple[str, ...] = (
    "foothold",
    "privilege_escalation",
    "persistence",
    "lateral_movement",
    "objectives",
)

# syslog severities (RFC 5424), most severe first: the index is the syslog severity code.
SEVERITIES: tuple[str, ...] = (
    "emergency",
    "alert",
    "critical",
    "error",
    "warning",
    "notice",
    "info",
    "debug",
)

# File access kinds a file rule may watch, in the order of the ACC_* bits of bpf/common.h
# (lowest bit first: read is 1 << 0).
FILE_ACCESS_KINDS: tuple[str, ...] = (
    "read",
    "write",
    "create",
    "truncate",
    "unlink",
    "rename",
    "link",
)


# The session a container process belongs to (the `session` field of processes and rules),
# decided at the exec of the session's first process (roxd/containers/sessions.py): the
# container's entrypoint tree, a HEALTHCHECK the runtime runs, an exec session with a terminal
# (a person), an exec session without one (a script, a probe, an operator's one-off command),
# unknown (its first process was gone before roxd could look), or an image build step (a
# container Docker's builder made for a RUN instruction).
SESSION_KINDS: tuple[str, ...] = (
    "entrypoint", "healthcheck", "interactive", "exec", "unknown", "build")
