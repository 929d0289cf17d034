"""Atomic Red Team YAML -> AtomicTest: parse, select (Linux, sh/bash), fill in arguments.

What runs is ART's own text with `#{arg}` replaced by the default value, remote addresses
pointed at loopback (the containers have no network but loopback) and PathToAtomicsFolder at
the copy of the atomics folder the runner puts into the container.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

EXECUTORS = ("sh", "bash")
ATOMICS_IN_CONTAINER = "/AtomicRedTeam/atomics"
LOOPBACK = "127.0.0.1"

# a get_prereq_command that fetches from a network cannot run offline
_DOWNLOAD = re.compile(
    r"\b(curl|wget|git\s+clone|apt(-get)?\s+(-\S+\s+)*install|yum\s|dnf\s|apk\s+add|"
    r"pip3?\s+install|python3?\s+-m\s+pip|gem\s+install|npm\s+install|go\s+(get|install)|"
    r"Invoke-WebRequest|snap\s+install|brew\s+install|pkg\s+install)\b")
_URL = re.compile(r"\b(https?|ftp)://([^/\s:'\"#]+)")
_IPV4 = re.compile(r"(?<![\d.])(\d{1,3}(?:\.\d{1,3}){3})(?![\d.])")
_ARG = re.compile(r"#\{([A-Za-z0-9_\-]+)\}")
# input arguments that name a remote host (their defaults are hostnames or addresses)
_REMOTE_ARG = re.compile(r"(host|server|domain|remote|target|addr|ip$|^ip|url|dest|c2|proxy)",
                         re.IGNORECASE)


class AtomicsError(Exception):
    """The atomics folder or one of its files is not what Atomic Red Team ships."""


@dataclass(frozen=True)
class Dependency:
    description: str
    prereq_command: str
    get_prereq_command: str

    @property
    def needs_download(self) -> bool:
        return bool(_DOWNLOAD.search(self.get_prereq_command))


@dataclass(frozen=True)
class AtomicTest:
    technique: str
    number: int  # 1-based position in the technique's YAML, as ART numbers tests
    name: str
    guid: str
    platforms: tuple[str, ...]
    executor: str
    command: str
    cleanup: str
    elevation_required: bool
    dependencies: tuple[Dependency, ...]
    dependency_executor: str
    arguments: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.technique}-{self.number}"

    @property
    def selected(self) -> bool:
        return "linux" in self.platforms and self.executor in EXECUTORS

    @property
    def static_skip(self) -> str | None:
        """Why the test cannot run here, known before running it; None when it can be tried."""
        if "linux" not in self.platforms:
            return "not a Linux test"
        if self.executor not in EXECUTORS:
            return f"executor {self.executor} (only sh and bash run)"
        if not self.command.strip():
            return "no command"
        return None

    def uses_atomics_folder(self) -> bool:
        text = self.command + self.cleanup + "".join(
            d.prereq_command + d.get_prereq_command for d in self.dependencies)
        text += "".join(self.arguments.values())
        return "PathToAtomicsFolder" in text or "$PathToAtomicsFolder" in text


def _url_host(m: re.Match[str]) -> str:
    """A URL's host -> loopback, except a link-local address (the metadata service)."""
    try:
        if ipaddress.ip_address(m.group(2)).is_link_local:
            return m.group(0)
    except ValueError:
        pass
    return f"{m.group(1)}://{LOOPBACK}"


def _loopback_value(name: str, value: str, arg_type: str) -> str:
    """An argument's default with any remote address replaced by loopback."""
    value = _URL.sub(_url_host, value)
    if arg_type.lower() == "url" or _REMOTE_ARG.search(name):
        v = value.strip()
        try:
            addr = ipaddress.ip_address(v)
            if not (addr.is_loopback or addr.is_unspecified or addr.is_link_local):
                return LOOPBACK
            return value
        except ValueError:
            pass
        # a bare hostname (no spaces or slashes): a remote host to contact
        if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.\-]*\.[A-Za-z]{2,}", v) and v != "localhost":
            return LOOPBACK
    return rewrite_addresses(value)


def rewrite_addresses(text: str) -> str:
    """Literal public/private IPv4 addresses and URL hosts in a command -> loopback."""
    text = _URL.sub(_url_host, text)

    def ip(m: re.Match[str]) -> str:
        try:
            addr = ipaddress.IPv4Address(m.group(1))
        except ValueError:
            return m.group(1)  # a version number like 1.2.3.400
        if addr.is_loopback or addr.is_unspecified or addr.is_multicast:
            return m.group(1)
        if addr.is_link_local:
            return m.group(1)  # 169.254.169.254: the metadata service is on the node, not remote
        if str(addr).endswith(".255") or str(addr).startswith("255."):
            return m.group(1)  # netmasks and broadcast: not an address to contact
        return LOOPBACK
    return _IPV4.sub(ip, text)


def fill(text: str, arguments: dict[str, str]) -> str:
    """Replace #{name} by the argument's value; PathToAtomicsFolder by the container's copy."""
    def sub(m: re.Match[str]) -> str:
        return arguments.get(m.group(1), m.group(0))
    out = text
    for _ in range(3):  # defaults may refer to other arguments
        new = _ARG.sub(sub, out)
        if new == out:
            break
        out = new
    out = out.replace("$PathToAtomicsFolder", ATOMICS_IN_CONTAINER)
    out = out.replace("PathToAtomicsFolder", ATOMICS_IN_CONTAINER)
    return rewrite_addresses(out)


def _text(v: Any) -> str:
    return "" if v is None else str(v)


def parse_file(path: Path) -> list[AtomicTest]:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise AtomicsError(f"{path}: cannot read ART YAML: {exc}") from exc
    if not isinstance(doc, dict) or "attack_technique" not in doc or not isinstance(
            doc.get("atomic_tests"), list):
        raise AtomicsError(f"{path}: not an ART technique file (attack_technique, atomic_tests)")
    technique = str(doc["attack_technique"]).strip()
    out: list[AtomicTest] = []
    for i, t in enumerate(doc["atomic_tests"], start=1):
        ex = t.get("executor") or {}
        args: dict[str, str] = {}
        for name, spec in (t.get("input_arguments") or {}).items():
            spec = spec or {}
            args[str(name)] = _loopback_value(str(name), _text(spec.get("default")),
                                              _text(spec.get("type")))
        deps = tuple(
            Dependency(_text(d.get("description")).strip(), _text(d.get("prereq_command")),
                       _text(d.get("get_prereq_command")))
            for d in (t.get("dependencies") or []))
        out.append(AtomicTest(
            technique=technique, number=i, name=_text(t.get("name")).strip(),
            guid=_text(t.get("auto_generated_guid")),
            platforms=tuple(str(p) for p in t.get("supported_platforms") or ()),
            executor=_text(ex.get("name")), command=_text(ex.get("command")),
            cleanup=_text(ex.get("cleanup_command")),
            elevation_required=bool(ex.get("elevation_required")), dependencies=deps,
            dependency_executor=_text(t.get("dependency_executor_name")) or _text(ex.get("name")),
            arguments=args))
    return out


def default_atomics(repo: Path) -> Path:
    env = os.environ.get("ROXD_ATOMICS")
    if env:
        return Path(env)
    # the shared checkout sits beside the worktrees: ../shared/atomic-red-team
    for base in (repo.parent, repo.parent.parent):
        cand = base / "shared" / "atomic-red-team"
        if cand.is_dir():
            return cand
    return repo.parent / "shared" / "atomic-red-team"


def atomics_dir(path: Path) -> Path:
    """Accept the checkout or its atomics/ folder."""
    if (path / "atomics").is_dir():
        path = path / "atomics"
    if not path.is_dir():
        raise AtomicsError(f"atomics folder {path} does not exist (--atomics PATH or "
                           "ROXD_ATOMICS: an Atomic Red Team checkout or its atomics/ folder)")
    if not any(path.glob("T*/T*.yaml")):
        raise AtomicsError(f"{path} holds no T*/T*.yaml technique files: not ART's atomics")
    return path


def load(path: Path) -> list[AtomicTest]:
    """Every test of every technique under the atomics folder, Linux or not."""
    folder = atomics_dir(path)
    tests: list[AtomicTest] = []
    for f in sorted(folder.glob("T*/T*.yaml")):
        if f.stem != f.parent.name:
            continue
        tests.extend(parse_file(f))
    return tests


def linux_tests(tests: list[AtomicTest]) -> list[AtomicTest]:
    return [t for t in tests if "linux" in t.platforms]


def only(tests: list[AtomicTest], spec: str | None) -> list[AtomicTest]:
    """`--only T1059.004,T1053.003-2`: techniques (with their sub-techniques when a parent is
    named) or single tests by key."""
    if not spec:
        return tests
    wanted = [s.strip() for s in spec.split(",") if s.strip()]
    out = []
    for t in tests:
        for w in wanted:
            if t.key == w or t.technique == w or t.technique.startswith(w + "."):
                out.append(t)
                break
    if not out:
        raise AtomicsError(f"--only {spec}: no Linux test matches")
    return out
