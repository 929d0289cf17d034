"""roxd: host-level runtime enforcement for container hosts (eBPF via bcc)."""

__version__ = "0.1.0"
