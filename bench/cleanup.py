"""One stack of undo actions for everything the benchmark changes on the host (roxd, auditd
and its kernel rules, bpftrace, containers, sysctls). Runs on normal exit, on an exception,
and on SIGINT/SIGTERM (turned into KeyboardInterrupt so `finally` blocks run)."""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("bench")


@dataclass
class Cleanup:
    _actions: list[tuple[str, Callable[[], Any]]] = field(default_factory=list)

    def push(self, what: str, action: Callable[[], Any]) -> Callable[[], None]:
        """Register an undo action; returns a function that runs it now (once)."""
        entry = (what, action)
        self._actions.append(entry)

        def run_now() -> None:
            if entry in self._actions:
                self._actions.remove(entry)
                _run(what, action)

        return run_now

    def run_all(self) -> None:
        # Ctrl-C during cleanup must not leave half of it undone
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            while self._actions:
                what, action = self._actions.pop()
                _run(what, action)
        finally:
            signal.signal(signal.SIGINT, old)

    def install_signal_handlers(self) -> None:
        def interrupt(signum: int, _frame: Any) -> None:
            raise KeyboardInterrupt(f"signal {signum}")

        signal.signal(signal.SIGTERM, interrupt)
        signal.signal(signal.SIGHUP, interrupt)


def _run(what: str, action: Callable[[], Any]) -> None:
    try:
        action()
    except Exception as exc:  # keep undoing the rest
        print(f"bench: cleanup of {what} failed: {exc}", file=sys.stderr)
