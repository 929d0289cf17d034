"""The `[dashboard]` configuration section: the web dashboard's listener (off by default)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass


@dataclass(frozen=True)
class DashboardSettings:
    # Off by default: the dashboard is one more listener, opened only when asked for.
    enabled: bool = False
    # host:port (IPv6 as [::1]:port). Loopback unless allow_remote = true.
    listen: str = "127.0.0.1:7466"
    # A non-loopback listen address is refused unless this is true: the dashboard speaks
    # plain HTTP, so beyond loopback put a TLS proxy in front of it.
    allow_remote: bool = False
    # How long a browser session (the cookie `roxctl ui` leads to) lasts, in seconds.
    session_ttl_s: float = 28800.0

    def address(self) -> tuple[str, int]:
        """(host, port) of `listen`; ValueError naming the key when it is malformed."""
        host, sep, port = self.listen.rpartition(":")
        if not sep or not host:
            raise ValueError(f"dashboard.listen must be host:port, not {self.listen!r}")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        try:
            number = int(port)
        except ValueError:
            raise ValueError(f"dashboard.listen: port {port!r} is not a number") from None
        if not 0 < number < 65536:
            raise ValueError(f"dashboard.listen: port {number} is out of range")
        return host, number

    def is_loopback(self) -> bool:
        host, _ = self.address()
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False  # a host name: not known to be loopback

    def check(self) -> list[str]:
        """Problems with the values, as messages naming the key (empty when fine)."""
        try:
            host, _ = self.address()
        except ValueError as exc:
            return [str(exc)]
        problems = []
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if host != "localhost":
                problems.append(f"dashboard.listen: {host!r} is not an IP address "
                                "(or localhost)")
        if not problems and not self.is_loopback() and not self.allow_remote:
            problems.append(f"dashboard.listen {self.listen!r} is not a loopback address: "
                            "set dashboard.allow_remote = true to listen beyond this host "
                            "(plain HTTP: put a TLS proxy in front)")
        if self.session_ttl_s < 60:
            problems.append("dashboard.session_ttl_s must be at least 60")
        return problems
