"""The application benchmark's image, built offline like the benign suite's (bench/benign/
image.py): the same base of host packages and fetched archives, plus PostgreSQL and wrk, a
small C project to compile, and the configuration of each server.

PostgreSQL and wrk come from the host when installed there, else from archives that
scripts/setup.sh fetches into APPS_DEB_DIR (`ROXD_SETUP_BENCH=1`, `apt-get install
--download-only`); the build reads only local files.

Usage: python -m bench.apps.image [--force]   (idempotent: an existing image is kept)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from bench.benign import image as base

APPS_IMAGE = "roxd-bench/apps:latest"
APPS_DEB_DIR = Path(os.environ.get("ROXD_APPS_DEBS", "/var/cache/roxd/apps-debs"))
EXTRA_PACKAGES = ("postgresql-15", "postgresql-client-15", "wrk")
# uid/gid of the postgres account in the image (initdb refuses to run as root)
POSTGRES_UID, POSTGRES_GID = 102, 103
PG_BIN = "/usr/lib/postgresql/15/bin"
COMPILE_UNITS = 24  # translation units of the C project (each a few hundred lines)

NGINX_CONF = """user www-data;
worker_processes 2;
pid /run/nginx.pid;
error_log /var/log/nginx/error.log;
events { worker_connections 1024; }
http {
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    sendfile on;
    keepalive_requests 100000;
    access_log /var/log/nginx/access.log;
    server {
        listen 80 default_server;
        root /var/www/html;
        location / { index index.html; }
    }
}
"""

# Each make job goes through this wrapper, which appends its start and end to $CC_TIMES:
# the per-unit compile latency the p99 is taken from. bash's EPOCHREALTIME needs no exec, so
# the wrapper adds one bash exec per compiler run, the same under every agent.
TIMED_CC = """#!/bin/bash
s=$EPOCHREALTIME
gcc "$@"
rc=$?
echo "$s $EPOCHREALTIME" >> "${CC_TIMES:-/dev/null}"
exit $rc
"""


def c_unit(i: int) -> str:
    """One translation unit: string, sort, hash and table code of the kind real C projects
    hold, varied per unit so the compiler cannot share work between them."""
    return f"""#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <ctype.h>

struct rec{i} {{ char name[32]; uint32_t key; double weight; struct rec{i} *next; }};

static uint32_t hash{i}(const char *s) {{
    uint32_t h = 2166136261u ^ {i}u;
    while (*s) {{ h ^= (unsigned char)*s++; h *= 16777619u; }}
    return h;
}}

static int cmp{i}(const void *a, const void *b) {{
    const struct rec{i} *x = a, *y = b;
    if (x->key != y->key) return x->key < y->key ? -1 : 1;
    return strcmp(x->name, y->name);
}}

static void normalise{i}(char *s) {{
    for (char *p = s; *p; p++) {{
        if (isupper((unsigned char)*p)) *p = (char)tolower((unsigned char)*p);
        else if (isspace((unsigned char)*p)) *p = '_';
    }}
}}

static struct rec{i} *table{i}[64];

static void insert{i}(const char *name, double w) {{
    struct rec{i} *r = calloc(1, sizeof *r);
    if (!r) return;
    snprintf(r->name, sizeof r->name, "%s", name);
    normalise{i}(r->name);
    r->key = hash{i}(r->name);
    r->weight = w * {i + 1};
    r->next = table{i}[r->key % 64];
    table{i}[r->key % 64] = r;
}}

static double walk{i}(void) {{
    double sum = 0;
    for (int b = 0; b < 64; b++)
        for (struct rec{i} *r = table{i}[b]; r; r = r->next)
            switch (r->key % 4) {{
            case 0: sum += r->weight; break;
            case 1: sum -= r->weight / 2; break;
            case 2: sum *= 1.0001; break;
            default: sum += (double)strlen(r->name);
            }}
    return sum;
}}

static size_t collect{i}(struct rec{i} *out, size_t max) {{
    size_t n = 0;
    for (int b = 0; b < 64 && n < max; b++)
        for (struct rec{i} *r = table{i}[b]; r && n < max; r = r->next)
            out[n++] = *r;
    qsort(out, n, sizeof *out, cmp{i});
    return n;
}}

double unit{i}(int rounds) {{
    char buf[32];
    struct rec{i} sorted[128];
    for (int k = 0; k < rounds; k++) {{
        snprintf(buf, sizeof buf, "Item %d of Unit {i}", k);
        insert{i}(buf, k * 0.5);
    }}
    size_t n = collect{i}(sorted, 128);
    return walk{i}() + (double)n;
}}
"""


def c_project(dest: Path, units: int = COMPILE_UNITS) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    decls = "".join(f"double unit{i}(int);\n" for i in range(units))
    calls = "".join(f"    total += unit{i}(argc + {i});\n" for i in range(units))
    (dest / "main.c").write_text(
        f"#include <stdio.h>\n{decls}int main(int argc, char **argv) {{\n"
        f"    (void)argv;\n    double total = 0;\n{calls}"
        f"    printf(\"%f\\n\", total);\n    return 0;\n}}\n")
    for i in range(units):
        (dest / f"unit{i}.c").write_text(c_unit(i))
    objs = " ".join(["main.o"] + [f"unit{i}.o" for i in range(units)])
    (dest / "Makefile").write_text(
        f"CC ?= cc\nCFLAGS = -O2 -g -Wall\nOBJS = {objs}\n\nproj: $(OBJS)\n"
        f"\t$(CC) -o $@ $(OBJS)\n\n%.o: %.c\n\t$(CC) $(CFLAGS) -c -o $@ $<\n\n"
        f"clean:\n\trm -f proj $(OBJS)\n\n.PHONY: clean\n")


def _add_accounts(root: Path) -> None:
    with (root / "etc/passwd").open("a") as f:
        f.write(f"postgres:x:{POSTGRES_UID}:{POSTGRES_GID}:PostgreSQL:/var/lib/postgresql:"
                "/bin/sh\n")
    with (root / "etc/group").open("a") as f:
        f.write(f"postgres:x:{POSTGRES_GID}:\n")
    with (root / "etc/shadow").open("a") as f:
        f.write("postgres:*:19000:0:99999:7:::\n")


def build_rootfs(root: Path) -> tuple[set[str], set[str]]:
    inv = base.Inventory.read((base.DEB_DIR, APPS_DEB_DIR))
    missing = [p for p in EXTRA_PACKAGES if not inv.have(p)]
    if missing:
        raise RuntimeError(f"bench.apps.image: {' '.join(missing)} neither installed nor "
                           f"fetched into {APPS_DEB_DIR}: run ROXD_SETUP_BENCH=1 "
                           "scripts/setup.sh")
    host, debs = base.build_rootfs(root, inv, EXTRA_PACKAGES)
    _add_accounts(root)
    for d in ("var/lib/postgresql", "var/run/postgresql"):
        (root / d).mkdir(parents=True, exist_ok=True)
        os.chown(root / d, POSTGRES_UID, POSTGRES_GID)
    for d in ("var/log/nginx", "var/lib/nginx", "var/www/html", "src", "out"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "etc/nginx").mkdir(parents=True, exist_ok=True)
    (root / "etc/nginx/bench.conf").write_text(NGINX_CONF)
    # a 2 KB page: a small static asset, the common case of a web front end
    page = "<html><body>" + "roxd application benchmark. " * 70 + "</body></html>\n"
    (root / "var/www/html/index.html").write_text(page)
    cc = root / "usr/local/bin/timedcc"
    cc.parent.mkdir(parents=True, exist_ok=True)
    cc.write_text(TIMED_CC)
    cc.chmod(0o755)
    c_project(root / "src/proj")
    return host, debs


def build(force: bool = False) -> str:
    """Build APPS_IMAGE unless it exists; returns its name."""
    if base.image_exists(APPS_IMAGE) and not force:
        return APPS_IMAGE
    with tempfile.TemporaryDirectory(prefix="roxd-apps-") as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        host, debs = build_rootfs(root)
        base.import_rootfs(root, APPS_IMAGE, f"{PG_BIN}:{base.IMAGE_PATH}")
    print(f"bench.apps.image: built {APPS_IMAGE} from {len(host)} host packages and "
          f"{len(debs)} archives", file=sys.stderr)
    return APPS_IMAGE


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--force", action="store_true", help="rebuild even if the image exists")
    args = ap.parse_args()
    build(force=args.force)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
