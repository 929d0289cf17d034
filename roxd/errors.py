"""Errors a user can cause. Each ends as one clear message, never a traceback."""

from __future__ import annotations

from dataclasses import dataclass


class RoxdError(Exception):
    """Base of every error roxd reports to a user as a single line."""


@dataclass
class ConfigError(RoxdError):
    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"config {where}: {self.message}"


@dataclass
class RuleError(RoxdError):
    file: str
    line: int | None
    rule_id: str | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        rule = f" rule {self.rule_id!r}:" if self.rule_id else ""
        return f"{where}:{rule} {self.message}"


class KernelHeadersError(RoxdError):
    """No kernel headers bcc can compile against."""


class SensorError(RoxdError):
    """The eBPF programs could not be compiled, loaded or attached."""


class CgroupError(RoxdError):
    """No cgroup v2 hierarchy: events cannot be attributed to containers."""


@dataclass
class ApiError(RoxdError):
    status: int
    reason: str

    def __str__(self) -> str:
        return f"{self.status}: {self.reason}"
