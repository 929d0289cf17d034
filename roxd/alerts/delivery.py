"""All configured alert sinks behind one AlertSink, built from AlertsSettings.

    delivery = AlertDelivery.from_settings(settings, state_dir, log_sink=LogSink(),
                                           taps={"api": TopicSink(alerts_topic)})
    dispatcher = AlertDispatcher(delivery)
    delivery.stats()  -> {"journald.sent": 3, "syslog.tcp-127.0.0.1-6514.queued": 0, ...}
    delivery.store    -> AlertStore for the API (None when disabled)
    delivery.close(timeout)                # flushes noise windows, then every sink

Order of stages: NoiseControl (fold, rate limit) → the log line (when given), the taps (the
API's live stream and ring), journald, syslog collectors, store, webhooks, JSON lines files,
NATS JetStream, OTLP collectors: every consumer sees the same alerts. The exporters (files,
NATS, OTLP) put the node's identity (`NodeIdentity`, detected once here) on every record; NATS,
OTLP, syslog and the webhooks also carry incident changes (`incident_feeds()`, handed to the
incident tracker).
A sink that cannot start (no journald socket is fine; an unwritable state dir is not) is logged
and left out, never fatal: alerts still reach the others; `problems()` names it, and every
sink that reports a problem of its own (a failing queue file), for /v1/health. A corrupt queue
or store file does not disable its sink: it is moved aside and a fresh one made
(roxd/alerts/diskqueue.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, TypeVar

from roxd.alerts.jetstream import JetStreamSink
from roxd.alerts.journald import JournaldSink
from roxd.alerts.jsonfile import JsonFileSink
from roxd.alerts.node import NodeIdentity
from roxd.alerts.noise import NoiseControl
from roxd.alerts.otlp import OtlpSink
from roxd.alerts.settings import AlertsSettings
from roxd.alerts.store import AlertStore
from roxd.alerts.syslog import SyslogForwarder
from roxd.alerts.webhooks import WebhookSink
from roxd.alerts.worker import sink_problems
from roxd.model import Alert

log = logging.getLogger("roxd.alerts")
S = TypeVar("S", bound="DeliverySink")


class DeliverySink(Protocol):
    def emit(self, alert: Alert) -> None: ...
    def stats(self) -> dict[str, int]: ...
    def close(self, timeout: float = ...) -> None: ...


class AlertDelivery:
    def __init__(self, sinks: dict[str, DeliverySink], noise: NoiseControl,
                 store: AlertStore | None = None,
                 disabled: dict[str, str] | None = None) -> None:
        self.sinks = sinks
        self.noise = noise
        self.store = store
        self.disabled = dict(disabled or {})  # configured sinks that could not start: why

    @classmethod
    def from_settings(cls, settings: AlertsSettings, state_dir: Path | str,
                      log_sink: DeliverySink | None = None,
                      taps: dict[str, DeliverySink] | None = None) -> AlertDelivery:
        state = Path(state_dir)
        sinks: dict[str, DeliverySink] = {}
        disabled: dict[str, str] = {}
        store: AlertStore | None = None
        if log_sink is not None:
            sinks["log"] = log_sink
        sinks.update(taps or {})
        if settings.journald.enabled:
            _start(sinks, disabled, "journald", lambda: JournaldSink(settings.journald))
        for c in settings.syslog:
            _start(sinks, disabled, f"syslog.{c.queue_name}",
                   lambda c=c: SyslogForwarder(c, state))
        if settings.store.enabled:
            store = _start(sinks, disabled, "store", lambda: AlertStore(state, settings.store))
        node = NodeIdentity.detect(settings.node)
        for i, w in enumerate(settings.webhooks):
            _start(sinks, disabled, f"webhook{i}.{w.kind}", lambda w=w: WebhookSink(w, node=node))
        for i, f in enumerate(settings.file):
            _start(sinks, disabled, f"file{i}", lambda f=f: JsonFileSink(f, node))
        for n in settings.nats:
            _start(sinks, disabled, f"nats.{n.queue_name}",
                   lambda n=n: JetStreamSink(n, state, node))
        for o in settings.otlp:
            _start(sinks, disabled, f"otlp.{o.queue_name}", lambda o=o: OtlpSink(o, state, node))
        noise = NoiseControl(list(sinks.values()), settings.noise, state_dir=state)
        return cls(sinks, noise, store, disabled)

    def incident_feeds(self) -> list[IncidentFeed]:
        """The exporters that also carry incident changes (NATS, OTLP, syslog collectors,
        webhooks with `incidents = true`), for the incident tracker's sinks."""
        return [IncidentFeed(s) for s in self.sinks.values()
                if isinstance(s, JetStreamSink | OtlpSink | SyslogForwarder)
                or (isinstance(s, WebhookSink) and s.settings.incidents)]

    def emit(self, alert: Alert) -> None:
        self.noise.emit(alert)

    def tick(self) -> None:
        self.noise.tick()

    def stats(self) -> dict[str, int]:
        out = {f"noise.{k}": v for k, v in self.noise.stats().items()}
        for name, sink in self.sinks.items():
            out.update({f"{name}.{k}": v for k, v in sink.stats().items()})
        return out

    def problems(self) -> list[str]:
        """Every configured sink that is not delivering, with why: disabled at start, or its
        own report (a failing queue or store file, a stopped thread). /v1/health lists them."""
        out = [f"alert sink {name} is disabled: {why}" for name, why in self.disabled.items()]
        return out + sink_problems((f"alert sink {name}", s) for name, s in self.sinks.items())

    def close(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        self.noise.close(min(1.0, timeout))
        for name, sink in self.sinks.items():
            try:
                sink.close(max(0.2, deadline - time.monotonic()))
            except Exception:
                log.exception("alert sink %s did not close cleanly", name)


class IncidentFeed:
    """An exporter as an incident sink: incident_changed only. The tracker closes its sinks
    before the last alerts (fold summaries) are flushed; the exporter itself is closed by
    AlertDelivery, after them."""

    def __init__(self,
                 exporter: JetStreamSink | OtlpSink | SyslogForwarder | WebhookSink) -> None:
        self._exporter = exporter

    def incident_changed(self, change: object) -> None:
        self._exporter.incident_changed(change)


def _start(sinks: dict[str, DeliverySink], disabled: dict[str, str], name: str,
           make: Callable[[], S]) -> S | None:
    try:
        sink = make()
    except Exception as exc:
        log.error("alert sink %s disabled: %s", name, exc)
        disabled[name] = f"{type(exc).__name__}: {exc}"
        return None
    sinks[name] = sink
    return sink
