"""Debian 12 roots and systemd-nspawn machines for the package tests.

- `base_root(packages)`: a debootstrap'd bookworm root with `packages` installed, cached under
  /var/cache/roxd-test/ (outside the repo) and keyed by a hash of suite, mirror and package
  list, so only the first run (or a change of the package's Depends) pays for debootstrap.
- `overlay_root(base)`: a writable overlay on the cached root for one test run; unmounted and
  removed afterwards, the cache stays untouched.
- `Machine`: the overlay booted with systemd as PID 1 in systemd-nspawn. Commands run inside
  through nsenter (this host's PID 1 is not systemd, so there is no machined and no
  `machinectl shell`/`systemd-run -M`).

Why the nspawn flags (found on this host: kernel 6.18, hybrid cgroups, PID 1 not systemd):
  --keep-unit --register=no   nspawn otherwise asks the host's systemd (over D-Bus) for a
                              scope unit and fails with "Failed to open system bus"
  --capability=all            roxd needs CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN, ...
  --system-call-filter=bpf perf_event_open
                              nspawn's seccomp filter refuses bpf() (map creation fails with
                              EPERM) and perf_event_open (tracepoint attach) by default
  --bind=/sys/kernel/tracing  the host's tracefs (nspawn mounts /sys read-only, no tracefs)
  --bind-ro=/usr/src, /usr/lib/linux-kbuild-*
                              Debian's linux-headers-*-amd64/-common from the host, so the root
                              needs no header packages (roxd assembles them in /var/cache/roxd)
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tests.conftest import wait_until

CACHE = Path(os.environ.get("ROXD_TEST_CACHE", "/var/cache/roxd-test"))
SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# what any booted root needs besides the package's own Depends (man-db: so that
# `systemd-analyze verify` can check the unit's Documentation=man:roxd(8))
BOOT_PACKAGES = ("systemd", "systemd-sysv", "dbus", "man-db")
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def wait_for(predicate: Callable[[], Any], timeout: float, what: str,
             interval: float = 0.25) -> Any:
    """Poll until predicate() is truthy; fail after timeout seconds naming what was awaited."""
    return wait_until(predicate, timeout, interval=interval, message=what)


# ---------------------------------------------------------------------------- the base root


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses (deb822 .sources or one-line sources.list)."""
    env = os.environ.get("ROXD_TEST_MIRROR")
    if env:
        return env
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        for stanza in Path(path).read_text().split("\n\n"):
            fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, re.M))
            suites = fields.get("Suites", "").split()
            if SUITE in suites and "deb" in fields.get("Types", "").split():
                for uri in fields.get("URIs", "").split():
                    if not uri.rstrip("/").endswith("-security"):
                        return uri.rstrip("/")
    for path in ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*.list"))]:
        with contextlib.suppress(OSError):
            for line in Path(path).read_text().splitlines():
                m = re.match(rf"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+{SUITE}\s", line)
                if m and "security" not in m.group(1):
                    return m.group(1).rstrip("/")
    return DEFAULT_MIRROR


def depends_of(deb: Path) -> list[str]:
    """The first alternative of every Depends entry of a .deb, without versions or arch."""
    field = subprocess.run(["dpkg-deb", "-f", str(deb), "Depends"], check=True,
                           capture_output=True, text=True).stdout
    names = []
    for entry in field.replace("\n", " ").split(","):
        first = entry.split("|")[0].strip()
        name = re.split(r"[\s(]", first, maxsplit=1)[0].split(":")[0]
        if name:
            names.append(name)
    return names


def base_root(packages: list[str]) -> Path:
    """The cached bookworm root with `packages`; debootstrap'd once (under a lock)."""
    wanted = sorted(set(packages) | set(BOOT_PACKAGES))
    mirror = debian_mirror()
    key = hashlib.sha256(json.dumps([SUITE, mirror, wanted]).encode()).hexdigest()[:16]
    root = CACHE / f"{SUITE}-{key}"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{SUITE}-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a parallel session waits for the same build
        if (root / ".roxd-test-complete").exists():
            return root
        tmp = Path(tempfile.mkdtemp(prefix=f".{SUITE}-{key}-", dir=CACHE))
        try:
            proc = subprocess.run(
                ["debootstrap", "--variant=minbase", f"--include={','.join(wanted)}",
                 SUITE, str(tmp), mirror],
                capture_output=True, text=True, timeout=1800)
            if proc.returncode != 0:
                raise AssertionError(f"debootstrap {SUITE} from {mirror} failed:\n"
                                     f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
            (tmp / "etc/hostname").write_text("roxd-test\n")
            # nspawn gives each boot a transient machine id; an empty file lets systemd do so
            (tmp / "etc/machine-id").write_text("")
            # dbus keeps its own copy when debootstrap installs it; two machines booted from
            # this root would then share one D-Bus machine id. Without the file dbus reads
            # /etc/machine-id, the per-boot id.
            dbus_id = tmp / "var/lib/dbus/machine-id"
            if dbus_id.is_file() and not dbus_id.is_symlink():
                dbus_id.unlink()
            (tmp / ".roxd-test-complete").write_text(json.dumps(
                {"suite": SUITE, "mirror": mirror, "packages": wanted}, indent=1) + "\n")
            if root.exists():
                shutil.rmtree(root)  # an incomplete leftover of an interrupted build
            tmp.rename(root)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return root


@contextlib.contextmanager
def overlay_root(base: Path) -> Iterator[Path]:
    """A writable overlay on `base` (which stays pristine); unmounted and removed at exit."""
    work = Path(tempfile.mkdtemp(prefix="roxd-test-root.", dir="/var/tmp"))
    upper, scratch, merged = work / "upper", work / "work", work / "merged"
    for d in (upper, scratch, merged):
        d.mkdir()
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={base},upperdir={upper},workdir={scratch}", str(merged)],
                   check=True)
    try:
        yield merged
    finally:
        if subprocess.run(["umount", str(merged)]).returncode != 0:
            subprocess.run(["umount", "-l", str(merged)])
        shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------------------- the machine


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for task in glob.glob(f"/proc/{pid}/task/*/children"):
        with contextlib.suppress(OSError):
            kids += [int(x) for x in Path(task).read_text().split()]
    return kids


def _ns_pid_is_one(pid: int) -> bool:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("NSpid:"):
                return line.split()[-1] == "1"
    return False


def header_binds() -> list[str]:
    binds = []
    if Path("/sys/kernel/tracing/events").is_dir():
        binds.append("--bind=/sys/kernel/tracing")
    if Path("/usr/src").is_dir():
        binds.append("--bind-ro=/usr/src")
    binds += [f"--bind-ro={d}" for d in sorted(glob.glob("/usr/lib/linux-kbuild-*"))]
    return binds


class Machine:
    """A root booted with systemd in systemd-nspawn; run() executes inside it."""

    def __init__(self, root: Path, log: Path) -> None:
        self.root = root
        self.name = f"roxd-test-{uuid.uuid4().hex[:8]}"
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.leader = 0

    def boot(self, timeout: float = 90) -> None:
        cmd = ["systemd-nspawn", "--quiet", "-D", str(self.root), "-M", self.name, "--boot",
               "--keep-unit", "--register=no", "--console=passive",
               "--capability=all", "--system-call-filter=bpf perf_event_open",
               *header_binds()]
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)

        def leader() -> int:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"systemd-nspawn exited ({self.proc.returncode}):\n"
                                     f"{self.log.read_text(errors='replace')[-3000:]}")
            return next((p for p in _children(self.proc.pid) if _ns_pid_is_one(p)), 0)

        self.leader = wait_for(leader, timeout, "the container's init")

        def booted() -> bool:
            state = self.run("systemctl", "is-system-running", check=False).stdout.strip()
            return state in ("running", "degraded")

        wait_for(booted, timeout, f"{self.name} to finish booting", interval=0.5)

    def run(self, *cmd: str, check: bool = True, timeout: float = 120,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        assert self.leader, "machine not booted"
        full = ["nsenter", "-t", str(self.leader), "-a", "--", "/usr/bin/env", "-i",
                f"PATH={PATH}", "LANG=C.UTF-8", "SYSTEMD_PAGER=", "DEBIAN_FRONTEND=noninteractive",
                *cmd]
        proc = subprocess.run(full, capture_output=True, text=True, timeout=timeout,
                              input=input)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode} in {self.name}:\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.run("systemctl", "show", unit, *(f"--property={p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal_cursor(self) -> str:
        out = self.run("journalctl", "-n", "1", "-o", "json", "--no-pager").stdout.strip()
        return json.loads(out.splitlines()[-1])["__CURSOR"] if out else ""

    def journal(self, unit: str, after: str = "") -> str:
        args = ["journalctl", "-u", unit, "-o", "cat", "--no-pager"]
        if after:
            args.append(f"--after-cursor={after}")
        return self.run(*args, check=False).stdout

    def shutdown(self, timeout: float = 60) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)  # nspawn turns this into a clean poweroff
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
