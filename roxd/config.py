"""roxd.toml: typed configuration with a default for every key.

With no --config and no /etc/roxd/roxd.toml, roxd runs on these defaults and the shipped rule
pack; config/roxd.toml in the source tree documents every key with its default. Unknown keys
and wrong types are errors that name the file, the key and what was expected.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from roxd.alerts.settings import AlertsSettings, parse_alerts_settings
from roxd.api.settings import ApiSettings
from roxd.baselines.settings import BaselineSettings
from roxd.config_tables import parse_table
from roxd.errors import ConfigError
from roxd.incidents.settings import IncidentsSettings
from roxd.netmap.flows import NetmapSettings
from roxd.ui.settings import DashboardSettings

DEFAULT_CONFIG_PATH = Path("/etc/roxd/roxd.toml")


def shipped_rules_dir() -> Path:
    """rules/ beside the package in a source checkout, /usr/share/roxd/rules when installed."""
    checkout = Path(__file__).resolve().parents[1] / "rules"
    if checkout.is_dir() and (Path(__file__).resolve().parents[1] / "pyproject.toml").exists():
        return checkout
    return Path("/usr/share/roxd/rules")


@dataclass(frozen=True)
class DaemonConfig:
    state_dir: str = "/var/lib/roxd"
    cache_dir: str = "/var/cache/roxd"
    socket: str = "/run/roxd/roxd.sock"
    log_level: str = "info"
    # How often counters are read and a status line is logged (seconds).
    stats_interval_s: float = 30.0


@dataclass(frozen=True)
class SensorSection:
    bpf_dir: str = ""  # empty: bpf/ in a checkout, else /usr/share/roxd/bpf
    ringbuf_pages: int = 1024
    max_args: int = 32
    # Identical events that matched no rule are counted in the kernel, not sent, for this long.
    # 0 sends every event (costly under exec/connect storms).
    fold_window_s: float = 10.0
    poll_timeout_ms: int = 100
    # Batched ring-buffer wake-ups: a record that needs no action from roxd at once waits up to
    # this long (plus 2 ms) for the next read instead of waking roxd (docs/performance.md).
    # 0: every record may wake roxd, as before.
    ring_batch_ms: int = 20
    # When records keep coming (a read of two or more less than this long after the last
    # read) roxd stays awake this long (ms) and reads again, so a stream is read in batches
    # rather than with a wake-up per exec; a record written meanwhile (an urgent one too)
    # waits at most this long. 0: off (docs/performance.md).
    ring_linger_ms: float = 5.0
    # Module load attempts (init_module, finit_module, delete_module) on kernels whose module
    # syscalls have no tracepoints: seen only by a raw sys_exit program that runs for every
    # system call on the host (docs/detection.md, evasion: measured cost). Off by default.
    module_syscalls_raw: bool = False


@dataclass(frozen=True)
class ContainersSection:
    docker_url: str = "unix:///var/run/docker.sock"
    docker_timeout_s: float = 5.0
    # More runtimes to name containers from (docs/runtimes.md); empty = not asked.
    containerd_address: str = "/run/containerd/containerd.sock"
    podman_url: str = "unix:///run/podman/podman.sock"


@dataclass(frozen=True)
class RulesSection:
    # Empty: the shipped pack, then /etc/roxd/rules.d when it exists.
    paths: tuple[str, ...] = ()
    # Global dry run: every kill/isolate is reported as "would", nothing is enforced.
    monitor: bool = False
    # Seconds between checks of the rule files on disk; a change reloads them like SIGHUP
    # (a Kubernetes ConfigMap update included). 0 turns the check off.
    watch_interval_s: float = 5.0


@dataclass(frozen=True)
class EnforceSection:
    # CIDRs a quarantined container may still reach (and be reached from), e.g. a log shipper.
    isolate_allow: tuple[str, ...] = ()
    # Containers sharing the host network have no namespace of their own for the quarantine
    # table. Then: "none" (report that isolation failed), "pause" or "kill" the container.
    isolate_fallback: str = "none"
    # Seconds between quarantine reconciliations (re-apply after a container restart,
    # forget removed containers).
    reconcile_interval_s: float = 30.0
    # Rules with kill_target = "container": "kill" (SIGKILL through the runtime) or "stop"
    # (SIGTERM, then SIGKILL after the container's stop timeout).
    container_kill: str = "kill"
    # Rule-driven kills of host processes (in the kernel and by pidfd). Off: a rule whose scope
    # admits the host still alerts there, but kills in containers only (an operator's
    # `grep -r cryptonight /var/log` is not a miner). Opt in with true.
    host_kills: bool = False
    # Never killed, in addition to the built-in list (pid 1, roxd and its ancestors, dockerd,
    # containerd, containerd-shim*, runc, crio, conmon, podman, sshd, sshd-session, systemd*):
    # host processes whose comm (protected_comms) or exe path (protected_exes) matches one of
    # these shell patterns.
    protected_comms: tuple[str, ...] = ()
    protected_exes: tuple[str, ...] = ()


@dataclass(frozen=True)
class SeccompSection:
    # Learn containers labelled roxd.learn=true from their start (see docs/seccomp.md).
    honor_label: bool = False
    # Seconds between reads of the learned bitmaps and the kill/denial counters.
    poll_interval_s: float = 0.5


@dataclass(frozen=True)
class PostureSection:
    # CIS Docker Benchmark scans (docs/posture.md): at start, every interval_s, and shortly
    # after the running containers change. Off: GET /v1/posture answers 503.
    enabled: bool = True
    interval_s: float = 3600.0


@dataclass(frozen=True)
class MetricsSection:
    # A TCP listener for Prometheus (GET /metrics). "" = off: /v1/metrics on the control socket
    # only. "9560" = 127.0.0.1:9560; "host:port" or "[v6]:port" to choose the interface.
    listen: str = ""


@dataclass(frozen=True)
class Config:
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    sensor: SensorSection = field(default_factory=SensorSection)
    containers: ContainersSection = field(default_factory=ContainersSection)
    rules: RulesSection = field(default_factory=RulesSection)
    enforce: EnforceSection = field(default_factory=EnforceSection)
    seccomp: SeccompSection = field(default_factory=SeccompSection)
    baselines: BaselineSettings = field(default_factory=BaselineSettings)
    posture: PostureSection = field(default_factory=PostureSection)
    api: ApiSettings = field(default_factory=ApiSettings)
    alerts: AlertsSettings = field(default_factory=AlertsSettings)
    incidents: IncidentsSettings = field(default_factory=IncidentsSettings)
    netmap: NetmapSettings = field(default_factory=NetmapSettings)
    metrics: MetricsSection = field(default_factory=MetricsSection)
    dashboard: DashboardSettings = field(default_factory=DashboardSettings)
    source: str = "built-in defaults"

    def rule_paths(self) -> list[Path]:
        if self.rules.paths:
            return [Path(p) for p in self.rules.paths]
        paths = [shipped_rules_dir()]
        local = Path("/etc/roxd/rules.d")
        if local.is_dir():
            paths.append(local)
        return paths


_SECTIONS: dict[str, type] = {
    "daemon": DaemonConfig,
    "sensor": SensorSection,
    "containers": ContainersSection,
    "rules": RulesSection,
    "enforce": EnforceSection,
    "seccomp": SeccompSection,
    "baselines": BaselineSettings,
    "posture": PostureSection,
    "api": ApiSettings,
    "incidents": IncidentsSettings,
    "netmap": NetmapSettings,
    "metrics": MetricsSection,
    "dashboard": DashboardSettings,
}


def load_config(path: Path | None) -> Config:
    """Load `path`, or /etc/roxd/roxd.toml when it exists, or the built-in defaults."""
    if path is None:
        if not DEFAULT_CONFIG_PATH.exists():
            return Config()
        path = DEFAULT_CONFIG_PATH
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), str(exc), getattr(exc, "lineno", None)) from exc
    return parse_config(raw, str(path))


def parse_config(raw: dict[str, Any], source: str) -> Config:
    sections: dict[str, Any] = {}
    for name, value in raw.items():
        if name == "alerts":  # lists of tables (collectors, webhooks): parsed by its owner
            if not isinstance(value, dict):
                raise ConfigError(source, "[alerts] must be a table")
            sections["alerts"] = parse_alerts_settings(value, source)
            continue
        if name not in _SECTIONS:
            raise ConfigError(
                source, f"unknown section [{name}]; known: {', '.join([*_SECTIONS, 'alerts'])}")
        if not isinstance(value, dict):
            raise ConfigError(source, f"[{name}] must be a table")
        sections[name] = parse_table(_SECTIONS[name], name, value, source)
    config = Config(source=source, **sections)
    _check(config, source)
    return config


def _check(config: Config, source: str) -> None:
    import ipaddress

    from roxd.enforce.fallbacks import ISOLATE_FALLBACKS

    if config.enforce.isolate_fallback not in ISOLATE_FALLBACKS:
        raise ConfigError(source, f"enforce.isolate_fallback must be one of "
                                  f"{', '.join(ISOLATE_FALLBACKS)}, not "
                                  f"{config.enforce.isolate_fallback!r}")
    if config.enforce.container_kill not in ("kill", "stop"):
        raise ConfigError(source, "enforce.container_kill must be kill or stop, not "
                                  f"{config.enforce.container_kill!r}")
    for cidr in config.enforce.isolate_allow:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError as exc:
            raise ConfigError(source, f"enforce.isolate_allow: {exc}") from exc
    address = config.containers.containerd_address.removeprefix("unix://")
    if address and not address.startswith("/"):
        raise ConfigError(source, "containers.containerd_address must be the absolute path of "
                                  f"containerd's socket (or empty), not {address!r}")
    podman = config.containers.podman_url
    if podman and not (podman.startswith("unix:///") or podman.startswith(("tcp://",
                                                                            "http://"))):
        raise ConfigError(source, "containers.podman_url must be unix:///<socket path> or "
                                  f"tcp://host:port (or empty), not {podman!r}")
    if config.rules.watch_interval_s < 0:
        raise ConfigError(source, "rules.watch_interval_s must be 0 (off) or more")
    if config.posture.interval_s <= 0:
        raise ConfigError(source, "posture.interval_s must be more than 0")
    for problem in config.api.check():
        raise ConfigError(source, f"api: {problem}")
    for problem in config.baselines.problems():
        raise ConfigError(source, problem)
    for problem in config.dashboard.check():
        raise ConfigError(source, problem)
    for problem in config.incidents.check():
        raise ConfigError(source, f"incidents.{problem}")
    for problem in config.netmap.check():
        raise ConfigError(source, f"netmap.{problem}")
    from roxd.api.metrics_http import parse_listen

    try:
        parse_listen(config.metrics.listen)
    except ValueError as exc:
        raise ConfigError(source, f"metrics.listen {exc}") from exc
    if config.sensor.ringbuf_pages <= 0 or config.sensor.ringbuf_pages & (
            config.sensor.ringbuf_pages - 1):
        raise ConfigError(source, "sensor.ringbuf_pages must be a power of two")
    if not 0 <= config.sensor.ring_linger_ms <= 50:
        raise ConfigError(source, "sensor.ring_linger_ms must be between 0 and 50 (ms), not "
                          f"{config.sensor.ring_linger_ms}")
    if not 0 <= config.sensor.ring_batch_ms <= 1000:
        raise ConfigError(source, "sensor.ring_batch_ms must be between 0 and 1000 (ms), not "
                          f"{config.sensor.ring_batch_ms}")
