"""How roxctl prints: output formats, exit codes, and the flags every subcommand takes.

Formats (`-o FORMAT`, as kubectl names them):

    table  aligned columns for people (the default); coloured on a terminal unless NO_COLOR
    wide   the table with more columns (full ids, runtime, events, baseline, ...)
    json   the API's JSON, indented (`--json` is an alias); streams: one object a line
    yaml   the same data as YAML (PyYAML, Debian python3-yaml); streams: one document each

Exit codes are part of roxctl's interface (docs/api.md); scripts may test them:
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from roxd.text import printable

FORMATS = ("table", "wide", "json", "yaml")

EXIT_OK = 0            # done
EXIT_ERROR = 1         # roxd refused or failed (the reason is printed); a check found errors
EXIT_USAGE = 2         # bad arguments (roxctl's, or roxd's HTTP 400), an unreadable file
EXIT_UNREACHABLE = 3   # no roxd answers on the socket (how to start it is printed)
EXIT_NOT_FOUND = 4     # no such container, alert, rule, incident or workload (HTTP 404)
EXIT_DENIED = 5        # the socket's permissions or roxd refused this user (HTTP 403)
EXIT_UNAVAILABLE = 6   # not available on this host or in this configuration (HTTP 501/503)
EXIT_INTERRUPTED = 130  # Ctrl-C (streams end with 0: stopping them is how they are used)

EXIT_CODES = (
    (EXIT_OK, "ok"),
    (EXIT_ERROR, "roxd refused or failed the request, or a check found errors"),
    (EXIT_USAGE, "usage: bad arguments (also those roxd rejects, HTTP 400) or an unreadable "
                 "input file"),
    (EXIT_UNREACHABLE, "roxd is not reachable on its socket"),
    (EXIT_NOT_FOUND, "not found: no such container, alert, rule, incident or workload"),
    (EXIT_DENIED, "permission denied: the socket or roxd refused this user"),
    (EXIT_UNAVAILABLE, "not available on this host or in roxd's configuration"),
    (EXIT_INTERRUPTED, "interrupted (Ctrl-C) outside a stream"),
)

__doc__ += "\n" + "\n".join(f"    {code:<3} {text}" for code, text in EXIT_CODES) + "\n"


def exit_code_for_status(status: int) -> int:
    """The exit code of an HTTP error from roxd."""
    if status == 400:  # roxd could not parse an argument (an id, a time, a filter)
        return EXIT_USAGE
    if status == 404:
        return EXIT_NOT_FOUND
    if status == 403:
        return EXIT_DENIED
    if status in (501, 503):
        return EXIT_UNAVAILABLE
    return EXIT_ERROR


def exit_codes_text() -> str:
    return "exit codes:\n" + "\n".join(f"  {code:<3} {text}" for code, text in EXIT_CODES)


def term(value: Any) -> str:
    """A value from roxd, safe on a terminal: one line, control characters as \\xNN."""
    return printable("-" if value is None else str(value))


def yaml_text(obj: Any) -> str:
    try:
        import yaml
    except ImportError:
        raise OutputError("-o yaml needs PyYAML (Debian: python3-yaml; pip: PyYAML)") from None
    # safe_dump: plain data only; non-ASCII and control characters are escaped (allow_unicode
    # off), so what roxd reports from a container cannot drive the terminal
    return str(yaml.safe_dump(obj, sort_keys=False, default_flow_style=False,
                              allow_unicode=False, width=100))


class OutputError(Exception):
    """A format cannot be produced here (yaml without PyYAML): usage error."""


class Out:
    """Where a command prints. `fmt` is one of FORMATS; `Out(True)` still means JSON (the
    tests' and older callers' spelling)."""

    def __init__(self, fmt: bool | str | None = "table", stream: Any = None) -> None:
        if fmt is True:
            fmt = "json"
        elif fmt is False or fmt is None:
            fmt = "table"
        if fmt not in FORMATS:
            raise OutputError(f"unknown output format {fmt!r}: one of {', '.join(FORMATS)}")
        self.format = fmt
        self.stream = stream or sys.stdout
        self.color = (not self.json and hasattr(self.stream, "isatty") and self.stream.isatty()
                      and "NO_COLOR" not in os.environ)

    @property
    def json(self) -> bool:
        """Structured output (json or yaml): commands hand their data to dump()/line()."""
        return self.format in ("json", "yaml")

    @property
    def wide(self) -> bool:
        return self.format == "wide"

    def paint(self, text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.color and code else text

    def print(self, text: str = "") -> None:
        print(text, file=self.stream, flush=True)

    def dump(self, obj: Any) -> None:
        if self.format == "yaml":
            self.stream.write(yaml_text(obj))
            self.stream.flush()
        else:
            self.print(json.dumps(obj, indent=2))

    def line(self, obj: Any) -> None:
        """One item of a stream: a JSON line, or a YAML document."""
        if self.format == "yaml":
            self.stream.write("---\n" + yaml_text(obj))
            self.stream.flush()
        else:
            self.print(json.dumps(obj, separators=(",", ":")))

    def table(self, headers: Sequence[str], rows: Iterable[Sequence[Any]],
              colors: Sequence[Callable[[str], str] | None] = ()) -> None:
        rows = [[term(v) for v in row] for row in rows]
        widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
        self.print(self.paint("  ".join(h.ljust(w) for h, w in zip(headers, widths,
                                                                    strict=True)).rstrip(), "1"))
        for row in rows:
            cells = []
            for i, (value, width) in enumerate(zip(row, widths, strict=True)):
                padded = value if i == len(row) - 1 else value.ljust(width)
                paint = colors[i] if i < len(colors) else None
                cells.append(paint(padded) if paint else padded)
            self.print("  ".join(cells).rstrip())


# ---------------------------------------------------------------------------- global flags


def add_global_flags(p: argparse.ArgumentParser, socket_help: str, *, top: bool) -> None:
    """--socket, -o/--output and --json. On the top-level parser they have defaults; on
    every subcommand they default to SUPPRESS, so `roxctl alerts list --json` and
    `roxctl --json alerts list` mean the same and a flag given before the subcommand is not
    overwritten by the subcommand's absent one."""
    have = p._option_string_actions
    default: Any = None if top else argparse.SUPPRESS
    if "--socket" not in have:
        p.add_argument("--socket", default=default, metavar="PATH", help=socket_help)
    if "-o" not in have and "--output" not in have:
        p.add_argument("-o", "--output", choices=FORMATS, default=default, metavar="FORMAT",
                       help="table (default), wide, json or yaml")
    if "--json" not in have:
        p.add_argument("--json", action="store_true",
                       default=False if top else argparse.SUPPRESS,
                       help="JSON output for scripts (same as -o json)")


def add_global_flags_everywhere(parser: argparse.ArgumentParser, socket_help: str) -> None:
    add_global_flags(parser, socket_help, top=True)
    for sub in subcommand_parsers(parser):
        add_global_flags(sub, socket_help, top=False)


def subcommand_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every parser below `parser`, depth first."""
    found: list[argparse.ArgumentParser] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):  # aliases share a parser
                found.append(child)
                found += subcommand_parsers(child)
    return found


def output_format(args: argparse.Namespace) -> str:
    """-o wins over --json; --json alone is json."""
    fmt = getattr(args, "output", None)
    if fmt:
        return str(fmt)
    return "json" if getattr(args, "json", False) else "table"
