"""Which ring-buffer records must wake roxd at once.

The kernel batches ring-buffer wake-ups (bpf/roxd.bpf.c ring_flags): an ordinary record is
read at roxd's next timed poll, up to [sensor] ring_batch_ms later. A record that a rule may
answer with enforcement done by roxd itself (a kill by pidfd, an isolate, a container kill)
cannot wait: its latency is how long the process runs. This module turns the rule set into
the kernel's `ring_urgent` mask (bpf/process.bpf.c): per record type, one bit for containers
and one for the host. In-kernel kills need no bit (the kill happened before the record was
written, and the record itself wakes roxd)."""

from __future__ import annotations

from roxd.model import ActionKind
from roxd.rules.ruleset import CompiledRule, KillPath, RuleSet
from roxd.sensor import records

# rule event -> ring-buffer record type (seccomp events come from the seccomp sensor)
RECORD_TYPES = {"exec": records.REC_EXEC, "connect": records.REC_CONNECT,
                "syscall": records.REC_SYSCALL, "file": records.REC_FILE}


def container_bit(record_type: int) -> int:
    return 1 << (2 * record_type)


def host_bit(record_type: int) -> int:
    return 1 << (2 * record_type + 1)


def urgent_mask(rules: RuleSet, *, kills_in_kernel: bool, host_kills: bool) -> int:
    """kills_in_kernel: the policy writes kernel kill entries (enforcing and
    bpf_send_signal there); host_kills: [enforce] host_kills."""
    mask = 0
    for rule in rules.rules:
        record_type = RECORD_TYPES.get(rule.event)
        if record_type is None or not rule.enabled or rule.monitor:
            continue
        in_containers, on_host = _enforces_in_userspace(rule, kills_in_kernel, host_kills)
        if in_containers and rule.scope.containers:
            mask |= container_bit(record_type)
        if on_host and rule.scope.host:
            mask |= host_bit(record_type)
    return mask


def _enforces_in_userspace(rule: CompiledRule, kills_in_kernel: bool,
                           host_kills: bool) -> tuple[bool, bool]:
    """(in containers, on the host): whether a match makes roxd act after reading the record."""
    containers = host = False
    for action in rule.actions:
        if action is ActionKind.ALERT:
            continue
        if action is ActionKind.KILL and rule.kill_target == "process":
            if kills_in_kernel and rule.kill_path is KillPath.IN_KERNEL:
                continue  # the kernel killed at exec or connect, before the record
            containers = True
            host = host or host_kills  # host kills off: the host is only alerted on
            continue
        # isolate, seccomp, a container kill: decided and done by roxd after the record
        containers = host = True
    return containers, host
