"""Shared fixtures: real parts, started once per session, cleaned up even on failure.

- `docker_engine`: a Docker engine that answers (started with scripts/dockerd.sh when none
  does, and stopped at the end only if this session started it), with the offline test images.
- `roxd_factory`: starts real roxd processes (real eBPF in the running kernel) with
  --print-events/--print-alerts and collects their JSON lines for tests to wait on.
- `shared_roxd`: one roxd with the default config and rules for the whole session.

A roxd start that compiles its eBPF programs costs 4-13 CPU-s here, one that loads them from
the compiled-object cache about 0.5 (shared by the whole session, below); still, a test that
only observes uses `shared_roxd`; tests needing their own rules or config share a
module-scoped roxd when their rules fire only on their own markers and they read only their
own containers' lines; a roxd of its own is for a test of start-up, restart, SIGKILL or a
stopped roxd (README, "The two commands").
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.hostguard import read_host_state

REPO = Path(__file__).resolve().parents[1]
IMAGE = "roxd-test/busybox:latest"
OTHER_IMAGE = "roxd-test/busybox:other"
SESSION = uuid.uuid4().hex[:12]  # labels this test session's containers

# Every roxd start and every in-process Sensor loads its eBPF object through the compiled-
# object cache (roxd/sensor/bpf_cache.py): a compile costs 3-13 CPU-s here, a cached load
# about 0.5. The roxd processes tests start use the default cache dir; an in-process Sensor
# made with a cache dir of its own (tmp_path) shares that one too. tests/kernel/
# test_bpf_cache.py sets this aside: it tests the cache with dirs of its own.
os.environ.setdefault("ROXD_BPF_CACHE_DIR", "/var/cache/roxd")


@pytest.fixture(scope="module", autouse=True)
def host_untouched() -> Iterator[None]:
    """Every test module must leave the host as it found it (tests/hostguard.py): device node
    modes, no stopped orphans, no roxd nft table in the host's own netns, the sysctls a test
    could flip, audit state, no mount left behind (outside the runtimes' own trees), none of
    this session's test containers left. Checked per module, so a failure names the module
    that did it."""
    before = read_host_state(SESSION)
    yield
    after = read_host_state(SESSION)
    for _ in range(20):  # a process being reaped or a table being deleted: give it a moment
        if not after.changes_since(before):
            return
        time.sleep(0.25)
        after = read_host_state(SESSION)
    problems = after.changes_since(before)
    assert not problems, "the test session changed the host: " + "; ".join(problems)


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.05,
               message: str = "condition") -> Any:
    """Poll predicate until it returns something truthy, or fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


# ---------------------------------------------------------------------------- docker


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[Any]:
    import docker

    started_here = subprocess.run([REPO / "scripts/dockerd.sh", "status"]).returncode != 0
    if started_here:
        subprocess.run([REPO / "scripts/dockerd.sh", "start"], check=True)
    subprocess.run([REPO / "scripts/test-images.sh"], check=True)
    client = docker.DockerClient(base_url="unix:///var/run/docker.sock", timeout=30)
    try:
        yield client
    finally:
        # only this session's containers: other test sessions may share the engine
        for c in client.containers.list(all=True, filters={"label": f"roxd-test={SESSION}"}):
            c.remove(force=True)
        client.close()
        if started_here:
            subprocess.run([REPO / "scripts/dockerd.sh", "stop"])


@pytest.fixture
def run_container(docker_engine: Any) -> Iterator[Callable[..., Any]]:
    """Start a container from a local test image (never pulled); removed at teardown."""
    made: list[Any] = []

    def run(command: str, image: str = IMAGE, **kwargs: Any) -> Any:
        labels = {"roxd-test": SESSION, **kwargs.pop("labels", {})}
        name = kwargs.pop("name", f"roxd-test-{uuid.uuid4().hex[:8]}")
        # create + start, never containers.run(): docker SDK 5.0's run() pulls a missing image
        container = docker_engine.containers.create(
            image, ["/bin/sh", "-c", command], name=name, labels=labels, **kwargs)
        made.append(container)
        container.start()
        return container

    yield run
    for c in made:
        with contextlib.suppress(Exception):  # already gone
            c.remove(force=True)


# ---------------------------------------------------------------------------- roxd


@dataclass
class RoxdProcess:
    proc: subprocess.Popen[str]
    stderr_path: Path
    lines: list[dict[str, Any]] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def _reader(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError:
                continue
            with self._cond:
                self.lines.append(obj)
                self._cond.notify_all()

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 15.0,
                 message: str = "a matching line") -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for obj in self.lines[seen:]:
                    if predicate(obj):
                        return obj
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise AssertionError(
                        f"no {message} within {timeout}s (roxd exit={self.proc.poll()}); "
                        f"{self.diagnosis()}")
                self._cond.wait(min(left, 0.2))

    def diagnosis(self) -> str:
        """What a failed wait needs to be understood: roxd's warnings, errors and tracebacks
        (the periodic stats lines bury them in a plain tail), the last event lines, the tail."""
        text = self.stderr()
        notable = [ln for ln in text.splitlines()
                   if " WARNING " in ln or " ERROR " in ln or "Traceback" in ln
                   or ln.startswith(("  File ", "    ")) or "Error" in ln][:60]
        with self._cond:
            last = [json.dumps(o)[:300] for o in self.lines[-15:]]
        return ("roxd's warnings and errors:\n" + "\n".join(notable)
                + "\nlast lines of its stdout:\n" + "\n".join(last)
                + f"\nstderr tail:\n{text[-1500:]}")

    def matching(self, predicate: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        with self._cond:
            return [o for o in self.lines if predicate(o)]

    def wait_ready(self, timeout: float = 60.0) -> None:
        wait_until(lambda: "roxd is watching" in self.stderr() or self.proc.poll() is not None,
                   timeout, message="roxd to report that it is watching")
        if self.proc.poll() is not None:
            raise AssertionError(f"roxd exited with {self.proc.returncode}:\n{self.stderr()}")

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def roxd_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "roxd", *args]


DEFAULT_TEST_CONFIG = "[daemon]\nstats_interval_s = 1.0\n"
# every alert kept as raised, none folded or rate-limited: for tests that count alerts
NOISE_OFF_CONFIG = ("[alerts.noise]\nfold_window_s = 0.0\nper_container_per_minute = 0\n"
                    "per_rule_per_minute = 0\n")


def start_roxd(workdir: Path, *extra: str, config: str | None = None,
               env: dict[str, str] | None = None, rules: list[Path] | None = None,
               prefix: list[str] | None = None) -> RoxdProcess:
    """A real roxd with its config, state and socket in workdir, printing events and alerts
    (collected by a reader thread) and its log to workdir/stderr.log."""
    cfg = workdir / "roxd.toml"
    cfg.write_text(config if config is not None else DEFAULT_TEST_CONFIG)
    args = ["--config", str(cfg), "--state-dir", str(workdir / "state"),
            "--socket", str(workdir / "roxd.sock"), "--print-events", "--print-alerts"]
    for r in rules or []:
        args += ["--rules", str(r)]
    stderr_path = workdir / "stderr.log"
    proc = subprocess.Popen(
        [*(prefix or []), *roxd_command(*args, *extra)],
        stdout=subprocess.PIPE, stderr=stderr_path.open("w"), text=True,
        env={**os.environ, **(env or {})}, cwd=REPO,
    )
    rp = RoxdProcess(proc, stderr_path)
    threading.Thread(target=rp._reader, daemon=True).start()
    return rp


@pytest.fixture
def roxd_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., RoxdProcess]]:
    started: list[RoxdProcess] = []

    def start(*extra: str, config: str | None = None, env: dict[str, str] | None = None,
              wait: bool = True, rules: list[Path] | None = None,
              prefix: list[str] | None = None) -> RoxdProcess:
        rp = start_roxd(tmp_path_factory.mktemp("roxd"), *extra, config=config, env=env,
                        rules=rules, prefix=prefix)
        started.append(rp)
        if wait:
            rp.wait_ready()
        return rp

    yield start
    for rp in started:
        rp.stop()


@pytest.fixture(scope="session")
def shared_roxd(tmp_path_factory: pytest.TempPathFactory,
                docker_engine: Any) -> Iterator[RoxdProcess]:
    """One roxd with the default rule pack for the tests that only observe."""
    rp = start_roxd(tmp_path_factory.mktemp("roxd-shared"))
    try:
        rp.wait_ready()
        yield rp
    finally:
        rp.stop()
