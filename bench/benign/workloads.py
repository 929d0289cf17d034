"""The benign workloads: what production containers do every day, each one a function.

Each workload builds what it needs from the offline base image (bench/benign/image.py), runs
real containers with no network but loopback, drives them as a runtime, an orchestrator, a CI
system or an operator would, and raises WorkloadFailed when it did not do its job. A workload
that is `background` starts long-lived containers (cron needs a minute) and is checked at the
end of the run, so the suite does not wait for it.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.benign.harness import Ctx, WorkloadFailed, docker


@dataclass(frozen=True)
class Workload:
    name: str
    category: str
    description: str
    start: Callable[[Ctx], None]
    # background workloads: start() leaves containers running; finish() checks their result
    finish: Callable[[Ctx], None] | None = None
    quick: bool = False  # in the kernel test's quick subset


WORKLOADS: list[Workload] = []


def workload(category: str, description: str, *, quick: bool = False,
             finish: Callable[[Ctx], None] | None = None):
    def register(fn: Callable[[Ctx], None]) -> Callable[[Ctx], None]:
        WORKLOADS.append(Workload(fn.__name__.replace("_", "-"), category, description, fn,
                                  finish, quick))
        return fn
    return register


NGINX_CONF = """
worker_processes 2;
pid /run/nginx.pid;
error_log /var/log/nginx/error.log;
events { worker_connections 64; }
http {
  access_log /var/log/nginx/access.log;
  server { listen 80; root /var/www/html; location /healthz { return 200 "ok\\n"; } }
}
"""
WEB_BASE = """FROM @BASE@
COPY nginx.conf /etc/nginx/nginx.conf
COPY index.html /var/www/html/index.html
"""

# ------------------------------------------------------------------ web servers, health checks


@workload("health check", "nginx with a shell-form Docker HEALTHCHECK (CMD-SHELL curl -f)",
          quick=True)
def nginx_healthcheck_shell(ctx: Ctx) -> None:
    image = ctx.build(WEB_BASE + """
HEALTHCHECK --interval=1s --timeout=3s --retries=3 CMD curl -fsS http://localhost/healthz || exit 1
CMD ["nginx", "-g", "daemon off;"]
""", {"nginx.conf": NGINX_CONF, "index.html": "<h1>shop</h1>\n"})
    c = ctx.run(image)
    ctx.wait_health_checks(c, 6)


@workload("health check", "python http.server with an exec-form HEALTHCHECK "
          "(CMD [\"curl\", \"-f\", ...])", quick=True)
def python_http_healthcheck_exec(ctx: Ctx) -> None:
    image = ctx.build("""FROM @BASE@
WORKDIR /srv
RUN echo hello > index.html
HEALTHCHECK --interval=1s --timeout=3s CMD ["curl", "-f", "-s", "-o", "/dev/null", "http://127.0.0.1:8000/"]
CMD ["python3", "-m", "http.server", "8000", "--bind", "127.0.0.1"]
""")
    c = ctx.run(image)
    ctx.wait_health_checks(c, 6)


@workload("health check", "redis with a HEALTHCHECK that runs redis-cli ping")
def redis_healthcheck(ctx: Ctx) -> None:
    image = ctx.build("""FROM @BASE@
HEALTHCHECK --interval=1s --timeout=3s CMD ["redis-cli", "ping"]
USER redis
CMD ["redis-server", "--port", "6379", "--dir", "/tmp", "--save", ""]
""")
    c = ctx.run(image)
    ctx.wait_health_checks(c, 5)


@workload("exec probe", "kubelet-style liveness probe: docker exec c /bin/sh -c "
          "'curl -f localhost' (non-interactive), five times", quick=True)
def nginx_exec_probe(ctx: Ctx) -> None:
    image = ctx.build(WEB_BASE + 'CMD ["nginx", "-g", "daemon off;"]\n',
                      {"nginx.conf": NGINX_CONF, "index.html": "<h1>shop</h1>\n"})
    c = ctx.run(image)
    ctx.wait_until("nginx answering", lambda: ctx.exec(c, "curl", "-fs", "http://localhost/"))
    for _ in range(5):
        ctx.exec(c, "/bin/sh", "-c", "curl -f -s -o /dev/null http://localhost/healthz")
        time.sleep(0.3)


@workload("exec probe", "readiness probe with a pipeline: docker exec c sh -c "
          "'redis-cli info replication | grep -q role:master'")
def redis_exec_probe(ctx: Ctx) -> None:
    c = ctx.run("roxd-bench/debian:latest", "redis-server", "--save", "", "--dir", "/tmp",
                opts=("--user", "redis"))
    ctx.wait_until("redis answering", lambda: "PONG" in ctx.exec(c, "redis-cli", "ping"))
    for _ in range(5):
        ctx.exec(c, "sh", "-c", "redis-cli info replication | grep -q role:master")
        time.sleep(0.3)


@workload("exec probe", "preStop hook: docker exec c /bin/sh -c 'nginx -s quit'")
def nginx_prestop_hook(ctx: Ctx) -> None:
    image = ctx.build(WEB_BASE + 'CMD ["nginx", "-g", "daemon off;"]\n',
                      {"nginx.conf": NGINX_CONF, "index.html": "x\n"})
    c = ctx.run(image)
    ctx.wait_until("nginx answering", lambda: ctx.exec(c, "curl", "-fs", "http://localhost/"))
    # the hook's own process may be killed with the container it stopped (exit 137), as
    # kubelet's preStop exec is
    out = docker("exec", c, "/bin/sh", "-c", "nginx -s quit", check=False)
    if out.returncode not in (0, 137):
        raise WorkloadFailed(f"preStop hook exited {out.returncode}: {out.stderr[-300:]}")
    ctx.wait_exit(c, 20)

# ------------------------------------------------------------------ databases


@workload("database", "redis initialising, serving SET/GET from redis-cli, BGSAVE forking a "
          "child to write its RDB file", quick=True)
def redis_serving(ctx: Ctx) -> None:
    c = ctx.run("roxd-bench/debian:latest", "redis-server", "--dir", "/var/lib/redis",
                "--appendonly", "yes", opts=("--user", "redis"))
    ctx.wait_until("redis answering", lambda: "PONG" in ctx.exec(c, "redis-cli", "ping"))
    ctx.exec(c, "redis-cli", "set", "user:1", "alice")
    if "alice" not in ctx.exec(c, "redis-cli", "get", "user:1"):
        raise WorkloadFailed("redis lost its key")
    ctx.exec(c, "redis-cli", "bgsave")
    ctx.exec(c, "redis-cli", "bgrewriteaof")
    ctx.wait_until("the RDB file", lambda: "dump.rdb" in ctx.exec(c, "ls", "/var/lib/redis"))


SQLITE_APP = """
import sqlite3, os
os.makedirs("/var/lib/app", exist_ok=True)
db = sqlite3.connect("/var/lib/app/app.db")
db.execute("create table if not exists orders (id integer primary key, item text, qty int)")
rows = [(f"item{i}", i) for i in range(500)]
db.executemany("insert into orders (item, qty) values (?, ?)", rows)
db.commit()
assert db.execute("select count(*) from orders").fetchone()[0] >= 500
print("orders", db.execute("select sum(qty) from orders").fetchone()[0])
"""


@workload("database", "sqlite: schema migration and queries from a python app, then the "
          "sqlite3 CLI's online .backup and an integrity check")
def sqlite_app(ctx: Ctx) -> None:
    image = ctx.build("""FROM @BASE@
COPY app.py /app/app.py
COPY entrypoint.sh /entrypoint.sh
ENTRYPOINT ["/entrypoint.sh"]
""", {"app.py": SQLITE_APP, "entrypoint.sh": """#!/bin/sh
set -e
python3 /app/app.py
sqlite3 /var/lib/app/app.db ".backup /var/backups/app.db"
sqlite3 /var/backups/app.db "pragma integrity_check;" | grep -q ok
"""})
    ctx.run_to_end(image)

# ------------------------------------------------------------------ image builds


def _local_deb() -> bytes:
    """A tiny .deb made on the host with dpkg-deb, as a CI system packages its app: a binary,
    a logrotate snippet, a cron file and a postinst that prepares its directories."""
    with tempfile.TemporaryDirectory(prefix="rbx-deb-") as tmp:
        root = Path(tmp) / "pkg"
        (root / "DEBIAN").mkdir(parents=True)
        (root / "DEBIAN/control").write_text(
            "Package: shop-api\nVersion: 1.4.2\nArchitecture: all\n"
            "Maintainer: ops <ops@example.invalid>\n"
            "Depends: python3\nDescription: the shop's API server\n")
        post = root / "DEBIAN/postinst"
        post.write_text("#!/bin/sh\nset -e\nmkdir -p /var/log/shop /var/lib/shop\n"
                        "chown app:app /var/lib/shop\nchmod 0755 /usr/bin/shop-api\n")
        post.chmod(0o755)
        (root / "usr/bin").mkdir(parents=True)
        app = root / "usr/bin/shop-api"
        app.write_text("#!/usr/bin/python3\nprint('shop-api 1.4.2')\n")
        app.chmod(0o755)
        (root / "etc/logrotate.d").mkdir(parents=True)
        (root / "etc/logrotate.d/shop").write_text("/var/log/shop/*.log {\n daily\n rotate 7\n}\n")
        (root / "etc/cron.d").mkdir(parents=True)
        (root / "etc/cron.d/shop").write_text("17 * * * * app /usr/bin/shop-api --compact\n")
        deb = Path(tmp) / "shop-api.deb"
        subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(root), str(deb)],
                       check=True, capture_output=True)
        return deb.read_bytes()


@workload("image build", "docker build whose RUN step installs a local .deb with dpkg -i "
          "(maintainer script, cron and logrotate files) and checks it with dpkg -s", quick=True)
def build_dpkg_install(ctx: Ctx) -> None:
    image = ctx.build("""FROM @BASE@
COPY shop-api.deb /tmp/shop-api.deb
RUN dpkg -i /tmp/shop-api.deb && dpkg -s shop-api | grep -q 'Status: install ok installed' \\
    && rm /tmp/shop-api.deb
CMD ["shop-api"]
""", {"shop-api.deb": _local_deb()})
    out = ctx.run_to_end(image)
    if "1.4.2" not in out:
        raise WorkloadFailed(f"the installed package did not run: {out!r}")


C_PROJECT = {
    "src/calc.c": ("int add(int a, int b) { return a + b; }\n"
                   "int mul(int a, int b) { return a * b; }\n"),
    "src/calc.h": "int add(int a, int b);\nint mul(int a, int b);\n",
    "src/main.c": ('#include <stdio.h>\n#include "calc.h"\n'
                   'int main(void){printf("%d\\n", add(2, mul(3, 4)));return 0;}\n'),
    "tests/test_calc.c": ('#include <assert.h>\n#include "../src/calc.h"\n'
                          'int main(void){assert(add(1,2)==3);assert(mul(3,4)==12);return 0;}\n'),
    "Makefile": (
        "CFLAGS=-O2 -Wall -Werror\nall: calc\n"
        "calc: src/main.o src/calc.o\n\t$(CC) -o $@ $^\n"
        "test_calc: tests/test_calc.c src/calc.o\n\t$(CC) $(CFLAGS) -o $@ $^\n"
        "test: test_calc\n\t./test_calc && echo tests passed\n"
        "install: calc\n\tinstall -D -m 0755 calc /usr/local/bin/calc\n"
        "clean:\n\trm -f calc test_calc src/*.o\n"),
}


@workload("image build", "docker build with a RUN step that compiles a C program with gcc "
          "and make, runs its tests and installs it")
def build_compile_step(ctx: Ctx) -> None:
    image = ctx.build("""FROM @BASE@
COPY . /src
WORKDIR /src
RUN make && make test && make install && make clean
CMD ["calc"]
""", C_PROJECT)
    if ctx.run_to_end(image).strip() != "14":
        raise WorkloadFailed("the built program printed the wrong answer")

# ------------------------------------------------------------------ CI jobs


@workload("CI job", "CI compile-and-test job in a container: make, gcc, the test binary",
          quick=True)
def ci_make_test(ctx: Ctx) -> None:
    image = ctx.build("FROM @BASE@\nCOPY . /work\nWORKDIR /work\n", C_PROJECT,
                      tag="roxd-bench/ci-make-src:latest")
    out = ctx.run_to_end(image, "sh", "-c", "make -j2 && make test && ./calc")
    if "tests passed" not in out:
        raise WorkloadFailed(f"tests did not pass: {out[-300:]}")


PY_PROJECT = {
    "shop/__init__.py": "",
    "shop/cart.py": ("def total(items):\n    return sum(p * q for p, q in items)\n\n"
                     "def discount(total, pct):\n    return round(total * (100 - pct) / 100, 2)\n"),
    "tests/test_cart.py": (
        "import subprocess, sys\nfrom shop.cart import total, discount\n\n"
        "def test_total():\n    assert total([(2, 3), (1, 5)]) == 11\n\n"
        "def test_discount():\n    assert discount(100, 15) == 85\n\n"
        "def test_cli_runs(tmp_path):\n"
        "    out = subprocess.run([sys.executable, '-c', 'print(42)'], capture_output=True,"
        " text=True, check=True)\n    assert out.stdout.strip() == '42'\n"),
}


@workload("CI job", "python -m pytest of a small package (tests spawn subprocesses, use tmp "
          "dirs), as a CI runner does")
def ci_pytest(ctx: Ctx) -> None:
    image = ctx.build("FROM @BASE@\nCOPY . /work\nWORKDIR /work\n", PY_PROJECT,
                      tag="roxd-bench/ci-pytest-src:latest")
    out = ctx.run_to_end(image, "python3", "-m", "pytest", "-q", "-p", "no:cacheprovider",
                         "tests")
    if "3 passed" not in out:
        raise WorkloadFailed(f"pytest did not pass: {out[-300:]}")


@workload("CI job", "CI shell script: bash with set -euo pipefail building a release tarball, "
          "checksums, a version stamp with sed")
def ci_release_script(ctx: Ctx) -> None:
    image = ctx.build("FROM @BASE@\nCOPY . /work\nWORKDIR /work\n", {
        **PY_PROJECT,
        "VERSION.in": "version = @VERSION@\n",
        "ci/release.sh": """#!/bin/bash
set -euo pipefail
VERSION=1.4.2
sed "s/@VERSION@/${VERSION}/" VERSION.in > VERSION
mkdir -p dist
tar -czf "dist/shop-${VERSION}.tar.gz" shop VERSION
(cd dist && sha256sum ./*.tar.gz > SHA256SUMS && sha256sum -c SHA256SUMS)
find dist -type f | sort
python3 -m compileall -q shop
echo release ok
"""}, tag="roxd-bench/ci-release-src:latest")
    out = ctx.run_to_end(image, "bash", "ci/release.sh")
    if "release ok" not in out:
        raise WorkloadFailed(out[-300:])

# ------------------------------------------------------------------ cron, log rotation, backups


def _cron_finish(ctx: Ctx) -> None:
    c = ctx.containers[0]
    ctx.wait_until("the cron job's output", lambda: "backup done" in ctx.exec(
        c, "cat", "/var/log/backup.log"), timeout=150, interval=2)


@workload("cron", "Debian cron running a backup job from /etc/cron.d every minute (tar of the "
          "app's data, rotation with find -mtime)", finish=_cron_finish)
def cron_backup_job(ctx: Ctx) -> None:
    image = ctx.build("""FROM @BASE@
COPY backup.sh /usr/local/bin/backup.sh
COPY crontab /etc/cron.d/backup
RUN chmod 0644 /etc/cron.d/backup && mkdir -p /srv/data && echo data > /srv/data/a.txt \\
    && touch /var/log/backup.log
CMD ["cron", "-f"]
""", {"backup.sh": """#!/bin/sh
set -e
ts=$(date +%Y%m%d%H%M%S)
tar -czf /var/backups/data-$ts.tar.gz -C /srv data
find /var/backups -name 'data-*.tar.gz' -mtime +7 -delete
echo "backup done $ts"
""", "crontab": ("SHELL=/bin/sh\n"
                 "* * * * * root /usr/local/bin/backup.sh >> /var/log/backup.log 2>&1\n")})
    ctx.run(image)


@workload("log rotation", "logrotate with compress, copytruncate and a postrotate script "
          "signalling the app, as the daily cron job runs it", quick=True)
def logrotate_app(ctx: Ctx) -> None:
    image = ctx.build("""FROM @BASE@
COPY app.conf /etc/logrotate.d/app
RUN mkdir -p /var/log/app && chmod 0644 /etc/logrotate.d/app
CMD ["sh", "-c", "while :; do date >> /var/log/app/app.log; sleep 0.2; done"]
""", {"app.conf": """/var/log/app/*.log {
    rotate 5
    compress
    missingok
    copytruncate
    postrotate
        /bin/kill -0 1 >/dev/null 2>&1 || true
    endscript
}
"""})
    c = ctx.run(image)
    ctx.wait_until("a log line", lambda: ctx.exec(c, "cat", "/var/log/app/app.log"))
    for _ in range(3):
        ctx.exec(c, "logrotate", "-f", "-s", "/var/lib/logrotate.status",
                 "/etc/logrotate.d/app")
        time.sleep(0.5)
    listing = ctx.exec(c, "ls", "/var/log/app")
    if "app.log.1.gz" not in listing and "app.log.1" not in listing:
        raise WorkloadFailed(f"nothing rotated: {listing}")


@workload("backup", "tar + gzip backup of a data volume with sha256 manifest and restore test",
          quick=True)
def tar_backup(ctx: Ctx) -> None:
    ctx.run_to_end("roxd-bench/debian:latest", "sh", "-c", """set -e
mkdir -p /srv/data/uploads /backup
for i in $(seq 1 50); do head -c 2048 /dev/urandom > /srv/data/uploads/f$i; done
tar -C /srv -czf /backup/data.tar.gz data
sha256sum /backup/data.tar.gz > /backup/MANIFEST
mkdir /restore && tar -C /restore -xzf /backup/data.tar.gz
diff -r /srv/data /restore/data
echo restored""")


@workload("backup", "rsync -a --delete mirror of a directory tree, then an incremental run "
          "with --link-dest, as backup jobs do")
def rsync_backup(ctx: Ctx) -> None:
    ctx.run_to_end("roxd-bench/debian:latest", "sh", "-c", """set -e
mkdir -p /srv/www /backup
for i in $(seq 1 30); do echo page $i > /srv/www/p$i.html; done
rsync -a --delete /srv/www/ /backup/day1/
echo changed > /srv/www/p1.html
rsync -a --delete --link-dest=/backup/day1 /srv/www/ /backup/day2/
cmp /srv/www/p1.html /backup/day2/p1.html""")


@workload("backup", "redis-cli --rdb dump and sqlite3 .backup run from a backup sidecar's "
          "docker exec")
def db_dump_exec(ctx: Ctx) -> None:
    c = ctx.run("roxd-bench/debian:latest", "redis-server", "--dir", "/tmp", "--save", "",
                opts=("--user", "redis"))
    ctx.wait_until("redis answering", lambda: "PONG" in ctx.exec(c, "redis-cli", "ping"))
    ctx.exec(c, "redis-cli", "set", "k", "v")
    ctx.exec(c, "redis-cli", "--rdb", "/tmp/backup.rdb")
    ctx.exec(c, "sh", "-c", "sqlite3 /tmp/x.db 'create table t(a); insert into t values (1);'"
             " && sqlite3 /tmp/x.db '.backup /tmp/x.bak' && gzip -f /tmp/x.bak")

# ------------------------------------------------------------------ init systems


@workload("init system", "tini as pid 1 reaping the children of a shell entrypoint that runs a "
          "python worker", quick=True)
def tini_init(ctx: Ctx) -> None:
    ctx.run_to_end("roxd-bench/debian:latest", "tini", "--", "sh", "-c",
                   "python3 -c 'import os; print(os.getpid())' && sleep 0.2 & "
                   "sleep 0.1; wait; echo worker done")


@workload("init system", "dumb-init as pid 1 running a bash entrypoint script that writes its "
          "config with sed and execs the server (python http.server)")
def dumb_init_entrypoint(ctx: Ctx) -> None:
    image = ctx.build("""FROM @BASE@
COPY docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
COPY app.conf.tmpl /etc/app.conf.tmpl
ENTRYPOINT ["dumb-init", "--", "docker-entrypoint.sh"]
CMD ["python3", "-m", "http.server", "8080", "--bind", "127.0.0.1"]
""", {"docker-entrypoint.sh": """#!/bin/bash
set -e
: "${APP_PORT:=8080}"
sed -e "s/@PORT@/${APP_PORT}/" /etc/app.conf.tmpl > /etc/app.conf
if [ "$(id -u)" = 0 ]; then mkdir -p /var/lib/app && chown app:app /var/lib/app; fi
exec "$@"
""", "app.conf.tmpl": "port = @PORT@\n"})
    c = ctx.run(image)
    ctx.wait_until("the server answering", lambda: ctx.exec(
        c, "curl", "-fs", "http://127.0.0.1:8080/"))


@workload("init system", "supervisord (pid 1) managing a python web server and a shell worker "
          "loop; supervisorctl status from docker exec", quick=True)
def supervisord_programs(ctx: Ctx) -> None:
    image = ctx.build("""FROM @BASE@
COPY supervisord.conf /etc/supervisor/supervisord.conf
CMD ["supervisord", "-n", "-c", "/etc/supervisor/supervisord.conf"]
""", {"supervisord.conf": """[supervisord]
nodaemon=true
logfile=/var/log/supervisord.log
pidfile=/run/supervisord.pid
[unix_http_server]
file=/run/supervisor.sock
[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
[supervisorctl]
serverurl=unix:///run/supervisor.sock
[program:web]
command=python3 -m http.server 8081 --bind 127.0.0.1
directory=/var/www/html
[program:worker]
command=/bin/sh -c "while true; do date >> /var/log/worker.log; sleep 0.5; done"
"""})
    c = ctx.run(image)
    ctx.wait_until("both programs running", lambda: ctx.exec(
        c, "supervisorctl", "status").count("RUNNING") == 2, timeout=30)

# ------------------------------------------------------------------ language runtimes


@workload("runtime", "python multiprocessing Pool of 4 workers computing, plus a "
          "concurrent.futures process pool", quick=True)
def python_multiprocessing(ctx: Ctx) -> None:
    out = ctx.run_to_end("roxd-bench/debian:latest", "python3", "-c", """
import multiprocessing as mp, concurrent.futures as cf
def sq(x): return x * x
if __name__ == "__main__":
    with mp.Pool(4) as p: a = sum(p.map(sq, range(1000)))
    with cf.ProcessPoolExecutor(2) as ex: b = sum(ex.map(sq, range(100)))
    print(a, b)
""")
    if "332833500" not in out:
        raise WorkloadFailed(out)


@workload("runtime", "gunicorn with 3 sync workers serving a WSGI app; requests from curl via "
          "docker exec", quick=True)
def gunicorn_workers(ctx: Ctx) -> None:
    image = ctx.build("""FROM @BASE@
COPY app.py /app/app.py
WORKDIR /app
USER app
CMD ["gunicorn", "--workers", "3", "--bind", "127.0.0.1:8000", "--access-logfile", "-", "app:app"]
""", {"app.py": """import os
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"worker {os.getpid()}\\n".encode()]
"""})
    c = ctx.run(image)
    ctx.wait_until("gunicorn answering", lambda: "worker" in ctx.exec(
        c, "curl", "-fs", "http://127.0.0.1:8000/"))
    for _ in range(5):
        ctx.exec(c, "curl", "-fs", "http://127.0.0.1:8000/")


@workload("runtime", "python app shelling out by design: subprocess.run of git-less tools "
          "(ls, du, gzip) as a report job does")
def python_subprocess_job(ctx: Ctx) -> None:
    ctx.run_to_end("roxd-bench/debian:latest", "python3", "-c", """
import subprocess, os
os.makedirs("/tmp/reports", exist_ok=True)
open("/tmp/reports/r.txt", "w").write("x" * 10000)
subprocess.run(["du", "-sh", "/tmp/reports"], check=True)
subprocess.run("gzip -k /tmp/reports/r.txt && ls -l /tmp/reports", shell=True, check=True)
""")

# ------------------------------------------------------------------ operators, entrypoints


@workload("operator exec", "an operator's non-interactive docker exec of ls, cat, ps, env, df "
          "and a pipeline through sh -c", quick=True)
def operator_exec(ctx: Ctx) -> None:
    image = ctx.build(WEB_BASE + 'CMD ["nginx", "-g", "daemon off;"]\n',
                      {"nginx.conf": NGINX_CONF, "index.html": "x\n"})
    c = ctx.run(image)
    ctx.wait_until("nginx answering", lambda: ctx.exec(c, "curl", "-fs", "http://localhost/"))
    ctx.exec(c, "ls", "-la", "/var/www/html")
    ctx.exec(c, "cat", "/etc/nginx/nginx.conf")
    ctx.exec(c, "ps", "aux")
    ctx.exec(c, "env")
    ctx.exec(c, "df", "-h")
    ctx.exec(c, "nginx", "-t")
    ctx.exec(c, "sh", "-c", "tail -n 20 /var/log/nginx/access.log | wc -l")


@workload("entrypoint", "a shell as the entrypoint: /bin/bash docker-entrypoint.sh that waits "
          "for a dependency, templates config and runs the app in a loop")
def shell_entrypoint(ctx: Ctx) -> None:
    image = ctx.build("""FROM @BASE@
COPY entrypoint.sh /entrypoint.sh
ENTRYPOINT ["/bin/bash", "/entrypoint.sh"]
""", {"entrypoint.sh": """#!/bin/bash
set -eu
for i in 1 2 3; do
  if [ -e /etc/hostname ]; then break; fi
  sleep 1
done
cat > /tmp/app.ini <<EOF
[server]
host = $(hostname)
workers = $(nproc)
EOF
grep -q workers /tmp/app.ini
for n in 1 2 3; do python3 -c "print('tick', $n)"; done
echo started
"""})
    ctx.run_to_end(image)


@workload("identity", "an app that reads /etc/passwd the legitimate way: id, whoami, getent, "
          "python pwd, running as an unprivileged user", quick=True)
def identity_lookups(ctx: Ctx) -> None:
    out = ctx.run_to_end("roxd-bench/debian:latest", "sh", "-c",
                         "id && whoami && getent passwd app && getent group app && "
                         "python3 -c 'import pwd, os; print(pwd.getpwuid(os.getuid()).pw_name)'"
                         " && grep -c : /etc/passwd",
                         opts=("--user", "app"))
    if "app" not in out:
        raise WorkloadFailed(out)


@workload("app logs", "an app writing and rotating its own logs (python RotatingFileHandler "
          "under /var/log/app) and nginx writing access logs", quick=True)
def app_own_logs(ctx: Ctx) -> None:
    ctx.run_to_end("roxd-bench/debian:latest", "python3", "-c", """
import logging, logging.handlers, os
os.makedirs("/var/log/app", exist_ok=True)
h = logging.handlers.RotatingFileHandler("/var/log/app/app.log", maxBytes=4096, backupCount=3)
log = logging.getLogger("app"); log.addHandler(h); log.setLevel(logging.INFO)
for i in range(500): log.info("request %d served in %d ms", i, i % 37)
assert os.path.exists("/var/log/app/app.log.1")
""")
    image = ctx.build(WEB_BASE + 'CMD ["nginx", "-g", "daemon off;"]\n',
                      {"nginx.conf": NGINX_CONF, "index.html": "x\n"},
                      tag="roxd-bench/app-own-logs-web:latest")
    c = ctx.run(image)
    ctx.wait_until("nginx answering", lambda: ctx.exec(c, "curl", "-fs", "http://localhost/"))
    for _ in range(10):
        ctx.exec(c, "curl", "-fs", "-o", "/dev/null", "http://localhost/")


@workload("exec probe", "docker exec as another user (-u www-data) running a status script, "
          "as a monitoring agent does")
def exec_as_user(ctx: Ctx) -> None:
    c = ctx.run("roxd-bench/debian:latest", "sleep", "600")
    for _ in range(3):
        ctx.exec(c, "sh", "-c", "id -un; ls /var/www >/dev/null; cat /proc/loadavg",
                 user="www-data")


@workload("API client", "service-to-service calls: curl POSTing JSON with its own headers, "
          "a status script from the image run by sh and python, the app's own environment "
          "and users looked up through libc, as an app's sidecar and an operator do")
def api_client(ctx: Ctx) -> None:
    image = ctx.build("FROM @BASE@\nCOPY status.sh /usr/local/bin/status.sh\n"
                      "COPY report.py /app/report.py\n", {
                          "status.sh": "#!/bin/sh\necho status ok\n",
                          "report.py": "import os\nprint(len(os.environ))\n"},
                      tag="roxd-bench/api-client:latest")
    c = ctx.run(image, "python3", "-m", "http.server", "8000", "--bind", "127.0.0.1")
    ctx.wait_until("the API answering", lambda: ctx.exec(c, "curl", "-fs",
                                                         "http://127.0.0.1:8000/"))
    # http.server answers POST with 501: the call is made, curl -sS exits 0 without -f
    ctx.exec(c, "curl", "-sS", "-o", "/dev/null", "-X", "POST", "-H",
             "Content-Type: application/json", "-H", "Authorization: Bearer t0k3n",
             "-d", '{"event":"deploy","ok":true}', "http://127.0.0.1:8000/hooks")
    ctx.exec(c, "sh", "-c", "curl -fsS http://127.0.0.1:8000/ | wc -c")
    ctx.exec(c, "sh", "/usr/local/bin/status.sh")
    ctx.exec(c, "python3", "/app/report.py")
    ctx.exec(c, "python3", "-c", "import base64; print(base64.b64encode(b'report'))")
    ctx.exec(c, "sh", "-c", "getent passwd root >/dev/null && id -un && "
                            "grep -q '^root:' /etc/passwd && cat /etc/os-release >/dev/null")


@workload("housekeeping", "an entrypoint and a data job doing the everyday neighbours of the "
          "permission, split, decode, archive and delete rules: private modes in /tmp, chown to "
          "the app user, split by lines and into N parts, base64 of streams and files, tar of a "
          "data directory and its restore, gzip -k in /tmp, rm -rf of scratch directories")
def housekeeping(ctx: Ctx) -> None:
    out = ctx.run_to_end("roxd-bench/debian:latest", "sh", "-c", """set -e
mkdir -p /tmp/app-runtime /tmp/work /data/in /backup
chmod 700 /tmp/app-runtime
echo t0k3n > /tmp/app-runtime/token && chmod 600 /tmp/app-runtime/token
echo 'port = 8080' > /etc/app.conf && chown app:app /etc/app.conf && chmod 640 /etc/app.conf
seq 1 5000 | sed 's/^/order,/' > /data/in/orders.csv
chown -R app:app /data /tmp/work
split -l 1000 -d /data/in/orders.csv /tmp/work/part-
split -n 4 /data/in/orders.csv /tmp/work/chunk-
echo aGVsbG8K | base64 -d
base64 /tmp/work/part-00 > /tmp/work/part-00.b64 && base64 -d < /tmp/work/part-00.b64 | wc -l
tar -C /data -czf /backup/in.tar.gz in
mkdir -p /restore && tar -xzf /backup/in.tar.gz -C /restore
cmp /data/in/orders.csv /restore/in/orders.csv
gzip -k /tmp/work/part-01
rm -rf /tmp/work /restore
echo housekeeping done""")
    if "housekeeping done" not in out:
        raise WorkloadFailed(out[-300:])


def by_name() -> dict[str, Workload]:
    return {w.name: w for w in WORKLOADS}


def remove_images() -> None:
    for w in WORKLOADS:
        docker("rmi", "-f", f"roxd-bench/{w.name}:latest", check=False)
