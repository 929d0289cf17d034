"""DaemonWorker: calls in order off the caller's thread; cancel while queued; a shutdown never
waits for a call held by a hung engine, and the thread never holds the process at exit."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from roxd.offloop import DaemonWorker

pytestmark = pytest.mark.unit


def test_calls_run_in_order_and_a_queued_one_can_be_withdrawn() -> None:
    worker = DaemonWorker("test-worker")
    gate = threading.Event()
    ran: list[str] = []
    held = worker.submit(lambda: gate.wait(10) and ran.append("held"))
    queued = worker.submit(ran.append, "withdrawn")
    last = worker.submit(ran.append, "last")
    assert queued.cancel()  # still queued behind the held call: never runs
    gate.set()
    last.result(5)
    assert held.done() and ran == ["held", "last"]
    failing = worker.submit(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        failing.result(5)
    worker.shutdown()
    with pytest.raises(RuntimeError):
        worker.submit(ran.append, "after")


def test_a_held_call_neither_blocks_shutdown_nor_the_process_exit() -> None:
    """A call that never returns (an engine that never answers): shutdown() returns, what was
    queued is cancelled, and the interpreter exits (ThreadPoolExecutor's would join it)."""
    script = (
        "import threading\n"
        "from roxd.offloop import DaemonWorker\n"
        "w = DaemonWorker('held')\n"
        "w.submit(threading.Event().wait)\n"  # never returns
        "queued = w.submit(print, 'ran')\n"
        "w.shutdown()\n"
        "print('cancelled' if queued.cancel() or queued.cancelled() else 'not cancelled')\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["cancelled"]
