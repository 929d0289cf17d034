"""Everything the checks decide on, gathered once per scan: the engine's info and each running
container's inspect data (through the runtime adapter), dockerd's argv and daemon.json, the
owner and mode of the benchmark's files, the audit rules, the docker group, the mount points
and the process names in each container's pid namespace.

Gathering is slow I/O (the engine, /proc, stat, `auditctl -l`): run it off the event loop.
Every part that cannot be read records why, and the checks turn that reason into a NOTE.
"""

from __future__ import annotations

import dataclasses
import grp
import json
import logging
import os
import pwd
import shutil
import stat
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from roxd.runtime.base import EngineInventory, RuntimeControlError

log = logging.getLogger(__name__)

DAEMON_JSON = "/etc/docker/daemon.json"
UNIT_DIRS = ("/etc/systemd/system", "/run/systemd/system", "/usr/local/lib/systemd/system",
             "/lib/systemd/system", "/usr/lib/systemd/system")
MAX_EXECS_PER_CONTAINER = 64
NOT_GIVEN_LISTENERS = ("listening sockets are not observed by this scan (it was given no "
                       "listener table: roxd's inbound tracing, [netmap] inbound)")


@dataclass(frozen=True)
class FileFact:
    """One path as stat() saw it (symlinks followed: /var/run/docker.sock is the socket)."""

    path: str
    exists: bool
    mode: int = 0  # permission bits (0o7777)
    uid: int = -1
    gid: int = -1
    user: str = ""
    group: str = ""
    is_dir: bool = False
    error: str = ""  # why it could not be read (other than "absent")

    @property
    def owner(self) -> str:
        return f"{self.user or self.uid}:{self.group or self.gid}"


def stat_file(path: str) -> FileFact:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return FileFact(path, False)
    except OSError as exc:
        return FileFact(path, False, error=exc.strerror or str(exc))
    try:
        user = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        user = ""
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = ""
    return FileFact(path, True, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, user, group,
                    stat.S_ISDIR(st.st_mode))


# How the audit rules were read (AuditRules.kind): each gives the checks a different answer.
AUDIT_LOADED = "loaded"        # `auditctl -l`: the rules the kernel has now
AUDIT_FILES = "files"          # rule files, auditctl absent: written, not known to be loaded
AUDIT_NONE = "none"            # no auditctl and no rule files: nothing audits anything
AUDIT_UNREADABLE = "unreadable"  # auditctl is there but `auditctl -l` failed


@dataclass(frozen=True)
class AuditRules:
    """The loaded audit rules (`auditctl -l`), or the rule files when auditctl is absent;
    lines None when neither could be read (reason says why)."""

    lines: tuple[str, ...] | None
    source: str
    reason: str = ""
    kind: str = ""  # AUDIT_*; "" derives it: lines None -> none, auditctl -> loaded, files

    @property
    def state(self) -> str:
        if self.kind:
            return self.kind
        if self.lines is None:
            return AUDIT_NONE
        return AUDIT_LOADED if self.source.startswith("auditctl") else AUDIT_FILES

    def watches(self, path: str) -> bool:
        """Is there a rule that watches `path` (-w PATH, or a path=/dir= field)?"""
        for line in self.lines or ():
            words = line.split()
            for i, word in enumerate(words):
                if word == "-w" and i + 1 < len(words) and words[i + 1].rstrip("/") == path:
                    return True
                if word in (f"path={path}", f"dir={path}", f"-F path={path}"):
                    return True
        return False


def read_audit_rules() -> AuditRules:
    auditctl = shutil.which("auditctl") or next(
        (p for p in ("/sbin/auditctl", "/usr/sbin/auditctl") if os.path.exists(p)), None)
    if auditctl:
        try:
            done = subprocess.run([auditctl, "-l"], capture_output=True, text=True,
                                  timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return AuditRules(None, "auditctl -l", f"auditctl -l failed: {exc}",
                              AUDIT_UNREADABLE)
        if done.returncode == 0:
            lines = tuple(line for line in done.stdout.splitlines() if line.strip())
            return AuditRules(lines, "auditctl -l", kind=AUDIT_LOADED)
        return AuditRules(None, "auditctl -l", f"auditctl -l exited {done.returncode}: "
                                                f"{done.stderr.strip()[:200]}",
                          AUDIT_UNREADABLE)
    files = sorted(Path("/etc/audit/rules.d").glob("*.rules")) if Path(
        "/etc/audit/rules.d").is_dir() else []
    if Path("/etc/audit/audit.rules").is_file():
        files.append(Path("/etc/audit/audit.rules"))
    if not files:
        return AuditRules(None, "", "auditd is not installed (no auditctl, no rule files "
                                    "under /etc/audit)", AUDIT_NONE)
    lines: list[str] = []
    for f in files:
        try:
            lines += [x for x in f.read_text(errors="replace").splitlines()
                      if x.strip() and not x.lstrip().startswith("#")]
        except OSError as exc:
            log.debug("audit rules %s: %s", f, exc)
    return AuditRules(tuple(lines), "rule files (auditctl absent: loaded state unknown)",
                      kind=AUDIT_FILES)


@dataclass(frozen=True)
class DaemonOptions:
    """dockerd's effective options: its argv (from /proc) and its configuration file."""

    argv: tuple[str, ...] | None  # None: no dockerd process found on this host
    config: Mapping[str, Any]
    config_path: str
    config_exists: bool
    config_error: str = ""
    binary: str = ""  # /proc/<pid>/exe of dockerd, "" when not found

    def arg(self, name: str) -> str | None:
        """The last value of --name (`--name=v`, `--name v`, or "true" for a bare flag)."""
        found: str | None = None
        argv = list(self.argv or ())
        flag = f"--{name}"
        for i, word in enumerate(argv):
            if word == flag:
                nxt = argv[i + 1] if i + 1 < len(argv) else ""
                found = nxt if nxt and not nxt.startswith("-") else "true"
            elif word.startswith(flag + "="):
                found = word.split("=", 1)[1]
        return found

    def args(self, name: str) -> list[str]:
        """Every value of a repeatable option (--host, --insecure-registry, ...)."""
        out: list[str] = []
        argv = list(self.argv or ())
        for i, word in enumerate(argv):
            if word == f"--{name}" and i + 1 < len(argv):
                out.append(argv[i + 1])
            elif word.startswith(f"--{name}="):
                out.append(word.split("=", 1)[1])
        return out

    def setting(self, name: str, json_key: str | None = None) -> Any:
        """The option from argv, else from daemon.json (key `json_key` or `name`); None."""
        value = self.arg(name)
        if value is not None:
            return {"true": True, "false": False}.get(value, value)
        return self.config.get(json_key or name)


def _dockerd_pid() -> int | None:
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/comm") as f:
                if f.read().strip() == "dockerd":
                    return int(entry.name)
        except OSError:
            continue
    return None


def read_daemon_options() -> DaemonOptions:
    pid = _dockerd_pid()
    argv: tuple[str, ...] | None = None
    binary = ""
    if pid is not None:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = tuple(a.decode(errors="replace") for a in f.read().split(b"\0") if a)
            binary = os.readlink(f"/proc/{pid}/exe")
        except OSError as exc:
            log.debug("dockerd %d: %s", pid, exc)
    opts = DaemonOptions(argv, {}, DAEMON_JSON, False, binary=binary)
    path = opts.arg("config-file") or DAEMON_JSON
    try:
        raw = Path(path).read_text()
    except FileNotFoundError:
        return DaemonOptions(argv, {}, path, False, binary=binary)
    except OSError as exc:
        return DaemonOptions(argv, {}, path, True, f"cannot read: {exc.strerror}", binary)
    try:
        config = json.loads(raw)
        if not isinstance(config, dict):
            raise ValueError("not a JSON object")
    except ValueError as exc:
        return DaemonOptions(argv, {}, path, True, f"not valid JSON: {exc}", binary)
    return DaemonOptions(argv, config, path, True, binary=binary)


@dataclass(frozen=True)
class ObservedSession:
    """A process that entered the container from outside and runs now, read from /proc: in
    the container's pid namespace, not its init, its parent outside the namespace (`docker
    exec`, `runc exec`, `nsenter`: whatever started it, recorded by the engine or not)."""

    pid: int
    comm: str
    uid: int  # effective uid
    cap_bnd: int  # its capability bounding set (CapBnd)
    init_cap_bnd: int  # the container init's: a privileged exec has more


@dataclass(frozen=True)
class ContainerFacts:
    inspect: Mapping[str, Any]  # the engine's inspect document
    execs: tuple[Mapping[str, Any], ...] = ()  # inspect documents of its exec instances
    processes: tuple[str, ...] | None = None  # comms in its pid namespace; None: not seen
    sessions: tuple[ObservedSession, ...] = ()  # exec sessions observed in /proc now
    # its listening sockets as roxd's inbound tracing observed them (ListenerTable.to_dict
    # rows: protocol, address, port, process, source); None: not observed (see
    # PostureFacts.listening)
    listening: tuple[Mapping[str, Any], ...] | None = None

    @property
    def name(self) -> str:
        return str(self.inspect.get("Name") or "").lstrip("/") or str(self.inspect["Id"])[:12]

    @property
    def host_config(self) -> Mapping[str, Any]:
        return self.inspect.get("HostConfig") or {}


@dataclass(frozen=True)
class PostureFacts:
    info: Mapping[str, Any] | None  # `docker info`; None: engine not reachable
    engine_error: str
    daemon: DaemonOptions
    files: Mapping[str, FileFact]  # by path
    audit: AuditRules
    docker_group: tuple[str, ...] | None  # members; None: no docker group
    mountpoints: frozenset[str]
    containers: tuple[ContainerFacts, ...]
    unit_files: Mapping[str, str] = field(default_factory=dict)  # unit name -> path found
    registry_certs: tuple[str, ...] | None = None  # files under /etc/docker/certs.d
    # how the containers' listening sockets were observed, or why they were not (then every
    # ContainerFacts.listening is None and 5.9 says INFO with this reason)
    listening: str = NOT_GIVEN_LISTENERS
    listening_observed: bool = False

    def file(self, path: str) -> FileFact:
        return self.files.get(path) or FileFact(path, False, error="not gathered")

    def security_options(self) -> list[str]:
        return [str(o) for o in (self.info or {}).get("SecurityOptions") or []]


# ---------------------------------------------------------------------------- gathering


@dataclass(frozen=True)
class ListeningSource:
    """Where a scan reads what each container listens on: the daemon's listener table
    (roxd/netmap/listeners.py, fed by the kernel's listen()/bind() or by /proc), or nothing
    and the reason (inbound tracing off or not attached). The posture scan never reads the
    sockets itself: one owner of that truth, the one `roxctl inventory` shows."""

    of: Callable[[str], Sequence[Mapping[str, Any]]] | None
    how: str  # how they are observed ("kernel: listen() ..."), or why not


def with_listening(facts: PostureFacts, source: ListeningSource | None) -> PostureFacts:
    """The scan's facts with each container's observed listening sockets attached."""
    if source is None:
        return facts
    if source.of is None:
        return dataclasses.replace(facts, listening=source.how, listening_observed=False)
    containers = []
    for c in facts.containers:
        try:
            rows = tuple(source.of(str(c.inspect.get("Id") or "")))
        except Exception as exc:  # a broken table must not fail the whole scan
            log.warning("posture: listening sockets of %s could not be read: %s", c.name, exc)
            rows = None
        containers.append(dataclasses.replace(c, listening=rows))
    return dataclasses.replace(facts, containers=tuple(containers), listening=source.how,
                               listening_observed=True)

BENCH_FILES = ("/etc/docker", DAEMON_JSON, "/etc/default/docker", "/etc/sysconfig/docker",
               "/var/run/docker.sock", "/run/containerd/containerd.sock",
               "/run/docker/containerd/containerd.sock",
               "/etc/containerd/config.toml", "/var/lib/docker", "/run/containerd",
               "/usr/bin/containerd", "/usr/bin/containerd-shim",
               "/usr/bin/containerd-shim-runc-v1", "/usr/bin/containerd-shim-runc-v2",
               "/usr/bin/runc", "/usr/sbin/runc")


def find_unit(name: str) -> str | None:
    for d in UNIT_DIRS:
        p = os.path.join(d, name)
        if os.path.exists(p):
            return p
    return None


def _mountpoints() -> frozenset[str]:
    points: set[str] = set()
    for src in ("/proc/1/mountinfo", "/proc/self/mountinfo"):
        try:
            with open(src) as f:
                for line in f:
                    fields = line.split()
                    if len(fields) > 4:
                        points.add(fields[4].replace("\\040", " "))
            return frozenset(points)
        except OSError:
            continue
    return frozenset(points)


def _docker_group() -> tuple[str, ...] | None:
    try:
        g = grp.getgrnam("docker")
    except KeyError:
        return None
    members = set(g.gr_mem)
    members |= {p.pw_name for p in pwd.getpwall() if p.pw_gid == g.gr_gid}
    return tuple(sorted(members))


MAX_PROCESSES_PER_CONTAINER = 4096


def pid_namespaces() -> dict[str, list[tuple[int, str]]]:
    """pid namespace link ("pid:[4026531836]") -> (pid, comm) of its processes, from /proc."""
    out: dict[str, list[tuple[int, str]]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            ns = os.readlink(f"/proc/{entry.name}/ns/pid")
            with open(f"/proc/{entry.name}/comm") as f:
                comm = f.read().strip()
        except OSError:
            continue
        out.setdefault(ns, []).append((int(entry.name), comm))
    return out


def _status(pid: int) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/status") as f:
            return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    except OSError:
        return {}


def observed_sessions(init_pid: int, members: Sequence[tuple[int, str]]
                      ) -> tuple[ObservedSession, ...]:
    """The exec sessions among a container's processes: not its init, parent outside."""
    pids = {p for p, _ in members}
    init_bnd = int(_status(init_pid).get("CapBnd", "0") or "0", 16)
    out = []
    for pid, comm in members[:MAX_PROCESSES_PER_CONTAINER]:
        if pid == init_pid:
            continue
        st = _status(pid)
        try:
            ppid = int(st.get("PPid", "0"))
            euid = int(st.get("Uid", "0").split()[1])
            bnd = int(st.get("CapBnd", "0"), 16)
        except (ValueError, IndexError):
            continue  # gone while read
        if ppid and ppid not in pids:
            out.append(ObservedSession(pid, comm, euid, bnd, init_bnd))
    return tuple(out)


def _container_facts(engine: EngineInventory, cid: str,
                     namespaces: Mapping[str, Sequence[tuple[int, str]]]
                     ) -> ContainerFacts | None:
    attrs = engine.inspect_raw(cid)
    if attrs is None:
        return None  # gone between list and inspect
    execs = []
    for exec_id in (attrs.get("ExecIDs") or [])[:MAX_EXECS_PER_CONTAINER]:
        try:
            doc = engine.inspect_exec_raw(exec_id)
        except RuntimeControlError:
            doc = None
        if doc is not None:
            execs.append(doc)
    processes: tuple[str, ...] | None = None
    sessions: tuple[ObservedSession, ...] = ()
    pid = (attrs.get("State") or {}).get("Pid") or 0
    mode = (attrs.get("HostConfig") or {}).get("PidMode") or ""
    if pid and mode != "host":
        try:
            members = list(namespaces.get(os.readlink(f"/proc/{pid}/ns/pid"), ()))
            processes = tuple(comm for _, comm in members)
            sessions = observed_sessions(int(pid), members)
        except OSError:
            processes = None
    return ContainerFacts(attrs, tuple(execs), processes, sessions)


def gather(engine: EngineInventory) -> PostureFacts:
    """One scan's facts from this host and its engine (slow: run off the event loop)."""
    info: Mapping[str, Any] | None = None
    error = ""
    containers: list[ContainerFacts] = []
    try:
        info = engine.info()
        namespaces = pid_namespaces()
        for cid in engine.container_ids():
            cf = _container_facts(engine, cid, namespaces)
            if cf is not None:
                containers.append(cf)
    except RuntimeControlError as exc:
        error = str(exc)
    daemon = read_daemon_options()
    units = {name: p for name in ("docker.service", "docker.socket")
             if (p := find_unit(name)) is not None}
    paths = set(BENCH_FILES) | set(units.values()) | {daemon.config_path}
    if daemon.binary:
        paths.add(daemon.binary)
    for key in ("tlscacert", "tlscert", "tlskey"):
        value = daemon.setting(key)
        if isinstance(value, str) and value:
            paths.add(value)
    certs: tuple[str, ...] | None = None
    if os.path.isdir("/etc/docker/certs.d"):
        found = []
        for dirpath, _dirs, names in os.walk("/etc/docker/certs.d"):
            found += [os.path.join(dirpath, n) for n in names]
        certs = tuple(sorted(found))
        paths |= set(certs)
    files = {p: stat_file(p) for p in sorted(paths)}
    return PostureFacts(info=info, engine_error=error, daemon=daemon, files=files,
                        audit=read_audit_rules(), docker_group=_docker_group(),
                        mountpoints=_mountpoints(), containers=tuple(containers),
                        unit_files=units, registry_certs=certs)
