"""What a ring-buffer wake-up costs the exec path (issue 22): one process loads roxd's sensor
(bpf/roxd.bpf.c, no rules, so every exec and exit is emitted) and runs exec storms on the host
with its consumer in one of three modes:

- `keeps-up`: the daemon's loop before batching: ring_batch_ms = 0 (the kernel wakes the
  consumer for every record written while it has caught up) and a consumer blocked in
  Sensor.poll (epoll_wait) between records;
- `behind`: the same programs, but a consumer that sleeps 20 ms between reads of the ring,
  so it is almost never waiting in epoll_wait and the kernel almost never has to wake it;
- `batched`: ring_batch_ms > 0 (BPF_RB_NO_WAKEUP for ordinary records, a forced wake-up
  once per window) with the daemon's Sensor.poll;
- `urgent`: the same, with every record marked urgent (ring_urgent all ones), as the records
  a userspace-enforcing rule may match are;
- `urgent-linger`: urgent, with the consumer lingering `--linger-ms` awake after a read of
  two records or more (Sensor._linger, roxd's default): the shipped pack's case.

Every mode but `urgent-linger` runs with ring_linger_ms = 0.

Per mode and storm: BPF ns per run of sched_process_exec and sched_process_exit (bpf_stats,
from this process's fdinfo), irq_work interrupts (the `IWI` line of /proc/interrupts, every
CPU: the ring's wake-up is an irq_work), the consumer thread's voluntary context switches,
and records read. Storms alternate the mode order per repetition; both cores are shared with
whatever else runs, so read the figures side by side, not as absolutes.

    python -m bench.ringwake [--reps 3] [--execs 3000] [--rate 0] [--batch-ms 20]
                             [--linger-ms 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench import bpfstats
from bench.programs import build_all
from roxd.sensor.program import Sensor, SensorConfig

SYSCTL = Path("/proc/sys/kernel/bpf_stats_enabled")
PROGS = ("sched_process_exec", "sched_process_exit")


def irq_work_total() -> int:
    for line in Path("/proc/interrupts").read_text().splitlines():
        if line.strip().startswith("IWI:"):
            return sum(int(x) for x in line.split()[1:] if x.isdigit())
    return 0


def ctx_switches(tid: int) -> int:
    for line in Path(f"/proc/self/task/{tid}/status").read_text().splitlines():
        if line.startswith("voluntary_ctxt_switches:"):
            return int(line.split()[1])
    return 0


@dataclass
class Consumer:
    sensor: Sensor
    mode: str
    records: int = 0
    stop: bool = False
    tid: int = 0

    def run(self) -> None:
        self.tid = threading.get_native_id()
        while not self.stop:
            if self.mode == "behind":
                time.sleep(0.02)
                self.sensor.drain()
            else:
                self.sensor.poll(100)


def measure(mode: str, batch_ms: int, linger_ms: float, storm: list[str], reps: int,
            results: dict[str, list[dict[str, float]]]) -> None:
    consumer: Consumer | None = None

    def on_event(_decoded: object) -> None:
        assert consumer is not None
        consumer.records += 1

    sensor = Sensor(SensorConfig(ring_batch_ms=batch_ms, ring_linger_ms=linger_ms), on_event)
    sensor.start()
    if mode.startswith("urgent"):  # every exec forces a wake-up (a userspace kill rule's records)
        sensor.set_ring_urgent(0xFFFFFFFF)
    try:
        names = bpfstats.names()
        consumer = Consumer(sensor, mode)
        thread = threading.Thread(target=consumer.run, daemon=True)
        thread.start()
        time.sleep(0.5)
        for _ in range(reps):
            before, irq0, cs0, rec0 = (bpfstats.read(os.getpid()), irq_work_total(),
                                       ctx_switches(consumer.tid), consumer.records)
            out = subprocess.run(storm, capture_output=True, text=True, check=True).stdout
            time.sleep(0.3)  # the last records of the storm: read before the counters
            delta = bpfstats.delta(before, bpfstats.read(os.getpid()))
            row: dict[str, float] = {
                "irq_work": irq_work_total() - irq0,
                "consumer_wakeups": ctx_switches(consumer.tid) - cs0,
                "records": consumer.records - rec0,
                "storm_ns_per_exec": json.loads(out)["elapsed_ns"] / int(storm[2]),
            }
            for prog_id, d in delta.items():
                short = names.get(prog_id, "").rsplit("__", 1)[-1]
                if short in PROGS:
                    row[short] = d.ns / d.runs
            results.setdefault(mode, []).append(row)
        consumer.stop = True
        thread.join()
    finally:
        sensor.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3, help="storms per mode and pass")
    ap.add_argument("--passes", type=int, default=2, help="passes over the modes, order "
                    "reversed every other pass")
    ap.add_argument("--execs", type=int, default=3000)
    ap.add_argument("--rate", type=float, default=0, help="execs per second (0: as fast as "
                    "the machine goes)")
    ap.add_argument("--batch-ms", type=int, default=20)
    ap.add_argument("--linger-ms", type=float, default=1.0, help="urgent-linger's linger")
    ap.add_argument("--json", type=Path, help="write the raw rows here")
    ap.add_argument("--modes", default="", help="comma list of keeps-up,behind,batched,"
                    "urgent,urgent-linger (default: all)")
    args = ap.parse_args()
    old = SYSCTL.read_text().strip()
    SYSCTL.write_text("1")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            progs = build_all(Path(tmp))
            storm = [str(progs["execstorm"]), str(progs["tiny"]), str(args.execs), "1",
                     str(args.rate)]
            results: dict[str, list[dict[str, float]]] = {}
            modes = [("keeps-up", 0, 0.0), ("behind", 0, 0.0), ("batched", args.batch_ms, 0.0),
                     ("urgent", args.batch_ms, 0.0),
                     ("urgent-linger", args.batch_ms, args.linger_ms)]
            if args.modes:
                modes = [m for m in modes if m[0] in args.modes.split(",")]
            for p in range(args.passes):
                for mode, batch, linger in (modes if p % 2 == 0 else modes[::-1]):
                    measure(mode, batch, linger, storm, args.reps, results)
    finally:
        if old != "1":
            SYSCTL.write_text(old)
    load = os.getloadavg()
    print(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    keys = ["sched_process_exec", "sched_process_exit", "irq_work", "consumer_wakeups",
            "records", "storm_ns_per_exec"]
    print("mode           " + "  ".join(f"{k:>20}" for k in keys))
    for mode, rows in results.items():
        cells = []
        for k in keys:
            vals = [r[k] for r in rows if k in r]
            cells.append(f"{statistics.median(vals):>9.0f} [{min(vals):.0f}-{max(vals):.0f}]"
                         if vals else f"{'-':>20}")
        print(f"{mode:<15}" + "  ".join(f"{c:>20}" for c in cells))
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)},
                                         "load": load, "results": results}, indent=1))


if __name__ == "__main__":
    main()
