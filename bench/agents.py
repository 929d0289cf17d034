"""The agents compared: none, roxd, auditd (with execve/connect audit rules), and a bpftrace
count map on the same tracepoints (the floor for tracing those events in the kernel: exec,
connect, and openat entry and exit, which roxd's file watch needs for the file workload).

Each agent is a context manager: entering starts it and waits until it is really watching;
leaving stops it and undoes what it changed, also when the run is interrupted."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.cleanup import Cleanup

REPO = Path(__file__).resolve().parents[1]
BENCH_RULES = Path(__file__).resolve().parent / "rules"
CLK_TCK = os.sysconf("SC_CLK_TCK")
COUNTER_TTL_S = 1.1  # roxd/api/status.py caches kernel counters for STATS_TTL_S (1 s)


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss_mb(pid: int, key: str = "VmRSS") -> float:
    """VmRSS (or RssAnon, RssFile, ...) of /proc/<pid>/status in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _stop_process(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM,
                  timeout: float = 20.0) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Agent:
    name = "none"
    pid: int | None = None

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def cpu_s(self) -> float | None:
        return proc_cpu_s(self.pid) if self.pid else None


class NoAgent(Agent):
    name = "none"


# ---------------------------------------------------------------------------- roxd


@dataclass
class RoxdAgent(Agent):
    """roxd with the shipped default rule pack and default config, except the paths of its
    state, socket and header cache, and the sensor overrides of a variant."""

    workdir: Path
    cleanup: Cleanup
    cache_dir: Path
    source: Path = REPO
    bench_rules: bool = False
    sensor: dict[str, Any] = field(default_factory=dict)
    name: str = "roxd"
    proc: subprocess.Popen[bytes] | None = None
    ready_s: float = 0.0
    _undo: Any = None

    @property
    def socket(self) -> Path:
        return self.workdir / "roxd.sock"

    @property
    def stderr_path(self) -> Path:
        return self.workdir / "stderr.log"

    def config_text(self) -> str:
        lines = ["[daemon]", f'cache_dir = "{self.cache_dir}"', "", "[sensor]"]
        for key, value in self.sensor.items():
            lines.append(f"{key} = {value!r}".replace("'", '"'))
        return "\n".join(lines) + "\n"

    def __enter__(self) -> RoxdAgent:
        if self.workdir.exists():
            shutil.rmtree(self.workdir)
        self.workdir.mkdir(parents=True)
        cfg = self.workdir / "roxd.toml"
        cfg.write_text(self.config_text())
        argv = [sys.executable, "-m", "roxd", "--config", str(cfg),
                "--state-dir", str(self.workdir / "state"), "--socket", str(self.socket)]
        if self.bench_rules:  # --rules replaces the configured paths: name the pack too
            argv += ["--rules", str(self.source / "rules"), "--rules", str(BENCH_RULES)]
        t0 = time.monotonic()
        self.proc = subprocess.Popen(argv, cwd=self.source, stdout=subprocess.DEVNULL,
                                     stderr=self.stderr_path.open("w"),
                                     start_new_session=True)  # Ctrl-C reaches us, not it
        self.pid = self.proc.pid
        self._undo = self.cleanup.push(f"roxd pid {self.pid}", lambda: _stop_process(self.proc))

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"roxd exited {self.proc.returncode}:\n"
                                   f"{self.stderr_path.read_text()[-3000:]}")
            return "roxd is watching" in self.stderr_path.read_text(errors="replace")

        wait_for(ready, 120, "roxd to report that it is watching")
        self.ready_s = time.monotonic() - t0
        wait_for(self.socket.exists, 10, "roxd's API socket")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._undo is not None:
            self._undo()
            self._undo = None

    def api(self) -> Any:
        from roxd.api.client import ApiClient

        return ApiClient(str(self.socket))

    def status(self) -> dict[str, Any]:
        with self.api() as api:
            return api.get("/v1/status")

    def kernel_counters(self) -> dict[str, int]:
        """Fresh counters: the API caches them for STATS_TTL_S, so wait that out first."""
        time.sleep(COUNTER_TTL_S)
        return dict(self.status().get("kernel", {}))

    def seccomp(self, verb: str, target: str) -> Any:
        with self.api() as api:
            return api.post(f"/v1/seccomp/{verb}", {"target": target})

    def rss_mb(self, key: str = "VmRSS") -> float:
        assert self.pid is not None
        return proc_rss_mb(self.pid, key)

    def warnings(self) -> list[str]:
        text = self.stderr_path.read_text(errors="replace")
        return [line for line in text.splitlines() if " WARNING " in line or " ERROR " in line]

    def baselines(self) -> list[dict[str, Any]]:
        with self.api() as api:
            return list(api.get("/v1/baselines")["baselines"])

    def lock_baselines(self, marker: str, mode: str = "enforce") -> list[dict[str, Any]]:
        """Lock the workloads whose key contains marker (the benchmark's own containers, never
        another container on the host), as `roxctl baselines lock W`, and set each one's mode
        (`roxctl baselines mode W enforce`); returns those workloads after."""
        with self.api() as api:
            for b in api.get("/v1/baselines")["baselines"]:
                if marker in b["workload"]:
                    if b["state"] == "learning":
                        api.post("/v1/baselines/lock", {"workload": b["workload"]})
                    api.post("/v1/baselines/mode", {"workload": b["workload"], "mode": mode})
        return [b for b in self.baselines() if marker in b["workload"]]


# ---------------------------------------------------------------------------- auditd


AUDIT_RULE = ["-a", "always,exit", "-F", "arch=b64", "-S", "execve", "-S", "connect"]

# The application benchmark's auditd: rules for what roxd's default pack watches in the
# kernel (bpf/*.bpf.c): execs, connects, the rare privileged syscalls, and changes below the
# default file_trees. Audit path watches see the host's mount namespace only, so a container's
# /etc is not watched by them; the syscall rules see every container.
AUDIT_RULES_APPS = [
    [*AUDIT_RULE, "-S", "execveat", "-k", "roxd-exec-net"],
    ["-a", "always,exit", "-F", "arch=b64"]
    + [x for sc in ("ptrace", "mount", "umount2", "pivot_root", "unshare", "setns",
                    "init_module", "finit_module", "delete_module", "kexec_load",
                    "kexec_file_load", "bpf", "memfd_create", "userfaultfd", "personality",
                    "process_vm_readv", "process_vm_writev", "capset", "add_key", "keyctl",
                    "perf_event_open", "setuid", "setgid", "setreuid", "setregid",
                    "setresuid", "setresgid", "seccomp") for x in ("-S", sc)]
    + ["-k", "roxd-priv"],
    ["-a", "always,exit", "-F", "arch=b64"]
    + [x for sc in ("rename", "renameat", "renameat2", "unlink", "unlinkat", "link", "linkat",
                    "symlink", "symlinkat", "chmod", "fchmod", "fchmodat", "truncate", "creat")
       for x in ("-S", sc)]
    + ["-F", "success=1", "-k", "roxd-file"],
    *(["-w", tree, "-p", "wa", "-k", "roxd-tree"]
      for tree in ("/etc", "/usr", "/root", "/home", "/var/spool/cron")),
]


def _auditctl(*args: str) -> str:
    return subprocess.run(["auditctl", *args], check=True, capture_output=True,
                          text=True).stdout


@dataclass(frozen=True)
class AuditState:
    """What auditctl -s and -l say: restored exactly when the benchmark leaves."""

    status: dict[str, str]
    rules: tuple[str, ...]

    @classmethod
    def read(cls) -> AuditState:
        status = {}
        for line in _auditctl("-s").splitlines():
            parts = line.split(None, 1)
            if len(parts) == 2:
                status[parts[0]] = parts[1].strip()
        rules = tuple(line for line in _auditctl("-l").splitlines()
                      if line.strip() and line.strip() != "No rules")
        return cls(status, rules)

    def restore(self) -> None:
        _auditctl("-D")
        for rule in self.rules:
            _auditctl(*rule.split())
        for flag, key in (("-f", "failure"), ("-r", "rate_limit"), ("-b", "backlog_limit"),
                          ("--backlog_wait_time", "backlog_wait_time")):
            if key in self.status:
                subprocess.run(["auditctl", flag, self.status[key]], capture_output=True)
        if "enabled" in self.status:
            _auditctl("-e", self.status["enabled"])

    def same_as(self, other: AuditState) -> bool:
        keys = ("enabled", "failure", "rate_limit", "backlog_limit", "pid")
        return (self.rules == other.rules
                and all(self.status.get(k) == other.status.get(k) for k in keys))


def auditd_unavailable() -> str | None:
    """Why the auditd agent cannot run here, or None."""
    if not shutil.which("auditd") or not shutil.which("auditctl"):
        return "auditd not installed (apt-get install auditd)"
    try:
        state = AuditState.read()
    except (OSError, subprocess.CalledProcessError) as exc:
        return f"kernel audit not usable: {exc}"
    if state.status.get("pid", "0") != "0":
        return (f"an audit daemon (pid {state.status['pid']}) already runs on this host: the "
                "benchmark will not replace it")
    return None


@dataclass
class AuditdAgent(Agent):
    cleanup: Cleanup
    name: str = "auditd"
    rules: list[list[str]] = field(default_factory=lambda: [AUDIT_RULE])
    proc: subprocess.Popen[bytes] | None = None
    before: AuditState | None = None
    _undo: Any = None

    def __enter__(self) -> AuditdAgent:
        self.before = AuditState.read()
        before = self.before
        self.proc = subprocess.Popen(["auditd", "-n"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        self.pid = self.proc.pid
        proc = self.proc

        def undo() -> None:
            with contextlib.suppress(Exception):
                _auditctl("-D")
            _stop_process(proc)
            before.restore()
            after = AuditState.read()
            if not after.same_as(before):
                print(f"bench: WARNING kernel audit state differs after restore: {after} "
                      f"(was {before})", file=sys.stderr)

        self._undo = self.cleanup.push(f"auditd pid {self.pid} and audit rules", undo)
        wait_for(lambda: AuditState.read().status.get("pid") == str(self.pid), 20,
                 "auditd to register with the kernel")
        for rule in self.rules:
            _auditctl(*rule)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._undo is not None:
            self._undo()
            self._undo = None


# ---------------------------------------------------------------------------- bpftrace


BPFTRACE_PROGRAM = """
tracepoint:sched:sched_process_exec { @exec[cpu] = count(); }
tracepoint:syscalls:sys_enter_connect { @connect[cpu] = count(); }
tracepoint:syscalls:sys_enter_openat { @open[cpu] = count(); }
tracepoint:syscalls:sys_exit_openat { @open_ret[cpu] = count(); }
"""


# The application benchmark's floor: count the events roxd's hot programs see (exec, fork,
# exit, connect, openat, execve entry and exit), nothing more.
BPFTRACE_PROGRAM_APPS = BPFTRACE_PROGRAM + """
tracepoint:sched:sched_process_fork { @fork[cpu] = count(); }
tracepoint:sched:sched_process_exit { @exit[cpu] = count(); }
tracepoint:syscalls:sys_exit_connect { @connect_ret[cpu] = count(); }
tracepoint:syscalls:sys_enter_execve { @execve[cpu] = count(); }
tracepoint:syscalls:sys_exit_execve { @execve_ret[cpu] = count(); }
"""


@dataclass
class BpftraceAgent(Agent):
    cleanup: Cleanup
    workdir: Path
    name: str = "bpftrace"
    program: str = BPFTRACE_PROGRAM
    proc: subprocess.Popen[bytes] | None = None
    _undo: Any = None
    last_output: str = ""

    def __enter__(self) -> BpftraceAgent:
        self.workdir.mkdir(parents=True, exist_ok=True)
        out = self.workdir / "bpftrace.out"
        self.proc = subprocess.Popen(["bpftrace", "-e", self.program], stdout=out.open("w"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self.proc.pid
        proc = self.proc
        self._undo = self.cleanup.push(f"bpftrace pid {self.pid}",
                                       lambda: _stop_process(proc, signal.SIGINT))

        def attached() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"bpftrace exited {proc.returncode}: {out.read_text()}")
            return "Attaching" in out.read_text(errors="replace")

        wait_for(attached, 60, "bpftrace to attach")
        time.sleep(0.2)  # "Attaching N probes..." is printed just before the attach
        return self

    def __exit__(self, *exc: object) -> None:
        if self._undo is not None:
            self._undo()
            self._undo = None
            self.last_output = (self.workdir / "bpftrace.out").read_text(errors="replace")

    def counted(self) -> int:
        """Events counted in the maps (printed by bpftrace at exit)."""
        return sum(int(m) for m in re.findall(r"\]:\s*(\d+)", self.last_output))


def bpftrace_unavailable() -> str | None:
    if not shutil.which("bpftrace"):
        return "bpftrace not installed (apt-get install bpftrace)"
    return None


UNAVAILABLE = {"auditd": auditd_unavailable, "bpftrace": bpftrace_unavailable}


def available_agents(names: list[str], note: Any, what: str = "agent") -> list[str]:
    """The agents of `names` this host can run, in order; each one it cannot is handed to
    `note` with the reason (a phase notes it in its results instead of failing)."""
    chosen = []
    for name in names:
        check = UNAVAILABLE.get(name)
        why = check() if check else None
        if why:
            note(f"{what} {name} skipped: {why}")
        else:
            chosen.append(name)
    return chosen
