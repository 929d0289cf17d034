"""Issue 23 item 2 on a real roxd: a rule's alerts over the rate limit stay throttled across a
restart (the budget is in the state dir), another rule's first alert is never held back, and
`GET /v1/rules/top` shows what was emitted and throttled, also after the restart."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest

from roxd.api.client import ApiClient
from tests.conftest import RoxdProcess, start_roxd, wait_until

pytestmark = pytest.mark.kernel

RULES = """
[[rule]]
id = "test.noise-cheap"
name = "Cheap marker"
description = "Test rule: a cheap, repetitive alert on the host."
phase = "foothold"
severity = "notice"
mitre = ["T1059"]
event = "exec"
actions = ["alert"]
[rule.when]
args = {{ contains = ["cheap-{m}"] }}
[rule.scope]
host = true

[[rule]]
id = "test.noise-loud"
name = "Loud marker"
description = "Test rule: the alert a flood must never hide."
phase = "foothold"
severity = "notice"
mitre = ["T1059"]
event = "exec"
actions = ["alert"]
[rule.when]
args = {{ contains = ["loud-{m}"] }}
[rule.scope]
host = true
"""
CONFIG = ("[daemon]\nstats_interval_s = 1.0\n[alerts.noise]\nfold_window_s = 0.0\n"
          "per_container_per_minute = 3\nper_rule_per_minute = 0\n")


def _top(sock: str) -> dict[str, dict[str, Any]]:
    with ApiClient(sock) as c:
        return {r["rule"]: r for r in c.get("/v1/rules/top", {"since": "10m"})["rules"]}


def _run(*args: str) -> None:
    subprocess.run(["/bin/true", *args], check=True)


def test_throttle_state_and_rule_counts_survive_a_restart(docker_engine: Any) -> None:
    m = uuid.uuid4().hex[:8]
    workdir = Path(tempfile.mkdtemp(prefix="roxd-noise-"))
    rules = workdir / "rules"
    rules.mkdir()
    (rules / "noise.toml").write_text(RULES.format(m=m))
    sock = str(workdir / "roxd.sock")
    started: list[RoxdProcess] = []

    def start() -> RoxdProcess:
        rp = start_roxd(workdir, config=CONFIG, rules=[rules])
        started.append(rp)
        rp.wait_ready()
        return rp

    try:
        rp = start()
        for i in range(8):  # distinct argv: nothing folds in the kernel or in noise control
            _run(f"cheap-{m}", str(i))
        wait_until(lambda: _top(sock).get("test.noise-cheap", {}).get("raised") == 8, 20,
                   message="8 cheap alerts raised")
        cheap = _top(sock)["test.noise-cheap"]
        # the host's budget: the rule's first, then up to the limit of 3; the rest throttled
        assert (cheap["emitted"], cheap["throttled"]) == (3, 5), cheap
        _run(f"loud-{m}")  # the host is over its limit, yet a rule's first alert goes out
        wait_until(lambda: _top(sock).get("test.noise-loud", {}).get("emitted") == 1, 20,
                   message="the loud rule's first alert emitted")
        assert rp.stop() == 0
        assert (workdir / "state" / "noise" / "throttle.json").exists()

        rp = start()  # same state dir: the window and its budget go on
        before = _top(sock)
        assert before["test.noise-cheap"]["raised"] == 8  # the counts came back
        _run(f"cheap-{m}", "after-restart")
        wait_until(lambda: _top(sock)["test.noise-cheap"]["raised"] == 9, 20,
                   message="the cheap alert after the restart")
        after = _top(sock)["test.noise-cheap"]
        assert after["throttled"] == 6 and after["emitted"] == 3, after
    finally:
        for rp in started:
            rp.stop()
        shutil.rmtree(workdir, ignore_errors=True)
