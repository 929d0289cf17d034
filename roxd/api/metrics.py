"""Prometheus text exposition (format 0.0.4) of roxd's counters: GET /v1/metrics on the control
socket, and GET /metrics on the opt-in TCP listener ([metrics] listen, metrics_http.py).

Names follow Prometheus' conventions: the `roxd_` prefix, base units in the name (`_seconds`,
`_bytes`), `_total` on counters only, `_info` for a constant 1 with labels; gauges (queued,
stored, running) never end in `_total`. Label values and HELP texts are escaped as the format
says (backslash, double quote, newline). tests/unit/test_metrics_http.py parses a real scrape
with prometheus_client's own parser.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from typing import Any

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_FAMILY = re.compile(r"(exec|connect)_(seen|emitted|folded|dropped)\Z")
_NAME_UNSAFE = re.compile(r"[^a-zA-Z0-9_]")
# alert sink statistics that are levels, not counts: exposed as gauges
SINK_GAUGES = {"queued": ("roxd_alert_sink_queued", "records waiting in a sink's queue "
                          "(memory and disk)"),
               "queued_bytes": ("roxd_alert_sink_queued_bytes", "bytes of the records in a "
                                "sink's disk queue"),
               "stored": ("roxd_alert_sink_stored", "alerts held by the alert store")}


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _help(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def _labels(labels: Mapping[str, Any]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_esc(str(v))}"' for k, v in labels.items()) + "}"


class Exposition:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def metric(self, name: str, kind: str, help_text: str,
               samples: Iterable[tuple[Mapping[str, Any], float]]) -> None:
        self.lines.append(f"# HELP {name} {_help(help_text)}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            self.lines.append(f"{name}{_labels(labels)} {_num(value)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def render(status: Mapping[str, Any], alert_counts: Mapping[tuple[str, str, str], int],
           api_status: Mapping[int, int], stream_drops: Mapping[str, int]) -> str:
    out = Exposition()
    out.metric("roxd_build_info", "gauge", "roxd version", [({"version": status["version"]}, 1)])
    out.metric("roxd_uptime_seconds", "gauge", "seconds since roxd started",
               [({}, status["uptime_s"])])
    out.metric("roxd_start_time_seconds", "gauge", "when roxd started, seconds since the epoch",
               [({}, round(time.time() - status["uptime_s"], 3))])
    kernel: Mapping[str, int] = status["kernel"]
    out.metric("roxd_kernel_events_total", "counter",
               "events the kernel saw, emitted to userspace, folded in the kernel, or dropped "
               "(ring buffer full), per family",
               [({"family": m.group(1), "outcome": m.group(2)}, v)
                for k, v in sorted(kernel.items()) if (m := _FAMILY.match(k))])
    for name, value in sorted(kernel.items()):
        if not _FAMILY.match(name):
            out.metric(f"roxd_kernel_{_NAME_UNSAFE.sub('_', name)}_total", "counter",
                       f"kernel counter {name}",
                       [({}, value)])
    drops = status["drops"]
    out.metric("roxd_drops_total", "counter", "events lost before roxd matched them, by cause",
               [({"cause": "ringbuf_full", "family": fam}, v)
                for fam, v in sorted(drops["by_cause"]["ringbuf_full"].items())]
               + [({"cause": "decode_error", "family": "any"}, drops["decode_errors"])]
               + [({"cause": f"stream_overflow_{t}", "family": "any"}, v)
                  for t, v in sorted(stream_drops.items())])
    out.metric("roxd_cgroup_drops_total", "counter", "ring-buffer drops per cgroup id",
               [({"cgroup_id": cg}, v) for cg, v in sorted(drops["by_cgroup"].items())])
    out.metric("roxd_handler_errors_total", "counter", "events whose handling raised",
               [({}, drops["handler_errors"])])
    out.metric("roxd_events_total", "counter", "events handled in userspace",
               [({}, status["events"]["total"])])
    out.metric("roxd_events_per_second", "gauge", "events handled per second (10 s window)",
               [({}, status["events"]["per_second"])])
    out.metric("roxd_alerts_total", "counter", "alerts raised",
               [({}, status["alerts"]["total"])])
    out.metric("roxd_alerts_by_rule_total", "counter",
               "alerts raised since roxd started, by rule, phase and severity",
               [({"rule": r, "phase": p, "severity": s}, n)
                for (r, p, s), n in sorted(alert_counts.items())])
    rules = status["rules"]
    out.metric("roxd_rules", "gauge", "loaded rules by state",
               [({"state": "enabled"}, rules["enabled"]),
                ({"state": "disabled"}, rules["count"] - rules["enabled"])])
    out.metric("roxd_programs_attached", "gauge", "eBPF programs attached",
               [({}, status["programs"]["count"])])
    out.metric("roxd_containers", "gauge", "running containers",
               [({}, status["containers"]["running"])])
    out.metric("roxd_quarantined_containers", "gauge", "containers under network quarantine",
               [({}, status["containers"]["quarantined"])])
    out.metric("roxd_unattributed_events_total", "counter",
               "events from cgroups that look like containers but no runtime attributed "
               "(docs/runtimes.md)",
               [({}, status["containers"].get("unattributed_events", 0))])
    sinks = [(*k.rpartition(".")[::2], v)  # "syslog.tcp-10.0.0.1-514.sent": sink, counter
             for k, v in sorted(status.get("alert_sinks", {}).items())]
    out.metric("roxd_alert_sink_total", "counter",
               "alert delivery counters per sink (noise control, journald, syslog, store, "
               "webhooks, files, nats, otlp): sent, failed, dropped, ...",
               [({"sink": sink, "counter": c}, v) for sink, c, v in sinks
                if c not in SINK_GAUGES])
    for key, (name, help_text) in SINK_GAUGES.items():
        out.metric(name, "gauge", help_text,
                   [({"sink": sink}, v) for sink, c, v in sinks if c == key])
    learned = status.get("baselines") or {}
    out.metric("roxd_baseline_workloads", "gauge",
               "workloads with a baseline, by state (docs/baselines.md)",
               [({"state": state}, learned.get(key, 0)) for state, key in
                (("known", "workloads"), ("locked", "workloads_locked"),
                 ("enforcing", "workloads_enforcing"))])
    out.metric("roxd_baseline_anomalies_total", "counter",
               "executables, peers and written directories outside a locked baseline",
               [({}, learned.get("anomalies", 0))])
    network = (status.get("policy") or {}).get("network_kernel") or {}
    out.metric("roxd_network_baseline_refused_total", "counter",
               "connects and UDP sends the cgroup connect hook refused (network baselines in "
               "enforce mode)",
               [({"op": op}, network.get(f"refused_{op}", 0)) for op in ("connect", "sendmsg")])
    out.metric("roxd_network_baseline_enforced_cgroups", "gauge",
               "cgroups whose connects the cgroup connect hook checks",
               [({}, (status.get("policy") or {}).get("network_cgroups", 0))])
    out.metric("roxd_api_requests_total", "counter", "API responses by status code",
               [({"code": code}, n) for code, n in sorted(api_status.items())])
    return out.text()
