"""Where ring-buffer records must wake roxd at once.

The kernel batches ring-buffer wake-ups (bpf/roxd.bpf.c ring_flags): an ordinary record is
read at roxd's next timed poll, up to [sensor] ring_batch_ms later. A record that a rule may
answer with enforcement done by roxd itself (a kill by pidfd, an isolate, a container kill)
cannot wait: its latency is how long the process runs. This module turns the rule set into
the kernel's `ring_urgent` mask (bpf/process.bpf.c): one bit for containers, one for the
host, set when some rule may enforce from userspace there. Every record from such a place
wakes a sleeping roxd, exits excepted (nothing is enforced on an exit: see process.bpf.c).
In-kernel kills need no bit (the kill happened before the record was written, and the
record itself wakes roxd). In monitor mode ([rules] monitor) roxd enforces nothing, in the
kernel or from userspace: a match is only reported ("would kill"), so no rule makes a place
urgent and the mask is 0 (held execs and in-kernel kills are urgent in the kernel itself,
without this mask)."""

from __future__ import annotations

from roxd.model import ActionKind
from roxd.rules.ruleset import CompiledRule, KillPath, RuleSet
from roxd.vocabulary import RULE_EVENT_KINDS

CONTAINERS, HOST = 1, 2  # ring_urgent[0] bits

# rule events whose records come through the ring (seccomp events come from the seccomp
# sensor)
RING_EVENTS = frozenset(RULE_EVENT_KINDS) - {"seccomp"}


def urgent_mask(rules: RuleSet, *, kills_in_kernel: bool, host_kills: bool,
                monitor: bool) -> int:
    """kills_in_kernel: the policy writes kernel kill entries (enforcing and
    bpf_send_signal there); host_kills: [enforce] host_kills; monitor: [rules] monitor (both
    it and a kernel without bpf_send_signal turn kills_in_kernel off, but only without
    bpf_send_signal does a kill rule still kill, by pidfd)."""
    if monitor:
        return 0  # a "would kill" can wait for the batched poll: nothing runs on because of it
    mask = 0
    for rule in rules.rules:
        if rule.event not in RING_EVENTS or not rule.enabled or rule.monitor:
            continue
        in_containers, on_host = _enforces_in_userspace(rule, kills_in_kernel, host_kills)
        if in_containers and rule.scope.containers:
            mask |= CONTAINERS
        if on_host and rule.scope.host:
            mask |= HOST
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
