"""The four applications and their load generators, each in containers of the apps image.

Servers (nginx, redis-server, PostgreSQL) run in their own containers for the whole phase;
the load generators (wrk, redis-benchmark, pgbench) run by `docker exec` in one client
container and reach the servers over the Docker bridge (container to container on this host:
no external traffic). The compile job runs `make -j2` in its own container. Every run returns
a throughput (higher is better) and a p99 latency in ms (lower is better)."""

from __future__ import annotations

import contextlib
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.apps.image import APPS_IMAGE, POSTGRES_UID
from bench.containers import OWNER_LABEL, Containers, owner, run_alive
from bench.stats import percentile

# Not bench/containers.py's label: a benchmark of an older checkout running at the same time
# removes every container carrying that one when it starts.
APPS_LABEL = "roxd-bench-apps"
IDLE_CMD = ["/bin/sh", "-c", "trap 'exit 0' TERM; while true; do sleep 3600 & wait; done"]


@dataclass(frozen=True)
class Measurement:
    throughput: float
    p99_ms: float
    unit: str
    ops: int = 0  # requests, transactions or compiler runs the run did
    detail: dict[str, Any] = field(default_factory=dict)


class LoadError(RuntimeError):
    """A load generator failed or reported errors: the figure would be wrong."""


@dataclass
class Stage:
    """The containers of the phase and the host directory the clients write logs to."""

    containers: Containers
    out_dir: Path  # bind-mounted at /out in the client and build containers
    client: Any = None
    builder: Any = None
    servers: dict[str, Any] = field(default_factory=dict)

    @property
    def marker(self) -> str:
        """In the name of every container of this phase (and so in their workload keys)."""
        return f"roxd-bench-{self.containers.run_id}-app-"

    def start(self, role: str, command: list[str], user: str | None = None,
              mount_out: bool = False) -> Any:
        cs = self.containers
        kwargs: dict[str, Any] = {}
        if user:
            kwargs["user"] = user
        if mount_out:
            kwargs["volumes"] = {str(self.out_dir): {"bind": "/out", "mode": "rw"}}
        c = cs.client.containers.create(
            APPS_IMAGE, command, name=f"{self.marker}{role}",
            labels={APPS_LABEL: cs.run_id, "roxd-bench-role": f"app-{role}",
                    OWNER_LABEL: owner()},
            shm_size="256m", **kwargs)
        cs.made.append(c)  # removed with the run's other containers
        c.start()
        return c

    def ip(self, container: Any) -> str:
        container.reload()
        ip = container.attrs["NetworkSettings"]["IPAddress"]
        if not ip:
            raise LoadError(f"{container.name} has no address on the Docker bridge")
        return ip

    def exec(self, container: Any, argv: list[str], what: str) -> str:
        code, output = container.exec_run(argv)
        text = output.decode(errors="replace")
        if code != 0:
            raise LoadError(f"{what}: {' '.join(argv)} exited {code} in {container.name}: "
                            f"{text[-800:]}")
        return text

    def ensure_client(self) -> Any:
        if self.client is None:
            self.client = self.start("client", IDLE_CMD, mount_out=True)
        return self.client


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise LoadError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def cgroup_cpu_ns(container: Any) -> int | None:
    """CPU time charged to the container's cgroup (every process in it, docker exec ones
    too), in ns. BPF programs and audit records run in the context of the task that made the
    syscall, so an agent's in-kernel cost per event lands here, with the application's."""
    container.reload()
    pid = container.attrs["State"]["Pid"]
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "cpuacct" in controllers.split(","):
            f = Path(f"/sys/fs/cgroup/{controllers}{path}/cpuacct.usage")
            if not f.exists():
                f = Path(f"/sys/fs/cgroup/cpuacct{path}/cpuacct.usage")
            with contextlib.suppress(OSError, ValueError):
                return int(f.read_text())
    for line in lines:
        if line.startswith("0::"):
            path = line.split(":", 2)[2]
            for root in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
                with contextlib.suppress(OSError, ValueError, StopIteration):
                    stat = Path(f"{root}{path}/cpu.stat").read_text().splitlines()
                    usec = next(x for x in stat if x.startswith("usage_usec "))
                    return int(usec.split()[1]) * 1000
    return None


class App:
    name = ""
    unit = ""

    def cgroups(self, stage: Stage) -> list[Any]:
        """The containers whose CPU the application's runs use: its server and the client."""
        return [stage.servers[self.name], stage.ensure_client()]

    def start(self, stage: Stage, quick: bool) -> None:
        raise NotImplementedError

    def warm(self, stage: Stage, seconds: float) -> None:
        """A short run: fills caches, and under roxd-baselines it is what is learned."""
        self.run(stage, seconds, "warm")

    def run(self, stage: Stage, seconds: float, tag: str) -> Measurement:
        raise NotImplementedError


# ---------------------------------------------------------------------------- nginx + wrk


class Nginx(App):
    """Static 2 KB page, access log on; wrk with 2 threads and 32 keep-alive connections."""

    name = "nginx"
    unit = "req/s"

    def start(self, stage: Stage, quick: bool) -> None:
        server = stage.start("nginx", ["nginx", "-c", "/etc/nginx/bench.conf", "-g",
                                       "daemon off;"])
        stage.servers["nginx"] = server
        client = stage.ensure_client()
        url = f"http://{stage.ip(server)}/"
        _wait(lambda: client.exec_run(["curl", "-sf", "-o", "/dev/null", url])[0] == 0, 30,
              "nginx to answer")

    def run(self, stage: Stage, seconds: float, tag: str) -> Measurement:
        url = f"http://{stage.ip(stage.servers['nginx'])}/"
        out = stage.exec(stage.ensure_client(),
                         ["wrk", "-t2", "-c32", f"-d{max(1, round(seconds))}s", "--latency",
                          url], "wrk")
        return parse_wrk(out)


def parse_wrk(out: str) -> Measurement:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p99 = re.search(r"^\s*99%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    if not rps or not p99:
        raise LoadError(f"wrk: no Requests/sec or 99% line in its output: {out[-800:]}")
    done = re.search(r"(\d+) requests in", out)
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: (.*)", out)
    if errors or sock:
        raise LoadError(f"wrk reported errors: {(errors or sock).group(0)}")  # type: ignore
    return Measurement(float(rps.group(1)), _ms(p99.group(1), p99.group(2)), "req/s",
                       int(done.group(1)) if done else 0)


# ---------------------------------------------------------------------------- redis


class Redis(App):
    """redis-server (no persistence) under redis-benchmark: SET then GET, 32 connections, a
    fixed number of requests per run sized in the warm-up to last about `seconds`."""

    name = "redis"
    unit = "req/s"
    rate = 0.0  # requests/s of the first warm-up: sizes the runs
    requests = 0  # per test, for every measured run (fixed at the first)

    def start(self, stage: Stage, quick: bool) -> None:
        server = stage.start("redis", ["redis-server", "--bind", "0.0.0.0", "--protected-mode",
                                       "no", "--save", "", "--appendonly", "no"], user="redis")
        stage.servers["redis"] = server
        client = stage.ensure_client()
        host = stage.ip(server)
        _wait(lambda: b"PONG" in client.exec_run(["redis-cli", "-h", host, "ping"])[1], 30,
              "redis to answer")

    def _count(self, seconds: float) -> int:
        # two tests per run: each gets half the time
        return max(10000, int(self.rate * seconds / 2)) if self.rate else 20000

    def warm(self, stage: Stage, seconds: float) -> None:
        m = self._bench(stage, self._count(seconds))
        if not self.rate:
            self.rate = m.throughput

    def run(self, stage: Stage, seconds: float, tag: str) -> Measurement:
        if not self.requests:
            self.requests = self._count(seconds)
        return self._bench(stage, self.requests)

    def _bench(self, stage: Stage, requests: int) -> Measurement:
        host = stage.ip(stage.servers["redis"])
        out = stage.exec(stage.ensure_client(),
                         ["redis-benchmark", "-h", host, "-c", "32", "-n", str(requests),
                          "-t", "set,get", "--csv"], "redis-benchmark")
        return parse_redis(out, requests)


def parse_redis(out: str, requests: int) -> Measurement:
    """Throughput over both tests (requests / total time); p99: the worse test's."""
    rows = [line.replace('"', "").split(",") for line in out.splitlines()
            if line.startswith('"') and not line.startswith('"test"')]
    header = next((line.replace('"', "").split(",") for line in out.splitlines()
                   if line.startswith('"test"')), None)
    if not rows or header is None or "p99_latency_ms" not in header:
        raise LoadError(f"redis-benchmark: no CSV with p99_latency_ms: {out[-800:]}")
    i_rps, i_p99 = header.index("rps"), header.index("p99_latency_ms")
    rates = {r[0]: float(r[i_rps]) for r in rows}
    if any(r <= 0 for r in rates.values()):
        raise LoadError(f"redis-benchmark: a test reported no throughput: {rates}")
    seconds = sum(requests / r for r in rates.values())
    return Measurement(requests * len(rates) / seconds, max(float(r[i_p99]) for r in rows),
                       "req/s", requests * len(rates), {"rps_per_test": rates})


# ---------------------------------------------------------------------------- PostgreSQL


class Postgres(App):
    """PostgreSQL 15 (synchronous_commit off: the disk of a shared VM would otherwise be the
    figure) under pgbench's TPC-B-like script, 8 clients, 2 threads; p99 from pgbench's
    per-transaction log."""

    name = "postgres"
    unit = "tx/s"

    def start(self, stage: Stage, quick: bool) -> None:
        data = "/var/lib/postgresql/data"
        script = (f"initdb -D {data} -U postgres --auth=trust --locale=C -E UTF8 --no-sync "
                  f">/dev/null && echo 'host all all 0.0.0.0/0 trust' >> {data}/pg_hba.conf "
                  f"&& exec postgres -D {data} -c listen_addresses='*' "
                  "-c unix_socket_directories=/tmp -c synchronous_commit=off "
                  "-c max_connections=50")
        server = stage.start("postgres", ["/bin/sh", "-c", script], user=str(POSTGRES_UID))
        stage.servers["postgres"] = server
        client = stage.ensure_client()
        host = stage.ip(server)
        _wait(lambda: client.exec_run(["pg_isready", "-h", host, "-U", "postgres"])[0] == 0,
              60, "PostgreSQL to accept connections")
        scale = "2" if quick else "10"
        stage.exec(client, ["pgbench", "-i", "-q", "-s", scale, "-h", host, "-U", "postgres",
                            "postgres"], "pgbench -i")

    def run(self, stage: Stage, seconds: float, tag: str) -> Measurement:
        host = stage.ip(stage.servers["postgres"])
        prefix = f"pgb-{tag}"
        for old in stage.out_dir.glob(f"{prefix}.*"):
            old.unlink()
        out = stage.exec(stage.ensure_client(),
                         ["pgbench", "-c", "8", "-j", "2", "-T", str(max(1, round(seconds))),
                          "-l", f"--log-prefix=/out/{prefix}", "-h", host, "-U", "postgres",
                          "postgres"], "pgbench")
        latencies_ms: list[float] = []
        for log in stage.out_dir.glob(f"{prefix}.*"):
            for line in log.read_text().splitlines():
                parts = line.split()
                if len(parts) >= 3:
                    latencies_ms.append(int(parts[2]) / 1000)
            log.unlink()
        return parse_pgbench(out, latencies_ms)


def parse_pgbench(out: str, latencies_ms: list[float]) -> Measurement:
    tps = re.search(r"tps = ([\d.]+) \(without initial connection time\)", out)
    failed = re.search(r"number of failed transactions: (\d+)", out)
    done = re.search(r"number of transactions actually processed: (\d+)", out)
    if not tps:
        raise LoadError(f"pgbench: no tps line: {out[-800:]}")
    if failed and int(failed.group(1)):
        raise LoadError(f"pgbench: {failed.group(1)} failed transactions")
    if not latencies_ms:
        raise LoadError("pgbench wrote no per-transaction log")
    return Measurement(float(tps.group(1)), percentile(latencies_ms, 99), "tx/s",
                       int(done.group(1)) if done else len(latencies_ms),
                       {"transactions_logged": len(latencies_ms)})


# ---------------------------------------------------------------------------- compile


class Compile(App):
    """`make -j2` of the image's C project (bench/apps/image.py: 24 units and a link), from
    clean, repeated until `seconds` have passed (at least once). Throughput: compiler runs per
    second; p99: of one compiler run (the wrapper's log)."""

    name = "compile"
    unit = "cc/s"

    def start(self, stage: Stage, quick: bool) -> None:
        stage.builder = stage.start("build", IDLE_CMD, mount_out=True)

    def cgroups(self, stage: Stage) -> list[Any]:
        return [stage.builder]

    def run(self, stage: Stage, seconds: float, tag: str) -> Measurement:
        log = stage.out_dir / f"cc-{tag}.times"
        log.unlink(missing_ok=True)
        script = ("cd /src/proj; end=$((EPOCHSECONDS + $1)); s=$EPOCHREALTIME; n=0; "
                  "while :; do make -s clean && CC_TIMES=$2 make -s -j2 CC=timedcc "
                  ">/dev/null || exit 1; n=$((n + 1)); "
                  "[ $EPOCHSECONDS -ge $end ] && break; done; echo $n $s $EPOCHREALTIME")
        out = stage.exec(stage.builder, ["bash", "-c", script, "build",
                                         str(max(1, round(seconds))), f"/out/{log.name}"],
                         "make -j2")
        try:
            builds, start, end = out.split()[-3:]
            elapsed = float(end) - float(start)
        except ValueError as exc:
            raise LoadError(f"compile: unexpected output {out[-300:]!r}") from exc
        spans = [float(b) - float(a) for a, b in
                 (line.split() for line in log.read_text().splitlines() if line.strip())]
        log.unlink()
        if not spans or elapsed <= 0:
            raise LoadError("compile: the wrapper logged no compiler run")
        return Measurement(len(spans) / elapsed, percentile(spans, 99) * 1000, "cc/s",
                           len(spans), {"builds": int(builds)})


APPS: dict[str, type[App]] = {"nginx": Nginx, "redis": Redis, "postgres": Postgres,
                              "compile": Compile}


def remove_leftovers(client: Any) -> None:
    """Containers of an earlier apps phase that was killed hard (its process is gone)."""
    for c in client.containers.list(all=True, filters={"label": APPS_LABEL}):
        if not run_alive(c.labels.get(OWNER_LABEL, "")):
            with contextlib.suppress(Exception):
                c.remove(force=True)


def remove(stage: Stage) -> None:
    for c in [*stage.servers.values(), stage.client, stage.builder]:
        if c is not None:
            with contextlib.suppress(Exception):
                c.remove(force=True)
