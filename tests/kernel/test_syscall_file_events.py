"""Issue 10 on the real kernel: sensitive syscalls and watched file access as events and alerts.

Containers do what attackers do without any tool that exec rules could name: shell redirections
and builtins on watched files, mount(2)/unshare(2) called directly, a program run from a memfd.
The kernel side must let only watched accesses through (kernel counters in the stats lines).
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from typing import Any

import pytest

from roxd.model import SyscallEvent
from roxd.sensor.program import Sensor, SensorConfig
from tests.conftest import REPO, RoxdProcess, wait_until

pytestmark = pytest.mark.kernel

ESCAPE_IMAGE = "roxd-test/escape:latest"


@pytest.fixture(scope="module")
def escape_image(docker_engine: Any) -> str:
    subprocess.run([REPO / "scripts/test-images-extra.sh"], check=True)
    return ESCAPE_IMAGE


def alert_for(rule_id: str, container: Any) -> Any:
    def predicate(obj: dict[str, Any]) -> bool:
        return (obj.get("type") == "alert" and obj["rule"]["id"] == rule_id
                and (obj.get("container") or {}).get("id") == container.id)
    return predicate


def stats_after(roxd: RoxdProcess, index: int) -> dict[str, Any]:
    """The first stats line printed after line `index` (counters read after that point)."""
    def predicate(obj: dict[str, Any]) -> bool:
        return obj.get("type") == "stats"
    def newer() -> dict[str, Any] | None:
        found = [o for o in roxd.lines[index:] if predicate(o)]
        return found[0] if found else None
    return wait_until(newer, timeout=20, message="a stats line")


def test_cron_write_by_shell_redirection(shared_roxd: RoxdProcess, run_container: Any) -> None:
    """`echo x >> /etc/cron.d/y` is the shell's own open(): no exec names the file."""
    # not below /etc: the file baselines watch writes below their trees ([baselines]
    # file_trees); /var itself is none (its head bytes pass the gate, the trie misses)
    unwatched = f"/var/roxd-unwatched-{uuid.uuid4().hex[:8]}"
    # 1. 200 appends to a path no rule watches: filtered in the kernel, no ring-buffer record
    before = stats_after(shared_roxd, len(shared_roxd.lines))
    mark = len(shared_roxd.lines)
    quiet = run_container(f"i=0; while [ $i -lt 200 ]; do echo x >> {unwatched}; i=$((i+1)); "
                          "done")
    assert quiet.wait(timeout=60)["StatusCode"] == 0
    after = stats_after(shared_roxd, len(shared_roxd.lines))
    k0, k1 = before["kernel"], after["kernel"]
    assert k1["file_filtered"] - k0["file_filtered"] >= 200
    assert k1["file_emitted"] - k0["file_emitted"] < 200  # other host activity may add a few
    assert not shared_roxd.matching(
        lambda o: o.get("type") == "file" and o["file"]["path"] == unwatched)
    assert not [o for o in shared_roxd.lines[mark:]
                if o.get("type") == "alert" and (o.get("container") or {}).get("id") == quiet.id
                and o["event"]["type"] == "file"]

    # 2. the same redirection into /etc/cron.d: event and persistence alert
    container = run_container("mkdir -p /etc/cron.d && echo '* * * * * root id' >> /etc/cron.d/y")
    alert = shared_roxd.wait_for(alert_for("persistence.cron-file-modified", container),
                                 timeout=20, message="cron persistence alert")
    file = alert["event"]["file"]
    assert file["path"] == "/etc/cron.d/y" and file["resolved"] == "/etc/cron.d/y"
    assert file["operation"] == "open" and "write" in file["access"]
    assert "O_APPEND" in file["flags"] and file["result"] == "ok"
    assert alert["process"]["comm"] == "sh"  # the shell itself, no exec of a writer tool
    assert alert["rule"]["phase"] == "persistence"


def test_shadow_read_with_a_shell_builtin(shared_roxd: RoxdProcess,
                                          run_container: Any) -> None:
    container = run_container("echo 'root:*:1::::::' > /etc/shadow; read line < /etc/shadow; "
                              "echo $line")
    alert = shared_roxd.wait_for(alert_for("privilege_escalation.shadow-file-read", container),
                                 timeout=20, message="shadow read alert")
    assert alert["event"]["file"]["access"] == ["read"]
    assert alert["event"]["file"]["path"] == "/etc/shadow"



def test_relative_and_oddly_spelled_paths_pass_the_kernel_gates(
        shared_roxd: RoxdProcess, run_container: Any) -> None:
    """The kernel skips its lookups for paths whose head or tail bytes no watch has (see
    bpf/file.bpf.c): a relative path to a watched basename and /etc//shadow must still get
    through to userspace, which resolves them against the cwd (while the shell lives)."""
    container = run_container("mkdir -p /root/.ssh && cd /root/.ssh && echo key >> "
                              "authorized_keys && read l < /etc//shadow; sleep 3")
    keys = shared_roxd.wait_for(alert_for("persistence.authorized-keys-modified", container),
                                timeout=20, message="authorized_keys alert")
    assert keys["event"]["file"]["path"] == "authorized_keys"
    assert keys["event"]["file"]["resolved"] == "/root/.ssh/authorized_keys"
    shadow = shared_roxd.wait_for(alert_for("privilege_escalation.shadow-file-read", container),
                                  timeout=20, message="shadow read alert")
    assert shadow["event"]["file"]["path"] == "/etc//shadow"

def test_direct_mount_and_unshare_are_reported_with_their_result(
        shared_roxd: RoxdProcess, run_container: Any, escape_image: str) -> None:
    # Docker's default seccomp profile stops both before entry (EPERM): still attempts
    confined = run_container("/bin/sys-escape; sleep 1", image=escape_image)
    for rule_id, name in (("privilege_escalation.mount-syscall-in-container", "mount"),
                          ("privilege_escalation.namespace-syscall-in-container", "unshare")):
        alert = shared_roxd.wait_for(alert_for(rule_id, confined), timeout=20,
                                     message=f"{name} alert")
        syscall = alert["event"]["syscall"]
        assert syscall["name"] == name
        assert syscall["result"] == "denied" and syscall["errno"] == 1
        assert alert["rule"]["phase"] == "privilege_escalation"
    # without seccomp the arguments are read at entry; no CAP_SYS_ADMIN: mount fails in kernel
    open_ = run_container("/bin/sys-escape; sleep 1", image=escape_image,
                          security_opt=["seccomp=unconfined"])
    alert = shared_roxd.wait_for(
        alert_for("privilege_escalation.mount-syscall-in-container", open_), timeout=20,
        message="unconfined mount alert")
    syscall = alert["event"]["syscall"]
    assert syscall["args"]["fstype"] == "tmpfs" and syscall["args"]["path"] == "/mnt"
    assert syscall["result"] == "denied" and syscall["errno"] == 1
    unshare = shared_roxd.wait_for(
        alert_for("privilege_escalation.namespace-syscall-in-container", open_), timeout=20,
        message="unconfined unshare alert")
    assert "CLONE_NEWUSER" in unshare["event"]["syscall"]["args"]["flags"]
    # runc's own setup (unshare, mount, pivot_root at every container start) raised nothing
    for c in (confined, open_):
        assert not [o for o in shared_roxd.lines
                    if o.get("type") == "alert" and (o.get("container") or {}).get("id") == c.id
                    and o["event"]["type"] == "syscall"
                    and o["process"]["comm"].startswith("runc")]


def test_memfd_exec_is_flagged_fileless(shared_roxd: RoxdProcess, run_container: Any,
                                        escape_image: str) -> None:
    marker = f"fileless-{uuid.uuid4().hex[:8]}"
    container = run_container(f"/bin/memfd-exec echo {marker}", image=escape_image)
    alert = shared_roxd.wait_for(alert_for("foothold.fileless-exec", container), timeout=20,
                                 message="fileless alert")
    assert alert["event"]["exec"]["fileless"] is True
    assert alert["event"]["exec"]["filename"].startswith("/dev/fd/")
    assert alert["process"]["args"] == ["echo", marker]
    # the container's ordinary execs are not fileless
    assert not shared_roxd.matching(
        lambda o: o.get("type") == "exec" and (o.get("container") or {}).get("id")
        == container.id and o["exec"]["fileless"] and o["process"]["args"][:1] != ["echo"])


# Every numeric-argument probe of bpf/syscalls.bpf.c, driven by a child process (the sensor
# skips its own tgid) with the whole watchlist on: what each captured, decoded.
# It acts only on what it creates: its own sleeper (killed by pid and reaped whatever happens,
# so it is never left ptrace-stopped) and a scratch file of the test for fchmod (it once
# fchmod'ed /dev/null to 04644, which broke every non-root write to /dev/null on the host).
SYSCALL_DRIVER = r'''
import ctypes, os, subprocess, sys
libc = ctypes.CDLL(None, use_errno=True)
os.setresuid(0, 0, 0); os.setresgid(0, 0, 0); os.setuid(0); os.setgid(0)
os.setreuid(0, 0); os.setregid(0, 0)
p = subprocess.Popen(["sleep", "30"])
try:
    libc.ptrace(16, p.pid, 0, 0)                    # PTRACE_ATTACH
    libc.syscall(250, 0, 0, 0, 0, 0)                # keyctl(0): EINVAL
    libc.syscall(308, 99, 0)                        # setns(99, any): EBADF
    libc.syscall(135, 8)                            # personality(8)
    libc.syscall(272, 0x04000000)                   # unshare(CLONE_NEWUTS), this process only
    libc.syscall(310, p.pid, 0, 0, 0, 0, 0)         # process_vm_readv: EINVAL
    libc.syscall(321, 0, 0, 0)                      # bpf(BPF_MAP_CREATE, NULL): EINVAL
    fd = os.open(sys.argv[1], os.O_RDONLY | os.O_CREAT, 0o644)
    libc.syscall(91, fd, 0o4644)                    # fchmod with setuid, of the test's file
finally:
    # not p.kill(): Popen.poll() takes the ptrace-stop for an exit (returncode -19), so
    # kill() did nothing and the sleeper stayed stopped under init after this driver exited
    os.kill(p.pid, 9)
    while True:
        _, status = os.waitpid(p.pid, 0)
        if os.WIFEXITED(status) or os.WIFSIGNALED(status):
            break
'''


def test_numeric_argument_probes_decode_what_was_asked(tmp_path: Any) -> None:
    got: list[SyscallEvent] = []
    sensor = Sensor(SensorConfig(cache_dir=tmp_path),
                    lambda d: got.append(d.event) if isinstance(d.event, SyscallEvent) else None)
    sensor.start()
    try:
        sensor.set_syscall_watches(None)
        scratch = tmp_path / "fchmod-target"
        driver = subprocess.Popen([sys.executable, "-c", SYSCALL_DRIVER, str(scratch)])
        assert driver.wait(timeout=30) == 0
        time.sleep(0.3)
        sensor.drain()
    finally:
        sensor.close()
    mine = {e.syscall: e for e in got if e.pid == driver.pid}  # other roxds call bpf() too
    assert mine["setresuid"].args == {"real": 0, "effective": 0, "saved": 0}
    assert mine["setresgid"].args == {"real": 0, "effective": 0, "saved": 0}
    assert mine["setuid"].args == {"id": 0} and mine["setgid"].args == {"id": 0}
    assert mine["setreuid"].args == {"real": 0, "effective": 0}
    assert mine["setregid"].args == {"real": 0, "effective": 0}
    assert mine["ptrace"].args["request"] == "PTRACE_ATTACH" and mine["ptrace"].errno == 0
    assert mine["keyctl"].args == {"operation": 0} and mine["keyctl"].errno == 22
    assert mine["setns"].args == {"fd": 99, "flags": "any"} and mine["setns"].errno == 9
    assert mine["personality"].args == {"persona": "0x8"}
    assert mine["unshare"].args == {"flags": "CLONE_NEWUTS"} and mine["unshare"].errno == 0
    assert mine["process_vm_readv"].args["target_pid"] == mine["ptrace"].args["target_pid"]
    assert mine["bpf"].args["cmd"] == "BPF_MAP_CREATE"
    assert mine["fchmod"].args["mode"] == "0o4644"
    assert scratch.stat().st_mode & 0o7777 == 0o4644  # its own file changed, nothing else
