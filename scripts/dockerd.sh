#!/bin/sh
# Start a Docker engine by hand when none answers (machines without systemd as PID 1).
#   scripts/dockerd.sh start   -> starts dockerd in the background unless an engine answers
#   scripts/dockerd.sh stop    -> stops the dockerd this script started (pid file), nothing else
#   scripts/dockerd.sh status  -> exit 0 when an engine answers
set -eu
PIDFILE=/run/roxd-dev-dockerd.pid
LOG=/var/log/roxd-dev-dockerd.log
DOCKER="docker"

answers() { timeout 5 $DOCKER version --format '{{.Server.Version}}' >/dev/null 2>&1; }

case "${1:-start}" in
status)
    answers
    ;;
start)
    if answers; then exit 0; fi
    command -v dockerd >/dev/null || { echo "dockerd not installed (apt-get install docker.io)" >&2; exit 1; }
    # tracefs/cgroup mounts are the caller's business; dockerd needs only its own state dir.
    setsid dockerd --host=unix:///var/run/docker.sock >"$LOG" 2>&1 < /dev/null &
    echo $! > "$PIDFILE"
    i=0
    while ! answers; do
        i=$((i + 1))
        if [ "$i" -gt 60 ]; then
            echo "dockerd did not answer within 60 s; last log lines:" >&2
            tail -20 "$LOG" >&2
            exit 1
        fi
        sleep 1
    done
    ;;
stop)
    [ -f "$PIDFILE" ] || exit 0
    pid=$(cat "$PIDFILE")
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        i=0
        while kill -0 "$pid" 2>/dev/null && [ "$i" -lt 30 ]; do sleep 1; i=$((i + 1)); done
    fi
    rm -f "$PIDFILE"
    ;;
*)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
