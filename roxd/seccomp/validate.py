"""Compile a profile with libseccomp (the library runc uses), export its PFC text and BPF, and
compare it with Docker's default profile.

Docker's default profile is read from the file Debian ships in golang-github-docker-docker-dev
(profiles/seccomp/default.json of the same docker.io source), never written by hand. When it is
not installed, `find_docker_default` says so and the comparison is reported as unavailable.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from roxd.seccomp.errors import ProfileError
from roxd.seccomp.profile import Profile, from_document, load_file, parse
from roxd.seccomp.syscalls import libseccomp

log = logging.getLogger(__name__)

DEFAULT_PROFILE_PATHS = (
    Path("/usr/share/gocode/src/github.com/docker/docker/profiles/seccomp/default.json"),
    Path("/usr/share/roxd/docker-default-seccomp.json"),
    Path("/var/cache/roxd/docker-default-seccomp.json"),
)
DEFAULT_PROFILE_PACKAGE = "golang-github-docker-docker-dev"
_DEB_MEMBER = "./usr/share/gocode/src/github.com/docker/docker/profiles/seccomp/default.json"

_ARCHES = {"SCMP_ARCH_X86_64": "X86_64", "SCMP_ARCH_X86": "X86", "SCMP_ARCH_X32": "X32",
           "SCMP_ARCH_AARCH64": "AARCH64", "SCMP_ARCH_ARM": "ARM"}


@dataclass(frozen=True)
class Validation:
    source: str
    allowed: int  # unconditionally allowed names
    conditional: int  # names allowed only for some argument values
    bpf_instructions: int
    pfc: str
    skipped_arches: tuple[str, ...]  # listed, but not for this host's libseccomp mapping


@dataclass(frozen=True)
class Comparison:
    allowed: int  # x86_64 syscalls allowed (unconditionally or for some arguments)
    docker_default_allowed: int | None  # None: Docker's default profile is not available
    docker_default_source: str | None
    only_in_profile: tuple[str, ...]  # allowed here, not by Docker's default

    def summary(self) -> str:
        if self.docker_default_allowed is None:
            return (f"allows {self.allowed} syscalls; Docker's default profile is not on this "
                    f"machine (install {DEFAULT_PROFILE_PACKAGE} to compare)")
        extra = (f"; {len(self.only_in_profile)} beyond the default: "
                 f"{', '.join(self.only_in_profile)}" if self.only_in_profile else "")
        return (f"allows {self.allowed} syscalls, Docker's default allows "
                f"{self.docker_default_allowed} ({self.docker_default_source}){extra}")


def compile_filter(profile: Profile):
    """A libseccomp SyscallFilter for the profile; ProfileError when libseccomp refuses it."""
    sc = libseccomp()
    try:
        filt = sc.SyscallFilter(_action(sc, profile.default_action, profile.default_errno_ret,
                                        profile))
    except (ValueError, RuntimeError, OSError) as exc:
        raise ProfileError(profile.source, f"libseccomp refused the default action: {exc}") \
            from None
    for arch_name in profile.architectures:
        attr = _ARCHES.get(arch_name)
        if attr is None:
            continue
        arch = getattr(sc.Arch, attr)
        try:
            if not filt.exist_arch(arch):
                filt.add_arch(arch)
        except (ValueError, RuntimeError, OSError) as exc:
            raise ProfileError(profile.source, f"libseccomp refused {arch_name}: {exc}") \
                from None
    for rule in profile.rules:
        action = _action(sc, rule.action, rule.errno_ret, profile)
        if _same_as_default(rule.action, rule.errno_ret, profile):
            continue  # libseccomp rejects a rule whose action is the default's
        conds = [sc.Arg(c.index, getattr(sc, c.op.removeprefix("SCMP_CMP_")), c.value,
                        c.value_two) if c.op == "SCMP_CMP_MASKED_EQ"
                 else sc.Arg(c.index, getattr(sc, c.op.removeprefix("SCMP_CMP_")), c.value)
                 for c in rule.args]
        for name in rule.names:
            try:
                filt.add_rule(action, name, *conds)
            except (ValueError, RuntimeError, OSError) as exc:
                raise ProfileError(profile.source,
                                   f"libseccomp refused the rule for {name!r}: {exc}") from None
    return filt


def validate(profile: Profile) -> Validation:
    filt = compile_filter(profile)
    with tempfile.TemporaryFile("w+") as pfc, tempfile.TemporaryFile("w+b") as bpf:
        filt.export_pfc(pfc)
        filt.export_bpf(bpf)
        pfc.seek(0)
        bpf.seek(0)
        text = pfc.read()
        size = len(bpf.read())
    skipped = tuple(a for a in profile.architectures if a not in _ARCHES)
    return Validation(profile.source, len(profile.allowed_names()),
                      len(profile.conditional_names()), size // 8, text, skipped)


def compare(profile: Profile, default: Profile | None) -> Comparison:
    allowed = profile.native_allowed()
    if default is None:
        return Comparison(len(allowed), None, None, ())
    dflt = default.native_allowed()
    return Comparison(len(allowed), len(dflt), default.source, tuple(sorted(allowed - dflt)))


def find_docker_default(extra: tuple[Path, ...] = ()) -> Profile | None:
    """Docker's default profile, as Docker evaluates it on amd64 with its default caps."""
    env = os.environ.get("ROXD_DOCKER_DEFAULT_SECCOMP")
    candidates = ((Path(env),) if env else ()) + extra + DEFAULT_PROFILE_PATHS
    for path in candidates:
        if path.is_file():
            try:
                doc = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                log.warning("Docker default profile %s unreadable: %s", path, exc)
                continue
            return from_document(doc, str(path), strict=False)
    return None


def fetch_docker_default(dest: Path) -> Path:
    """Extract Docker's default profile from Debian's package into dest (apt-get download, no
    install: the package would pull 250 Go source packages)."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise ProfileError(str(dest), "apt-get/dpkg-deb missing: cannot fetch Docker's default")
    with tempfile.TemporaryDirectory() as tmp:
        got = subprocess.run(["apt-get", "download", DEFAULT_PROFILE_PACKAGE], cwd=tmp,
                             capture_output=True, text=True)
        debs = list(Path(tmp).glob("*.deb"))
        if got.returncode != 0 or not debs:
            raise ProfileError(DEFAULT_PROFILE_PACKAGE,
                               f"apt-get download failed: {got.stderr.strip()[-300:]}")
        tar = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(debs[0])], capture_output=True)
        out = subprocess.run(["tar", "-xO", _DEB_MEMBER], input=tar.stdout, capture_output=True)
        if out.returncode != 0 or not out.stdout:
            raise ProfileError(str(debs[0]), "no profiles/seccomp/default.json in the package")
    parse(out.stdout.decode(), DEFAULT_PROFILE_PACKAGE)  # must be a profile we can read
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(out.stdout)
    return dest


def _same_as_default(action: str, errno_ret: int | None, profile: Profile) -> bool:
    if action != profile.default_action:
        return False
    if action == "SCMP_ACT_ERRNO":
        return (errno_ret if errno_ret is not None else 1) == (
            profile.default_errno_ret if profile.default_errno_ret is not None else 1)
    return True


def _action(sc, name: str, errno_ret: int | None, profile: Profile):
    if name == "SCMP_ACT_ALLOW":
        return sc.ALLOW
    if name == "SCMP_ACT_ERRNO":
        return sc.ERRNO(errno_ret if errno_ret is not None else
                        (profile.default_errno_ret if profile.default_errno_ret is not None
                         else 1))
    if name in ("SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD"):
        return sc.KILL
    if name == "SCMP_ACT_KILL_PROCESS":
        return sc.KILL_PROCESS
    if name == "SCMP_ACT_TRAP":
        return sc.TRAP
    if name == "SCMP_ACT_LOG":
        return sc.LOG
    if name == "SCMP_ACT_TRACE":
        return sc.TRACE(errno_ret or 0)
    if name == "SCMP_ACT_NOTIFY":
        return sc.NOTIFY
    raise ProfileError(profile.source, f"unknown action {name!r}")


__all__ = ["Comparison", "Validation", "compare", "compile_filter", "fetch_docker_default",
           "find_docker_default", "load_file", "validate"]
