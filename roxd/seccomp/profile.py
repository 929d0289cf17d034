"""Docker/OCI seccomp profiles: generate one from a learned syscall set; parse one from JSON.

Generated profiles deny by default with EPERM (`SCMP_ACT_ERRNO`, `defaultErrnoRet` 1), cover
x86_64 with its x86 and x32 sub-architectures, and allow exactly the learned names. Names come
from libseccomp (roxd.seccomp.syscalls), never from a table of our own. When a profile kills,
it kills the process (`SCMP_ACT_KILL_PROCESS`), never only the thread (`SCMP_ACT_KILL`), which
would leave a process half alive.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from roxd.seccomp.errors import ProfileError
from roxd.seccomp.syscalls import ARCH_NAME, SUB_ARCHES, is_known_name, number_of

ACTIONS = ("SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD",
           "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_TRAP", "SCMP_ACT_TRACE", "SCMP_ACT_LOG",
           "SCMP_ACT_NOTIFY")
OPS = ("SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE",
       "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ")
KNOWN_ARCHES = ("SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64",
                "SCMP_ARCH_ARM", "SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64", "SCMP_ARCH_MIPS64N32",
                "SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64", "SCMP_ARCH_MIPSEL64N32",
                "SCMP_ARCH_PPC", "SCMP_ARCH_PPC64", "SCMP_ARCH_PPC64LE", "SCMP_ARCH_S390",
                "SCMP_ARCH_S390X", "SCMP_ARCH_PARISC", "SCMP_ARCH_PARISC64",
                "SCMP_ARCH_RISCV64")
# Docker's default capability set (moby oci/caps/defaults.go): the caps a container holds
# unless told otherwise; profiles' includes/excludes.caps are evaluated against it.
DOCKER_DEFAULT_CAPS = frozenset({
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"})


@dataclass(frozen=True)
class ArgCondition:
    index: int
    value: int
    value_two: int
    op: str


@dataclass(frozen=True)
class Rule:
    names: tuple[str, ...]
    action: str
    errno_ret: int | None = None
    args: tuple[ArgCondition, ...] = ()


@dataclass(frozen=True)
class Profile:
    source: str
    default_action: str
    default_errno_ret: int | None
    architectures: tuple[str, ...]
    rules: tuple[Rule, ...]
    document: Mapping[str, Any]

    def allowed_names(self) -> frozenset[str]:
        """Names allowed unconditionally (no argument condition)."""
        return frozenset(n for r in self.rules if r.action == "SCMP_ACT_ALLOW" and not r.args
                         for n in r.names)

    def native_allowed(self) -> frozenset[str]:
        """Allowed names (with or without conditions) that are x86_64 syscalls."""
        return frozenset(n for n in self.allowed_names() | self.conditional_names()
                         if number_of(n) is not None)

    def conditional_names(self) -> frozenset[str]:
        """Names allowed only for some argument values."""
        return frozenset(n for r in self.rules if r.action == "SCMP_ACT_ALLOW" and r.args
                         for n in r.names) - self.allowed_names()

    def to_json(self) -> str:
        return json.dumps(self.document, indent=2, sort_keys=False) + "\n"


# ---------------------------------------------------------------------------- generate


def generate(names: Iterable[str], *, kill: bool = False,
             comment: str | None = None) -> dict[str, Any]:
    """A Docker/OCI profile allowing exactly `names`; everything else EPERM (or, with kill,
    SCMP_ACT_KILL_PROCESS)."""
    allowed = sorted(set(names))
    unknown = [n for n in allowed if number_of(n) is None]
    if unknown:
        raise ProfileError("generated profile",
                           f"libseccomp does not know these syscalls: {', '.join(unknown)}")
    doc: dict[str, Any] = {}
    if comment:
        doc["comment"] = comment
    if kill:
        doc["defaultAction"] = "SCMP_ACT_KILL_PROCESS"
    else:
        doc["defaultAction"] = "SCMP_ACT_ERRNO"
        doc["defaultErrnoRet"] = 1
    doc["archMap"] = [{"architecture": ARCH_NAME, "subArchitectures": list(SUB_ARCHES)}]
    doc["syscalls"] = [{"names": allowed, "action": "SCMP_ACT_ALLOW"}] if allowed else []
    return doc


# ---------------------------------------------------------------------------- parse


def load_file(path: str | Path) -> Profile:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ProfileError(str(p), f"cannot read: {exc.strerror or exc}") from None
    return parse(text, str(p))


def parse(text: str, source: str) -> Profile:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProfileError(source, f"not valid JSON: {exc.msg} at line {exc.lineno} "
                                   f"column {exc.colno}") from None
    return from_document(doc, source)


def from_document(doc: Any, source: str, *, arch: str = "amd64",
                  caps: frozenset[str] = DOCKER_DEFAULT_CAPS, strict: bool = True) -> Profile:
    """Check and normalise a profile document. Rules with includes/excludes are kept or dropped
    the way Docker does for `arch` (Go's name) and the capability set `caps`. A syscall name
    libseccomp does not know is an error, unless not `strict` (runc skips such names: that is
    how Docker's own default profile is read)."""
    if not isinstance(doc, dict):
        raise ProfileError(source, "the top level must be a JSON object")
    default = doc.get("defaultAction")
    _check_action(default, source, "defaultAction")
    errno_ret = doc.get("defaultErrnoRet")
    if errno_ret is not None and (not isinstance(errno_ret, int) or errno_ret < 0):
        raise ProfileError(source, f"defaultErrnoRet must be a non-negative integer, "
                                   f"not {errno_ret!r}")
    arches: list[str] = []
    for entry in doc.get("archMap") or []:
        if not isinstance(entry, dict):
            raise ProfileError(source, f"archMap entries must be objects, not {entry!r}")
        for a in (entry.get("architecture", ""), *(entry.get("subArchitectures") or [])):
            if a not in KNOWN_ARCHES:
                raise ProfileError(source, f"unknown architecture {a!r}")
        if entry.get("architecture") == ARCH_NAME:  # Docker uses the host's entry only
            arches.append(ARCH_NAME)
            arches.extend(entry.get("subArchitectures") or [])
    arches.extend(doc.get("architectures") or [])
    for a in arches:
        if a not in KNOWN_ARCHES:
            raise ProfileError(source, f"unknown architecture {a!r}")
    syscalls = doc.get("syscalls") or []
    if not isinstance(syscalls, list):
        raise ProfileError(source, "syscalls must be a list")
    rules = []
    for i, entry in enumerate(syscalls):
        rule = _rule(entry, source, i, arch, caps, strict)
        if rule is not None:
            rules.append(rule)
    return Profile(source, default, errno_ret, tuple(dict.fromkeys(arches)), tuple(rules), doc)


def _check_action(action: Any, source: str, where: str) -> None:
    if action not in ACTIONS:
        raise ProfileError(source, f"{where}: unknown action {action!r} "
                                   f"(expected one of {', '.join(ACTIONS)})")


def _rule(entry: Any, source: str, index: int, arch: str, caps: frozenset[str],
          strict: bool) -> Rule | None:
    where = f"syscalls[{index}]"
    if not isinstance(entry, dict):
        raise ProfileError(source, f"{where} must be an object")
    names = list(entry.get("names") or [])
    if entry.get("name"):
        names.append(entry["name"])
    if not names or not all(isinstance(n, str) for n in names):
        raise ProfileError(source, f"{where} has no syscall names")
    action = entry.get("action")
    _check_action(action, source, where)
    args = []
    for a in entry.get("args") or []:
        try:
            args.append(ArgCondition(int(a["index"]), int(a.get("value", 0)),
                                     int(a.get("valueTwo", 0)), str(a["op"])))
        except (KeyError, TypeError, ValueError):
            raise ProfileError(source, f"{where}: malformed argument condition {a!r}") from None
        if args[-1].op not in OPS:
            raise ProfileError(source, f"{where}: unknown comparison {args[-1].op!r}")
    if not _included(entry, arch, caps):
        return None
    unknown = [n for n in names if not is_known_name(n)]
    if unknown and not strict:
        names = [n for n in names if n not in unknown]
        if not names:
            return None
    elif unknown:
        raise ProfileError(source, f"{where}: unknown syscall {', '.join(map(repr, unknown))} "
                                   f"(libseccomp does not know it on x86_64)")
    return Rule(tuple(names), action, entry.get("errnoRet"), tuple(args))


def _included(entry: Mapping[str, Any], arch: str, caps: frozenset[str]) -> bool:
    inc = entry.get("includes") or {}
    exc = entry.get("excludes") or {}
    if arch in (exc.get("arches") or []):
        return False
    if any(c in caps for c in exc.get("caps") or []):
        return False
    if inc.get("arches") and arch not in inc["arches"]:
        return False
    return not (inc.get("caps") and not all(c in caps for c in inc["caps"]))
