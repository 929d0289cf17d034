"""[alerts] configuration: typed dataclasses with a default for every key.

`roxd/config.py` types flat sections only; the alert sinks need lists of tables (several syslog
collectors, several webhooks), so this module parses its own section. `parse_alerts_settings()`
takes the raw `[alerts]` table from tomllib and raises ConfigError naming the key.

    [alerts.journald]           enabled
    [alerts.store]              enabled, max_age_days, max_count, max_bytes
    [alerts.noise]              fold_window_s, per_container_per_minute,
                                per_rule_per_minute, rule_limits
    [[alerts.syslog]]           one table per collector
    [[alerts.webhooks]]         one table per webhook
    [alerts.node]               hostname, kubernetes_node: the identity on exported records
    [[alerts.file]]             one table per JSON lines file (for a log shipper to tail)
    [[alerts.nats]]             one table per NATS JetStream stream
    [[alerts.otlp]]             one table per OpenTelemetry collector (OTLP/HTTP logs)

docs/alerts.md documents every key with its default.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from roxd.config_tables import parse_table
from roxd.errors import ConfigError
from roxd.model import Severity

SYSLOG_PROTOCOLS = ("udp", "tcp", "tls")
WEBHOOK_KINDS = ("generic", "slack", "pagerduty")
# RFC 5424 §6.2.1 facility codes by name
FACILITIES = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7,
    "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11, "ntp": 12, "security": 13, "console": 14,
    "solaris-cron": 15, "local0": 16, "local1": 17, "local2": 18, "local3": 19, "local4": 20,
    "local5": 21, "local6": 22, "local7": 23,
}


@dataclass(frozen=True)
class JournaldSettings:
    enabled: bool = True
    # Alerts waiting for the journald writer thread; beyond this they are dropped and counted.
    queue_max: int = 10_000


@dataclass(frozen=True)
class SyslogCollector:
    address: str = "127.0.0.1"
    port: int = 514
    protocol: str = "udp"  # udp | tcp (RFC 6587 octet counting) | tls (RFC 5425)
    ca: str = ""  # tls: CA bundle that signs the collector's certificate ("" = system store)
    cert: str = ""  # tls: client certificate (PEM), optional
    key: str = ""  # tls: client private key (PEM), optional
    server_name: str = ""  # tls: name checked against the certificate ("" = address)
    queue_max: int = 100_000  # alerts kept on disk while the collector is unreachable
    queue_max_bytes: int = 268_435_456  # and at most this many bytes of them; 0 = no limit
    app_name: str = "roxd"
    hostname: str = ""  # "" = this host's name
    facility: str = "auth"
    connect_timeout_s: float = 5.0
    backoff_max_s: float = 30.0
    name: str = ""  # queue file name; "" = protocol-address-port

    @property
    def queue_name(self) -> str:
        raw = self.name or f"{self.protocol}-{self.address}-{self.port}"
        return "".join(c if c.isalnum() or c in "-_." else "_" for c in raw)


@dataclass(frozen=True)
class StoreSettings:
    enabled: bool = True
    max_age_days: float = 30.0  # 0 = keep regardless of age
    max_count: int = 100_000  # 0 = no count limit
    # bytes of stored alert bodies; the oldest are evicted (counted) beyond it. 0 = no limit
    max_bytes: int = 1_073_741_824
    queue_max: int = 10_000  # alerts waiting for the store's writer thread


@dataclass(frozen=True)
class WebhookSettings:
    url: str = ""
    kind: str = "generic"  # generic | slack | pagerduty
    min_severity: str = "warning"  # this severity or more severe
    timeout_s: float = 5.0
    retries: int = 3  # after the first attempt
    backoff_s: float = 1.0  # first retry delay, doubled each retry
    routing_key: str = ""  # pagerduty: the integration's routing key
    queue_max: int = 1_000
    # one message per incident change (opened, phase added, spread, action, closed) too
    incidents: bool = True

    @property
    def min_severity_level(self) -> Severity:
        return Severity(self.min_severity)


@dataclass(frozen=True)
class NoiseSettings:
    fold_window_s: float = 60.0  # 0 = no folding
    per_container_per_minute: int = 120  # 0 = no rate limit
    # alerts of one rule per container per minute; 0 = no per-rule limit
    per_rule_per_minute: int = 30
    # per-rule exceptions to per_rule_per_minute: "rule.id=N" (N = 0: no limit for that rule)
    rule_limits: tuple[str, ...] = ()

    def rule_limit_map(self) -> dict[str, int]:
        """rule_limits as {rule id: limit}; ValueError naming the bad entry."""
        out: dict[str, int] = {}
        for entry in self.rule_limits:
            rule_id, sep, n = entry.partition("=")
            if not sep or not rule_id.strip() or not n.strip().isdigit():
                raise ValueError(f"{entry!r} is not \"rule.id=N\" (N a whole number)")
            out[rule_id.strip()] = int(n)
        return out


@dataclass(frozen=True)
class NodeSettings:
    hostname: str = ""  # "" = this host's name
    kubernetes_node: str = ""  # "" = $NODE_NAME when set, else none


@dataclass(frozen=True)
class JsonFileSettings:
    path: str = ""  # required: the file a log shipper tails
    max_bytes: int = 104_857_600  # rotate before a line would take the file past this
    keep: int = 5  # rotated files kept (path.1 … path.N); 0 = none
    queue_max: int = 10_000  # alerts waiting for the writer thread


@dataclass(frozen=True)
class NatsSettings:
    servers: tuple[str, ...] = ("nats://127.0.0.1:4222",)
    subject_prefix: str = "roxd"  # alerts go to <subject_prefix>.<node>.alerts
    stream: str = "ROXD_ALERTS"
    create_stream: bool = True  # create the stream when it does not exist
    stream_max_age_days: float = 30.0  # for a created stream; 0 = no age limit
    stream_replicas: int = 1  # for a created stream
    duplicate_window_s: float = 120.0  # for a created stream: Nats-Msg-Id de-duplication window
    user: str = ""
    password: str = ""
    token: str = ""
    ca: str = ""  # TLS: CA bundle for the server's certificate ("" = system store)
    cert: str = ""  # TLS: client certificate (PEM), optional
    key: str = ""  # TLS: client private key (PEM), optional
    server_name: str = ""  # TLS: name checked against the server's certificate ("" = URL host)
    queue_max: int = 100_000  # alerts kept on disk while the server is unreachable
    queue_max_bytes: int = 268_435_456  # and at most this many bytes of them (256 MiB)
    incidents: bool = True  # incident changes to <subject_prefix>.<node>.incidents
    heartbeat_bucket: str = "ROXD_NODES"  # key-value bucket for node heartbeats; "" = none
    heartbeat_s: float = 10.0  # seconds between heartbeats
    max_inflight: int = 256  # publishes awaiting their acknowledgement at once
    connect_timeout_s: float = 5.0
    ack_timeout_s: float = 5.0
    backoff_max_s: float = 30.0
    name: str = ""  # queue file name; "" = <subject_prefix>-<stream>

    @property
    def queue_name(self) -> str:
        raw = self.name or f"{self.subject_prefix}-{self.stream}"
        return "".join(c if c.isalnum() or c in "-_." else "_" for c in raw)


@dataclass(frozen=True)
class OtlpSettings:
    endpoint: str = "http://127.0.0.1:4318/v1/logs"  # the collector's OTLP/HTTP logs URL
    headers: tuple[str, ...] = ()  # extra request headers, "Name: value" (e.g. authorization)
    compression: str = "gzip"  # gzip | none (request bodies)
    incidents: bool = True  # incident changes as log records too
    ca: str = ""  # https: CA bundle for the collector's certificate ("" = system store)
    cert: str = ""  # https: client certificate (PEM), optional
    key: str = ""  # https: client private key (PEM), optional
    server_name: str = ""  # https: name checked against the certificate ("" = URL host)
    timeout_s: float = 10.0  # connect + request + response
    batch_max: int = 512  # log records per request
    queue_max: int = 100_000  # records kept on disk while the collector is unreachable
    queue_max_bytes: int = 268_435_456  # and at most this many bytes of them (256 MiB)
    backoff_max_s: float = 30.0  # retry backoff ceiling (a Retry-After is honoured)
    name: str = ""  # queue file name; "" = host-port of the endpoint

    @property
    def queue_name(self) -> str:
        raw = self.name or self.endpoint.split("://", 1)[-1].split("/", 1)[0].replace(":", "-")
        return "".join(c if c.isalnum() or c in "-_." else "_" for c in raw)


@dataclass(frozen=True)
class AlertsSettings:
    journald: JournaldSettings = field(default_factory=JournaldSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    noise: NoiseSettings = field(default_factory=NoiseSettings)
    syslog: tuple[SyslogCollector, ...] = ()
    webhooks: tuple[WebhookSettings, ...] = ()
    node: NodeSettings = field(default_factory=NodeSettings)
    file: tuple[JsonFileSettings, ...] = ()
    nats: tuple[NatsSettings, ...] = ()
    otlp: tuple[OtlpSettings, ...] = ()


_TABLES: dict[str, type] = {
    "journald": JournaldSettings, "store": StoreSettings, "noise": NoiseSettings,
    "node": NodeSettings}
_LISTS: dict[str, type] = {"syslog": SyslogCollector, "webhooks": WebhookSettings,
                           "file": JsonFileSettings, "nats": NatsSettings,
                           "otlp": OtlpSettings}


def parse_alerts_settings(raw: Mapping[str, Any], source: str) -> AlertsSettings:
    """Build AlertsSettings from the raw [alerts] table; ConfigError on any wrong key or type."""
    kwargs: dict[str, Any] = {}
    for name, value in raw.items():
        key = f"alerts.{name}"
        if name in _TABLES:
            if not isinstance(value, Mapping):
                raise ConfigError(source, f"[{key}] must be a table")
            kwargs[name] = _table(_TABLES[name], key, value, source)
        elif name in _LISTS:
            if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
                raise ConfigError(source, f"{key} must be an array of tables ([[{key}]])")
            kwargs[name] = tuple(_table(_LISTS[name], f"{key}[{i}]", v, source)
                                 for i, v in enumerate(value))
        else:
            known = ", ".join(sorted([*_TABLES, *_LISTS]))
            raise ConfigError(source, f"unknown key {key}; known: {known}")
    settings = AlertsSettings(**kwargs)
    _validate(settings, source)
    return settings


def _table(cls: type, name: str, values: Mapping[str, Any], source: str) -> Any:
    # alert settings are counts, sizes and durations: none may be negative
    return parse_table(cls, name, values, source, non_negative=True)


def _validate(settings: AlertsSettings, source: str) -> None:
    severities = [s.value for s in Severity]
    try:
        settings.noise.rule_limit_map()
    except ValueError as exc:
        raise ConfigError(source, f"alerts.noise.rule_limits: {exc}") from None
    for i, c in enumerate(settings.syslog):
        key = f"alerts.syslog[{i}]"
        if c.protocol not in SYSLOG_PROTOCOLS:
            raise ConfigError(source, f"{key}.protocol must be one of "
                                      f"{', '.join(SYSLOG_PROTOCOLS)}, not {c.protocol!r}")
        if c.facility not in FACILITIES:
            raise ConfigError(source, f"{key}.facility {c.facility!r} is not a syslog facility")
        if not 0 < c.port < 65536:
            raise ConfigError(source, f"{key}.port must be 1..65535, not {c.port}")
        if bool(c.cert) != bool(c.key):
            raise ConfigError(source, f"{key}: cert and key go together")
        if c.queue_max < 1:
            raise ConfigError(source, f"{key}.queue_max must be at least 1")
        if c.queue_max_bytes < 0:
            raise ConfigError(source, f"{key}.queue_max_bytes must be 0 (no limit) or more")
    if settings.store.max_bytes < 0:
        raise ConfigError(source, "alerts.store.max_bytes must be 0 (no limit) or more")
    names = [c.queue_name for c in settings.syslog]
    if len(set(names)) != len(names):
        raise ConfigError(source, "alerts.syslog: two collectors share a queue; give them names")
    for i, w in enumerate(settings.webhooks):
        key = f"alerts.webhooks[{i}]"
        if not w.url.startswith(("http://", "https://")):
            raise ConfigError(source, f"{key}.url must be an http:// or https:// URL")
        if w.kind not in WEBHOOK_KINDS:
            raise ConfigError(source, f"{key}.kind must be one of {', '.join(WEBHOOK_KINDS)}, "
                                      f"not {w.kind!r}")
        if w.min_severity not in severities:
            raise ConfigError(source, f"{key}.min_severity must be one of "
                                      f"{', '.join(severities)}, not {w.min_severity!r}")
        if w.kind == "pagerduty" and not w.routing_key:
            raise ConfigError(source, f"{key}: a pagerduty webhook needs routing_key")
    _validate_exporters(settings, source)


_SUBJECT_TOKEN = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
_STREAM_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


def _validate_exporters(settings: AlertsSettings, source: str) -> None:
    paths = []
    for i, f in enumerate(settings.file):
        key = f"alerts.file[{i}]"
        if not f.path.startswith("/"):
            raise ConfigError(source, f"{key}.path must be an absolute path, not {f.path!r}")
        if f.max_bytes < 4096:
            raise ConfigError(source, f"{key}.max_bytes must be at least 4096")
        if f.queue_max < 1:
            raise ConfigError(source, f"{key}.queue_max must be at least 1")
        paths.append(f.path)
    if len(set(paths)) != len(paths):
        raise ConfigError(source, "alerts.file: two tables name the same path")
    for i, n in enumerate(settings.nats):
        key = f"alerts.nats[{i}]"
        if not n.servers:
            raise ConfigError(source, f"{key}.servers must name at least one server")
        for url in n.servers:
            if not url.startswith(("nats://", "tls://")):
                raise ConfigError(source, f"{key}.servers: {url!r} is not a nats:// or tls:// URL")
        if not _SUBJECT_TOKEN.match(n.subject_prefix):
            raise ConfigError(source, f"{key}.subject_prefix {n.subject_prefix!r}: dot-separated "
                                      "tokens of letters, digits, _ and -")
        if not _STREAM_NAME.match(n.stream):
            raise ConfigError(source, f"{key}.stream {n.stream!r}: letters, digits, _ and -")
        if bool(n.cert) != bool(n.key):
            raise ConfigError(source, f"{key}: cert and key go together")
        if n.user and n.token:
            raise ConfigError(source, f"{key}: user/password or token, not both")
        if n.queue_max < 1 or n.max_inflight < 1 or n.stream_replicas < 1:
            raise ConfigError(source, f"{key}: queue_max, max_inflight and stream_replicas "
                                      "must be at least 1")
        if n.ack_timeout_s <= 0 or n.connect_timeout_s <= 0 or n.heartbeat_s <= 0:
            raise ConfigError(source, f"{key}: ack_timeout_s, connect_timeout_s and "
                                      "heartbeat_s must be > 0")
        if n.heartbeat_bucket and not _STREAM_NAME.match(n.heartbeat_bucket):
            raise ConfigError(source, f"{key}.heartbeat_bucket {n.heartbeat_bucket!r}: "
                                      "letters, digits, _ and -")
    names = [n.queue_name for n in settings.nats]
    if len(set(names)) != len(names):
        raise ConfigError(source, "alerts.nats: two tables share a queue; give them names")
    for i, o in enumerate(settings.otlp):
        key = f"alerts.otlp[{i}]"
        if not o.endpoint.startswith(("http://", "https://")):
            raise ConfigError(source, f"{key}.endpoint must be an http:// or https:// URL, "
                                      f"not {o.endpoint!r}")
        for h in o.headers:
            name, sep, _ = h.partition(":")
            if not sep or not name.strip() or any(c in h for c in "\r\n"):
                raise ConfigError(source, f"{key}.headers: {h!r} is not \"Name: value\"")
        if bool(o.cert) != bool(o.key):
            raise ConfigError(source, f"{key}: cert and key go together")
        if o.compression not in ("gzip", "none"):
            raise ConfigError(source, f"{key}.compression must be gzip or none, not "
                                      f"{o.compression!r}")
        if o.queue_max < 1 or o.batch_max < 1:
            raise ConfigError(source, f"{key}: queue_max and batch_max must be at least 1")
        if o.timeout_s <= 0:
            raise ConfigError(source, f"{key}.timeout_s must be > 0")
    names = [o.queue_name for o in settings.otlp]
    if len(set(names)) != len(names):
        raise ConfigError(source, "alerts.otlp: two tables share a queue; give them names")
