"""Private container runtimes for the attribution tests: a containerd of the tests' own (own
root, state, socket and config; the shared dockerd's containerd is never touched) and
podman's API service on a private socket. Images come from the offline test images
(`docker save` | import); nothing is pulled. Everything started here is stopped by its pid,
and every cgroup directory it made is removed."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import IMAGE, wait_until
from tests.containerd_private import containerd_process

CGROUP_FS = "/sys/fs/cgroup"
CTR_IMAGE = f"docker.io/{IMAGE}"  # how `ctr images import` names a `docker save` of IMAGE
PODMAN_IMAGE = f"localhost/{IMAGE}"
# podman on this kind of host (no systemd as pid 1, a hard RLIMIT_NOFILE/NPROC below podman's
# defaults): the cgroupfs manager, file events, and rlimits within the caller's
PODMAN = ["podman", "--cgroup-manager=cgroupfs", "--events-backend=file"]
PODMAN_RUN_LIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]


def _hierarchies() -> list[Path]:
    """Every mounted cgroup hierarchy (v1 controllers and the unified one): runc's cgroupfs
    driver makes a container's directories in each."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            if fields[sep + 1] in ("cgroup", "cgroup2"):
                out.append(Path(fields[4]))
    return out


@dataclass
class CgroupDirs:
    """Parent cgroup directories a test's containers will create (/kubepods/besteffort/pod<u>,
    /default, ...): the ones that did not exist before are removed at the end, deepest first."""

    rel: list[str]
    existed: set[Path] = field(default_factory=set)

    def __post_init__(self) -> None:
        for root in _hierarchies():
            for rel in self.rel:
                d = root / rel.strip("/")
                if d.exists():
                    self.existed.add(d)

    def remove(self, timeout: float = 10.0) -> None:
        """rmdir, deepest first, what the test's runtimes left below the directories that
        did not exist before (a cgroup with a process in it refuses: never forced)."""
        def leftovers() -> list[Path]:
            out = []
            for root in _hierarchies():
                for rel in self.rel:
                    d = root / rel.strip("/")
                    if d not in self.existed and d.is_dir():
                        out.extend(Path(p) for p, _, _ in os.walk(d))
            return sorted(set(out), key=lambda p: -len(p.parts))

        def sweep() -> bool:
            for d in leftovers():
                with contextlib.suppress(OSError):
                    d.rmdir()
            return not leftovers()

        with contextlib.suppress(AssertionError):  # a runtime still tearing down: best effort
            wait_until(sweep, timeout, interval=0.2, message="test cgroups removed")


@dataclass
class PrivateContainerd:
    root: Path
    proc: subprocess.Popen[bytes]

    @property
    def socket(self) -> str:
        return str(self.root / "containerd.sock")

    def ctr(self, namespace: str, *args: str, check: bool = True,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(["ctr", "--address", self.socket, "-n", namespace, *args],
                              capture_output=True, text=True, timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise AssertionError(f"ctr {' '.join(args)}: {done.stderr.strip()}")
        return done

    def remove_all(self) -> None:
        for ns in self.ctr("default", "namespaces", "ls", "-q", check=False).stdout.split():
            for cid in self.ctr(ns, "containers", "ls", "-q", check=False).stdout.split():
                self.ctr(ns, "tasks", "kill", "-s", "SIGKILL", cid, check=False)
                wait_until(lambda ns=ns, cid=cid: self.ctr(ns, "tasks", "rm", "-f", cid,
                                                           check=False).returncode == 0
                           or cid not in self.ctr(ns, "tasks", "ls", "-q",
                                                  check=False).stdout.split(),
                           10, message=f"task {cid} deleted")
                self.ctr(ns, "containers", "rm", cid, check=False)


@contextlib.contextmanager
def private_containerd(workdir: Path, image_tar: Path,
                       namespaces: tuple[str, ...] = ("k8s.io", "default")
                       ) -> Iterator[PrivateContainerd]:
    with containerd_process(workdir, workdir / "containerd.sock") as proc:
        ctd = PrivateContainerd(workdir, proc)
        try:
            for ns in namespaces:
                ctd.ctr(ns, "images", "import", str(image_tar), timeout=120)
            yield ctd
        finally:
            with contextlib.suppress(Exception):
                ctd.remove_all()


@dataclass
class PodmanService:
    socket: str
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"


@contextlib.contextmanager
def podman_service(socket: str) -> Iterator[PodmanService]:
    """`podman system service` on a socket of the test's own; stopped by its pid."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(socket)
    proc = subprocess.Popen([*PODMAN, "system", "service", "--time=0", f"unix://{socket}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: os.path.exists(socket) or proc.poll() is not None, 30,
                   message="podman's API socket")
        assert proc.poll() is None, "podman system service exited"
        time.sleep(0.2)  # the socket exists a moment before the service accepts on it
        yield PodmanService(socket, proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(socket)
