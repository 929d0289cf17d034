"""Drift: an exec of a binary that is not part of the container's image (docs/baselines.md).

A container's root filesystem is an overlay: the image's read-only layers (`lowerdir`) under
one writable layer (`upperdir`). A file the container created after it started, or an image
file it modified (overlayfs copies it up first), lives in the upper layer; nothing the image
shipped does until it is changed. So for an exec in a container, the program's path inside the
container, looked up in the upper layer on the host, says:

- `new`: in the upper layer and in no image layer: written after the container started (a
  downloaded or compiled tool, a copy of a system binary under a new name);
- `modified`: in the upper layer and in an image layer: an image binary replaced or changed;
- `built`: `new`, in a container that ran a compiler or linker earlier (a CI job that compiles
  and then runs its tests): a build environment's own products; no shipped rule alerts on it
  (the compiler itself is judged by foothold.compiler-in-container);
- `none`: not in the upper layer: the image's own file, or a file on a volume or tmpfs (which
  are not the image's either: see "what it cannot see" in docs/baselines.md);
- unknown (None): the host, a root filesystem that is not an overlay, or no process of the
  container left to read its mounts from.

Scripts (`check_script`): an interpreter's exe is the image's own, so `python3 x.py` or
`bash atomic.sh` with a script written after the start shows no binary drift. For an exec of a
shell or script interpreter with a script operand (not `-c`/`-e`/`-m` code), the script's path
gets the same verdict (`new`, `modified`, `none`; never `built`): the `script_drift` field. A
relative operand is resolved against the process's working directory, or its parent's when the
process is already gone (a shell's child inherits it). Not seen: scripts read from stdin or a
pipe, a path through a symlinked directory (looked up as given), a parent that changed
directory between fork and exec.

Drift needs no learning. Cost per exec in a container: one readlink of /proc/<pid>/exe and one
lookup in the upper layer (faccessat; an lstat more when the path is there, for whiteouts;
plus one per image layer the first time a path is found there: the
image layers are read-only, so that answer is kept); the layers are read once per container
from /proc/<pid>/mountinfo (the overlay mount's `upperdir=`/`lowerdir=`
options, host paths whatever the runtime: Docker, containerd, podman and CRI-O alike).
"""

from __future__ import annotations

import logging
import os
import re
import stat
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import PurePosixPath

from roxd.model import EnrichedEvent, ExecEvent, Process
from roxd.netmap.addresses import first_pid

log = logging.getLogger("roxd.baselines.drift")

MAX_CONTAINERS = 4096
# execs of a container that saw no overlay at / before it counts as "not an overlay": the
# runtime's own processes at the start (runc init, the shim, runc, libnetwork-setkey) see the
# host's root; the container's first program sees its own
MAX_ROOT_MISSES = 16
# ancestors asked for the working directory of a relative script operand
MAX_CWD_DEPTH = 4
MAX_IMAGE_PATHS = 16384
VERDICTS = ("new", "built", "modified", "none")
# programs that write executables: a container that ran one is building code
BUILDERS = frozenset({"cc", "gcc", "g++", "c++", "clang", "clang++", "tcc", "cc1", "cc1plus",
                      "collect2", "ld", "ld.bfd", "ld.gold", "ld.lld", "lld", "as", "go",
                      "rustc", "javac", "gccgo", "zig"})
_OCTAL = re.compile(r"\\([0-7]{3})")

# Script interpreters and how their command line names a script: flags (one letter each, may
# be combined) whose presence means the code is inline or from a module/stdin, not a file; and
# flags that take a value (attached, or the next argument). The first operand that is not an
# option is the script. Options not listed are taken as plain flags.
_SHELLS = frozenset({"sh", "bash", "dash", "ash", "zsh", "ksh", "ksh93", "mksh", "hush",
                     "yash"})


@dataclass(frozen=True, slots=True)
class _Syntax:
    inline: str  # short flags that mean "no script file"
    valued: str  # short flags that take a value
    long_inline: frozenset[str] = frozenset()
    long_valued: frozenset[str] = frozenset()


_SHELL = _Syntax(inline="cis", valued="oO",
                 long_valued=frozenset({"--rcfile", "--init-file"}))
_SYNTAX: dict[str, _Syntax] = {
    "python": _Syntax(inline="cm", valued="WXQ"),
    "perl": _Syntax(inline="eE", valued=""),
    "ruby": _Syntax(inline="e", valued="rIC", long_inline=frozenset({"--eval"})),
    "node": _Syntax(inline="ep", valued="r",
                    long_inline=frozenset({"--eval", "--print", "--interactive"}),
                    long_valued=frozenset({"--require", "--import", "--loader"})),
    "php": _Syntax(inline="ra", valued="dcz"),  # -f FILE is handled below
    "lua": _Syntax(inline="ei", valued="l"),
}
_FAMILY = re.compile(r"^(python|perl|ruby|node|php|lua)[0-9.]*$|^nodejs$")


def script_operand(program: str, params: tuple[str, ...] | list[str]) -> str | None:
    """The script file an interpreter was asked to run, as given, or None (not a script
    interpreter, inline code, a module, stdin)."""
    if program in _SHELLS:
        syntax = _SHELL
    elif m := _FAMILY.match(program):
        syntax = _SYNTAX[m.group(1) or "node"]
    else:
        return None
    it = iter(params)
    for arg in it:
        if arg == "--":
            return next(it, None)
        if arg == "-":
            return None  # stdin
        if syntax is _SYNTAX["php"] and arg == "-f":
            return next(it, None)
        if arg.startswith("--"):
            name = arg.split("=", 1)[0]
            if name in syntax.long_inline:
                return None
            if name in syntax.long_valued and "=" not in arg:
                next(it, None)
            continue
        if arg[:1] in "-+" and len(arg) > 1:
            for i, flag in enumerate(arg[1:]):
                if flag in syntax.inline:
                    return None
                if flag in syntax.valued:
                    if i == len(arg) - 2:  # the value is the next argument
                        next(it, None)
                    break
            continue
        return arg
    return None


_INTERPRETERS: dict[str, bool] = {}


def _runs_scripts(program: str) -> bool:
    """Whether script_operand() can find a script for this program name (a shell or a
    script interpreter); remembered per name (bounded)."""
    known = _INTERPRETERS.get(program)
    if known is None:
        if len(_INTERPRETERS) >= 4096:
            _INTERPRETERS.clear()
        known = _INTERPRETERS[program] = (program in _SHELLS
                                          or _FAMILY.match(program) is not None)
    return known


@dataclass(frozen=True, slots=True)
class Layers:
    upper: str
    lowers: tuple[str, ...]


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo."""
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse_overlay_root(mountinfo: str) -> Layers | None:
    """The layers of the overlay mounted at / in this mountinfo text, or None."""
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 5 or len(tail) < 3:
            continue
        if _unescape(fields[4]) != "/" or tail[0] != "overlay":
            continue
        options: dict[str, str] = {}
        for option in tail[2].split(","):
            key, _, value = option.partition("=")
            options[key] = _unescape(value)
        upper = options.get("upperdir")
        if not upper:
            return None  # a read-only overlay: nothing can drift
        lowers = tuple(p for p in options.get("lowerdir", "").split(":") if p)
        return Layers(upper, lowers)
    return None


def _name(path: str) -> str:
    """The last part of a path (a builder's name), without building a PurePosixPath."""
    return path.rpartition("/")[2]


def _last_part(path: str) -> str:
    """PurePosixPath(path).name (`sh/.` and `sh/` name `sh`), without building one per exec
    (µs each) in the usual case."""
    name = path.rpartition("/")[2]
    return name if name and name != "." else PurePosixPath(path).name


def _normal(path: str) -> bool:
    """Whether PurePosixPath would leave an absolute path as it is (no `//`, `.` or trailing
    `/`): then it need not be built."""
    return ("//" not in path and "/./" not in path and not path.endswith(("/", "/."))) or (
        path == "/")


def _exists(layer: str, path: str) -> bool:
    full = layer + path
    # the usual answer (the image's own program: not in the upper layer) without an
    # exception: faccessat answers with a bool where a failed lstat raises (issue 22)
    if not os.access(full, os.F_OK, follow_symlinks=False):
        return False
    try:
        st = os.lstat(full)
    except OSError:
        return False
    # a whiteout (character device 0/0) marks a file deleted from the layers below
    return not (stat.S_ISCHR(st.st_mode) and st.st_rdev == 0)


class DriftDetector:
    def __init__(self, proc: str = "/proc", max_containers: int = MAX_CONTAINERS,
                 cgroup_root: str | None = None) -> None:
        self._proc = proc
        # where the container's cgroup lives: its long-lived processes (the entrypoint) hold
        # the same mounts when the short-lived exec and its parents are already gone
        self._cgroup_root = cgroup_root
        self._layers: OrderedDict[str, Layers | None] = OrderedDict()
        self._builders: OrderedDict[str, None] = OrderedDict()  # containers that compiled
        self._misses: OrderedDict[str, int] = OrderedDict()  # execs that saw no overlay root
        # (layers, path in the container) -> some image layer has it (_in_image)
        self._image_paths: OrderedDict[tuple[Layers, str], bool] = OrderedDict()
        self._max = max_containers
        self.counters = {"checked": 0, "new": 0, "built": 0, "modified": 0, "unknown": 0,
                         "scripts": 0, "script_new": 0, "script_modified": 0}

    def check(self, enriched: EnrichedEvent, exited: bool = False) -> str | None:
        """new | modified | none for an exec in a container, None when it cannot be told.
        exited: the sensor read the process's exit with its exec (Decoded.exited), so its
        /proc/<pid>/exe is gone: not looked up."""
        if enriched.container is None or not isinstance(enriched.event, ExecEvent):
            return None
        self.counters["checked"] += 1
        proc = enriched.process
        if _name(proc.exe) in BUILDERS or (proc.args and _name(proc.args[0]) in BUILDERS):
            self._builders[enriched.container.id] = None
            while len(self._builders) > self._max:
                self._builders.popitem(last=False)
        container = enriched.container
        if container.id in self._layers:  # known: no pids to try
            self._layers.move_to_end(container.id)
            layers = self._layers[container.id]
        else:
            pids = [proc.pid, *(a.pid for a in proc.ancestors)]
            if self._cgroup_root and container.cgroup_path:  # until its layers are known
                member = first_pid(f"{self._cgroup_root}/{container.cgroup_path.strip('/')}")
                if member is not None:
                    pids.append(member)
            layers = self._layers_of(container.id, pids)
        found = self._program_path(proc.pid, proc.exe, enriched.event.comm, exited)
        if layers is None or found is None:
            self.counters["unknown"] += 1
            return None
        path, deleted = found
        if not _exists(layers.upper, path):
            # a program deleted since it started (malware removes itself) that no image
            # layer has either was written after the container started
            if deleted and not self._in_image(layers, path):
                self.counters["new"] += 1
                return "new"
            return "none"
        verdict = "modified" if self._in_image(layers, path) else "new"
        if verdict == "new" and enriched.container.id in self._builders:
            verdict = "built"
        self.counters[verdict] += 1
        return verdict

    def check_script(self, enriched: EnrichedEvent) -> str | None:
        """new | modified | none for the script an interpreter in a container was started
        with, None when there is none or it cannot be told. Costs nothing for other execs."""
        if enriched.container is None or not isinstance(enriched.event, ExecEvent):
            return None
        proc = enriched.process
        if not proc.args:
            return None
        # (most execs run no interpreter: told by a set lookup, without script_operand's
        # regex and argv slice, issue 22)
        name = _last_part(proc.exe)
        operand = script_operand(name, proc.args[1:]) if _runs_scripts(name) else None
        if operand is None and proc.args[0] != proc.exe:  # argv[0] may name it (busybox sh)
            name = _last_part(proc.args[0])
            if _runs_scripts(name):
                operand = script_operand(name, proc.args[1:])
        if not operand:
            return None
        self.counters["scripts"] += 1
        layers = self._layers_of(enriched.container.id,
                                 [proc.pid, *(a.pid for a in proc.ancestors)])
        if layers is None:
            return None
        path = operand if operand.startswith("/") else self._relative(proc, operand, layers)
        if path is None:
            return None
        path = os.path.normpath(path)
        if not _exists(layers.upper, path):
            return "none"
        if any(_exists(low, path) for low in layers.lowers):
            self.counters["script_modified"] += 1
            return "modified"
        self.counters["script_new"] += 1
        return "new"

    def _comm(self, pid: int) -> str | None:
        try:
            with open(f"{self._proc}/{pid}/comm", encoding="utf-8", errors="replace") as f:
                return f.read().rstrip("\n")
        except OSError:
            return None

    def _relative(self, proc: Process, operand: str, layers: Layers) -> str | None:
        """operand against the working directory of the process, or, when it has exited, of
        its nearest living ancestor in the same container (it inherited the cwd at fork: the
        shell that ran `python3 x.py` may be gone too, the entrypoint that started it is not).
        An ancestor counts only if its root is the container's overlay: the runtime's shim
        above the container (the parent of a `docker exec`) has a host cwd."""
        for depth, pid in enumerate([proc.pid, *(a.pid for a in proc.ancestors[:MAX_CWD_DEPTH])]):
            try:
                cwd = os.readlink(f"{self._proc}/{pid}/cwd")
            except OSError:
                continue
            if not cwd.startswith("/") or cwd.endswith(" (deleted)"):
                continue
            if depth > 0 and not self._in_container(pid, layers):
                return None  # left the container: no further ancestor is in it
            return f"{cwd.rstrip('/')}/{operand}"
        return None

    def _in_container(self, pid: int, layers: Layers) -> bool:
        try:
            with open(f"{self._proc}/{pid}/mountinfo", encoding="utf-8",
                      errors="surrogateescape") as f:
                return parse_overlay_root(f.read()) == layers
        except OSError:
            return False

    def forget(self, container_id: str) -> None:
        self._layers.pop(container_id, None)
        self._misses.pop(container_id, None)

    def _in_image(self, layers: Layers, path: str) -> bool:
        """Whether an image layer has the path. The image's layers never change under a
        container (they are read-only; writes go to the upper layer, looked up afresh on
        every exec), so the answer is kept: a storm of a dropped binary cost one lstat per
        image layer per exec."""
        key = (layers, path)
        found = self._image_paths.get(key)
        if found is None:
            found = self._image_paths[key] = any(_exists(low, path) for low in layers.lowers)
            while len(self._image_paths) > MAX_IMAGE_PATHS:
                self._image_paths.popitem(last=False)
        return found

    def _layers_of(self, container_id: str, pids: list[int]) -> Layers | None:
        if container_id in self._layers:
            self._layers.move_to_end(container_id)
            return self._layers[container_id]
        for pid in pids:
            try:
                with open(f"{self._proc}/{pid}/mountinfo", encoding="utf-8",
                          errors="surrogateescape") as f:
                    text = f.read()
            except OSError:
                continue  # that process is gone: try its parent
            layers = parse_overlay_root(text)
            if layers is None and self._misses.get(container_id, 0) < MAX_ROOT_MISSES:
                # the runtime's own programs (runc init before its pivot_root, the shim,
                # libnetwork-setkey) are attributed to the container but see the host's root:
                # not the container's answer, so only a run of misses is remembered (a
                # container whose root is no overlay), never the first
                self._misses[container_id] = self._misses.get(container_id, 0) + 1
                while len(self._misses) > self._max:
                    self._misses.popitem(last=False)
                return None
            self._layers[container_id] = layers
            self._misses.pop(container_id, None)
            while len(self._layers) > self._max:
                self._layers.popitem(last=False)
            return layers
        return None  # not cached: a later exec may find a live process

    def _program_path(self, pid: int, exe: str, comm: str = "",
                      exited: bool = False) -> tuple[str, bool] | None:
        """The program's path inside the container with every symlink resolved: the kernel's
        own /proc/<pid>/exe while the process lives (read from the host it names the path in
        the container's mount namespace), else the exe as the enricher knew it. With whether
        the file has been deleted since. exited: the process is known to be gone, so the
        readlink (a failed /proc lookup and its exception, µs in a storm) is skipped."""
        if exited:
            return self._known_path(exe)
        deleted = False
        try:
            path = os.readlink(f"{self._proc}/{pid}/exe")
            if path.endswith(" (deleted)"):
                path, deleted = path[: -len(" (deleted)")], True
            # (when the kernel names the event's own path, the answer is that path either
            # way: the comm read, three syscalls, is skipped)
            if comm and (deleted or path != exe) and self._comm(pid) not in (comm, None):
                # the pid exec'd again since (a shell's last command replaces it: `sh -c
                # "... && /bin/x"`): its exe is the next program's, not this event's
                path = exe if _normal(exe) else str(PurePosixPath(exe))
                deleted = False
        except OSError:
            # (the usual case in a storm the sensor did not see end: the process is gone
            # before roxd looks)
            return self._known_path(exe)
        if not path.startswith("/"):
            return None
        return path, deleted

    @staticmethod
    def _known_path(exe: str) -> tuple[str, bool] | None:
        """The exe as the enricher knew it, for a process gone from /proc: not deleted as far
        as roxd can tell. The enricher's word may not be normal (`//x`, `./`): the kernel's
        always is, and normalising it again cost a PurePosixPath (µs) per exec."""
        if not exe.startswith("/"):
            return None
        return (exe if _normal(exe) else str(PurePosixPath(exe))), False
