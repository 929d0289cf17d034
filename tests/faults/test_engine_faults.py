"""roxd with its container engine absent or hung, on the real kernel: a Docker socket path with
nothing behind it, and a tiny Docker API stand-in on a Unix socket that the test SIGSTOPs (a
hung dockerd, as `kill -STOP $(pidof dockerd)` would make it; the shared dockerd is never
touched). roxd keeps watching: every host alert arrives, containers' events are still
attributed by cgroup (id, runtime), and /v1/health answers throughout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DEFAULT_TEST_CONFIG, NOISE_OFF_CONFIG, RoxdProcess, wait_until

pytestmark = [pytest.mark.faults, pytest.mark.kernel]

# Every run marks its commands with a token of its own: the rule matches command lines on the
# whole host, and other roxd test runs (other worktrees, a parallel suite) run this same file at
# the same time. Without it, their host marks counted towards this run's total and their
# containers' alerts came as this run's "in-container" alert, with another container's id.
TOKEN = uuid.uuid4().hex[:10]
MARK = f"roxd-engine-mark-{TOKEN}-"

MARK_RULE = f"""
[[rule]]
id = "test.engine-mark"
name = "Engine fault marker"
description = "Test rule: a command line with the marker, on the host or in a container."
phase = "foothold"
severity = "warning"
mitre = ["T1059"]
event = "exec"
actions = ["alert"]
[rule.when]
cmdline = {{ contains = ["{MARK}"] }}
"""

# A Docker Engine API stand-in: enough for roxd to connect (ping, version, list, events),
# then whatever the test does to it (SIGSTOP) is what roxd sees.
FAKE_DOCKER = r"""
import http.server, json, socketserver, sys, time
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def _json(self, obj, status=200):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_HEAD(self): self.do_GET()
    def do_GET(self):
        path = self.path.split("?")[0]
        if path.endswith("/_ping"):
            body = b"OK"
            self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers()
            self.wfile.write(body)
        elif path.endswith("/version"):
            self._json({"ApiVersion": "1.41", "Version": "20.10.0", "MinAPIVersion": "1.12"})
        elif path.endswith("/containers/json"):
            self._json([])
        elif path.endswith("/events"):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.flush()
            while True:
                time.sleep(3600)
        else:
            self._json({"message": "No such container"}, 404)
class S(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
S(sys.argv[1], H).serve_forever()
"""


def start(workdir: Path, docker_url: str, rules: Path,
          docker_timeout_s: float = 2.0) -> RoxdProcess:
    from tests.conftest import start_roxd

    config = DEFAULT_TEST_CONFIG + (f'[containers]\ndocker_url = "{docker_url}"\n'
                                    f'docker_timeout_s = {docker_timeout_s}\n'
                                    + NOISE_OFF_CONFIG)
    roxd = start_roxd(workdir, config=config, rules=[rules])
    roxd.wait_ready()
    return roxd


def health(sock: Path) -> dict[str, Any]:
    out = subprocess.run(["curl", "-s", "--max-time", "10", "--unix-socket", str(sock),
                          "http://roxd/v1/health"], capture_output=True, text=True, timeout=20)
    return json.loads(out.stdout) if out.stdout else {"ok": False, "error": out.stderr}


def roxctl(sock: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "roxd.ctl", "--socket", str(sock), "--json",
                           *args], capture_output=True, text=True, timeout=60)


def marks(roxd: RoxdProcess) -> list[dict[str, Any]]:
    return roxd.matching(lambda o: o.get("type") == "alert"
                         and o.get("rule", {}).get("id") == "test.engine-mark")


def rules_dir(tmp_path: Path) -> Path:
    d = tmp_path / "rules"
    d.mkdir()
    (d / "mark.toml").write_text(MARK_RULE)
    return d


def test_an_engine_socket_with_nothing_behind_it(tmp_path: Path, run_container: Any) -> None:
    workdir = tmp_path / "roxd"
    workdir.mkdir()
    roxd = start(workdir, "unix:///nonexistent/roxd-faults/docker.sock", rules_dir(tmp_path))
    try:
        for i in range(10):
            subprocess.run(["/bin/sh", "-c", f": {MARK}{i}"], check=True)
        c = run_container(f"sh -c ': {MARK}in-container'; sleep 30")
        wait_until(lambda: len(marks(roxd)) >= 11, 30, message="11 alerts")
        inside = next(a for a in marks(roxd) if "in-container" in json.dumps(a))
        container = inside["event"]["container"]
        assert container["id"] == c.id and container["runtime"] == "docker"
        assert container.get("name") in (None, "")  # no engine: id by cgroup path only
        assert health(workdir / "roxd.sock")["ok"] is True
    finally:
        assert roxd.stop() == 0


def test_a_hung_engine_never_stops_the_watch(tmp_path: Path, run_container: Any) -> None:
    sock = tmp_path / "fake-docker.sock"
    fake = subprocess.Popen([sys.executable, "-c", FAKE_DOCKER, str(sock)])
    workdir = tmp_path / "roxd"
    workdir.mkdir()
    roxd = None
    try:
        wait_until(sock.exists, 10, message="the fake engine's socket")
        roxd = start(workdir, f"unix://{sock}", rules_dir(tmp_path))
        os.kill(fake.pid, signal.SIGSTOP)  # the engine hangs: connects queue, reads block
        answers = []
        for i in range(10):
            subprocess.run(["/bin/sh", "-c", f": {MARK}{i}"], check=True)
            answers.append(health(workdir / "roxd.sock"))
        # a real container (the shared dockerd) whose metadata roxd asks the hung engine for
        c = run_container(f"sh -c ': {MARK}in-container'; sleep 30")
        answers.append(health(workdir / "roxd.sock"))
        try:
            wait_until(lambda: len(marks(roxd)) >= 11, 60,
                       message="11 alerts with the engine hung")
        except AssertionError as exc:
            got = [a["event"]["process"]["args"] for a in marks(roxd)]
            raise AssertionError(f"{exc}; got {got}; {roxd.diagnosis()}") from None
        inside = [a for a in marks(roxd) if "in-container" in json.dumps(a)]
        assert {(a["event"]["container"] or {}).get("id") for a in inside} == {c.id}, (
            inside, roxd.diagnosis())
        assert all(a.get("ok") is True for a in answers), answers
        os.kill(fake.pid, signal.SIGCONT)
        subprocess.run(["/bin/sh", "-c", f": {MARK}after"], check=True)
        wait_until(lambda: len(marks(roxd)) >= 12, 30, message="the alert after SIGCONT")
    finally:
        os.kill(fake.pid, signal.SIGCONT)
        if roxd is not None:
            roxd.stop()
        fake.kill()
        fake.wait()


# A hung engine must cost the event loop nothing: with a one-minute Docker timeout, what the
# loop used to wait for (an inspect on a resolver cache miss, a seccomp call's inspect) would
# hold every event and every `roxctl status` for that minute. The waits below are liveness
# bounds (a third of the hang), not measurements.
HUNG_TIMEOUT_S = 60.0
LIVE_S = 20.0


def hung_engine_roxd(tmp_path: Path) -> tuple[subprocess.Popen[bytes], RoxdProcess]:
    sock = tmp_path / "fake-docker.sock"
    fake = subprocess.Popen([sys.executable, "-c", FAKE_DOCKER, str(sock)])
    workdir = tmp_path / "roxd"
    workdir.mkdir()
    try:
        wait_until(sock.exists, 10, message="the fake engine's socket")
        roxd = start(workdir, f"unix://{sock}", rules_dir(tmp_path),
                     docker_timeout_s=HUNG_TIMEOUT_S)
    except BaseException:
        fake.kill()
        fake.wait()
        raise
    os.kill(fake.pid, signal.SIGSTOP)  # the engine hangs: connects queue, reads block
    return fake, roxd


def host_marks_and_status(roxd: RoxdProcess, sock: Path, tag: str, n: int) -> list[int]:
    """n host marker execs, a `roxctl status` after each; waits for the n alerts."""
    codes = []
    for i in range(n):
        subprocess.run(["/bin/sh", "-c", f": {MARK}{tag}-{i}"], check=True)
        codes.append(roxctl(sock, "status").returncode)
    wait_until(lambda: len([a for a in marks(roxd) if f"-{tag}-" in json.dumps(a)]) >= n,
               LIVE_S, message=f"{n} host alerts while the engine hangs")
    return codes


def test_a_hung_engine_never_stalls_events_or_status_on_a_new_container(
        tmp_path: Path, run_container: Any) -> None:
    fake, roxd = hung_engine_roxd(tmp_path)
    sock = tmp_path / "roxd" / "roxd.sock"
    try:
        # a container roxd has never seen: its first event is a resolver cache miss, and the
        # inspect goes to the hung engine
        c = run_container(f"sh -c ': {MARK}in-container'; sleep 60")
        wait_until(lambda: any("in-container" in json.dumps(a) for a in marks(roxd)), LIVE_S,
                   message="the new container's alert while the engine hangs")
        inside = next(a for a in marks(roxd) if "in-container" in json.dumps(a))
        # attributed at once by its cgroup (id, runtime); name and image come later, if ever
        assert inside["event"]["container"]["id"] == c.id
        assert inside["event"]["container"]["runtime"] == "docker"
        codes = host_marks_and_status(roxd, sock, "host", 5)
        assert codes == [0] * 5, roxd.diagnosis()
    finally:
        os.kill(fake.pid, signal.SIGCONT)
        roxd.stop()
        fake.kill()
        fake.wait()


def test_a_seccomp_call_to_a_hung_engine_never_stalls_the_loop(tmp_path: Path) -> None:
    fake, roxd = hung_engine_roxd(tmp_path)
    sock = tmp_path / "roxd" / "roxd.sock"
    learn = None
    try:
        assert roxctl(sock, "seccomp", "status").returncode == 0, "seccomp must be available"
        # the seccomp service inspects the target: the hung engine never answers
        learn = subprocess.Popen(
            [sys.executable, "-m", "roxd.ctl", "--socket", str(sock), "--json", "seccomp",
             "learn", "roxd-no-such-container"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        codes = host_marks_and_status(roxd, sock, "seccomp", 5)
        assert learn.poll() is None, "the learn call should still wait for the engine"
        assert codes == [0] * 5, roxd.diagnosis()
        os.kill(fake.pid, signal.SIGCONT)  # the engine answers: no such container
        out, err = learn.communicate(timeout=LIVE_S)
        assert learn.returncode != 0
        assert "roxd-no-such-container" in out + err
    finally:
        if learn is not None and learn.poll() is None:
            learn.kill()
            learn.wait()
        os.kill(fake.pid, signal.SIGCONT)
        roxd.stop()
        fake.kill()
        fake.wait()
