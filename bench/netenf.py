"""`python -m bench.netenf`: the cost of baselines for issue 15's targets (docs/baselines.md).

1. BPF time per connect of the cgroup connect hook (bpf/netenf.bpf.c) with a full network
   allow-list loaded: 1,000 workloads x 50 peers = 50,000 LPM entries. Measured with
   kernel.bpf_stats_enabled=1 (restored afterwards) as the program's own run_time_ns/run_cnt,
   for four callers: a process in a cgroup that is not enforced (what every connect on the
   host pays), one in an enforced cgroup connecting to a learned address (another workload,
   the host), one to a learned external prefix, and one to an unlearned peer (refused: every
   lookup misses). The connects are UDP connect() calls to TEST-NET-1
   (192.0.2.0/24): a UDP connect sends nothing, so no packet leaves the host.
2. Memory for 1,000 workloads x 50 processes x 50 peers: roxd's userspace (the BaselineEngine
   holding them, and what the policy keeps of the kernel tables built from them, by
   tracemalloc; the transient peak of building and writing them apart) and the kernel maps
   that hold them (bpftool's bytes_memlock of the loaded maps, filled).

Writes bench/results/netenf-<time>.json. Needs root, bcc and bpftool. Nothing it starts
outlives it: the hook is linked to a cgroup it made (removed after), not the root.
"""

from __future__ import annotations

import argparse
import ctypes as ct
import gc
import ipaddress
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from bench import report

REPO = Path(__file__).resolve().parents[1]
SYSCTL = Path("/proc/sys/kernel/bpf_stats_enabled")
WORKLOADS, PROCESSES, PEERS = 1000, 50, 50

# the hook alone, plus the process-baseline maps of bpf/process.bpf.c declared with the same
# key and value types and capacities (mirrored: that file needs the whole sensor to compile)
MAIN = """
#include <uapi/linux/ptrace.h>
#include <linux/socket.h>
#include <linux/in.h>
#include <linux/in6.h>
#include "netenf.bpf.c"
struct bench_kill_key { u64 cgroup_id; u64 hash; };
struct bench_baseline_cgroup { u32 workload; u32 verdict; };
BPF_F_TABLE("hash", u64, struct bench_baseline_cgroup, baseline_cgroups, 16384,
            BPF_F_NO_PREALLOC);
BPF_F_TABLE("hash", struct bench_kill_key, u8, baseline_allow, 131072, BPF_F_NO_PREALLOC);
/* the floor: a sock_addr program that does nothing, measured the same way */
int bench_empty(struct bpf_sock_addr *ctx) { return 1; }
"""


def _load() -> Any:
    from roxd.sensor.loader import load_bcc

    work = Path(tempfile.mkdtemp(prefix="roxd-bench-netenf-"))
    (work / "main.bpf.c").write_text(MAIN)
    (work / "netenf.bpf.c").write_text((REPO / "bpf/netenf.bpf.c").read_text())
    return load_bcc(work, "main.bpf.c", cache_dir=Path("/var/cache/roxd"),
                    what="the cgroup connect hook").bpf


def _prog_id(fd: int) -> int:
    for line in Path(f"/proc/self/fdinfo/{fd}").read_text().splitlines():
        if line.startswith("prog_id:"):
            return int(line.split()[1])
    raise RuntimeError("no prog_id in fdinfo")


def _prog_stats(prog_id: int) -> tuple[int, int]:
    out = subprocess.run(["bpftool", "--json", "prog", "show", "id", str(prog_id)],
                         capture_output=True, text=True, check=True).stdout
    p = json.loads(out)
    return int(p.get("run_time_ns", 0)), int(p.get("run_cnt", 0))


def _map_bytes(bpf: Any, names: list[str]) -> dict[str, int]:
    out = subprocess.run(["bpftool", "--json", "map", "show"], capture_output=True, text=True,
                         check=True).stdout
    by_id = {m["id"]: m for m in json.loads(out)}
    sizes = {}
    for name in names:
        fd = bpf[name].map_fd
        info = Path(f"/proc/self/fdinfo/{fd}").read_text()
        map_id = int(next(line.split()[1] for line in info.splitlines()
                          if line.startswith("map_id:")))
        sizes[name] = int(by_id[map_id].get("bytes_memlock", 0))
    return sizes


def _connect_loop(cgroup_dir: str, address: str, n: int) -> dict[str, int]:
    """A child in `cgroup_dir` that UDP-connects n times; how many succeeded / were refused."""
    code = f"""
import socket, errno, json
open({cgroup_dir!r} + "/cgroup.procs", "w").write("0")
ok = refused = 0
for _ in range({n}):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(({address!r}, 9)); ok += 1
    except PermissionError:
        refused += 1
    finally:
        s.close()
print(json.dumps({{"ok": ok, "refused": refused}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out)


def bpf_time(n: int) -> dict[str, Any]:
    from roxd.policy.netenf import FULL_BITS, allow_key
    from roxd.policy.netenf_kernel import (
        BPF_PROG_TYPE_CGROUP_SOCK_ADDR,
        NetworkHook,
        _link_create,
    )

    bpf = _load()
    root = Path("/sys/fs/cgroup/unified")
    if not root.is_dir():
        root = Path("/sys/fs/cgroup")
    base = root / f"roxd-bench-netenf-{os.getpid()}"
    plain, first, second = base / "plain", base / "workload1", base / "workload2"
    for d in (base, plain, first, second):
        d.mkdir()
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    links: list[int] = []
    old = SYSCTL.read_text().strip()
    try:
        results: dict[str, Any] = {}
        # the floor first: what running any sock_addr program costs with bpf_stats on
        empty = bpf.load_func(b"bench_empty", BPF_PROG_TYPE_CGROUP_SOCK_ADDR, None, 10)
        link = _link_create(empty.fd, fd, 10)
        SYSCTL.write_text("1")
        ns0, cnt0 = _prog_stats(_prog_id(empty.fd))
        _connect_loop(str(plain), "192.0.2.200", n)
        ns1, cnt1 = _prog_stats(_prog_id(empty.fd))
        os.close(link)
        results["empty_program"] = {"runs": cnt1 - cnt0, "ns_per_connect":
                                    round((ns1 - ns0) / max(1, cnt1 - cnt0), 1)}
        fn = bpf.load_func(b"netenf_connect4", BPF_PROG_TYPE_CGROUP_SOCK_ADDR, None, 10)
        links.append(_link_create(fn.fd, fd, 10))
        prog = _prog_id(fn.fd)
        # 1,000 workloads x 50 peers, as the policy writes them: 45 addresses (other
        # workloads, the host) and 5 external prefixes each. Workload 1 learned udp/9 to the
        # address 192.0.2.1, workload 2 udp/9 to the prefix 192.0.2.0/28.
        exact: set[bytes] = set()
        prefixes: set[tuple[int, bytes]] = set()
        for w in range(1, WORKLOADS + 1):
            for p in range(PEERS):
                if (w, p) == (1, 0):
                    net = ipaddress.ip_network("192.0.2.1/32")
                elif (w, p) == (2, 0):
                    net = ipaddress.ip_network("192.0.2.0/28")
                elif p < 45:
                    net = ipaddress.ip_network(f"10.{w // 256}.{w % 256}.{p}/32")
                else:
                    net = ipaddress.ip_network(f"100.{w // 256}.{w % 256}.{p}/32"
                                               ).supernet(new_prefix=24 - p % 4)
                bits, data = allow_key(w, socket.IPPROTO_UDP, 9 if p == 0 else 1000 + p, net)
                if bits == FULL_BITS:
                    exact.add(data)
                else:
                    prefixes.add((bits, data))
        cgroups = {os.stat(first).st_ino: (1, True), os.stat(second).st_ino: (2, True)}
        NetworkHook(bpf, []).set_network(cgroups, exact, prefixes)
        results.update({"exact_entries": len(exact), "prefix_entries": len(prefixes)})
        for name, cg, address in (("not_enforced", plain, "192.0.2.200"),
                                  ("learned_address", first, "192.0.2.1"),
                                  ("learned_prefix", second, "192.0.2.1"),
                                  ("refused", first, "192.0.2.200")):
            ns0, cnt0 = _prog_stats(prog)
            outcome = _connect_loop(str(cg), address, n)
            ns1, cnt1 = _prog_stats(prog)
            runs = cnt1 - cnt0
            results[name] = {"connects": n, **outcome, "runs": runs,
                             "ns_per_connect": round((ns1 - ns0) / runs, 1) if runs else None}
        return results
    finally:
        SYSCTL.write_text(old)
        for link in links:
            os.close(link)
        os.close(fd)
        for d in (plain, first, second, base):
            for _ in range(50):  # the child's cgroup empties a moment after it exits
                try:
                    d.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)
        bpf.cleanup()


def memory() -> dict[str, Any]:
    from roxd.baselines.engine import Baseline, BaselineEngine, LearnedProcess, intern_parents
    from roxd.baselines.settings import BaselineSettings
    from roxd.model import Container
    from roxd.policy.kill_tables import build_baseline_table
    from roxd.policy.netenf import build_network_table

    gc.collect()
    tracemalloc.start()
    t0 = tracemalloc.take_snapshot()
    # peer_of: network baselines on (the elements are made below, not classified)
    engine = BaselineEngine(BaselineSettings(max_workloads=WORKLOADS * 2), None,
                            peer_of=lambda addr: addr)
    now = time.time_ns()
    containers = []
    owners: dict[str, str] = {}
    for w in range(WORKLOADS):
        key = f"image:registry.example/app{w}/app{w}"
        base = Baseline(workload=key, first_seen_ns=now, mode="enforce", locked_at_ns=now,
                        image=f"registry.example/app{w}:1.0", image_ids=[f"sha256:{w:064x}"])
        # distinct times and counts, as real ones are (a shared int would hide their size)
        for p in range(PROCESSES):
            base.processes.add(f"/usr/local/bin/app{w}-tool{p}", LearnedProcess(
                now + w * 1000 + p, now + 10**12 + p, 1000 + p, intern_parents(("/bin/sh",))))
        for p in range(PEERS):
            j = (w + p + 1) % WORKLOADS
            peer = f"workload:image:registry.example/app{j}/app{j}"
            base.peers.add(f"outbound tcp/{1000 + p} {peer}", LearnedProcess(
                now + w * 1000 + p, now + 10**12 + p, 1000 + p))
        engine._baselines[key] = base
        containers.append((10_000 + w, Container(id=f"{w:064x}", runtime="docker",
                                                 name=f"app{w}", labels={"k": key})))
        owners[f"10.{w // 256}.{w % 256}.2"] = f"workload:{key}"
    t1 = tracemalloc.take_snapshot()
    engine_bytes = sum(s.size_diff for s in t1.compare_to(t0, "filename"))

    def workload_of(c: Container) -> str:
        return c.labels["k"]

    # what the policy keeps between refreshes: the process table (compact, to decide held
    # execs) and the network table's counts; the entries themselves exist only while written
    numbers: dict[str, int] = {}
    tracemalloc.reset_peak()
    at_t1 = tracemalloc.get_traced_memory()[0]
    proc = build_baseline_table(engine.enforcing(), workload_of, containers, numbers, 1)
    net_summary = build_network_table(engine.enforcing_network(), workload_of, containers,
                                      numbers, owners).summary()
    gc.collect()
    t2 = tracemalloc.take_snapshot()
    table_bytes = sum(s.size_diff for s in t2.compare_to(t1, "filename"))
    build_peak = tracemalloc.get_traced_memory()[1] - at_t1
    tracemalloc.stop()
    net = build_network_table(engine.enforcing_network(), workload_of, containers, numbers,
                              owners)

    bpf = _load()
    try:
        fill_process(bpf, proc.cgroups, proc.entries())
        fill_network(bpf, net)
        maps = _map_bytes(bpf, ["baseline_cgroups", "baseline_allow", "netenf_cgroups",
                                "netenf_exact", "netenf_allow"])
    finally:
        bpf.cleanup()
    return {"workloads": WORKLOADS, "processes_each": PROCESSES, "peers_each": PEERS,
            "process_allow_entries": proc.allow_entries,
            "network_allow_entries": net_summary.entries,
            "userspace_engine_bytes": engine_bytes, "userspace_kernel_tables_bytes":
            table_bytes, "userspace_tables_build_peak_bytes": build_peak,
            "kernel_map_bytes": maps,
            "total_bytes": engine_bytes + table_bytes + sum(maps.values())}


def fill_process(bpf: Any, cgroups: dict[int, tuple[int, int]], allow: set[tuple[int, int]]
                 ) -> None:
    table = bpf["baseline_allow"]
    for workload, h in allow:
        key = table.Key()
        key.cgroup_id, key.hash = workload, h
        table[key] = ct.c_uint8(1)
    cg_table = bpf["baseline_cgroups"]
    for cg, (workload, verdict) in cgroups.items():
        leaf = cg_table.Leaf()
        leaf.workload, leaf.verdict = workload, verdict
        cg_table[cg_table.Key(cg)] = leaf


def fill_network(bpf: Any, table: Any) -> None:
    from roxd.policy.netenf_kernel import NetworkHook

    NetworkHook(bpf, []).set_network(table.cgroups, table.exact, table.allow)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.netenf", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--connects", type=int, default=200_000, help="connects per caller")
    p.add_argument("--out", type=Path, default=REPO / "bench/results")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.netenf: needs root (BPF, cgroups, kernel.bpf_stats_enabled)",
              file=sys.stderr)
        return 1
    result = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "kernel": os.uname().release, "bpf_per_connect": bpf_time(args.connects),
              "memory": memory()}
    report.write_and_show(result, args.out, "netenf")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
