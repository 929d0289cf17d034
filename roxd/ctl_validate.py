"""`roxctl rules validate PATH...`: rules files and directories, checked by the daemon when it
answers (merged after its loaded rule files, as a reload would), else locally.

Local validation runs the loader roxd itself runs (roxd.rules.loader.validate_paths, what
`roxd --validate-rules` runs): the one place roxctl imports the engine, and only here, only
when asked to or when no daemon answers. It says so on stderr, because a local check cannot
see the daemon's loaded pack (a macro defined there is unknown here unless its file is given).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from roxd.api.client import ApiClient, Unreachable
from roxd.ctl_output import EXIT_ERROR, EXIT_OK, EXIT_USAGE, Out, term


def rule_files(paths: Sequence[str]) -> tuple[list[Path], list[str]]:
    """Files in the order the daemon's loader reads them: a directory's *.toml sorted by name.
    The second list: paths that are neither (the loader's own error words)."""
    files: list[Path] = []
    problems: list[str] = []
    for entry in map(Path, paths):
        if entry.is_dir():
            found = sorted(p for p in entry.iterdir() if p.suffix == ".toml" and p.is_file())
            if not found:
                problems.append(f"{entry}: no *.toml rules files in this directory")
            files += found
        elif entry.is_file():
            files.append(entry)
        else:
            problems.append(f"{entry}: no such rules file or directory")
    return files, problems


def validate_locally(paths: Sequence[str]) -> list[dict[str, Any]]:
    try:
        from roxd.rules.loader import validate_paths
    except ImportError as exc:  # roxctl copied alone onto a host without roxd's engine
        raise SystemExit(f"roxctl: validating without roxd needs roxd's engine installed "
                         f"({exc}); run `roxd --validate-rules PATH...` where roxd is "
                         "installed, or start roxd") from None
    return [{"file": e.file, "line": e.line, "rule_id": e.rule_id, "message": e.message}
            for e in validate_paths(list(paths))]


def validate_with_daemon(api: ApiClient, files: list[Path], standalone: bool
                         ) -> list[dict[str, Any]]:
    posted = []
    names: dict[str, list[str]] = {}
    for f in files:
        try:
            content = f.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise _Unreadable(f"cannot read {f}: {exc}") from None
        # the path lets roxd put an edited copy of a loaded file in that file's place
        posted.append({"name": f.name, "content": content, "path": str(f.resolve())})
        names.setdefault(f.name, []).append(str(f))
    result = api.post("/v1/rules/validate", {"files": posted, "standalone": standalone})
    errors: list[dict[str, Any]] = result["errors"]
    for e in errors:  # the daemon names files by their base name: give the user's path back
        paths = names.get(e["file"], [])
        if len(paths) == 1:
            e["file"] = paths[0]
    return errors


class _Unreadable(Exception):
    pass


def cmd_validate(api: ApiClient, out: Out, args: argparse.Namespace) -> int:
    files, problems = rule_files(args.paths)
    if problems:
        for p in problems:
            print(term(f"roxctl: {p}"), file=sys.stderr)
        return EXIT_USAGE
    where = "local"
    errors: list[dict[str, Any]]
    if args.offline:
        errors = validate_locally(args.paths)
    else:
        try:
            errors = validate_with_daemon(api, files, args.standalone)
            where = "roxd"
        except _Unreadable as exc:
            print(term(f"roxctl: {exc}"), file=sys.stderr)
            return EXIT_USAGE
        except Unreachable as exc:
            print(term(f"roxctl: roxd is not reachable ({_why(exc)}): validating locally with "
                       "roxd's own rule loader, the files alone (not merged with the daemon's "
                       "loaded rules); --offline says this on purpose"), file=sys.stderr)
            errors = validate_locally(args.paths)
    if out.json:
        out.dump({"valid": not errors, "validated_by": where, "files": [str(f) for f in files],
                  "errors": errors})
    else:
        for e in errors:
            at = f"{e['file']}:{e['line']}" if e["line"] else e["file"]
            rule = f" rule {e['rule_id']!r}:" if e["rule_id"] else ""
            out.print(term(f"error: {at}:{rule} {e['message']}"))
        if not errors:
            out.print(term(f"ok: {len(files)} file{'s' if len(files) != 1 else ''} "
                           f"({', '.join(os.fspath(f) for f in files)}), checked by "
                           + ("roxd" if where == "roxd" else "the local rule loader")))
    return EXIT_OK if not errors else EXIT_ERROR


def _why(exc: Unreachable) -> str:
    return f"{exc.path}: {exc.cause.strerror or exc.cause}"
