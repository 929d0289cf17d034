"""What this host's kernel and userland offer roxd, probed at start and reported.

Every enforcement decision consults these facts, so that roxd never claims to block what it
can only alert on. Each probe is cheap, side-effect free, and says how it decided.
"""

from __future__ import annotations

import platform
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from roxd.sensor.tracefs import tracefs_root

if TYPE_CHECKING:
    from roxd.runtime import ContainerRuntime


@dataclass(frozen=True)
class Feature:
    available: bool
    detail: str


@dataclass(frozen=True)
class Features:
    kernel: str
    btf: Feature
    tracefs: Feature
    ringbuf: Feature
    send_signal: Feature
    bpf_lsm: Feature
    seccomp: Feature
    nftables: Feature
    cgroup2: Feature
    docker: Feature
    # the cgroup connect hook (bpf/netenf.bpf.c): probed by loading and linking it once the
    # sensor is up (roxd/policy/netenf_kernel.py); until then, and when refused, alert only
    cgroup_connect: Feature = field(default_factory=lambda: Feature(
        False, "not probed (the sensor has not started)"))

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def summary(self) -> str:
        parts = []
        for name, value in asdict(self).items():
            if isinstance(value, dict):
                parts.append(f"{name}={'yes' if value['available'] else 'no'}")
        return f"kernel {self.kernel}: " + " ".join(parts)


def _kernel_at_least(release: str, major: int, minor: int) -> bool:
    match = re.match(r"(\d+)\.(\d+)", release)
    if not match:
        return False
    return (int(match.group(1)), int(match.group(2))) >= (major, minor)


def _active_lsms() -> str | None:
    """The active LSM list from securityfs. When the host has not mounted securityfs, it is
    mounted read-only on a temporary directory for this one read and detached again."""
    lsm_file = Path("/sys/kernel/security/lsm")
    if lsm_file.exists():
        return lsm_file.read_text().strip()
    import ctypes
    import tempfile

    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    with tempfile.TemporaryDirectory(prefix="roxd-securityfs-") as where:
        if libc.mount(b"securityfs", where.encode(), b"securityfs", 1, None) != 0:  # MS_RDONLY
            return None
        try:
            return (Path(where) / "lsm").read_text().strip()
        except OSError:
            return None
        finally:
            libc.umount2(where.encode(), 2)  # MNT_DETACH


def _probe_bpf_lsm() -> Feature:
    lsms = _active_lsms()
    if lsms is None:
        return Feature(False, "securityfs unavailable; cannot tell which LSMs are active")
    return Feature("bpf" in lsms.split(","), f"active LSMs: {lsms}")


def _probe_cgroup2() -> Feature:
    from roxd.containers.cgroups import find_cgroup2_mount
    from roxd.errors import CgroupError

    try:
        mount = find_cgroup2_mount()
    except CgroupError as exc:
        return Feature(False, str(exc))
    layout = "unified (v2 only)" if mount.mount_point == "/sys/fs/cgroup" else "hybrid (v1 + v2)"
    return Feature(True, f"{mount.mount_point}, {layout}")


def _probe_docker(runtime: ContainerRuntime) -> Feature:
    if not runtime.configured:
        return Feature(False, "no Docker engine configured (containers.docker_url)")
    url = runtime.url
    try:
        version = runtime.version()
    except Exception as exc:  # any failure means: not reachable now (it may come later)
        cause = exc.__cause__ or exc
        return Feature(False, f"{url} not reachable at start: {type(cause).__name__}")
    return Feature(True, f"{url}: {runtime.label} {version}")


def probe(docker_url: str | None = None, *, runtime: ContainerRuntime | None = None) -> Features:
    """The host's features. The container runtime is asked through `runtime` (the daemon's
    shared one); `docker_url` (the old form) builds a short-lived one with a 3 s timeout."""
    if runtime is None:
        from roxd.runtime import DockerRuntime, NoRuntime

        owned: ContainerRuntime = (DockerRuntime(docker_url, timeout=3) if docker_url
                                   else NoRuntime())
        try:
            return probe(runtime=owned)
        finally:
            owned.close()
    release = platform.release()
    btf = Path("/sys/kernel/btf/vmlinux").exists()
    tracefs = tracefs_root()
    bpf_lsm = _probe_bpf_lsm()
    seccomp_actions = Path("/proc/sys/kernel/seccomp/actions_avail")
    if seccomp_actions.exists():
        actions = seccomp_actions.read_text().split()
        seccomp = Feature("kill_process" in actions and "errno" in actions,
                          "actions: " + " ".join(actions))
    else:
        seccomp = Feature(False, "no /proc/sys/kernel/seccomp (kernel without CONFIG_SECCOMP)")
    try:
        import nftables  # noqa: F401  (Debian python3-nftables)

        nft = Feature(True, "libnftables Python binding importable")
    except ImportError:
        nft = Feature(False, "python3-nftables not installed")
    return Features(
        kernel=release,
        btf=Feature(btf, "/sys/kernel/btf/vmlinux" if btf else "no kernel BTF"),
        tracefs=Feature(tracefs is not None, str(tracefs) if tracefs else "not mounted"),
        ringbuf=Feature(_kernel_at_least(release, 5, 8), "BPF ring buffer needs Linux 5.8"),
        send_signal=Feature(_kernel_at_least(release, 5, 3),
                            "bpf_send_signal needs Linux 5.3"),
        bpf_lsm=bpf_lsm,
        seccomp=seccomp,
        nftables=nft,
        cgroup2=_probe_cgroup2(),
        docker=_probe_docker(runtime),
    )
