#!/bin/sh
# One idempotent setup for a fresh Debian 12 machine of this kind (root, no systemd as PID 1):
# the distribution packages roxd runs on, kernel headers for bcc, tracefs, the dev venv,
# a Docker engine and the offline test images. Safe to run again: each step checks first.
set -eu
cd "$(dirname "$0")/.."

log() { printf 'setup: %s\n' "$*" >&2; }

# --- distribution packages ---------------------------------------------------------------
# bcc, libseccomp, libnftables and systemd bindings come from Debian (not PyPI): the installed
# package runs on these same modules. nats-server: the NATS exporter's tests start one.
# graphviz: `roxctl netmap --format dot` output is rendered by the netmap tests.
# chromium, chromium-driver, python3-selenium: the dashboard's browser test.
PACKAGES="python3-bpfcc python3-pyroute2 python3-psutil python3-systemd python3-seccomp
python3-toml python3-docker python3-nftables python3-venv nftables docker.io iproute2
libcap2-bin busybox-static linux-headers-amd64 curl gcc libc6-dev systemd rsyslog
rsyslog-gnutls openssl util-linux systemd-container debootstrap rpm lintian debhelper dh-python
pybuild-plugin-pyproject python3-all python3-setuptools python3-wheel python3-pip fakeroot
bpftool nats-server graphviz chromium chromium-driver python3-selenium containerd podman
python3-grpcio"
# the benchmark compares roxd with auditd and bpftrace: only `make bench` needs them
if [ "${ROXD_SETUP_BENCH:-0}" = 1 ]; then
    PACKAGES="$PACKAGES auditd bpftrace"
fi
# roxctl -o yaml (PyYAML); the tests of the zsh completion, of `roxctl top` in a terminal
# (tmux) and of the man page (groff)
PACKAGES="$PACKAGES python3-yaml zsh tmux groff-base"
# one dpkg-query for the whole list (one per package cost ~1.5 s on every `make test`)
# shellcheck disable=SC2086
installed=" $(dpkg-query -W -f='${Status} ${Package}\n' $PACKAGES 2>/dev/null \
    | awk '$1 == "install" && $3 == "installed" {printf "%s ", $4}')"
missing=""
for p in $PACKAGES; do
    case "$installed" in *" $p "*) ;; *) missing="$missing $p" ;; esac
done
if [ -n "$missing" ]; then
    log "installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# --- tracefs (bcc reads tracepoint formats from it) --------------------------------------
if [ ! -d /sys/kernel/tracing/events ] && [ ! -d /sys/kernel/debug/tracing/events ]; then
    log "mounting tracefs at /sys/kernel/tracing"
    mount -t tracefs tracefs /sys/kernel/tracing
fi

# --- dev venv: Debian's python3 with its site packages (bcc), plus test tools --------------
if [ ! -x .venv/bin/python ]; then
    log "creating .venv from /usr/bin/python3 (--system-site-packages)"
    /usr/bin/python3 -m venv --system-site-packages .venv
fi
stamp=.venv/.roxd-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ requirements-dev.txt -nt "$stamp" ]; then
    log "installing roxd (editable) and the pinned test tools into .venv"
    .venv/bin/pip install -q --disable-pip-version-check -r requirements-dev.txt
    .venv/bin/pip install -q --disable-pip-version-check --no-build-isolation -e .
    touch "$stamp"
fi
.venv/bin/python -c 'import bcc, docker, pyroute2, psutil, toml, seccomp, nftables, nats, roxd, prometheus_client, opentelemetry.proto.logs.v1.logs_pb2' || {
    log "the venv cannot import roxd's dependencies"; exit 1; }

# --- kernel headers: roxd resolves them itself; fail here, early, when there are none -------
.venv/bin/python -c '
import sys
from pathlib import Path
from roxd.sensor.headers import resolve_headers
from roxd.errors import KernelHeadersError
try:
    tree = resolve_headers(Path(".state/cache"))
except KernelHeadersError as exc:
    sys.exit(f"setup: {exc}")
print("setup: kernel headers:", tree.describe(), file=sys.stderr)
'

# --- Docker's default seccomp profile, to compare learned profiles with ------------------
# (extracted from Debian's docker source package, not installed: it would pull 250 packages)
if [ ! -f /var/cache/roxd/docker-default-seccomp.json ]; then
    mkdir -p /var/cache/roxd
    .venv/bin/python -c '
from pathlib import Path
from roxd.seccomp.validate import fetch_docker_default
fetch_docker_default(Path("/var/cache/roxd/docker-default-seccomp.json"))
' || log "warning: Docker default seccomp profile not fetched; comparisons will say so"
fi

# --- .deb archives for the bench images, fetched once and never installed on the host -------
# fetch_debs DIR PACKAGES...: `apt-get install --download-only` of PACKAGES (and what they
# need that this host lacks) into DIR; DIR/.complete marks a finished download, so a run that
# failed halfway is retried whole and a finished one is never repeated.
fetch_debs() {
    local dir=$1
    shift
    [ -f "$dir/.complete" ] && return 0
    log "downloading $* into $dir"
    mkdir -p "$dir/partial"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install --download-only -y -qq --no-install-recommends \
        -o Dir::Cache::archives="$dir" "$@" >/dev/null
    touch "$dir/.complete"
}

# The benign suite's image (bench/benign/image.py builds it offline): software production
# containers run that this host does not install (a web server, redis, cron, supervisord, ...).
fetch_debs /var/cache/roxd/benign-debs rsync logrotate cron redis-server dumb-init \
    supervisor gunicorn nginx-light python3-pytest

# The application benchmark's image (bench/apps/image.py): PostgreSQL and wrk (what the host
# lacks of them). `make bench` uses them, and so does tests/kernel/test_bench_apps.py (nginx
# under wrk).
fetch_debs /var/cache/roxd/apps-debs wrk postgresql-15 postgresql-client-15

# --- Docker engine and the offline test images ------------------------------------------
scripts/dockerd.sh start
scripts/test-images.sh
log "ready"
