"""A real terminal for full-screen programs under test: a tmux server of its own (its own
socket, so it never touches a user's tmux), one window of a fixed size, the screen read as
text after tmux interpreted every escape sequence, keys sent as a user types them.

    with Terminal(["roxctl", "top"], cols=80, rows=24) as t:
        t.wait_for(lambda screen: "q quit" in screen)
        t.keys("q")
        assert t.wait_exit() == 0 and not t.alternate_screen()
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any


class Terminal:
    def __init__(self, argv: Sequence[str], cols: int = 80, rows: int = 24,
                 env: dict[str, str] | None = None, cwd: str | None = None) -> None:
        tmux = shutil.which("tmux")
        if tmux is None:
            raise AssertionError("tmux is not installed: scripts/setup.sh installs it")
        self.tmux = tmux
        self.socket = f"roxd-test-{uuid.uuid4().hex[:8]}"
        self.argv = list(argv)
        self.cols, self.rows = cols, rows
        self.env = env or {}
        self.cwd = cwd

    def _run(self, *args: str, check: bool = True) -> str:
        out = subprocess.run([self.tmux, "-L", self.socket, *args], capture_output=True,
                             text=True, timeout=20)
        if check and out.returncode != 0:
            raise AssertionError(f"tmux {args}: {out.stderr}")
        return out.stdout

    def __enter__(self) -> Terminal:
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items())
        # the exit status through a file: tmux 3.3 sometimes leaves a dead pane's process
        # unreaped (a zombie, no #{pane_dead_status}). The shell traps SIGINT with a handler
        # (not an ignore, which the program would inherit) so Ctrl-C reaches the program
        # and the shell still writes its status.
        self._dir = tempfile.mkdtemp(prefix="roxd-term-")
        self._status = os.path.join(self._dir, "status")
        inner = (f"trap : INT; env {env} {shlex.join(self.argv)}; "
                 f"echo $? > {shlex.quote(self._status)}.tmp; "
                 f"mv {shlex.quote(self._status)}.tmp {shlex.quote(self._status)}")
        command = f"sh -c {shlex.quote(inner)}"
        # -f /dev/null: no user configuration; the options are set before the program starts:
        # remain-on-exit keeps the pane (and its screen state) after the program exits, no
        # status line (every row is the program's)
        self._run("-f", "/dev/null", "start-server", ";",
                  "set-option", "-g", "remain-on-exit", "on", ";",
                  "set-option", "-g", "status", "off", ";",
                  "new-session", "-d", "-x", str(self.cols), "-y", str(self.rows),
                  *(["-c", self.cwd] if self.cwd else []), command)
        self._socket_path = self._format("#{socket_path}")
        return self

    def __exit__(self, *exc: Any) -> None:
        self._run("kill-server", check=False)
        with contextlib.suppress(OSError):  # tmux leaves its socket file behind
            os.unlink(self._socket_path)
        shutil.rmtree(self._dir, ignore_errors=True)

    def screen(self) -> str:
        return self._run("capture-pane", "-p")

    def lines(self) -> list[str]:
        return self.screen().splitlines()

    def keys(self, *keys: str) -> None:
        self._run("send-keys", *keys)

    def resize(self, cols: int, rows: int) -> None:
        self._run("resize-window", "-x", str(cols), "-y", str(rows))

    def _format(self, fmt: str) -> str:
        return self._run("display-message", "-p", fmt).strip()

    def alternate_screen(self) -> bool:
        """True while a full-screen program holds the terminal (curses' smcup)."""
        return self._format("#{alternate_on}") == "1"

    def size(self) -> tuple[int, int]:
        cols, rows = self._format("#{pane_width} #{pane_height}").split()
        return int(cols), int(rows)

    def wait_for(self, predicate: Callable[[str], bool], timeout: float = 20.0,
                 message: str = "the screen") -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if predicate(screen):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {message}; the screen:\n{screen}")
            time.sleep(0.1)

    def wait_exit(self, timeout: float = 20.0) -> int:
        """The program's exit status (128 + N for a signal, as the shell reports it)."""
        deadline = time.monotonic() + timeout
        while not os.path.exists(self._status):
            if time.monotonic() > deadline:
                pid = self._format("#{pane_pid}")
                ps = subprocess.run(["ps", "-o", "pid,stat,wchan:30,etime,args", "--ppid", pid,
                                     "-p", pid], capture_output=True, text=True).stdout
                raise AssertionError(f"the program did not exit; its processes:\n{ps}\n"
                                     f"the screen:\n{self.screen()}")
            time.sleep(0.1)
        with open(self._status) as f:
            return int(f.read().strip())
