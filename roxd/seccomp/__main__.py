"""python -m roxd.seccomp: learn, status, profile, diff, validate, check, apply, enforce, exec.

Stand-alone until the daemon's API carries these; each subcommand drives SeccompService.

    python -m roxd.seccomp learn roxd-test/busybox:latest --seconds 60   # new containers
    python -m roxd.seccomp learn web --seconds 30                       # one container
    python -m roxd.seccomp status
    python -m roxd.seccomp profile web -o web.json
    python -m roxd.seccomp diff web other
    python -m roxd.seccomp validate web.json --pfc
    python -m roxd.seccomp check web --profile web.json
    python -m roxd.seccomp apply web --profile web.json
    python -m roxd.seccomp enforce web --seconds 60
    python -m roxd.seccomp exec --profile web.json -- /usr/bin/env true
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from roxd.errors import RoxdError
from roxd.seccomp import profile as profiles
from roxd.seccomp.validate import compare, find_docker_default, validate


def _service(args: argparse.Namespace) -> Any:
    from roxd.runtime import DockerRuntime
    from roxd.seccomp.service import SeccompService
    return SeccompService(Path(args.state_dir), DockerRuntime(args.docker, timeout=30),
                          honor_label=args.label)


def _follow(svc: Any, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            for event in svc.poll():
                print(json.dumps({"type": "seccomp", "kind": event.kind,
                                  "container": event.container_name, "syscall": event.syscall,
                                  "count": event.count, "pid": event.pid}), flush=True)
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass


def cmd_learn(args: argparse.Namespace) -> int:
    with _service(args) as svc:
        print(json.dumps(svc.learn(args.target)), flush=True)
        _follow(svc, args.seconds)
        if args.stop:
            svc.stop_learning(args.target)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    with _service(args) as svc:
        print(json.dumps(svc.status(), indent=2))
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    with _service(args) as svc:
        report = svc.profile(args.target, kill=args.kill)
    text = json.dumps(report.profile, indent=2) + "\n"
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    print(f"{args.target}: {report.comparison.summary()}; libseccomp filter "
          f"{report.validation.bpf_instructions} BPF instructions", file=sys.stderr)
    for w in report.warnings:
        print(f"warning: {w}", file=sys.stderr)
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    with _service(args) as svc:
        print(json.dumps(svc.diff(args.a, args.b).to_dict(), indent=2))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    prof = profiles.load_file(args.file)
    result = validate(prof)
    if args.pfc:
        sys.stdout.write(result.pfc)
    print(f"{args.file}: valid; {compare(prof, find_docker_default()).summary()}; "
          f"{result.bpf_instructions} BPF instructions")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    prof = profiles.load_file(args.profile)
    with _service(args) as svc:
        denied = svc.check(args.target, prof)
    print(json.dumps({"target": args.target, "profile": args.profile,
                      "would_be_denied": denied}))
    return 1 if denied else 0


def cmd_apply(args: argparse.Namespace) -> int:
    prof = profiles.load_file(args.profile)
    with _service(args) as svc:
        result = svc.apply(args.target, prof, settle_s=args.settle, watch=args.watch > 0)
        print(json.dumps({"name": result.name, "old_id": result.old_id,
                          "new_id": result.new_id}), flush=True)
        if args.watch > 0:
            _follow(svc, args.watch)
    return 0


def cmd_enforce(args: argparse.Namespace) -> int:
    prof = profiles.load_file(args.profile) if args.profile else None
    with _service(args) as svc:
        print(json.dumps(dataclasses.asdict(svc.enforce(args.target, prof))), flush=True)
        _follow(svc, args.seconds)
    return 0


def cmd_exec(args: argparse.Namespace) -> int:
    from roxd.seccomp.wrapper import exec_with_profile
    argv = args.command[1:] if args.command[:1] == ["--"] else args.command
    exec_with_profile(profiles.load_file(args.profile), argv)
    return 127  # not reached


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m roxd.seccomp", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--state-dir", default="/var/lib/roxd")
    p.add_argument("--docker", default="unix:///var/run/docker.sock")
    p.add_argument("--label", action="store_true",
                   help="learn every new container labelled roxd.learn=true")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("learn", help="learn a container, or new containers of an image")
    s.add_argument("target")
    s.add_argument("--seconds", type=float, default=60.0)
    s.add_argument("--stop", action="store_true", help="deselect the target at the end")
    s.set_defaults(fn=cmd_learn)
    s = sub.add_parser("status")
    s.set_defaults(fn=cmd_status)
    s = sub.add_parser("profile", help="generate a profile from a learned set")
    s.add_argument("target")
    s.add_argument("-o", "--output")
    s.add_argument("--kill", action="store_true", help="default action SCMP_ACT_KILL_PROCESS")
    s.set_defaults(fn=cmd_profile)
    s = sub.add_parser("diff")
    s.add_argument("a")
    s.add_argument("b")
    s.set_defaults(fn=cmd_diff)
    s = sub.add_parser("validate")
    s.add_argument("file")
    s.add_argument("--pfc", action="store_true", help="print libseccomp's PFC text")
    s.set_defaults(fn=cmd_validate)
    s = sub.add_parser("check", help="would the profile deny anything the container did?")
    s.add_argument("target")
    s.add_argument("--profile", required=True)
    s.set_defaults(fn=cmd_check)
    s = sub.add_parser("apply", help="recreate a Docker container with the profile")
    s.add_argument("target")
    s.add_argument("--profile", required=True)
    s.add_argument("--settle", type=float, default=1.0)
    s.add_argument("--watch", type=float, default=0.0, help="report denials for N seconds")
    s.set_defaults(fn=cmd_apply)
    s = sub.add_parser("enforce", help="kill processes making syscalls outside the profile")
    s.add_argument("target")
    s.add_argument("--profile")
    s.add_argument("--seconds", type=float, default=60.0)
    s.set_defaults(fn=cmd_enforce)
    s = sub.add_parser("exec", help="run a command under a profile (libseccomp + exec)")
    s.add_argument("--profile", required=True)
    s.add_argument("command", nargs=argparse.REMAINDER)
    s.set_defaults(fn=cmd_exec)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.fn(args)
    except RoxdError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
