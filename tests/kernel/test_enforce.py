"""Issue 4 acceptance: kills in the kernel and by pidfd, nftables quarantine, on real parts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from roxd.enforce.kill import kill_pid
from roxd.enforce.quarantine import Quarantine, QuarantineError
from roxd.runtime import DockerRuntime
from tests.conftest import OTHER_IMAGE, RoxdProcess, start_roxd, wait_until

pytestmark = pytest.mark.kernel

# A static binary with no libc whose very first user-space instructions append one byte to
# /marker/hits: if it ever runs a single instruction, the marker file grows.
MARKER_C = r"""
static long sys3(long n, long a, long b, long c) {
    long r;
    __asm__ volatile ("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c)
                      : "rcx", "r11", "memory");
    return r;
}
void _start(void) {
    long fd = sys3(2, (long)"/marker/hits", 02 | 0100 | 02000, 0644); /* open O_APPEND|O_CREAT */
    sys3(1, fd, (long)"x", 1);                                          /* write */
    sys3(60, 0, 0, 0);                                                  /* exit */
}
"""

KILL_RULE = """
[[rule]]
id = "test.forbidden-binary"
name = "Forbidden test binary"
description = "Test rule: the marker binary must never run in image A; it may in image B."
phase = "objectives"
severity = "critical"
mitre = ["T1496"]
event = "exec"
actions = ["alert", "kill"]
[rule.when]
exe = "/marker/forbidden"
[rule.scope]
host = false
image = ["roxd-test/busybox:latest"]
"""

ISOLATE_RULE = """
[[rule]]
id = "test.isolate-on-marker"
name = "Isolate on marker"
description = "Test rule: a container that runs the marker command line gets quarantined."
phase = "lateral_movement"
severity = "warning"
mitre = ["T1021"]
event = "exec"
actions = ["alert", "isolate"]
[rule.when]
cmdline = { contains = ["roxd-isolate-me"] }
[rule.scope]
host = false
"""


@pytest.fixture
def marker_dir(tmp_path: Path) -> Path:
    src = tmp_path / "marker.c"
    src.write_text(MARKER_C)
    binary = tmp_path / "forbidden"
    subprocess.run(["gcc", "-static", "-nostdlib", "-O2", "-o", str(binary), str(src)],
                   check=True)
    return tmp_path


def _rules(tmp_path: Path, text: str) -> Path:
    d = tmp_path / f"rules-{uuid.uuid4().hex[:6]}"
    d.mkdir()
    (d / "test.toml").write_text(text)
    return d


def _hits(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


@pytest.fixture(scope="module")
def forbidden_roxd(tmp_path_factory: pytest.TempPathFactory,
                   docker_engine: Any) -> Iterator[RoxdProcess]:
    """One roxd with the image-scoped kill rule for the in-kernel kill test and the lease test
    (one eBPF compile instead of two). The lease test SIGSTOPs it and always SIGCONTs it; the
    tests between the two run beside its exec hold, which only delays a new container's first
    exec until this roxd has classified its cgroup."""
    rules = _rules(tmp_path_factory.mktemp("forbidden-rules"), KILL_RULE)
    rp = start_roxd(tmp_path_factory.mktemp("roxd-forbidden"), rules=[rules])
    try:
        rp.wait_ready()
        yield rp
    finally:
        rp.stop()


def test_kill_in_kernel_before_first_instruction(
        forbidden_roxd: RoxdProcess, run_container: Any, marker_dir: Path) -> None:
    roxd = forbidden_roxd
    forbidden_dir = marker_dir / "a"
    allowed_dir = marker_dir / "b"
    for d in (forbidden_dir, allowed_dir):
        d.mkdir()
        (d / "forbidden").write_bytes((marker_dir / "forbidden").read_bytes())
        (d / "forbidden").chmod(0o755)
    n = 1000
    # no grace period: the loop starts with the container, before roxd can have seen it (its
    # first exec is held in the kernel until roxd has classified the new cgroup)
    loop = (f"i=0; while [ $i -lt {n} ]; do /marker/forbidden; i=$((i+1)); done; "
            "echo finished")
    a = run_container(loop, volumes={str(forbidden_dir): {"bind": "/marker", "mode": "rw"}})
    b = run_container("i=0; while [ $i -lt 20 ]; do /marker/forbidden; "
                      "i=$((i+1)); done", image=OTHER_IMAGE,
                      volumes={str(allowed_dir): {"bind": "/marker", "mode": "rw"}})
    assert a.wait(timeout=300)["StatusCode"] == 0
    assert b.wait(timeout=120)["StatusCode"] == 0
    assert b"finished" in a.logs()
    # image A: 1,000 execs, each killed before it ran one instruction
    assert _hits(forbidden_dir / "hits") == 0
    # image B: the same binary runs
    assert _hits(allowed_dir / "hits") == 20
    alert = roxd.wait_for(lambda o: o.get("type") == "alert"
                          and o["rule"]["id"] == "test.forbidden-binary", timeout=10,
                          message="kill alert")
    kill = next(x for x in alert["actions"] if x["action"] == "kill")
    assert kill["outcome"] == "done" and kill["in_kernel"] is True
    assert alert["container"]["id"] == a.id
    stats = roxd.wait_for(lambda o: o.get("type") == "stats"
                          and o["kernel"].get("exec_killed", 0) >= n, timeout=10,
                          message="exec_killed counter")
    assert stats["kernel"]["exec_killed"] >= n
    # a container's first exec is held until roxd knows its cgroup, then released; roxd may
    # also classify a cgroup from runc's own records in it (runc init's mounts) before the
    # entrypoint's exec, and then that exec is not held: both are right, and the kills above
    # hold either way (1 of 2 held in 1 of 4 runs on a loaded host). The entrypoint's exec
    # follows runc's create by milliseconds, so at least one of the two is held in practice.
    assert stats["kernel"]["exec_held"] >= 1


def test_kill_by_pidfd_never_hits_a_reused_pid() -> None:
    """Same pid, another process: it started after the event (the victim's exec) that the
    kill is for. Identity is the start time, not the name (the impostor could be a sleep)."""
    event_ns = time.time_ns()
    victim = subprocess.Popen(["sleep", "60"])
    pid = victim.pid
    victim.kill()
    victim.wait()
    time.sleep(0.05)  # the impostor starts well after the event (start times are in ticks)
    # Force PID reuse: the next fork in this pid namespace gets `pid` again.
    impostor = None
    for _ in range(50):
        Path("/proc/sys/kernel/ns_last_pid").write_text(str(pid - 1))
        candidate = subprocess.Popen(["tail", "-f", "/dev/null"])
        if candidate.pid == pid:
            impostor = candidate
            break
        candidate.kill()
        candidate.wait()
    assert impostor is not None, "could not reproduce PID reuse"
    wait_until(lambda: Path(f"/proc/{pid}/comm").read_text().strip() == "tail", 5,
               message="the impostor to exec tail")
    try:
        outcome = kill_pid(pid, started_by_ns=event_ns)
        assert not outcome.killed
        assert "reused" in outcome.reason
        assert impostor.poll() is None, "the impostor was killed"
        # and the right process is killed when it is the right one (its own exec's time)
        assert kill_pid(pid, started_by_ns=time.time_ns()).killed
        assert impostor.wait(5) == -9
    finally:
        if impostor.poll() is None:
            impostor.kill()
            impostor.wait()


def _nft_ruleset() -> str:
    return subprocess.run(["nft", "-s", "list", "ruleset"], check=True, capture_output=True,
                          text=True).stdout


def _reach(container: Any, ip: str) -> bool:
    result = container.exec_run(["sh", "-c", f"nc -w 2 {ip} 8080 </dev/null"])
    return result.exit_code == 0 and b"hello" in result.output


@pytest.fixture
def server_and_client(run_container: Any) -> tuple[Any, Any, str]:
    server = run_container("while true; do nc -l -p 8080 -e /bin/echo hello; done")
    client = run_container("sleep 600")
    server.reload()
    ip = server.attrs["NetworkSettings"]["IPAddress"]
    wait_until(lambda: _reach(client, ip), 20, message="server reachable before quarantine")
    return server, client, ip


def test_quarantine_and_release(server_and_client: tuple[Any, Any, str], tmp_path: Path) -> None:
    _server, client, ip = server_and_client
    before = _nft_ruleset()
    control = DockerRuntime("unix:///var/run/docker.sock")
    q = Quarantine(tmp_path, pid_of=control.pid_of, exists=control.exists)
    q.isolate(client.id, client.name, "test")
    assert not _reach(client, ip)
    counters = q.counters(client.id)
    assert counters is not None and counters.output_packets > 0
    assert _nft_ruleset() == before, "the host ruleset changed"
    assert [r.container_id for r in q.records()] == [client.id]
    assert q.release(client.id)
    assert _reach(client, ip)
    assert _nft_ruleset() == before
    assert q.records() == []


def test_host_network_container_cannot_be_quarantined(run_container: Any,
                                                      tmp_path: Path) -> None:
    c = run_container("sleep 600", network_mode="host")
    control = DockerRuntime("unix:///var/run/docker.sock")
    q = Quarantine(tmp_path, pid_of=control.pid_of, exists=control.exists)
    with pytest.raises(QuarantineError, match="host's network"):
        q.isolate(c.id, c.name, "test")
    assert q.records() == []


def test_rule_isolates_and_survives_restart(
        roxd_factory: Any, server_and_client: tuple[Any, Any, str], tmp_path: Path) -> None:
    _server, client, ip = server_and_client
    rules = _rules(tmp_path, ISOLATE_RULE)
    config = "[daemon]\nstats_interval_s = 1.0\n"
    roxd = roxd_factory(rules=[rules], config=config)
    client.exec_run(["sh", "-c", "echo roxd-isolate-me"])
    alert = roxd.wait_for(lambda o: o.get("type") == "alert"
                          and o["rule"]["id"] == "test.isolate-on-marker", timeout=15,
                          message="isolate alert")
    isolate = next(x for x in alert["actions"] if x["action"] == "isolate")
    assert isolate["outcome"] == "done", isolate
    assert not _reach(client, ip)
    state_dir = Path(roxd.proc.args[roxd.proc.args.index("--state-dir") + 1])
    assert roxd.stop() == 0
    # roxd is down: the table stays (the quarantine does not depend on roxd running)
    assert not _reach(client, ip)
    # a new roxd on the same state dir lists it and keeps it
    roxd2 = roxd_factory("--state-dir", str(state_dir), rules=[rules], config=config)
    assert "forgot" not in roxd2.stderr()
    control = DockerRuntime("unix:///var/run/docker.sock")
    q = Quarantine(state_dir, pid_of=control.pid_of, exists=control.exists)
    assert [r.container_id for r in q.records()] == [client.id]
    assert not _reach(client, ip)
    assert q.release(client.id)
    assert _reach(client, ip)


def test_removed_container_is_forgotten(run_container: Any, docker_engine: Any,
                                        tmp_path: Path) -> None:
    c = run_container("sleep 600")
    control = DockerRuntime("unix:///var/run/docker.sock")
    q = Quarantine(tmp_path, pid_of=control.pid_of, exists=control.exists)
    q.isolate(c.id, c.name, "test")
    c.remove(force=True)
    q2 = Quarantine(tmp_path, pid_of=control.pid_of, exists=control.exists)
    done = q2.reconcile()
    assert any("gone" in line for line in done)
    assert q2.records() == []
    assert os.path.exists(tmp_path / "quarantine.json")


CONNECT_KILL_RULE = """
[[rule]]
id = "test.connect-kill"
name = "Forbidden port"
description = "Test rule: containers may not connect to this loopback port."
phase = "lateral_movement"
severity = "critical"
mitre = ["T1021"]
event = "connect"
actions = ["alert", "kill"]
[rule.when]
dport = {port}
daddr = {{ cidr = ["127.0.0.0/8"] }}
[rule.scope]
host = false
"""


def test_connect_kill_in_kernel_before_a_byte_leaves(
        roxd_factory: Any, run_container: Any, tmp_path: Path) -> None:
    import socket
    import threading

    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    received: list[bytes] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            conn.settimeout(1)
            try:
                data = conn.recv(100)
                if data:
                    received.append(data)
            except OSError:
                pass
            conn.close()

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    rules = _rules(tmp_path, CONNECT_KILL_RULE.format(port=port))
    roxd: RoxdProcess = roxd_factory(rules=[rules])
    try:
        c = run_container(
            f"sleep 1; for i in 1 2 3 4 5; do echo secret-payload | nc 127.0.0.1 {port}; "
            "echo rc=$?; done", network_mode="host")
        assert c.wait(timeout=60)["StatusCode"] == 0
        logs = c.logs().decode()
        assert logs.count("rc=137") == 5, logs  # every nc died by SIGKILL
        alert = roxd.wait_for(lambda o: o.get("type") == "alert"
                              and o["rule"]["id"] == "test.connect-kill", timeout=10,
                              message="connect kill alert")
        kill = next(x for x in alert["actions"] if x["action"] == "kill")
        assert kill["outcome"] == "done" and kill["in_kernel"] is True
        assert alert["event"]["connect"]["dport"] == port
        # the host (not in scope) still connects, and no payload ever arrived from the container
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"host-payload")
        wait_until(lambda: b"host-payload" in received, 5, message="host payload")
        assert not any(b"secret" in r for r in received)
    finally:
        stop.set()
        server.join(2)
        listener.close()


def test_a_stopped_roxd_stops_holding_new_containers_execs(
        forbidden_roxd: RoxdProcess, run_container: Any) -> None:
    """The exec hold is a lease roxd renews every second: while roxd is SIGSTOPped (a hung
    loop), new containers' execs are held for at most the lease, then run; before the lease,
    they waited for roxd (for good, had it died)."""
    import os
    import signal

    roxd = forbidden_roxd  # its kill rule is image-scoped: it holds new containers' execs
    status = json.loads(subprocess.run(
        [sys.executable, "-m", "roxd.ctl", "--socket",
         str(roxd.stderr_path.parent / "roxd.sock"), "--json", "status"],
        capture_output=True, text=True, check=True).stdout)
    assert status["policy"]["hold_unknown"] is True
    os.kill(roxd.proc.pid, signal.SIGSTOP)
    try:
        time.sleep(6.5)  # past the 5 s lease, no renewal
        c = run_container("echo ran; sleep 600")
        wait_until(lambda: b"ran" in c.logs(), 15, 0.2,
                   message="a new container's exec to run while roxd is stopped")
    finally:
        os.kill(roxd.proc.pid, signal.SIGCONT)


TARGET_RULE = """
[[rule]]
id = "test.kill-{target}"
name = "Kill target {target}"
description = "Test rule: a marker command line kills its {target}."
phase = "objectives"
severity = "critical"
mitre = ["T1496"]
event = "exec"
actions = ["alert", "kill"]
kill_target = "{target}"
[rule.when]
args = {{ contains = ["{marker}"] }}
[rule.scope]
host = false
"""


KILL_TARGETS = ("process-tree", "container")


@pytest.fixture(scope="module")
def kill_targets_roxd(tmp_path_factory: pytest.TempPathFactory,
                      docker_engine: Any) -> Iterator[tuple[RoxdProcess, dict[str, str]]]:
    """One roxd with a rule per kill target, each on its own marker (one eBPF compile instead
    of two). Its kill rules hold new containers' first execs while it runs: these tests are
    the last of the file, so no earlier test (the stopped-roxd lease test above all) runs
    with it alive."""
    markers = {t: f"mk-{uuid.uuid4().hex[:8]}" for t in KILL_TARGETS}
    rules = tmp_path_factory.mktemp("kill-targets")
    for t, m in markers.items():
        (rules / f"{t}.toml").write_text(TARGET_RULE.format(target=t, marker=m))
    rp = start_roxd(tmp_path_factory.mktemp("roxd-kill-targets"), rules=[rules])
    try:
        rp.wait_ready()
        yield rp, markers
    finally:
        rp.stop()


@pytest.mark.parametrize("target", KILL_TARGETS)
def test_kill_targets(kill_targets_roxd: tuple[RoxdProcess, dict[str, str]],
                      run_container: Any, target: str) -> None:
    roxd, markers = kill_targets_roxd
    marker = markers[target]
    # the container's init keeps running; a subshell starts two sleepers, then the marker
    c = run_container("sleep 600 & wait")
    # a shell starts two sleepers, then execs into the marker command line: the process that
    # matches has children already
    c.exec_run(["sh", "-c", f"sleep 500 & sleep 501 & sleep 0.5; exec sh -c 'sleep 502' {marker}"],
               detach=True)
    alert = roxd.wait_for(lambda o: o.get("type") == "alert"
                          and o["rule"]["id"] == f"test.kill-{target}", timeout=20,
                          message=f"{target} kill alert")
    kill = next(x for x in alert["actions"] if x["action"] == "kill")
    assert kill["outcome"] == "done", kill
    assert kill["in_kernel"] is False
    if target == "container":
        wait_until(lambda: c.reload() or c.status == "exited", 20,
                   message="the container killed")
        return
    # the tree (the marker shell, its sleepers) is gone; the rest of the container lives
    assert "tree" in kill["reason"]

    def commands() -> list[str]:
        return [p[-1] for p in c.top()["Processes"]]

    wait_until(lambda: not any(f"sleep {n}" in x for x in commands() for n in (500, 501, 502)),
               10, message="the whole tree killed")
    c.reload()
    assert c.status == "running"
    assert any("sleep 600" in x for x in commands())
