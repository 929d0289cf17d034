"""Syscall numbers <-> names, through libseccomp only (never a hand-written table)."""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

from roxd.seccomp.errors import SeccompUnavailable

ARCH_NAME = "SCMP_ARCH_X86_64"
SUB_ARCHES = ("SCMP_ARCH_X86", "SCMP_ARCH_X32")


def libseccomp():
    try:
        import seccomp  # Debian python3-seccomp (libseccomp's own binding); pyseccomp alike
    except ImportError:
        try:
            import pyseccomp as seccomp
        except ImportError as exc:
            raise SeccompUnavailable(
                "libseccomp's Python binding is missing: install python3-seccomp") from exc
    return seccomp


def native_arch():
    return libseccomp().Arch.X86_64


@lru_cache(maxsize=1024)
def name_of(nr: int) -> str | None:
    """The x86_64 name of a syscall number, or None when this libseccomp does not know it."""
    sc = libseccomp()
    try:
        name = sc.resolve_syscall(native_arch(), nr)
    except (ValueError, RuntimeError, TypeError):
        return None
    return name.decode() if isinstance(name, bytes) else str(name)


@lru_cache(maxsize=1024)
def number_of(name: str) -> int | None:
    """The x86_64 number of a syscall name, or None when libseccomp does not know the name."""
    sc = libseccomp()
    try:
        nr = sc.resolve_syscall(native_arch(), name)
    except (ValueError, RuntimeError, TypeError):
        return None
    return nr if nr >= 0 else None


@lru_cache(maxsize=2048)
def is_known_name(name: str) -> bool:
    """libseccomp knows the name on some architecture (x86_64 gives other architectures' names
    negative pseudo numbers; only -1 means unknown)."""
    sc = libseccomp()
    try:
        return sc.resolve_syscall(native_arch(), name) != -1
    except (ValueError, RuntimeError, TypeError):
        return False


def split_known(numbers: Iterable[int]) -> tuple[frozenset[str], frozenset[int]]:
    """(names libseccomp knows, numbers it does not)."""
    names: set[str] = set()
    unknown: set[int] = set()
    for nr in numbers:
        name = name_of(nr)
        if name is None:
            unknown.add(nr)
        else:
            names.add(name)
    return frozenset(names), frozenset(unknown)


def all_numbers(limit: int = 512) -> frozenset[int]:
    """Every x86_64 syscall number below limit that libseccomp names."""
    return frozenset(nr for nr in range(limit) if name_of(nr) is not None)
