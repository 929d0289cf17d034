"""One node's NATS exporter in a process of its own, driven over stdin/stdout: what a roxd
process does with its `[[alerts.nats]]` table, without the sensor (test_fleet_stress.py runs
two of them against one nats-server, restarts the server and one node, and checks the stream).

    python -m tests.system.fleet_node <state dir> <hostname> <settings json>
    stdin:  "emit <first> <n>"  n marker alerts numbered first.., each followed by its incident
                                change (as roxd's tracker sends one per alert); answers "ok"
            "stats"             answers the exporter's counters and problems as JSON
            "quit"              close(5) as systemd's stop would (SIGTERM), answers "bye"
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from roxd.alerts.jetstream import JetStreamSink
from roxd.alerts.node import NodeIdentity
from roxd.alerts.settings import NatsSettings
from tests.system.alerts_factory import make_alert


@dataclass(frozen=True)
class Change:
    """The fields of roxd's IncidentChange the exporter reads."""
    kind: str
    time_ns: int
    incident: dict[str, Any]
    phase: str | None = None
    container: str | None = None
    alert_id: str | None = None


def _hog(share: float) -> None:
    """Hold the GIL in pure Python for `share` of the time (as roxd's event thread does on a
    busy host), in 50 ms slices."""
    while True:
        end = time.monotonic() + 0.05 * share
        while time.monotonic() < end:
            pass
        time.sleep(0.05 * (1 - share))


def main() -> None:
    state, hostname, raw = sys.argv[1], sys.argv[2], sys.argv[3]
    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr,
                        format="%(asctime)s %(threadName)s %(levelname)s %(message)s")
    logging.getLogger("asyncio").setLevel(logging.WARNING)
    node = NodeIdentity(hostname=hostname, machine_id=hostname.encode().hex()[:32].ljust(32, "0"),
                        kubernetes_node="")
    options = json.loads(raw)
    hog = float(options.pop("gil_hog", 0))
    if hog:  # roxd's event loop thread busy with the host's events: the sender thread waits
        threading.Thread(target=_hog, args=(hog,), daemon=True, name="hog").start()
    sink = JetStreamSink(NatsSettings(**options), Path(state), node)
    incident = f"inc-{hostname}-{time.time_ns()}"
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "emit":
            first, n = int(cmd[1]), int(cmd[2])
            for i in range(first, first + n):
                alert = make_alert(args=("sh", "-c", f": {hostname} {i}"))
                sink.emit(alert)
                sink.incident_changed(Change("opened" if i == 0 else "updated",
                                             time.time_ns(), {"id": incident, "alerts": i + 1},
                                             alert_id=alert.id))
            print("ok", flush=True)
        elif cmd[0] == "stats":
            print(json.dumps({"stats": sink.stats(), "problems": sink.problems()}), flush=True)
        elif cmd[0] == "quit":
            sink.close(5.0)
            print("bye", flush=True)
            return


if __name__ == "__main__":
    main()
