"""The check registry and the small decisions many checks share (a file's owner and mode, an
audit watch, a per-container predicate)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from roxd.posture.facts import (
    AUDIT_FILES,
    AUDIT_NONE,
    AUDIT_UNREADABLE,
    ContainerFacts,
    FileFact,
    PostureFacts,
)
from roxd.posture.model import Check, Outcome, Result

CHECKS: list[Check] = []
NO_CONTAINERS = "no running containers to check"

Decide = Callable[[PostureFacts], Outcome]


def check(cis_id: str, title: str, *, concerns: str, remediation: str, automated: bool = True,
          impact: str = "") -> Callable[[Decide], Decide]:
    """Register a decision function as the check `cis_id`."""

    def register(fn: Decide) -> Decide:
        if any(c.id == cis_id for c in CHECKS):
            raise ValueError(f"check {cis_id} registered twice")
        CHECKS.append(Check(cis_id, title, concerns, automated, remediation, fn, impact))
        return fn

    return register


def outcome(result: Result, reason: str, items: Iterable[str] = ()) -> Outcome:
    return Outcome(result, reason, tuple(items))


def absent(ff: FileFact) -> Outcome:
    if ff.error:
        return outcome(Result.NOTE, f"{ff.path} could not be read: {ff.error}", [ff.path])
    return outcome(Result.NOTE, f"{ff.path} is not on this host: nothing to check (the "
                                "benchmark applies where the file exists)", [ff.path])


def ownership(ff: FileFact, groups: tuple[str, ...] = ("root",)) -> Outcome:
    """PASS when owned by root and one of `groups` (by name, or gid 0 for root)."""
    if not ff.exists:
        return absent(ff)
    group_ok = ff.group in groups or (ff.gid == 0 and "root" in groups)
    if ff.uid == 0 and group_ok:
        return outcome(Result.PASS, f"{ff.path} is owned by {ff.owner}", [ff.path])
    want = " or ".join(f"root:{g}" for g in groups)
    return outcome(Result.WARN, f"{ff.path} is owned by {ff.owner}, not {want}", [ff.path])


def permissions(ff: FileFact, most: int) -> Outcome:
    """PASS when the mode grants nothing beyond `most` (e.g. 0o644)."""
    if not ff.exists:
        return absent(ff)
    extra = ff.mode & ~most
    if not extra:
        return outcome(Result.PASS, f"{ff.path} has mode {ff.mode:04o} (at most {most:04o})",
                       [ff.path])
    return outcome(Result.WARN, f"{ff.path} has mode {ff.mode:04o}: more than {most:04o} "
                                f"(extra bits {extra:04o})", [ff.path])


def audit_watch(facts: PostureFacts, path: str, *, need_file: bool = True) -> Outcome:
    """Is `path` audited? From what the audit rules say (facts.AUDIT_* states):

    - loaded (`auditctl -l`): PASS with a watch on the path, else WARN;
    - none (no auditctl, no rule files): WARN: with no audit system nothing is audited;
    - files (rule files, auditctl absent): WARN when no file has a rule for the path (not
      even written down); NOTE when one has: written, but whether it is loaded cannot be read;
    - unreadable (`auditctl -l` failed): NOTE with the error.

    A path the benchmark names that is not on this host is a NOTE ("not on this host"),
    whatever the rules say (`need_file=False`: the path is known to exist, dockerd's binary)."""
    audit = facts.audit
    state = audit.state
    if state == AUDIT_UNREADABLE:
        return outcome(Result.NOTE, audit.reason, [path])
    ff = facts.file(path)
    if need_file and not ff.exists:
        return outcome(Result.NOTE, f"{path} is not on this host: no audit rule needed",
                       [path])
    if state == AUDIT_NONE:
        return outcome(Result.WARN, f"nothing audits {path}: {audit.reason}", [path])
    if audit.watches(path):
        if state == AUDIT_FILES:
            return outcome(Result.NOTE, f"a rule in the audit rule files watches {path}, but "
                                        "auditctl is absent: whether it is loaded cannot be "
                                        "read", [path])
        return outcome(Result.PASS, f"an audit rule watches {path} ({audit.source})", [path])
    return outcome(Result.WARN, f"no audit rule watches {path} ({audit.source})", [path])


def per_container(facts: PostureFacts, bad: Callable[[ContainerFacts], str | None], *,
                  what: str, warn: Result = Result.WARN) -> Outcome:
    """WARN (or `warn`) listing every running container for which `bad` returns a reason;
    PASS when none does; NOTE when the engine could not be read; INFO when nothing runs."""
    if facts.info is None:
        return outcome(Result.NOTE, f"the engine could not be read: {facts.engine_error}")
    if not facts.containers:
        return outcome(Result.INFO, NO_CONTAINERS)
    hits = []
    for c in facts.containers:
        reason = bad(c)
        if reason:
            hits.append((c.name, reason))
    if not hits:
        return outcome(Result.PASS, f"none of {len(facts.containers)} running containers "
                                    f"{what}")
    detail = "; ".join(f"{n}: {r}" for n, r in hits[:20])
    more = f" (+{len(hits) - 20} more)" if len(hits) > 20 else ""
    return outcome(warn, f"{len(hits)} of {len(facts.containers)} containers {what}: "
                         f"{detail}{more}", [n for n, _ in hits])
