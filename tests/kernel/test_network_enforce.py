"""Network baselines enforced in the kernel (issue 15), on real parts: a client container learns
that it talks to a server container on port 8080; its baseline locks and is put in enforce
mode; then the cgroup connect hook (bpf/netenf.bpf.c) refuses its connect to the server's
port 9000 (EPERM) and its UDP to the same port, so no byte reaches the listener the test put
there, while 8080 keeps working and loopback is untouched. The alert says the kernel refused
it. Traffic only between the test's own containers."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from roxd.api.client import ApiClient
from tests.conftest import start_roxd, wait_until
from tests.kernel.netbase import wait_learned_then_locked

pytestmark = pytest.mark.kernel
REPO = Path(__file__).resolve().parents[2]

CONFIG = """
[daemon]
stats_interval_s = 1.0
[baselines]
window_s = 8.0
startup_grace_s = 1.0
"""

# a learned service on 8080; a listener on 9000 that records whatever reaches it (and stays
# up until something connects: `nc -l` takes one connection); a UDP listener on 9001
SERVER = ("nc -l -p 9000 > /tmp/got9000 2>&1 & "
          "while true; do nc -l -p 8080 -e /bin/echo hello; done")
# busybox has no UDP client nor listener: both are a Python process of the host in the
# containers' network namespace (the sender also in the client's cgroup, so it is the
# client's workload), which execs nothing once there
UDP_LISTEN = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 9001))
print("ready", flush=True)
s.settimeout(float(sys.argv[1]))
try:
    print("got", s.recv(100), flush=True)
except TimeoutError:
    print("nothing", flush=True)
"""
UDP_SEND = """
import socket, sys
open(sys.argv[1] + "/cgroup.procs", "w").write("0")  # join the client's cgroup
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:
    s.sendto(b"PAYLOAD-UDP", (sys.argv[2], 9001))  # unconnected: the sendmsg hook
    print("sent")
except OSError as exc:
    print("refused", exc.errno)
"""


def _netns_python(pid: int, code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(["nsenter", "-t", str(pid), "-n", sys.executable, "-c", code,
                             *args], stdout=subprocess.PIPE, text=True)


def _cgroup_dir(pid: int) -> str:
    text = Path(f"/proc/{pid}/cgroup").read_text()
    path = next(line.split("::", 1)[1] for line in text.splitlines() if line.startswith("0::"))
    root = "/sys/fs/cgroup/unified" if Path("/sys/fs/cgroup/unified").is_dir() \
        else "/sys/fs/cgroup"
    return f"{root}{path}"


def test_an_unlearned_peer_is_refused_in_the_kernel(run_container: Any) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="roxd-netenf-"))
    sock = str(workdir / "roxd.sock")
    rp = start_roxd(workdir, "--print-alerts", config=CONFIG)
    try:
        rp.wait_ready()
        with ApiClient(sock) as api:
            status = api.get("/v1/status")
        assert status["features"]["cgroup_connect"]["available"], \
            status["features"]["cgroup_connect"]
        assert status["policy"]["network_enforcement"]["effective"] == \
            "refuse in kernel (EPERM)"
        server = run_container(SERVER)
        server.reload()
        ip = server.attrs["NetworkSettings"]["IPAddress"]
        client = run_container("sleep 600")
        client.reload()

        def run(cmd: str) -> tuple[int, bytes]:
            res = client.exec_run(["sh", "-c", cmd])
            return res.exit_code, res.output

        def talk(port: int) -> bytes:
            return run(f"nc -w 1 {ip} {port} </dev/null")[1]

        time.sleep(1.5)  # past the client's startup grace
        wait_until(lambda: b"hello" in talk(8080), 20, message="the server answers")
        # the loopback probe run later, learned too (the process baseline is enforced in
        # the same mode)
        run("nc -w 1 127.0.0.1 1 </dev/null")
        workload = wait_learned_then_locked(rp, sock, client.id, timeout=60)
        with ApiClient(sock) as api:
            api.post("/v1/baselines/mode", {"workload": workload, "mode": "enforce"})

        def enforced() -> bool:
            with ApiClient(sock) as api:
                return api.get("/v1/status")["policy"]["network_cgroups"] >= 1

        wait_until(enforced, 20, message="the client's cgroup in the hook's map")

        # the learned peer keeps working
        assert b"hello" in talk(8080)
        # an unlearned port on the same peer: refused before any packet leaves
        code, out = run(f"echo PAYLOAD-TCP | nc -w 2 {ip} 9000")
        assert code != 0 and b"not permitted" in out.lower(), (code, out)
        server_pid, client_pid = server.attrs["State"]["Pid"], client.attrs["State"]["Pid"]
        listener = _netns_python(server_pid, UDP_LISTEN, "4")
        assert listener.stdout is not None and listener.stdout.readline().strip() == "ready"
        sender = _netns_python(client_pid, UDP_SEND, _cgroup_dir(client_pid), ip)
        sent, _ = sender.communicate(timeout=20)
        heard, _ = listener.communicate(timeout=20)
        assert sent.strip() == "refused 1", sent  # EPERM from sendto
        assert heard.strip() == "nothing", heard
        # loopback is the container itself: never refused (nothing listens: ECONNREFUSED)
        code, out = run("nc -w 1 127.0.0.1 1 </dev/null")
        assert b"not permitted" not in out.lower(), out

        alert = rp.wait_for(lambda o: o.get("type") == "alert"
                            and o["rule"]["id"] == "baseline.new-network-peer"
                            and (o.get("container") or {}).get("id") == client.id
                            and "tcp/9000" in o["event"]["baseline"]["element"],
                            timeout=20, message="the network anomaly, blocked")
        block = [a for a in alert["actions"] if a["action"] == "block"]
        assert block and block[0]["outcome"] == "done" and block[0]["in_kernel"], \
            alert["actions"]
        assert alert["event"]["connect"]["errno"] == 1  # EPERM, as the client saw it
        # the refused UDP sendto: no tracepoint saw it, the hook's verdict becomes the event
        udp = rp.wait_for(lambda o: o.get("type") == "alert"
                          and o["rule"]["id"] == "baseline.new-network-peer"
                          and (o.get("container") or {}).get("id") == client.id
                          and "udp/9001" in o["event"]["baseline"]["element"],
                          timeout=20, message="the refused UDP send, alerted")
        assert any(a["action"] == "block" and a["outcome"] == "done" and a["in_kernel"]
                   for a in udp["actions"]), udp["actions"]

        # nothing reached the listeners: both still wait for their first peer, files empty
        time.sleep(1.0)
        got = server.exec_run(["sh", "-c", "cat /tmp/got9000; echo END"]).output
        assert got.strip() == b"END", got
        procs = server.exec_run(["ps"]).output.decode()
        assert "nc -l -p 9000" in procs, procs

        with ApiClient(sock) as api:
            status = api.get("/v1/status")
            metrics = api.get("/v1/metrics")  # text: returned as str
        kernel = status["policy"]["network_kernel"]
        assert kernel["refused_connect"] >= 1 and kernel["refused_sendmsg"] >= 1, kernel
        assert kernel["allowed"] >= 1, kernel
        assert "block: in-kernel" in \
            status["rules"]["effective_actions"]["baseline.new-network-peer"]
        assert 'roxd_network_baseline_refused_total{op="sendmsg"}' in metrics
        # the baselines' own counts: the client's workload is locked and enforcing
        learned = status["baselines"]
        assert learned["workloads_locked"] >= 1 and learned["workloads_enforcing"] >= 1, learned
        assert learned["anomalies"] >= 1, learned
        assert 'roxd_baseline_workloads{state="enforcing"}' in metrics

        # break-glass: the workload is exempt (alerted, not refused) until it is ended
        def ctl(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "roxd.ctl", "--socket", sock, *args],
                                  capture_output=True, text=True, timeout=90, cwd=REPO)

        shown = ctl("status")
        assert shown.returncode == 0 and "enforcing" in shown.stdout, shown.stdout
        assert any(line.startswith("baselines") for line in shown.stdout.splitlines()), \
            shown.stdout

        granted = ctl("baselines", "breakglass", workload, "--for", "10m", "--reason",
                      "incident 42")
        assert granted.returncode == 0, granted.stderr
        wait_until(lambda: not enforced(), 20, message="the client's cgroup out of the hook")
        code, out = run("nc -w 1 127.0.0.2 1 </dev/null; nc -w 1 " + ip + " 9002 </dev/null")
        assert b"not permitted" not in out.lower(), out  # refused by nobody but the peer
        audit = rp.wait_for(lambda o: o.get("type") == "alert"
                            and o["rule"]["id"] == "baseline.breakglass"
                            and o["event"]["syscall"]["args"]["change"] == "granted",
                            timeout=20, message="the break-glass audit alert")
        assert audit["event"]["syscall"]["args"]["workload"] == workload
        assert audit["event"]["syscall"]["args"]["reason"] == "incident 42"
        shown = ctl("baselines", "show", workload)
        assert "break-glass" in shown.stdout and "incident 42" in shown.stdout, shown.stdout
        missing = ctl("baselines", "breakglass", workload)
        assert missing.returncode == 1 and "--for" in missing.stderr
        assert ctl("baselines", "breakglass", workload, "--for", "0s").returncode == 0
        wait_until(enforced, 20, message="enforced again once the break-glass ended")
        code, out = run(f"nc -w 1 {ip} 9002 </dev/null")
        assert b"not permitted" in out.lower(), out
        rp.wait_for(lambda o: o.get("type") == "alert" and o["rule"]["id"] ==
                    "baseline.breakglass" and o["event"]["syscall"]["args"]["change"] == "ended",
                    timeout=20, message="the end of the break-glass audited")
    finally:
        rp.stop()
    # stopped: the hook is gone with roxd, the same connect goes through again
    code, out = client.exec_run(["sh", "-c", f"nc -w 1 {ip} 8080 </dev/null"])
    assert b"hello" in out


def _hook_programs(pid: int) -> set[int]:
    """Ids of the cgroup connect hook's programs that process `pid` holds (its fds' fdinfo:
    program fds and link fds both name a prog_id)."""
    held = set()
    for info in Path(f"/proc/{pid}/fdinfo").iterdir():
        try:
            text = info.read_text()
        except OSError:
            continue
        held |= {int(line.split()[1]) for line in text.splitlines()
                 if line.startswith("prog_id:")}
    out = subprocess.run(["bpftool", "--json", "prog", "show"], capture_output=True,
                         text=True, check=True).stdout
    return {p["id"] for p in json.loads(out)
            if p.get("name", "").startswith("netenf_") and p["id"] in held}


def test_the_hook_goes_away_with_a_killed_roxd() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="roxd-netenf-kill-"))
    rp = start_roxd(workdir, config=CONFIG)
    try:
        rp.wait_ready()
        programs = _hook_programs(rp.proc.pid)
        assert len(programs) == 4, programs  # connect4/6, sendmsg4/6
        linked = subprocess.run(["bpftool", "--json", "link", "show"], capture_output=True,
                                text=True, check=True).stdout
        assert programs <= {x.get("prog_id") for x in json.loads(linked)}
    finally:
        rp.proc.send_signal(signal.SIGKILL)  # no chance to detach: the links die with it
        rp.proc.wait(timeout=30)

    def gone() -> bool:
        out = subprocess.run(["bpftool", "--json", "prog", "show"], capture_output=True,
                             text=True, check=True).stdout
        return not programs & {p["id"] for p in json.loads(out)}

    wait_until(gone, 20, message="the hook's programs freed after SIGKILL")
