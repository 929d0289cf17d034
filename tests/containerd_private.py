"""A private containerd for tests: its own root, state and socket under /tmp, never the
containerd the shared dockerd uses. Started from Debian's containerd package; stopped, its
containers removed and its directory deleted at the end.

containerd_process() is the process alone (config, start, readiness, stop, unmount, removal),
shared with tests/kernel/runtimes_fixtures.py's containerd of several namespaces."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import wait_until

NS = "roxdtest"  # the containerd namespace of the tests

CONFIG = """version = 2
root = "{base}/root"
state = "{base}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
"""


@dataclass
class PrivateContainerd:
    base: Path
    proc: subprocess.Popen[bytes]

    @property
    def sock(self) -> str:
        return str(self.base / "c.sock")

    def ctr(self, *args: str, check: bool = True, timeout: float = 60,
            input: bytes | None = None) -> subprocess.CompletedProcess[str]:
        if input is not None:
            done = subprocess.run(["ctr", "-a", self.sock, "-n", NS, *args], input=input,
                                  capture_output=True, check=check, timeout=timeout)
            return subprocess.CompletedProcess(done.args, done.returncode,
                                               done.stdout.decode(errors="replace"),
                                               done.stderr.decode(errors="replace"))
        return subprocess.run(["ctr", "-a", self.sock, "-n", NS, *args], capture_output=True,
                              text=True, check=check, timeout=timeout)

    def import_docker_image(self, image: str) -> str:
        """`docker save` of a local image into this containerd; its reference here."""
        saved = subprocess.run(["docker", "save", image], capture_output=True, check=True)
        self.ctr("images", "import", "-", input=saved.stdout, timeout=300)
        return f"docker.io/{image}" if "/" in image.split(":")[0] else f"docker.io/library/{image}"

    def task_status(self, cid: str) -> str:
        for line in self.ctr("task", "ls", check=False).stdout.splitlines():
            if line.startswith(cid + " ") or line.split()[:1] == [cid]:
                return line.split()[-1]
        return "GONE"

    def task_pid(self, cid: str) -> int:
        for line in self.ctr("task", "ls").stdout.splitlines():
            if line.split()[:1] == [cid]:
                return int(line.split()[1])
        return 0

    def remove(self, cid: str) -> None:
        self.ctr("task", "kill", "-s", "SIGKILL", cid, check=False)
        with contextlib.suppress(AssertionError):
            wait_until(lambda: self.task_status(cid) in ("STOPPED", "GONE"), 10)
        self.ctr("task", "rm", "-f", cid, check=False)
        self.ctr("containers", "rm", cid, check=False)


@contextlib.contextmanager
def containerd_process(base: Path, sock: Path, *,
                       new_session: bool = False) -> Iterator[subprocess.Popen[bytes]]:
    """containerd with its root, state, sockets, config and log under `base` (no CRI plugin:
    it would want CNI and start its own streaming server), answering `ctr version` on `sock`.
    On the way out: SIGTERM (SIGKILL after 20 s), the snapshot mounts a killed containerd may
    leave under `base` unmounted (never anything outside it), and `base` removed."""
    base.mkdir(parents=True, exist_ok=True)
    config = base / "config.toml"
    config.write_text(CONFIG.format(base=base, sock=sock))
    log = (base / "containerd.log").open("wb")
    proc = subprocess.Popen(["containerd", "--config", str(config)], stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=new_session)
    try:
        wait_until(lambda: proc.poll() is not None or subprocess.run(
            ["ctr", "--address", str(sock), "version"], capture_output=True,
            check=False).returncode == 0, 30, message="private containerd to answer")
        assert proc.poll() is None, (base / "containerd.log").read_text()[-2000:]
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        _unmount_under(base)
        shutil.rmtree(base, ignore_errors=True)


def _unmount_under(path: Path) -> None:
    prefix = str(path.resolve()) + "/"
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


@contextlib.contextmanager
def private_containerd() -> Iterator[PrivateContainerd]:
    if shutil.which("containerd") is None or shutil.which("ctr") is None:
        raise AssertionError("containerd missing (Debian's containerd package: docker.io "
                             "depends on it; scripts/setup.sh installs it)")
    base = Path(tempfile.mkdtemp(prefix="roxd-ctrd-", dir="/tmp"))
    with containerd_process(base, base / "c.sock", new_session=True) as proc:
        ctrd = PrivateContainerd(base, proc)
        try:
            yield ctrd
        finally:
            for cid in ctrd.ctr("containers", "ls", "-q", check=False).stdout.split():
                ctrd.remove(cid)
