"""roxctl as a user meets it, against the API server on a fake daemon port (the engine's real
API code, real rules): flags after the subcommand, output formats, exit codes, rules
validation with and without a daemon, `top` in batch mode and in a pseudo-terminal, the
completion scripts for bash and zsh, and the man page made from the parser."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from roxd.ctl import build_parser
from roxd.ctl_output import EXIT_CODES
from roxd.ctl_top import COLUMNS, Row, layout, render_rows, sort_rows
from tests.terminal import Terminal
from tests.unit.test_api_unit import api, roxctl  # noqa: F401  (the fixture and the runner)

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------- global flags


def leaf_commands() -> list[tuple[list[str], argparse.ArgumentParser]]:
    """Every runnable command path with its parser."""
    found: list[tuple[list[str], argparse.ArgumentParser]] = []

    def walk(p: argparse.ArgumentParser, path: list[str]) -> None:
        subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            found.append((path, p))
        for a in subs:
            for name, child in a.choices.items():
                walk(child, [*path, name])

    walk(build_parser(), [])
    return found


def required_positionals(p: argparse.ArgumentParser) -> list[str]:
    values = []
    for a in p._actions:
        if a.option_strings or isinstance(a, argparse._SubParsersAction) or a.nargs in ("?", "*"):
            continue
        if a.choices:
            values.append(str(next(iter(a.choices))))
        elif a.type is int:
            values.append("1")
        else:
            values.append("x")
    return values


@pytest.mark.parametrize("path", [" ".join(p) for p, _ in leaf_commands()])
def test_every_command_takes_the_global_flags_after_itself(path: str) -> None:
    parser = build_parser()
    sub = dict((" ".join(p), s) for p, s in leaf_commands())[path]
    argv = [*path.split(), *required_positionals(sub)]
    after = parser.parse_args([*argv, "--socket", "/s", "-o", "yaml", "--json"])
    assert (after.socket, after.output, after.json) == ("/s", "yaml", True)
    before = parser.parse_args(["--socket", "/s", "--json", *argv])
    # given before the command, a flag is not reset by the command's absent one
    assert (before.socket, before.output, before.json) == ("/s", None, True)
    plain = parser.parse_args(argv)
    assert (plain.socket, plain.output, plain.json) == (None, None, False)


def test_json_after_the_subcommand_through_the_api(api: Any) -> None:  # noqa: F811
    _daemon, path = api
    after = roxctl("alerts", "list", "--json", "--socket", path)
    before = roxctl("--json", "--socket", path, "alerts", "list")
    assert after.returncode == before.returncode == 0, after.stderr
    assert json.loads(after.stdout) == json.loads(before.stdout)


def test_output_formats(api: Any) -> None:  # noqa: F811
    _daemon, path = api
    as_json = json.loads(roxctl("containers", "-o", "json", "--socket", path).stdout)
    as_yaml = yaml.safe_load(roxctl("containers", "-o", "yaml", "--socket", path).stdout)
    assert as_json == as_yaml and {c["name"] for c in as_json} == {"web", "db"}
    assert {c["events"] for c in as_json} == {4, 1}  # the daemon's per-container counts
    wide = roxctl("containers", "-o", "wide", "--socket", path)
    header = wide.stdout.splitlines()[0].split()
    assert wide.returncode == 0 and {"EVENTS", "BASELINE", "RUNTIME"} <= set(header)
    assert as_json[0]["id"] in wide.stdout  # full ids in wide
    table = roxctl("containers", "--socket", path).stdout
    assert as_json[0]["id"] not in table and "EVENTS" not in table
    alerts = roxctl("alerts", "list", "-o", "wide", "--socket", path)
    assert alerts.returncode == 0 and "MITRE" in alerts.stdout.splitlines()[0]
    bad = roxctl("containers", "-o", "xml", "--socket", path)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


def test_exit_codes_are_the_documented_ones(api: Any, tmp_path: Path) -> None:  # noqa: F811
    _daemon, path = api
    assert roxctl("status", "--socket", path).returncode == 0
    assert roxctl("status", "--socket", str(tmp_path / "none.sock")).returncode == 3
    assert roxctl("no-such-command").returncode == 2
    assert roxctl("alerts", "show", "deadbeef", "--socket", path).returncode == 4
    assert roxctl("alerts", "show", "nosuch", "--socket", path).returncode == 2  # HTTP 400
    assert roxctl("risk", "show", "nosuch", "--socket", path).returncode == 4
    # seccomp is not on the fake daemon: 501, "not available here"
    assert roxctl("seccomp", "status", "--socket", path).returncode == 6
    documented = (REPO / "docs/api.md").read_text()
    for code, text in EXIT_CODES:
        assert f"| {code} | {text} |" in documented


# ---------------------------------------------------------------------------- rules validate


GOOD_LISTS = """
[[list]]
name = "my_shells"
items = ["sh", "ash"]
"""
GOOD_RULES = """
[[rule]]
id = "foothold.my-shell"
name = "shell from my list"
description = "a shell from the list in the other file"
phase = "foothold"
severity = "warning"
mitre = ["T1059.004"]
event = "exec"
actions = ["alert"]
[rule.when]
exe_basename = { in = ["@my_shells"] }
"""
BAD_RULES = """
[[rule]]
id = "foothold.broken"
name = "broken"
description = "references a macro nobody defines"
phase = "foothold"
severity = "warning"
mitre = ["T1059.004"]
event = "exec"
actions = ["alert"]
[rule.when]
exe_basename = { in = ["@no_such_list"] }
"""


def rules_dir(tmp_path: Path, *, bad: bool) -> Path:
    d = tmp_path / ("bad" if bad else "good")
    d.mkdir()
    (d / "00-lists.toml").write_text(GOOD_LISTS)
    (d / "10-rules.toml").write_text(GOOD_RULES)
    if bad:
        (d / "20-bad.toml").write_text(BAD_RULES)
    return d


def test_validate_a_directory_through_the_daemon(api: Any, tmp_path: Path) -> None:  # noqa: F811
    _daemon, path = api
    good = rules_dir(tmp_path, bad=False)
    ok = roxctl("rules", "validate", str(good), "--standalone", "--socket", path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "2 files" in ok.stdout and "checked by roxd" in ok.stdout  # one file uses the other
    bad = rules_dir(tmp_path, bad=True)
    failed = roxctl("rules", "validate", str(bad), "--standalone", "--socket", path)
    assert failed.returncode == 1
    line = next(ln for ln in failed.stdout.splitlines() if ln.startswith("error:"))
    # the user's path, the line of the rule, the rule id
    assert f"{bad}/20-bad.toml:" in line and "'foothold.broken'" in line, line
    as_json = json.loads(roxctl("rules", "validate", str(bad), "--standalone", "-o", "json",
                                "--socket", path).stdout)
    assert as_json["validated_by"] == "roxd" and as_json["errors"][0]["line"] >= 2


def test_validate_without_a_daemon_uses_the_local_loader(tmp_path: Path) -> None:
    gone = str(tmp_path / "none.sock")
    good = rules_dir(tmp_path, bad=False)
    ok = roxctl("rules", "validate", str(good), str(REPO / "rules"), "--socket", gone)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "validating locally" in ok.stderr and "not reachable" in ok.stderr
    bad = rules_dir(tmp_path, bad=True)
    failed = roxctl("rules", "validate", str(bad / "00-lists.toml"), str(bad / "20-bad.toml"),
                    "--offline")
    assert failed.returncode == 1 and "validating locally" not in failed.stderr  # asked for
    assert "20-bad.toml:" in failed.stdout and "foothold.broken" in failed.stdout
    missing = roxctl("rules", "validate", str(tmp_path / "nope.toml"), "--offline")
    assert missing.returncode == 2 and "no such rules file or directory" in missing.stderr


# ---------------------------------------------------------------------------- top


def row(name: str, risk: int, rate: float | None, alerts: int = 0, drops: int = 0,
        quarantine: str = "") -> Row:
    return Row(id=name * 8, name=name, image="img/" + name, risk=risk, events_per_s=rate,
               events=0, alerts=alerts, drops=drops, baseline="locked/monitor",
               quarantine=quarantine, running=True)


def test_top_sorts_by_each_key() -> None:
    rows = [row("a", 10, 5.0, alerts=1), row("b", 80, 0.5, drops=3), row("c", 40, None,
                                                                          quarantine="t")]
    assert [r.name for r in sort_rows(rows, "risk")] == ["b", "c", "a"]
    assert [r.name for r in sort_rows(rows, "events")] == ["a", "b", "c"]
    assert sort_rows(rows, "drops")[0].name == "b"
    assert sort_rows(rows, "quarantine")[0].name == "c"
    assert [r.name for r in sort_rows(rows, "name", reverse=True)] == ["c", "b", "a"]


@pytest.mark.parametrize("width", [200, 80, 40, 20, 9, 3])
def test_top_lines_fit_any_width(width: int) -> None:
    rows = [row("x" * 60, 99, 1234.5, quarantine="a very long reason " * 5),
            row("\x1b[31mred", 1, 0.0)]
    lines = render_rows(rows, width)
    assert all(len(ln) <= width for ln in lines), lines
    assert "\x1b" not in "".join(lines)  # roxd's strings reach the terminal escaped
    kept = [c.title for c, _w in layout(rows, width)]
    assert kept[0] == "NAME"
    if width >= 80:
        assert {"RISK", "EV/S", "ALERTS", "DROPS", "BASELINE"} <= set(kept)
    assert len(render_rows(rows, None)[0].split()) == len(COLUMNS)  # batch: nothing dropped


def test_top_at_80_columns_keeps_names_whole() -> None:
    rows = [Row(id="f" * 64, name="roxd-top-abcdef", image="roxd-test/busybox:latest",
                risk=13, events_per_s=3.8, events=40, alerts=1, drops=0,
                baseline="learning/monitor", quarantine="", running=True)]
    lines = render_rows(rows, 79)
    assert lines[1].split()[:6] == ["roxd-top-abcdef", "13", "3.8", "1", "0",
                                    "learning/monitor"]
    assert "ID" not in lines[0].split()  # dropped before a name is cut


def test_top_batch_mode(api: Any) -> None:  # noqa: F811
    _daemon, path = api
    text = roxctl("top", "-b", "-d", "0.2", "--socket", path)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].startswith("roxd ") and "events" in lines[1]
    table = lines[lines.index("") + 1:]
    assert table[0].split()[:3] == ["NAME", "RISK", "EV/S"]
    assert [ln.split()[0] for ln in table[1:]] == ["web", "db"]  # riskiest first
    by_name = roxctl("top", "--once", "-s", "name", "-d", "0.2", "--socket", path)
    table = by_name.stdout.splitlines()[by_name.stdout.splitlines().index("") + 1:]
    assert [ln.split()[0] for ln in table[1:]] == ["db", "web"]
    frames = roxctl("top", "-b", "-n", "2", "-d", "0.2", "-o", "json", "--socket", path)
    docs = [json.loads(ln) for ln in frames.stdout.splitlines()]
    assert len(docs) == 2 and {c["name"] for c in docs[1]["containers"]} == {"web", "db"}
    assert all(c["events_per_s"] is not None for c in docs[0]["containers"])
    bad = roxctl("top", "-b", "-s", "cpu", "--socket", path)
    assert bad.returncode == 2 and "unknown sort key" in bad.stderr


def test_top_live_in_a_terminal_at_80x24(api: Any) -> None:  # noqa: F811
    """The live view in a real terminal (tmux) at 80x24: rows drawn, a sort key re-sorts,
    a resize to a tiny and back to a normal size redraws, q quits with 0 and the terminal is
    given back (curses leaves the alternate screen)."""
    _daemon, path = api
    argv = [sys.executable, "-m", "roxd.ctl", "top", "-d", "0.5", "--socket", path]
    with Terminal(argv, cols=80, rows=24, env={"PYTHONPATH": str(REPO), "TERM": "xterm"},
                  cwd=str(REPO)) as t:
        screen = t.wait_for(lambda s: "q:quit" in s and "web" in s, message="the first frame")
        assert t.alternate_screen()
        lines = screen.splitlines()
        assert len(lines) <= 24 and all(len(ln) <= 80 for ln in lines)
        header = next(i for i, ln in enumerate(lines) if ln.startswith("NAME"))
        names = [ln.split()[0] for ln in lines[header + 1:] if ln.strip()][:2]
        assert names == ["web", "db"]  # by risk
        assert lines[header].split()[:5] == ["NAME", "RISK", "EV/S", "ALERTS", "DROPS"]
        t.keys("n")  # sort by name
        screen = t.wait_for(lambda s: "sort name" in s, message="the name sort")
        lines = screen.splitlines()
        header = next(i for i, ln in enumerate(lines) if ln.startswith("NAME"))
        assert [ln.split()[0] for ln in lines[header + 1:header + 3]] == ["db", "web"]
        t.resize(12, 2)
        t.wait_for(lambda s: "roxctl top" in s, message="the too-small note")
        t.resize(80, 24)
        t.wait_for(lambda s: "q:quit" in s and "web" in s, message="the redraw")
        t.keys("q")
        assert t.wait_exit() == 0
        assert not t.alternate_screen()  # the terminal is the shell's again


# ---------------------------------------------------------------------------- completion, man


def test_zsh_completion_is_current_and_completes() -> None:
    from roxd.ctl_completion import zsh_completion

    script = zsh_completion(build_parser())
    assert (REPO / "packaging/completion/_roxctl").read_text() == script + "\n"
    zsh = shutil.which("zsh")
    if zsh is None:
        pytest.fail("zsh is not installed: scripts/setup.sh installs it")
    probe = r"""
compadd() { shift; print -r -- "$@"; }
compdef() { :; }
source packaging/completion/_roxctl
words=(roxctl rules e); CURRENT=3; _roxctl
words=(roxctl -o ""); CURRENT=3; _roxctl
words=(roxctl alerts list --container web --s); CURRENT=6; _roxctl
"""
    out = subprocess.run([zsh, "-f", "-c", probe], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    offered = out.stdout.splitlines()
    assert "enable" in offered[0].split() and "validate" in offered[0].split()
    assert offered[1].split() == ["table", "wide", "json", "yaml"]
    assert "--since" in offered[2].split()  # the --container value was skipped


def test_bash_completion_skips_option_values_and_offers_formats() -> None:
    script = (REPO / "packaging/completion/roxctl.bash").read_text()
    probe = script + """
COMP_WORDS=(roxctl --socket /s alerts l); COMP_CWORD=4; _roxctl; echo ${COMPREPLY[@]}
COMP_WORDS=(roxctl top -o ''); COMP_CWORD=3; _roxctl; echo ${COMPREPLY[@]}
"""
    out = subprocess.run(["bash", "-c", probe], capture_output=True, text=True)
    assert out.stdout.splitlines() == ["list", "table wide json yaml"], out.stderr


def test_man_page_is_current_and_renders_cleanly() -> None:
    from roxd.ctl_manpage import manpage

    page = manpage(build_parser())
    assert (REPO / "packaging/man/roxctl.1").read_text() == page
    rendered = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z"], input=page,
                              capture_output=True, text=True)
    assert rendered.returncode == 0 and rendered.stderr == "", rendered.stderr
    text = subprocess.run(["groff", "-man", "-Tascii", "-P", "-cbou"], input=page,
                          capture_output=True, text=True).stdout
    text = " ".join(text.split())  # groff justifies lines with extra spaces
    for path, _p in leaf_commands():  # every command has its section
        assert "roxctl " + " ".join(path) in text
    assert "EXIT STATUS" in text and "not found" in text and "yaml" in text


def test_yaml_output_escapes_what_a_container_controls() -> None:
    from roxd.ctl_output import yaml_text

    text = yaml_text({"exe": "/tmp/\x1b[31mred\x07\nx", "name": "caf\u00e9 \u202e"})
    assert text.isascii() and "\x1b" not in text and "\x07" not in text
    assert yaml.safe_load(text) == {"exe": "/tmp/\x1b[31mred\x07\nx", "name": "caf\u00e9 \u202e"}


def test_validating_a_loaded_file_checks_it_in_its_place(tmp_path: Path) -> None:
    """An edited copy of one of roxd's loaded files is checked as the reload would see it:
    in the loaded file's place, not as a second copy of each of its rules."""
    from roxd.api.server import ApiServer
    from roxd.api.settings import ApiSettings
    from tests.unit.test_api_unit import FakePort

    path = str(tmp_path / "roxd.sock")
    server = ApiServer(FakePort(), path, ApiSettings())  # the default body limit (1 MiB)
    server.start()
    try:
        alone, beside = check_in_place(path, tmp_path)
    finally:
        server.close()
    # the loaded file itself, edited or not: checked in its place, no duplicate
    assert alone.returncode == 0, alone.stdout + alone.stderr
    # the same rules at another path are checked beside the loaded ones: duplicates
    assert beside.returncode == 1 and "duplicate" in beside.stdout.lower(), beside.stdout


def check_in_place(path: str, tmp_path: Path) -> tuple[subprocess.CompletedProcess[str],
                                                         subprocess.CompletedProcess[str]]:
    """`roxctl rules validate` of a loaded rule file, then of a copy of it elsewhere."""
    loaded = REPO / "rules/10-foothold.toml"  # the fake daemon loads rules/
    alone = roxctl("rules", "validate", str(loaded), "--socket", path)
    copy = tmp_path / loaded.name  # the same rules at another path: beside the loaded ones
    copy.write_text(loaded.read_text())
    return alone, roxctl("rules", "validate", str(copy), "--socket", path)


FAKE_ROXD = """
import sys, threading
from roxd.api.server import ApiServer
from roxd.api.settings import ApiSettings
from tests.unit.test_api_unit import FakePort
ApiServer(FakePort(), sys.argv[1], ApiSettings()).start()
print("ready", flush=True)
threading.Event().wait()
"""


def test_top_survives_roxd_going_away_and_ctrl_c_restores_the_terminal(tmp_path: Path
                                                                        ) -> None:
    """roxd (here the API on the fake port, in a process of its own) dies under the live
    view: the view says so and keeps the last frame; Ctrl-C then ends it with 0 and gives
    the terminal back."""
    path = str(tmp_path / "roxd.sock")
    roxd = subprocess.Popen([sys.executable, "-c", FAKE_ROXD, path], cwd=REPO,
                            stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    argv = [sys.executable, "-m", "roxd.ctl", "top", "-d", "0.5", "--socket", path]
    try:
        assert roxd.stdout is not None and roxd.stdout.readline().strip() == "ready"
        with Terminal(argv, cols=80, rows=24, env={"PYTHONPATH": str(REPO), "TERM": "xterm"},
                      cwd=str(REPO)) as t:
            t.wait_for(lambda s: "web" in s and "q:quit" in s, message="the first frame")
            roxd.kill()
            roxd.wait()
            screen = t.wait_for(lambda s: "roxd: " in s, message="the note that roxd is gone")
            assert "web" in screen  # the last frame stays
            t.keys("C-c")
            assert t.wait_exit() == 0
            assert not t.alternate_screen()
    finally:
        if roxd.poll() is None:
            roxd.kill()
            roxd.wait()
