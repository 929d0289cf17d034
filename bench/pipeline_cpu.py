"""roxd's userspace CPU per exec, the pipeline alone: `python -m bench.pipeline_cpu [--n 3000]
[--reps 3] [--against REV]`.

One process per run feeds events shaped like the profile phase's storms (a container's
execstorm running /bench/tiny with distinct arguments, or /tmp/tiny, an exec that raises two
alerts, each followed by its exit) as raw ring-buffer records (bytes laid out as bpf/common.h
says) through `records.decode` and `Pipeline.handle` with the real parts, as the daemon builds
them with its default config: the enricher and process table, the shipped rule pack, the kernel
policy (with recording maps: no BPF), process baselines (learning) and drift over a real
overlay-like directory, the alert delivery with its store, and the incident tracker with its
store. It reports the CPU time of the whole process (every thread: the store writers too) per
exec, so other work on a busy machine changes it little; no wall clock. What it leaves out: the
ring buffer and its callback, the BPF map writes (a fold mark is a `bpf()` syscall, about 4 µs
on an idle host) and real /proc reads (the fake /proc has no such pids: as in a storm, the
processes are gone by the time roxd looks; a failed readlink still costs its syscall).
`--against REV` runs the same storms with roxd from that git revision (exported with git
archive), alternating, for a paired comparison. The fakes at the edges are defined here, not
imported from tests/, so the benchmark runs from an installed tree too.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
STORMS = ("distinct", "alert")
CONTAINER_ID = "3c79270d70136d5d3f9916700ee58f8f50872c19d77f622a21dcbb64778ff218"


class RecordingSource:
    """The runtime's metadata, from a dict (the one container of the storm)."""

    runtime = "docker"

    def __init__(self, meta: dict[str, Any]) -> None:
        self.meta = meta

    def get(self, container_id: str) -> Any:
        return self.meta.get(container_id)

    def add_listener(self, listener: Any) -> None:
        pass


class RecordingMaps:
    """The sensor's map writers (roxd.policy.kernel.KernelMaps), counted instead of written:
    any writer of any revision, so `--against` runs old trees too."""

    def __init__(self) -> None:
        self.writes = 0

    def __getattr__(self, name: str) -> Any:
        def write(*_args: object) -> None:
            self.writes += 1

        return write


def no_signal(pid: int, sig: int) -> Any:
    from roxd.enforce.kill import KillOutcome

    return KillOutcome(True, f"signal {sig} to {pid} not sent (benchmark)")


def exec_record(records: Any, pid: int, ppid: int, cgroup: int, filename: str,
                args: tuple[str, ...], time_ns: int) -> bytes:
    """A ring-buffer exec record as process.bpf.c submits it: the fixed part, then argv."""
    rec = records.ExecRecord()
    rec.h.type, rec.h.pid, rec.h.tid, rec.h.ppid = records.REC_EXEC, pid, pid, ppid
    rec.h.cgroup_id, rec.h.ktime_ns = cgroup, time_ns
    rec.h.comm = filename.rpartition("/")[2][:15].encode()
    rec.key.cgroup_id, rec.key.ppid = cgroup, ppid
    rec.key.args_hash = hash(args) & (2**64 - 1)
    argv = b"".join(a.encode() + b"\0" for a in args)
    rec.args_len, rec.argc, rec.args_captured = len(argv), len(args), 1
    if hasattr(rec, "vpid"):
        rec.vpid = pid - 7000
    rec.filename = filename.encode()
    offset = records.ExecRecord.args.offset
    return bytes(rec)[:offset] + argv


def exit_record(records: Any, pid: int, cgroup: int, time_ns: int) -> bytes:
    rec = records.ExitRecord()
    rec.h.type, rec.h.pid, rec.h.tid = records.REC_EXIT, pid, pid
    rec.h.cgroup_id, rec.h.ktime_ns, rec.h.comm = cgroup, time_ns, b"tiny"
    rec.exit_code, rec.has_exit_code = 0, 1
    return bytes(rec)


def child(tree: Path, storm: str, n: int) -> dict[str, Any]:
    """One run, in this process: roxd imported from `tree` (PYTHONPATH)."""
    from roxd.alerts.delivery import AlertDelivery
    from roxd.alerts.dispatch import AlertDispatcher
    from roxd.alerts.settings import (
        AlertsSettings,
        JournaldSettings,
        NoiseSettings,
        StoreSettings,
    )
    from roxd.baselines.drift import DriftDetector
    from roxd.baselines.engine import BaselineEngine
    from roxd.baselines.settings import BaselineSettings
    from roxd.containers.cgroups import CgroupIndex
    from roxd.containers.enricher import Enricher
    from roxd.containers.metadata import ContainerMetadata
    from roxd.containers.process_table import ProcessTable
    from roxd.containers.resolver import ContainerResolver
    from roxd.enforce.response import Responder
    from roxd.incidents.settings import IncidentsSettings
    from roxd.incidents.store import IncidentStore
    from roxd.incidents.tracker import IncidentTracker
    from roxd.pipeline import EventTaps, Pipeline
    from roxd.policy.kernel import KernelPolicy
    from roxd.pubsub import Topic
    from roxd.rules.active import ActiveRules
    from roxd.sensor import records

    tmp = Path(tempfile.mkdtemp(prefix="roxd-pipeline-cpu-"))
    root = tmp / "cg"
    (root / "docker" / CONTAINER_ID).mkdir(parents=True)
    proc = tmp / "proc"
    (proc / "9000").mkdir(parents=True)
    upper, lower = tmp / "upper", tmp / "lower"
    (upper / "tmp").mkdir(parents=True)
    (lower / "bench").mkdir(parents=True)
    (upper / "tmp/tiny").write_bytes(b"dropped")  # /tmp/tiny: written after the start
    (proc / "9000/mountinfo").write_text(
        f"1 0 0:1 / / rw - overlay overlay rw,lowerdir={lower},upperdir={upper},workdir=/w\n")
    index = CgroupIndex(str(root))
    source = RecordingSource({CONTAINER_ID: ContainerMetadata(
        id=CONTAINER_ID, name="worker", image="roxd-bench/debian:latest")})
    resolver = ContainerResolver(index, [source])  # type: ignore[list-item]
    processes = ProcessTable(proc=str(proc), cgroup_id_of_pid=index.lookup_pid)
    rules = ActiveRules([tree / "rules"])
    rules.load()
    baselines = BaselineEngine(BaselineSettings(), tmp / "state")
    policy = KernelPolicy(RecordingMaps(), enforce_in_kernel=True,  # type: ignore[arg-type]
                          fold_window_ns=10**9, containers=resolver.containers,
                          known_cgroups=index.known_ids, signal_pid=no_signal,
                          baselines=baselines)
    policy.apply_rules(rules.current)
    delivery = AlertDelivery.from_settings(
        AlertsSettings(journald=JournaldSettings(enabled=False),
                       store=StoreSettings(enabled=True), noise=NoiseSettings()),
        tmp / "state", taps={})
    store = IncidentStore(tmp / "state")
    tracker = IncidentTracker(IncidentsSettings(), [store], store=store)
    pipeline = Pipeline(enricher=Enricher(resolver, processes), rules=lambda: rules.current,
                        policy=policy, responder=Responder(guard=policy.kill_guard),
                        alerts=AlertDispatcher(delivery, raw_taps=[tracker]),
                        taps=EventTaps(Topic("events")), baselines=baselines,
                        drift=DriftDetector(proc=str(proc)))
    cgroup = os.stat(root / "docker" / CONTAINER_ID).st_ino
    exe = "/tmp/tiny" if storm == "alert" else "/bench/tiny"

    def decode(raw: bytes) -> Any:
        return records.decode(raw, 0, 32)

    # the shim and the execstorm the storm's processes descend from
    now = time.monotonic_ns()
    pipeline.handle(decode(exec_record(records, 8000, 0, cgroup,
                                       "/usr/bin/containerd-shim-runc-v2",
                                       ("containerd-shim-runc-v2",), now)))
    pipeline.handle(decode(exec_record(records, 9000, 8000, cgroup, "/bench/execstorm",
                                       ("/bench/execstorm", exe, str(n), "1"), now)))
    raws = []
    for i in range(n):
        raws.append(exec_record(records, 10000 + i, 9000, cgroup, exe, (exe, str(i)), now + i))
        raws.append(exit_record(records, 10000 + i, cgroup, now + i))
    alerts0 = pipeline.counters.alerts
    t0 = time.process_time()
    for raw in raws:
        pipeline.handle(decode(raw))
    tracker.close()  # the incident store and the alert store finish their writes: counted
    delivery.close()
    cpu_s = time.process_time() - t0
    shutil.rmtree(tmp, ignore_errors=True)
    return {"storm": storm, "n": n, "us_per_exec": round(cpu_s / n * 1e6, 2),
            "alerts": pipeline.counters.alerts - alerts0}


def run(tree: Path, storm: str, n: int) -> dict[str, Any]:
    """child() in a fresh interpreter importing roxd from `tree`."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", str(tree),
                          storm, str(n)], env=env, cwd=tree, capture_output=True, text=True,
                         check=False)
    if out.returncode != 0:
        raise RuntimeError(f"pipeline_cpu child failed ({tree}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.pipeline_cpu", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=3000, help="execs per storm")
    ap.add_argument("--reps", type=int, default=3, help="runs per storm and roxd")
    ap.add_argument("--against", metavar="REV", help="also run roxd from this git revision")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        tree, storm, n = args.child
        print(json.dumps(child(Path(tree), storm, int(n))))
        return 0
    trees = {"roxd": REPO}
    with tempfile.TemporaryDirectory(prefix="roxd-against-") as scratch:
        if args.against:
            archive = subprocess.run(["git", "-C", str(REPO), "archive", args.against],
                                     capture_output=True, check=True).stdout
            subprocess.run(["tar", "-x", "-C", scratch], input=archive, check=True)
            trees["against"] = Path(scratch)
        samples: dict[str, dict[str, list[float]]] = {k: {s: [] for s in STORMS}
                                                      for k in trees}
        for rep in range(args.reps):
            order = list(trees) if rep % 2 == 0 else list(reversed(trees))
            for storm in STORMS:
                for name in order:
                    res = run(trees[name], storm, args.n)
                    samples[name][storm].append(res["us_per_exec"])
                    print(f"rep {rep} {storm:8s} {name:7s} {res['us_per_exec']:8.1f} µs/exec "
                          f"({res['alerts']} alerts), load {os.getloadavg()[0]:.1f}",
                          file=sys.stderr, flush=True)
    summary = {name: {storm: {"median": round(statistics.median(v), 1),
                              "min": min(v), "max": max(v)} for storm, v in per.items()}
               for name, per in samples.items()}
    print(json.dumps({"n": args.n, "reps": args.reps, "against": args.against,
                      "load_avg_1m_end": round(os.getloadavg()[0], 1),
                      "us_per_exec": summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
