"""`roxd`: run the daemon in the foreground (systemd style), or validate rule files.

    roxd                                   built-in defaults + the shipped rule pack
    roxd --config /etc/roxd/roxd.toml      explicit config
    roxd --print-events                    every event as one JSON line on stdout
    roxd --validate-rules rules/ my.toml   check rule files offline; exit 0 when valid
    roxd --release-quarantines             lift every quarantine (package removal) and exit
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import sys
from pathlib import Path

from roxd import __version__
from roxd.config import Config, load_config
from roxd.errors import RoxdError
from roxd.startup_timing import StartupClock


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="roxd",
        description="Runtime enforcement for container hosts: traces execs and connects with "
        "eBPF, attributes them to containers, matches rules, and responds.",
    )
    p.add_argument("--config", type=Path, help="config file (default /etc/roxd/roxd.toml if "
                   "it exists, else built-in defaults)")
    p.add_argument("--rules", type=Path, action="append", default=[], metavar="PATH",
                   help="rule file or directory, repeatable; replaces the configured paths")
    p.add_argument("--socket", help="API socket path (overrides daemon.socket)")
    p.add_argument("--state-dir", help="state directory (overrides daemon.state_dir)")
    p.add_argument("--print-events", action="store_true",
                   help="write every event as one JSON line to stdout")
    p.add_argument("--print-alerts", action="store_true",
                   help="write every alert as one JSON line (type=alert) to stdout")
    p.add_argument("--monitor", action="store_true",
                   help="dry run: report what would be killed/isolated, enforce nothing")
    p.add_argument("--log-level", help="debug, info, warning, error (overrides config)")
    p.add_argument("--validate-rules", nargs="+", type=Path, metavar="PATH",
                   help="validate rule files/directories and exit (0 when all are valid)")
    p.add_argument("--release-quarantines", action="store_true",
                   help="delete every network quarantine table recorded in the state dir and "
                   "exit; for package removal, with the daemon stopped")
    p.add_argument("--version", action="version", version=f"roxd {__version__}")
    return p


def setup_logging(level: str) -> None:
    numeric = getattr(logging, level.upper(), None)
    if not isinstance(numeric, int):
        raise RoxdError(f"unknown log level {level!r}")
    root = logging.getLogger()
    root.setLevel(numeric)
    handler: logging.Handler | None = None
    # Under systemd (stderr connected to the journal) log through the journal with fields.
    if os.environ.get("JOURNAL_STREAM") and os.environ.get("INVOCATION_ID"):
        try:
            from systemd.journal import JournalHandler

            handler = JournalHandler(SYSLOG_IDENTIFIER="roxd")
        except ImportError:
            handler = None
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s roxd %(levelname)s %(message)s"))
    root.handlers[:] = [handler]


def validate(paths: list[Path]) -> int:
    from roxd.rules.loader import validate_paths

    errors = validate_paths(paths)
    for err in errors:
        print(f"error: {err}", file=sys.stderr)
    if not errors:
        print(f"ok: {', '.join(str(p) for p in paths)}")
    return 1 if errors else 0


def apply_overrides(config: Config, args: argparse.Namespace) -> Config:
    daemon = config.daemon
    if args.socket:
        daemon = dataclasses.replace(daemon, socket=args.socket)
    if args.state_dir:
        daemon = dataclasses.replace(daemon, state_dir=args.state_dir)
    if args.log_level:
        daemon = dataclasses.replace(daemon, log_level=args.log_level)
    rules = config.rules
    if args.monitor:
        rules = dataclasses.replace(rules, monitor=True)
    return dataclasses.replace(config, daemon=daemon, rules=rules)


def main(argv: list[str] | None = None) -> int:
    clock = StartupClock()  # what came before it is the "interpreter" stage
    args = build_parser().parse_args(argv)
    try:
        if args.validate_rules:
            return validate(args.validate_rules)
        with clock.stage("config"):
            config = apply_overrides(load_config(args.config), args)
        setup_logging(config.daemon.log_level)
        if args.release_quarantines:
            from roxd.enforce.release import release_quarantines

            return release_quarantines(config)
        if os.geteuid() != 0:
            raise RoxdError("roxd needs root (CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN) to load "
                            "eBPF programs; run it with sudo or as the roxd systemd service")
        return _run_daemon(config, args, clock)
    except RoxdError as exc:
        print(f"roxd: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _run_daemon(config: Config, args: argparse.Namespace, clock: StartupClock) -> int:
    """The eBPF compile (most of the time to READY, issue 22) starts first, on its own thread,
    before the daemon's modules are imported (about 0.4 CPU-s) and before it connects to the
    runtime, probes the host and reads rules: all of that overlaps the compile."""
    from roxd.errors import SensorError
    from roxd.sensor.program import discard_prewarmed, prewarm
    from roxd.sensor.tracefs import ensure_tracefs
    from roxd.sensor_config import sensor_config

    # tracefs mounted (when roxd has to mount it) before the compile thread and the host
    # probes both look at it: the probes then report what the sensor will use, whichever
    # runs first. A failure is the sensor's to report, at its start, as before.
    with contextlib.suppress(SensorError):
        ensure_tracefs()
    prewarm(sensor_config(config))
    try:
        with clock.stage("import daemon"):
            from roxd.daemon import Daemon, RunOptions

        options = RunOptions(print_events=args.print_events, print_alerts=args.print_alerts,
                             rule_paths=tuple(args.rules), clock=clock)
        return Daemon(config, options).run()
    finally:
        discard_prewarmed()  # a start that failed before the sensor took the compile


if __name__ == "__main__":
    sys.exit(main())
