"""roxd's userspace CPU per exec, the pipeline alone: `python -m bench.pipeline_cpu [--n 3000]
[--reps 3] [--against REV]`.

One process per run feeds events shaped like the profile phase's storms (a container's
execstorm running /bench/tiny with distinct arguments, or /tmp/tiny, an exec that raises two
alerts, each followed by its exit) straight into `Pipeline.handle` with the real parts: the
enricher and process table, the shipped rule pack, the kernel policy (with recording maps: no
BPF), drift over a real overlay-like directory, the alert delivery with its store, and the
incident tracker with its store. It reports the CPU time of the whole process (every thread:
the store writers too) per exec, so other work on a busy machine changes it little; no wall
clock. What it leaves out: the ring buffer, record decoding, the BPF map writes and real /proc
reads (the fake /proc has no such pids: as in a storm, the processes are gone by the time roxd
looks). `--against REV` runs the same storms with roxd from that git revision (exported with
git archive), alternating, for a paired comparison.
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
    from roxd.containers.cgroups import CgroupIndex
    from roxd.containers.enricher import Enricher
    from roxd.containers.metadata import ContainerMetadata
    from roxd.containers.process_table import ProcessTable
    from roxd.containers.resolver import ContainerResolver
    from roxd.enforce.response import Responder
    from roxd.incidents.settings import IncidentsSettings
    from roxd.incidents.store import IncidentStore
    from roxd.incidents.tracker import IncidentTracker
    from roxd.model import ExecEvent, ExitEvent
    from roxd.pipeline import EventTaps, Pipeline
    from roxd.policy.kernel import KernelPolicy
    from roxd.pubsub import Topic
    from roxd.rules.active import ActiveRules
    from roxd.sensor.records import Decoded
    from tests.unit.test_containers_resolver import FakeSource
    from tests.unit.test_pipeline import FakeMaps, Signals

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
    source = FakeSource()
    source.meta[CONTAINER_ID] = ContainerMetadata(id=CONTAINER_ID, name="worker",
                                                  image="roxd-bench/debian:latest")
    resolver = ContainerResolver(index, [source])
    processes = ProcessTable(proc=str(proc), cgroup_id_of_pid=index.lookup_pid)
    rules = ActiveRules([tree / "rules"])
    rules.load()
    policy = KernelPolicy(FakeMaps(), enforce_in_kernel=True, fold_window_ns=10**9,
                          containers=resolver.containers, known_cgroups=index.known_ids,
                          signal_pid=Signals())
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
                        taps=EventTaps(Topic("events")), drift=DriftDetector(proc=str(proc)))
    cgroup = os.stat(root / "docker" / CONTAINER_ID).st_ino
    exe = "/tmp/tiny" if storm == "alert" else "/bench/tiny"

    def exec_of(pid: int, ppid: int, filename: str, args: tuple[str, ...]) -> Decoded:
        return Decoded(ExecEvent(time_ns=time.time_ns(), pid=pid, ppid=ppid, uid=0, gid=0,
                                 cgroup_id=cgroup, comm=filename.rpartition("/")[2][:15],
                                 filename=filename, args=args, args_truncated=False,
                                 vpid=pid - 7000), fold_key=b"k" * 8 + str(pid).encode())

    # the shim and the execstorm the storm's processes descend from
    pipeline.handle(exec_of(8000, 0, "/usr/bin/containerd-shim-runc-v2",
                            ("containerd-shim-runc-v2",)))
    pipeline.handle(exec_of(9000, 8000, "/bench/execstorm",
                            ("/bench/execstorm", exe, str(n), "1")))
    events = []
    for i in range(n):
        events.append(exec_of(10000 + i, 9000, exe, (exe, str(i))))
        events.append(Decoded(ExitEvent(time_ns=time.time_ns(), pid=10000 + i,
                                        cgroup_id=cgroup, comm="tiny", exit_code=0)))
    alerts0 = pipeline.counters.alerts
    t0 = time.process_time()
    for decoded in events:
        pipeline.handle(decoded)
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
