"""`roxctl top`: a live terminal view of roxd's containers, like top(1) or k9s.

    roxctl top                    live view, refreshed every 2 s; keys in the footer, q quits
    roxctl top -d 5 -s events     every 5 s, busiest first
    roxctl top -b                 one frame as plain text (like `top -b -n 1`), for scripts
    roxctl top -b -n 3 -o json    three frames as JSON lines

One row per container: risk (0..100, `roxctl risk show` explains it), events/s (the rate of
events roxd attributed to it between two refreshes), alerts, drops (events the kernel lost for
its cgroups: the ring buffer was full), its process baseline (state/mode) and its quarantine.
The data are two GETs per refresh (/v1/status, /v1/containers): top adds no load beyond that,
and shows the same numbers `roxctl status` and `roxctl containers -o wide` do.

The view is curses from the standard library: it adapts to any size (columns are narrowed,
then dropped, least useful first; below 20x3 it only says the terminal is too small), redraws
on resize, and curses.wrapper restores the terminal on q, Ctrl-C or an error. Everything from
roxd goes through term() (control characters as \\xNN) before it reaches the terminal.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from roxd.api.client import ApiClient, ApiFailure, Unreachable
from roxd.ctl_output import EXIT_OK, EXIT_USAGE, Out, term


@dataclass(frozen=True)
class Row:
    id: str
    name: str
    image: str
    risk: int
    events_per_s: float | None  # None until two samples exist
    events: int
    alerts: int
    drops: int
    baseline: str  # "locked/monitor", "learning/learn", "-" (off or nothing learned yet)
    quarantine: str  # the reason, "" when not quarantined
    running: bool


@dataclass(frozen=True)
class Summary:
    version: str
    uptime_s: float
    mode: str  # enforce | monitor
    programs: int
    rules: str  # "enabled/count"
    events_per_s: float
    alerts_per_s: float
    alerts_total: int
    drops: int
    containers: int
    quarantined: int


@dataclass(frozen=True)
class Frame:
    summary: Summary
    rows: tuple[Row, ...]
    taken_at: float  # time.time()

    def to_dict(self) -> dict[str, Any]:
        return {"time": self.taken_at, "summary": asdict(self.summary),
                "containers": [asdict(r) for r in self.rows]}


# ---------------------------------------------------------------------------- sorting

# key -> (column, sort key, biggest first); the footer shows them in this order
SORTS: dict[str, tuple[str, Callable[[Row], Any], bool]] = {
    "risk": ("r", lambda r: (r.risk, r.alerts), True),
    "events": ("e", lambda r: (r.events_per_s or 0.0, r.events), True),
    "alerts": ("a", lambda r: r.alerts, True),
    "drops": ("d", lambda r: r.drops, True),
    "name": ("n", lambda r: r.name.lower(), False),
    "baseline": ("b", lambda r: r.baseline, False),
    "quarantine": ("i", lambda r: (bool(r.quarantine), r.quarantine), True),
}
KEY_TO_SORT = {key: name for name, (key, _f, _d) in SORTS.items()}


def sort_rows(rows: Sequence[Row], by: str, reverse: bool = False) -> list[Row]:
    _key, f, biggest_first = SORTS[by]
    ordered = sorted(rows, key=lambda r: r.name.lower())  # ties: by name, stable
    return sorted(ordered, key=f, reverse=biggest_first != reverse)


# ---------------------------------------------------------------------------- sampling


class Sampler:
    """Two GETs per frame; events/s of a container from its event count between frames."""

    def __init__(self, api: ApiClient) -> None:
        self.api = api
        self._last: tuple[float, dict[str, int]] | None = None

    def frame(self) -> Frame:
        status = self.api.get("/v1/status")
        containers = self.api.get("/v1/containers")
        now = time.monotonic()
        counts = {c["id"]: int(c.get("events") or 0) for c in containers}
        rates: dict[str, float] = {}
        if self._last is not None and now > self._last[0]:
            span = now - self._last[0]
            rates = {cid: max(0, n - self._last[1].get(cid, n)) / span
                     for cid, n in counts.items() if cid in self._last[1]}
        self._last = (now, counts)
        return Frame(summarize(status), tuple(row_of(c, status, rates) for c in containers),
                     time.time())


def summarize(s: dict[str, Any]) -> Summary:
    return Summary(
        version=str(s.get("version")), uptime_s=float(s.get("uptime_s") or 0),
        mode="monitor" if s.get("monitor") else "enforce",
        programs=int(s["programs"]["count"]),
        rules=f"{s['rules']['enabled']}/{s['rules']['count']}",
        events_per_s=float(s["events"]["per_second"]),
        alerts_per_s=float(s["alerts"]["per_second"]),
        alerts_total=int(s["alerts"]["total"]),
        drops=int(s["drops"]["total"]),
        containers=int(s["containers"]["running"]),
        quarantined=int(s["containers"]["quarantined"]))


def row_of(c: dict[str, Any], status: dict[str, Any], rates: dict[str, float]) -> Row:
    by_cgroup = status["drops"].get("by_cgroup") or {}
    drops = sum(int(by_cgroup.get(str(cg), 0)) for cg in c.get("cgroup_ids") or [])
    b = c.get("baseline")
    q = c.get("quarantine")
    return Row(
        id=c["id"], name=c.get("name") or c["id"][:12], image=c.get("image") or "-",
        risk=int(c.get("risk") or 0), events_per_s=rates.get(c["id"]),
        events=int(c.get("events") or 0), alerts=int(c.get("alerts") or 0), drops=drops,
        baseline=f"{b['state']}/{b['mode']}" if b else "-",
        quarantine=(q.get("reason") or "quarantined") if q else "",
        running=bool(c.get("running", True)))


# ---------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class Column:
    title: str
    cell: Callable[[Row], str]
    min_width: int
    max_width: int
    drop_order: int  # dropped first when the terminal is too narrow: highest number
    right: bool = False


def _rate(r: Row) -> str:
    if r.events_per_s is None:
        return "-"
    return f"{r.events_per_s:.1f}" if r.events_per_s < 100 else f"{r.events_per_s:.0f}"


COLUMNS = (
    Column("NAME", lambda r: r.name, 8, 28, 0),
    Column("RISK", lambda r: str(r.risk), 4, 4, 0, right=True),
    Column("EV/S", _rate, 4, 8, 1, right=True),
    Column("ALERTS", lambda r: str(r.alerts), 6, 7, 1, right=True),
    Column("DROPS", lambda r: str(r.drops), 5, 7, 2, right=True),
    Column("BASELINE", lambda r: r.baseline, 8, 16, 3),
    Column("QUARANTINE", lambda r: r.quarantine or "-", 5, 30, 4),
    Column("ID", lambda r: r.id[:12], 12, 12, 6),
    Column("IMAGE", lambda r: r.image, 5, 40, 5),
)


def fit(text: str, width: int) -> str:
    """Cut to width, marking the cut with `~` (one cell)."""
    if len(text) <= width:
        return text
    return text[: max(0, width - 1)] + "~" if width > 0 else ""


def layout(rows: Sequence[Row], width: int | None) -> list[tuple[Column, int]]:
    """The columns that fit in `width` cells and their widths (None: all, nothing cut).

    Each column gets its minimum, then the room left goes to the most useful columns first
    (NAME before BASELINE before IMAGE). When a column is cut while a less useful one is
    shown, the least useful one is dropped to make room: at 80 columns ID goes before a
    container's name is cut."""
    if width is None:  # batch output for scripts: nothing cut
        return [(col, max([len(col.title), *(len(term(col.cell(r))) for r in rows)]))
                for col in COLUMNS]
    cols = [(col, min(col.max_width, max([len(col.title), *(len(term(col.cell(r)))
                                                          for r in rows)])))
            for col in COLUMNS]
    while True:
        got = _allot(cols, width)
        least_useful = max(range(len(cols)), key=lambda i: (cols[i][0].drop_order, i))
        if got is None:
            if len(cols) == 1:
                return [(cols[0][0], max(0, width))]
            del cols[least_useful]
            continue
        cut = [c.drop_order for (c, w), g in zip(cols, got, strict=True) if g < w]
        if cut and min(cut) < cols[least_useful][0].drop_order:
            del cols[least_useful]
            continue
        return [(c, g) for (c, _w), g in zip(cols, got, strict=True)]


def _allot(cols: list[tuple[Column, int]], width: int) -> list[int] | None:
    """Widths within `width` (two cells between columns): minimums first, then the rest by
    usefulness; None when even the minimums do not fit."""
    got = [min(c.min_width, w) for c, w in cols]
    room = width - sum(got) - 2 * (len(cols) - 1)
    if room < 0:
        return None
    for i in sorted(range(len(cols)), key=lambda i: (cols[i][0].drop_order, i)):
        more = min(room, cols[i][1] - got[i])
        got[i] += more
        room -= more
    return got


def render_rows(rows: Sequence[Row], width: int | None) -> list[str]:
    """The column header, then one line per row; every line at most `width` cells."""
    cols = layout(rows, width)
    lines = ["  ".join(fit(c.title, w).rjust(w) if c.right else fit(c.title, w).ljust(w)
                       for c, w in cols).rstrip()]
    for r in rows:
        cells = []
        for c, w in cols:
            text = fit(term(c.cell(r)), w)
            cells.append(text.rjust(w) if c.right else text.ljust(w))
        lines.append("  ".join(cells).rstrip())
    return [fit(line, width) for line in lines] if width is not None else lines


def summary_lines(s: Summary, sort: str = "", reverse: bool = False) -> list[str]:
    up = _duration(s.uptime_s)
    sorted_by = f"  sort {sort}{' reversed' if reverse else ''}" if sort else ""
    return [
        f"roxd {term(s.version)}  up {up}  {s.mode}  programs {s.programs}  "
        f"rules {s.rules}{sorted_by}",
        f"events {s.events_per_s:.1f}/s  alerts {s.alerts_per_s:.1f}/s ({s.alerts_total})  "
        f"drops {s.drops}  containers {s.containers}  quarantined {s.quarantined}",
    ]


FOOTER_NAMES = {"events": "ev/s", "quarantine": "quar"}


def footer(delay: float) -> str:
    """The keys, in 75 cells: the whole footer fits an 80-column terminal."""
    keys = " ".join(f"{k}:{FOOTER_NAMES.get(name, name)}" for name, (k, _f, _d) in SORTS.items())
    return f"q:quit {keys} R:rev +/-:{delay:g}s"


def batch_text(frame: Frame, sort: str, reverse: bool, width: int | None) -> str:
    lines = [*summary_lines(frame.summary), "",
             *render_rows(sort_rows(frame.rows, sort, reverse), width)]
    if width is not None:
        lines = [fit(line, width) for line in lines]
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    s = int(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return (f"{d}d " if d else "") + f"{h:02d}:{m:02d}:{s:02d}"


# ---------------------------------------------------------------------------- batch


def run_batch(sampler: Sampler, out: Out, args: argparse.Namespace) -> int:
    frames = args.iterations if args.iterations is not None else 1
    sampler.frame()  # the first sample only sets the baseline for events/s
    time.sleep(min(args.delay, 1.0))
    for i in range(frames):
        if i:
            time.sleep(args.delay)
        frame = sampler.frame()
        if out.json:
            out.line(frame.to_dict())
        else:
            if i:
                out.print()
            out.print(batch_text(frame, args.sort, False, None))
    return EXIT_OK


# ---------------------------------------------------------------------------- live view


class LiveView:
    """The curses screen. Only draw(); the loop and the keys are in run()."""

    def __init__(self, screen: Any, sampler: Sampler, args: argparse.Namespace) -> None:
        self.screen = screen
        self.sampler = sampler
        self.sort = args.sort
        self.reverse = False
        self.delay = args.delay
        self.frame: Frame | None = None
        self.error = ""
        self.bold = 0
        self.header_attr = 0
        self.alarm = 0

    def setup(self, curses: Any) -> None:
        with contextlib.suppress(curses.error):
            curses.curs_set(0)
        self.bold = curses.A_BOLD
        self.header_attr = curses.A_REVERSE
        self.alarm = curses.A_BOLD
        if curses.has_colors():
            with contextlib.suppress(curses.error):
                curses.use_default_colors()
                curses.init_pair(1, curses.COLOR_RED, -1)
                self.alarm = curses.color_pair(1) | curses.A_BOLD
        self.screen.timeout(100)  # getch() waits at most 0.1 s: keys feel immediate

    def refresh_data(self) -> None:
        try:
            self.frame = self.sampler.frame()
            self.error = ""
        except (Unreachable, ApiFailure, OSError) as exc:
            # the daemon restarted or went away: say so, keep the last frame, keep trying
            self.error = (exc.message() if isinstance(exc, Unreachable) else str(exc))

    def put(self, y: int, text: str, attr: int = 0) -> None:
        height, width = self.screen.getmaxyx()
        if y >= height or width <= 1:
            return
        with contextlib.suppress(Exception):  # the bottom-right cell, a shrinking terminal
            self.screen.addstr(y, 0, fit(text, width - 1), attr)

    def draw(self) -> None:
        height, width = self.screen.getmaxyx()
        self.screen.erase()
        if width < 20 or height < 3:
            self.put(0, "roxctl top: terminal too small")
            self.screen.refresh()
            return
        y = 0
        if self.frame is not None:
            for line in summary_lines(self.frame.summary, self.sort,
                                      self.reverse)[: max(0, height - 2)]:
                self.put(y, line, self.bold)
                y += 1
        if self.error:
            self.put(y, f"roxd: {self.error}", self.alarm)
            y += 1
        if self.frame is not None and y < height - 1:
            lines = render_rows(sort_rows(self.frame.rows, self.sort, self.reverse), width - 1)
            rows = sort_rows(self.frame.rows, self.sort, self.reverse)
            self.put(y, lines[0].ljust(width - 1), self.header_attr)
            y += 1
            for row, line in zip(rows, lines[1:], strict=True):
                if y >= height - 1:
                    break
                self.put(y, line, self.alarm if row.quarantine or row.risk >= 70 else 0)
                y += 1
        self.put(height - 1, footer(self.delay), self.header_attr)
        self.screen.refresh()

    def key(self, ch: int) -> bool:
        """False: quit."""
        if ch in (ord("q"), ord("Q"), 27):  # q, Esc
            return False
        c = chr(ch) if 0 <= ch < 256 else ""
        if c in KEY_TO_SORT:
            new = KEY_TO_SORT[c]
            self.reverse = (not self.reverse) if new == self.sort else False
            self.sort = new
        elif c == "R":
            self.reverse = not self.reverse
        elif c == "+":
            self.delay = min(60.0, self.delay * 2)
        elif c == "-":
            self.delay = max(0.5, self.delay / 2)
        return True


def run_live(sampler: Sampler, args: argparse.Namespace) -> int:
    import curses
    import locale

    locale.setlocale(locale.LC_ALL, "")

    def main(screen: Any) -> int:
        view = LiveView(screen, sampler, args)
        view.setup(curses)
        view.refresh_data()
        next_refresh = time.monotonic() + min(view.delay, 1.0)  # first rates come soon
        frames = 1
        view.draw()
        while True:
            ch = screen.getch()
            if ch == curses.KEY_RESIZE:
                with contextlib.suppress(Exception):
                    curses.update_lines_cols()
                view.draw()
            elif ch != -1:
                if not view.key(ch):
                    return EXIT_OK
                view.draw()
            if time.monotonic() >= next_refresh:
                view.refresh_data()
                frames += 1
                view.draw()
                next_refresh = time.monotonic() + view.delay
                if args.iterations is not None and frames >= args.iterations:
                    return EXIT_OK

    return int(curses.wrapper(main))


def run_top(api: ApiClient, out: Out, args: argparse.Namespace) -> int:
    if args.sort not in SORTS:
        print(f"roxctl: top: unknown sort key {args.sort!r}: one of {', '.join(SORTS)}",
              file=sys.stderr)
        return EXIT_USAGE
    if args.delay <= 0 or (args.iterations is not None and args.iterations < 1):
        print("roxctl: top: --delay must be > 0 and --iterations >= 1", file=sys.stderr)
        return EXIT_USAGE
    sampler = Sampler(api)
    if args.batch or out.json or not (sys.stdin.isatty() and sys.stdout.isatty()):
        return run_batch(sampler, out, args)
    sampler.frame()  # unreachable or refused: the error and its exit code, before curses
    return run_live(sampler, args)

