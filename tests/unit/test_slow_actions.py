"""SlowActions hands finished work back to the loop through finish_pending(), which the loop
calls on every pass: continuations run on the caller's thread, in the order the work
finished, each exactly once; an empty hand-back costs the loop nothing and returns 0."""

from __future__ import annotations

import threading

from roxd.pipeline import SlowActions
from tests.conftest import wait_until


def test_continuations_run_on_the_loop_in_order_once() -> None:
    actions = SlowActions()
    try:
        assert actions.finish_pending() == 0  # nothing submitted: nothing to run
        ran: list[tuple[int, str]] = []
        for i in range(5):
            assert actions.submit(lambda i=i: i * 10,
                                  lambda r: ran.append((r, threading.current_thread().name)))
        wait_until(lambda: actions.pending == 5 and len(actions._done) == 5, 10, 0.01,
                   message="the worker to finish five actions")
        assert actions.finish_pending() == 5
        assert ran == [(i * 10, threading.current_thread().name) for i in range(5)]
        assert actions.pending == 0 and actions.finish_pending() == 0 and len(ran) == 5
    finally:
        actions.close()


def test_a_failing_continuation_does_not_stop_the_others() -> None:
    actions = SlowActions()
    try:
        ran: list[str] = []

        def boom(_r: object) -> None:
            raise RuntimeError("continuation bug")

        actions.submit(lambda: None, boom)
        actions.submit(lambda: "second", ran.append)
        wait_until(lambda: len(actions._done) == 2, 10, 0.01, message="two finished actions")
        assert actions.finish_pending() == 2 and ran == ["second"] and actions.pending == 0
    finally:
        actions.close()
