"""Issue 18 (enforcement without Docker) and issue 23 item 9 (quarantine tampering), on real
parts: a private containerd (its own root, state and socket; never the one the shared dockerd
uses) runs a container dockerd does not know, with the cgroup path the kubelet gives a pod's
container; roxd, with no runtime API configured at all, quarantines it through the network
namespace of its processes and kills it through cgroup.kill. Containers sharing a network
namespace are quarantined together; a container with NET_ADMIN that deletes or changes its
quarantine table is caught by the periodic check, re-quarantined and alerted on."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from roxd.containers.cgroups import find_cgroup2_mount
from roxd.enforce.cgroups import ContainerCgroups
from roxd.enforce.quarantine import Quarantine
from tests.conftest import IMAGE, REPO, RoxdProcess, start_roxd, wait_until
from tests.containerd_private import PrivateContainerd, private_containerd
from tests.kernel.test_enforce import ISOLATE_RULE  # the Docker test's rule, unchanged

pytestmark = pytest.mark.kernel

KILL_CONTAINER_RULE = """
[[rule]]
id = "test.kill-container-on-marker"
name = "Kill the container on marker"
description = "Test rule: a container that runs the marker command line is killed whole."
phase = "objectives"
severity = "critical"
mitre = ["T1496"]
event = "exec"
actions = ["alert", "kill"]
kill_target = "container"
[rule.when]
cmdline = { contains = ["roxd-kill-me"] }
[rule.scope]
host = false
"""

# roxd without any runtime API: everything below must work from cgroups and /proc alone
NO_RUNTIME_CONFIG = ("[daemon]\nstats_interval_s = 1.0\n[containers]\ndocker_url = \"\"\n"
                     "[enforce]\nreconcile_interval_s = 1.0\n")
CHECK_CONFIG = "[daemon]\nstats_interval_s = 1.0\n[enforce]\nreconcile_interval_s = 1.0\n"


def _rules(tmp_path: Path, text: str) -> Path:
    d = tmp_path / f"rules-{uuid.uuid4().hex[:6]}"
    d.mkdir()
    (d / "test.toml").write_text(text)
    return d


def _roxctl(roxd: RoxdProcess, *args: str) -> subprocess.CompletedProcess[str]:
    sock = roxd.proc.args[roxd.proc.args.index("--socket") + 1]
    return subprocess.run([roxd.proc.args[0], "-m", "roxd.ctl", "--socket", sock, *args],
                          capture_output=True, text=True, cwd=REPO, timeout=60)


# ---------------------------------------------------------------------------- containerd


@pytest.fixture(scope="module")
def containerd(docker_engine: Any) -> Iterator[PrivateContainerd]:
    with private_containerd() as ctrd:
        ctrd.import_docker_image(IMAGE)
        yield ctrd


@dataclass
class CtrContainer:
    id: str
    pod_uid: str
    pid: int
    ctrd: PrivateContainerd

    def exec(self, command: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return self.ctrd.ctr("task", "exec", "--exec-id", uuid.uuid4().hex[:12], self.id,
                             "/bin/sh", "-c", command, check=False, timeout=timeout)

    def status(self) -> str:
        return self.ctrd.task_status(self.id)


def _cgroup_dirs_of_pod(pod_uid: str) -> list[Path]:
    return [Path(h) / "kubepods" / "besteffort" / f"pod{pod_uid}"
            for h in map(str, Path("/sys/fs/cgroup").iterdir())]


@pytest.fixture
def ctr_container(containerd: PrivateContainerd) -> Iterator[Any]:
    """Run a containerd container (not known to dockerd) under the cgroup path the kubelet
    gives a pod's container (cgroupfs driver): /kubepods/besteffort/pod<uid>/<id>."""
    made: list[CtrContainer] = []

    def run(command: str = "sleep 600") -> CtrContainer:
        cid = uuid.uuid4().hex + uuid.uuid4().hex
        pod = str(uuid.uuid4())
        containerd.ctr("run", "-d", "--null-io", "--cgroup",
                       f"/kubepods/besteffort/pod{pod}/{cid}",
                       f"docker.io/{IMAGE}", cid, "/bin/sh", "-c", command)
        pid = containerd.task_pid(cid)
        assert pid > 0
        c = CtrContainer(cid, pod, pid, containerd)
        made.append(c)
        return c

    yield run
    for c in made:
        containerd.remove(c.id)
        for pod_dir in _cgroup_dirs_of_pod(c.pod_uid):
            for d in (pod_dir, pod_dir.parent, pod_dir.parent.parent):
                with contextlib.suppress(OSError):
                    d.rmdir()  # only when empty: another test's pods may be there


# ---------------------------------------------------------------------------- a peer


@dataclass
class Peer:
    """A network namespace the test made, joined to a container's namespace by a veth pair,
    with a TCP server that answers "hello" (busybox nc)."""

    netns: str
    address: str
    server: subprocess.Popen[bytes]


@pytest.fixture
def veth_peer() -> Iterator[Any]:
    made: list[Peer] = []

    def attach(pid: int) -> Peer:
        n = len(made) + 1
        name = f"roxdk8s-{uuid.uuid4().hex[:8]}"
        subprocess.run(["ip", "netns", "add", name], check=True)
        subnet = f"10.231.{os.getpid() % 200 + n}"
        here, there = f"rk{uuid.uuid4().hex[:8]}", f"rc{uuid.uuid4().hex[:8]}"
        # both ends are created straight in namespaces the test made: the host's never
        # holds either
        subprocess.run(["ip", "-n", name, "link", "add", here, "type", "veth", "peer", "name",
                        there, "netns", str(pid)], check=True)
        subprocess.run(["ip", "-n", name, "addr", "add", f"{subnet}.1/30", "dev", here],
                       check=True)
        subprocess.run(["ip", "-n", name, "link", "set", here, "up"], check=True)
        for cmd in (["ip", "addr", "add", f"{subnet}.2/30", "dev", there],
                    ["ip", "link", "set", there, "up"]):
            subprocess.run(["nsenter", "-t", str(pid), "-n", *cmd], check=True)
        server = subprocess.Popen(
            ["ip", "netns", "exec", name, "/bin/busybox", "sh", "-c",
             "while true; do /bin/busybox nc -l -p 8080 -e /bin/busybox echo hello; done"],
            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        peer = Peer(name, f"{subnet}.1", server)
        made.append(peer)
        return peer

    yield attach
    for p in made:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.server.pid, signal.SIGKILL)
        p.server.wait()
        subprocess.run(["ip", "netns", "del", p.netns], check=False)


def _ctr_reaches(c: CtrContainer, peer: Peer) -> bool:
    out = c.exec(f"nc -w 2 {peer.address} 8080 </dev/null")
    return out.returncode == 0 and "hello" in out.stdout


# ---------------------------------------------------------------------------- tests


def test_containerd_container_quarantined_and_released_without_any_runtime_api(
        roxd_factory: Any, ctr_container: Any, veth_peer: Any, tmp_path: Path) -> None:
    c = ctr_container()
    peer = veth_peer(c.pid)
    wait_until(lambda: _ctr_reaches(c, peer), 20, message="peer reachable before quarantine")
    roxd = roxd_factory(rules=[_rules(tmp_path, ISOLATE_RULE)], config=NO_RUNTIME_CONFIG)
    c.exec("echo roxd-isolate-me")
    alert = roxd.wait_for(lambda o: o.get("type") == "alert"
                          and o["rule"]["id"] == "test.isolate-on-marker", timeout=20,
                          message="isolate alert")
    assert alert["container"]["id"] == c.id and alert["container"]["runtime"] == "containerd"
    isolate = next(x for x in alert["actions"] if x["action"] == "isolate")
    assert isolate["outcome"] == "done", isolate
    # from inside the container: the peer it reached a moment ago is cut off
    assert not _ctr_reaches(c, peer)
    shown = _roxctl(roxd, "--json", "containers", c.id)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["quarantine"] is not None, shown.stdout
    released = _roxctl(roxd, "release", c.id)
    assert released.returncode == 0, released.stderr
    wait_until(lambda: _ctr_reaches(c, peer), 20, message="peer reachable after release")


def test_containerd_container_killed_through_cgroup_kill(
        roxd_factory: Any, ctr_container: Any, tmp_path: Path) -> None:
    c = ctr_container("sleep 600 & sleep 600 & wait")
    roxd = roxd_factory(rules=[_rules(tmp_path, KILL_CONTAINER_RULE)], config=NO_RUNTIME_CONFIG)
    c.exec("echo roxd-kill-me")
    alert = roxd.wait_for(lambda o: o.get("type") == "alert"
                          and o["rule"]["id"] == "test.kill-container-on-marker", timeout=20,
                          message="kill alert")
    kill = next(x for x in alert["actions"] if x["action"] == "kill")
    assert kill["outcome"] == "done" and "cgroup.kill" in kill["reason"], kill
    wait_until(lambda: c.status() == "STOPPED", 10, message="the containerd task to stop")
    root = find_cgroup2_mount().mount_point
    leaf = Path(root) / "kubepods" / "besteffort" / f"pod{c.pod_uid}" / c.id
    assert not leaf.exists() or not (leaf / "cgroup.procs").read_text().split()


def test_cgroup_kill_refuses_a_cgroup_holding_a_protected_process(tmp_path: Path) -> None:
    """roxd deployed as a container: a container kill must never reach roxd's own cgroup.
    Here a process of the test stands for roxd, in a kubepods-shaped cgroup of its own."""
    from roxd.enforce.cgroups import CgroupKillError
    from roxd.enforce.protect import ProtectedProcesses

    root = Path(find_cgroup2_mount().mount_point)
    cid = uuid.uuid4().hex + uuid.uuid4().hex
    pod = root / "kubepods" / "besteffort" / f"pod{uuid.uuid4()}"
    leaf = pod / cid
    leaf.mkdir(parents=True)
    child = subprocess.Popen(["sleep", "600"])
    try:
        (leaf / "cgroup.procs").write_text(str(child.pid))
        cgroups = ContainerCgroups(str(root))
        assert cgroups.pids(cid) == [child.pid]

        @dataclass(frozen=True)
        class StandsForRoxd(ProtectedProcesses):
            def reason(self, pid: int, *, container: bool | None = None) -> str | None:
                return "roxd itself" if pid == child.pid else None

        with pytest.raises(CgroupKillError, match="protected process"):
            cgroups.kill(cid, StandsForRoxd())
        assert child.poll() is None, "the protected process was killed"
        done = cgroups.kill(cid, ProtectedProcesses())
        assert done.processes == 1 and done.emptied
        assert child.wait(5) == -signal.SIGKILL
    finally:
        with contextlib.suppress(ProcessLookupError):
            child.kill()
        child.wait()
        wait_until(lambda: not (leaf / "cgroup.procs").read_text().split(), 5)
        for d in (leaf, pod, pod.parent, pod.parent.parent):
            with contextlib.suppress(OSError):
                d.rmdir()


def _reach(container: Any, ip: str) -> bool:
    result = container.exec_run(["sh", "-c", f"nc -w 2 {ip} 8080 </dev/null"])
    return result.exit_code == 0 and b"hello" in result.output


@pytest.fixture(scope="module")
def isolating_roxd(tmp_path_factory: pytest.TempPathFactory,
                   docker_engine: Any) -> Iterator[RoxdProcess]:
    """One roxd with the isolate rule and 1 s quarantine checks for the four tests below
    (one eBPF compile instead of four). Each test waits only for its own containers' alerts
    and reads only its own containers' quarantine records; the rule fires only on a marker
    the test runs itself, so the roxd touches nothing else. Started after the containerd
    tests, which run the same marker under a roxd of their own."""
    rules = _rules(tmp_path_factory.mktemp("isolate-rules"), ISOLATE_RULE)
    rp = start_roxd(tmp_path_factory.mktemp("roxd-isolating"), rules=[rules],
                    config=CHECK_CONFIG)
    try:
        rp.wait_ready()
        yield rp
    finally:
        rp.stop()


def _alert_in(rule_id: str, container: Any) -> Any:
    def predicate(o: dict[str, Any]) -> bool:
        return (o.get("type") == "alert" and o["rule"]["id"] == rule_id
                and (o.get("container") or {}).get("id") == container.id)
    return predicate


def test_containers_sharing_a_netns_are_quarantined_together(
        isolating_roxd: RoxdProcess, run_container: Any) -> None:
    server = run_container("while true; do nc -l -p 8080 -e /bin/echo hello; done")
    holder = run_container("sleep 600")
    sidecar = run_container("sleep 600", network_mode=f"container:{holder.id}")
    server.reload()
    ip = server.attrs["NetworkSettings"]["IPAddress"]
    wait_until(lambda: _reach(sidecar, ip), 20, message="server reachable before quarantine")
    roxd = isolating_roxd
    sidecar.exec_run(["sh", "-c", "echo roxd-isolate-me"])
    alert = roxd.wait_for(_alert_in("test.isolate-on-marker", sidecar), timeout=20,
                          message="isolate alert")
    isolate = next(x for x in alert["actions"] if x["action"] == "isolate")
    assert isolate["outcome"] == "done", isolate
    assert "quarantined together with 1 other" in isolate["reason"], isolate
    assert holder.id[:12] in isolate["reason"]
    assert not _reach(holder, ip) and not _reach(sidecar, ip)
    # both are listed as quarantined; releasing one releases the namespace of both
    state_dir = Path(roxd.proc.args[roxd.proc.args.index("--state-dir") + 1])
    mine = {sidecar.id, holder.id}  # the module's roxd may still list an earlier test's

    def saved_here() -> list[dict[str, Any]]:
        return [r for r in json.loads((state_dir / "quarantine.json").read_text())
                ["quarantined"] if r["container_id"] in mine]
    saved = saved_here()
    assert {r["container_id"] for r in saved} == mine
    assert next(r for r in saved if r["container_id"] == holder.id)["shared_with"] == [sidecar.id]
    released = _roxctl(roxd, "release", holder.name)
    assert released.returncode == 0, released.stderr
    wait_until(lambda: _reach(sidecar, ip), 20, message="both reachable after release")
    assert _reach(holder, ip)
    assert saved_here() == []
    # the operator's isolate says so too, and `roxctl containers` shows both quarantined
    again = _roxctl(roxd, "--json", "isolate", sidecar.name)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["quarantined_with"] == [holder.id]
    shown = json.loads(_roxctl(roxd, "--json", "containers", holder.name).stdout)
    assert shown["mode"] == "quarantined" and shown["quarantine"]["shared_with"] == [sidecar.id]
    assert not _reach(holder, ip)
    assert _roxctl(roxd, "release", sidecar.name).returncode == 0
    wait_until(lambda: _reach(holder, ip), 20, message="holder reachable after release")


def test_quarantine_finds_the_namespace_from_cgroups_when_the_runtime_has_no_answer(
        run_container: Any, tmp_path: Path) -> None:
    server = run_container("while true; do nc -l -p 8080 -e /bin/echo hello; done")
    client = run_container("sleep 600")
    server.reload()
    ip = server.attrs["NetworkSettings"]["IPAddress"]
    wait_until(lambda: _reach(client, ip), 20, message="server reachable")
    cgroups = ContainerCgroups.from_host()
    assert cgroups is not None
    q = Quarantine(tmp_path, pid_of=lambda _cid: None, exists=lambda _cid: False,
                   cgroups=cgroups)
    q.isolate(client.id, client.name, "test")
    assert not _reach(client, ip)
    assert q.reconcile() == []  # cgroup present: kept, and the table is intact
    assert q.release(client.id)
    assert _reach(client, ip)


# ---------------------------------------------------------------------------- tampering

NFT_MOUNTS = {
    "/usr/sbin/nft": {"bind": "/usr/sbin/nft", "mode": "ro"},
    "/lib/x86_64-linux-gnu": {"bind": "/lib/x86_64-linux-gnu", "mode": "ro"},
    "/usr/lib/x86_64-linux-gnu": {"bind": "/usr/lib/x86_64-linux-gnu", "mode": "ro"},
    "/lib64": {"bind": "/lib64", "mode": "ro"},
}


@pytest.mark.parametrize("attack", [
    "/usr/sbin/nft delete table inet roxd_quarantine",
    "/usr/sbin/nft insert rule inet roxd_quarantine input accept; "
    "/usr/sbin/nft insert rule inet roxd_quarantine output accept",
    "/usr/sbin/nft add chain inet roxd_quarantine output '{ policy accept; }'; "
    "/usr/sbin/nft flush chain inet roxd_quarantine output",
])
def test_net_admin_container_that_tampers_is_requarantined_and_alerted(
        attack: str, isolating_roxd: RoxdProcess, run_container: Any) -> None:
    server = run_container("while true; do nc -l -p 8080 -e /bin/echo hello; done")
    client = run_container("sleep 600", cap_add=["NET_ADMIN"], volumes=NFT_MOUNTS)
    server.reload()
    ip = server.attrs["NetworkSettings"]["IPAddress"]
    wait_until(lambda: _reach(client, ip), 20, message="server reachable before quarantine")
    roxd = isolating_roxd
    client.exec_run(["sh", "-c", "echo roxd-isolate-me"])
    roxd.wait_for(_alert_in("test.isolate-on-marker", client), timeout=20,
                  message="isolate alert")
    assert not _reach(client, ip)
    # the container, with NET_ADMIN in its own namespace, breaks out
    out = client.exec_run(["sh", "-c", attack])
    assert out.exit_code == 0, out.output
    alert = roxd.wait_for(_alert_in("roxd.quarantine-tampered", client), timeout=20,
                          message="tamper alert")
    assert alert["container"]["id"] == client.id
    assert alert["rule"]["phase"] == "objectives" and alert["rule"]["severity"] == "critical"
    isolate = next(x for x in alert["actions"] if x["action"] == "isolate")
    assert isolate["outcome"] == "done" and "re-applied" in isolate["reason"], isolate
    # re-applied: cut off again, and the table is exactly roxd's
    assert not _reach(client, ip)
    listing = client.exec_run(["/usr/sbin/nft", "list", "table", "inet", "roxd_quarantine"])
    assert listing.exit_code == 0 and b"accept" in listing.output
    assert listing.output.count(b"policy drop") == 2
    # one alert per tampering: the checks after the re-apply find the table intact
    stats = len(roxd.matching(lambda o: o.get("type") == "stats"))
    roxd.wait_for(lambda o: o.get("type") == "stats"
                  and len(roxd.matching(lambda x: x.get("type") == "stats")) >= stats + 3,
                  timeout=20, message="three more stats lines (two more quarantine checks)")
    assert len(roxd.matching(_alert_in("roxd.quarantine-tampered", client))) == 1


# ---------------------------------------------------------------------------- package removal


def test_package_removal_lifts_every_quarantine(run_container: Any, tmp_path: Path) -> None:
    """The deb's prerm runs `roxd --release-quarantines` on removal (not on upgrade): the
    tables live in the containers' namespaces and would outlive the package."""
    server = run_container("while true; do nc -l -p 8080 -e /bin/echo hello; done")
    a = run_container("sleep 600")
    b = run_container("sleep 600")
    server.reload()
    ip = server.attrs["NetworkSettings"]["IPAddress"]
    wait_until(lambda: _reach(a, ip) and _reach(b, ip), 20, message="server reachable")
    state = tmp_path / "state"
    q = Quarantine(state, pid_of=lambda _cid: None, exists=lambda _cid: True,
                   cgroups=ContainerCgroups.from_host())
    q.isolate(a.id, a.name, "test")
    q.isolate(b.id, b.name, "test")
    assert not _reach(a, ip) and not _reach(b, ip)
    config = tmp_path / "roxd.toml"
    config.write_text("[daemon]\nlog_level = \"info\"\n")
    wrapper = tmp_path / "roxd"  # the installed /usr/bin/roxd, for the tree under test
    wrapper.write_text(f"#!/bin/sh\nexec env PYTHONPATH={REPO} {sys.executable} -m roxd "
                       f"--config {config} --state-dir {state} \"$@\"\n")
    wrapper.chmod(0o755)
    prerm = REPO / "packaging/deb/debian/roxd.prerm"
    env = {**os.environ, "ROXD": str(wrapper)}
    upgrade = subprocess.run(["sh", str(prerm), "upgrade", "1.0"], env=env, capture_output=True,
                             text=True, timeout=60)
    assert upgrade.returncode == 0, upgrade.stderr
    assert not _reach(a, ip), "an upgrade lifted the quarantine"
    remove = subprocess.run(["sh", str(prerm), "remove"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert remove.returncode == 0, remove.stderr
    assert "2 quarantine table(s) released" in remove.stderr, remove.stderr
    wait_until(lambda: _reach(a, ip) and _reach(b, ip), 20, message="both free after removal")
    assert json.loads((state / "quarantine.json").read_text())["quarantined"] == []
    # the rpm runs the same command in %preun on removal ($1 = 0)
    spec = (REPO / "packaging/rpm/roxd.spec").read_text()
    preun = spec[spec.index("\n%preun"):spec.index("\n%postun")]
    assert "if [ $1 -eq 0 ]" in preun and "--release-quarantines" in preun
