#!/usr/bin/env python3
"""What the inbound programs (bpf/inbound.bpf.c) cost in the kernel, measured with BPF run-time
statistics (BPF_ENABLE_STATS: counted only while this script holds the fd, no sysctl changed).

    sudo PYTHONPATH=. python3 scripts/inbound-cost.py [--connections 20000]

Loads roxd's programs (the Sensor, as roxd does), makes N TCP connections over loopback on
this host (a listener of its own on 127.0.0.1, an ephemeral port), and prints per program:
runs, ns per run, and ns per accepted connection (every run of the program - the client's
connect callbacks, the server's accept, the listener's state changes - divided by the
connections). Loopback only: nothing leaves the host.

    --floor   the same storm with an empty sock_ops program (`return 1`) attached instead:
              what any sock_ops program costs here, to subtract from roxd's figure.
"""

from __future__ import annotations

import argparse
import ctypes as ct
import json
import os
import socket
import subprocess
import threading
import time

from roxd.sensor.program import Sensor, SensorConfig

BPF_STATS_RUN_TIME = 0


def prog_stats() -> dict[str, tuple[int, int]]:
    """name -> (run_cnt, run_time_ns) of roxd's inbound programs (names cut to 15)."""
    shown = json.loads(subprocess.run(["bpftool", "prog", "show", "-j"], capture_output=True,
                                      text=True, check=True).stdout)
    out: dict[str, tuple[int, int]] = {}
    for p in shown:
        if str(p.get("name", "")).startswith("roxd_inbound"):
            cnt, ns = out.get(p["name"], (0, 0))
            out[p["name"]] = (cnt + p.get("run_cnt", 0), ns + p.get("run_time_ns", 0))
    return out


def storm(n: int) -> float:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(512)
    port = server.getsockname()[1]

    def serve() -> None:
        for _ in range(n):
            conn, _ = server.accept()
            conn.close()

    t = threading.Thread(target=serve)
    started = time.perf_counter()
    t.start()
    for _ in range(n):
        c = socket.create_connection(("127.0.0.1", port))
        c.close()
    t.join()
    server.close()
    return time.perf_counter() - started


def floor(n: int) -> None:
    from pathlib import Path

    from roxd.sensor.headers import resolve_headers
    from roxd.sensor.inbound import ATTACH_SOCK_OPS, SOCK_OPS

    os.environ.update(resolve_headers(Path("/var/cache/roxd")).env)
    from bcc import BPF, libbcc

    b = BPF(text=b"int roxd_inbound_nop(struct bpf_sock_ops *s) { return 1; }")
    fn = b.load_func("roxd_inbound_nop", SOCK_OPS)
    lib = libbcc.lib
    lib.bpf_link_create.argtypes = (ct.c_int, ct.c_int, ct.c_int, ct.c_void_p)
    root = os.open("/sys/fs/cgroup/unified" if os.path.isdir("/sys/fs/cgroup/unified")
                   else "/sys/fs/cgroup", os.O_RDONLY)
    link = lib.bpf_link_create(fn.fd, root, ATTACH_SOCK_OPS, None)
    stats = ct.CDLL("libbcc.so.0", use_errno=True).bpf_enable_stats(BPF_STATS_RUN_TIME)
    try:
        storm(200)
        before = prog_stats()
        storm(n)
        after = prog_stats()
    finally:
        os.close(stats)
        os.close(link)
        os.close(root)
    for name in after:
        cnt = after[name][0] - before.get(name, (0, 0))[0]
        ns = after[name][1] - before.get(name, (0, 0))[1]
        if cnt:
            print(f"empty sock_ops program: runs {cnt}  {ns / cnt:.0f} ns/run  "
                  f"{ns / n:.0f} ns per connection")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connections", type=int, default=20000)
    ap.add_argument("--floor", action="store_true", help="an empty sock_ops program instead")
    args = ap.parse_args()
    if args.floor:
        floor(args.connections)
        return
    lib = ct.CDLL("libbcc.so.0", use_errno=True)
    sensor = Sensor(SensorConfig(), lambda _d: None)
    sensor.start()
    print("inbound:", sensor.inbound.status.to_dict())
    fd = lib.bpf_enable_stats(BPF_STATS_RUN_TIME)
    if fd < 0:
        raise SystemExit(f"BPF_ENABLE_STATS refused: {os.strerror(ct.get_errno())}")
    try:
        storm(200)  # warm up
        before = prog_stats()
        seconds = storm(args.connections)
        sensor.drain()
        after = prog_stats()
        counters = {k: v for k, v in sensor.stats().counters.items()
                    if k.startswith(("accept_", "listen_"))}
    finally:
        os.close(fd)
        sensor.close()
    n = args.connections
    print(f"{n} loopback connections in {seconds:.2f}s ({n / seconds:.0f}/s)")
    for name in sorted(after):
        cnt = after[name][0] - before.get(name, (0, 0))[0]
        ns = after[name][1] - before.get(name, (0, 0))[1]
        if cnt:
            print(f"{name:<16} runs {cnt:>8}  {ns / cnt:7.0f} ns/run  "
                  f"{ns / n:7.0f} ns per connection")
    print("kernel counters:", counters)


if __name__ == "__main__":
    main()
