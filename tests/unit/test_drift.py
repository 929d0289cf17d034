"""Drift (issue 15): the overlay's layers from mountinfo, and the verdict for an exec from
real files in a temporary upper and lower layer (the /proc tree is a directory the test made:
mountinfo, and exe as a real symlink)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from roxd.baselines.drift import DriftDetector, Layers, parse_overlay_root, script_operand
from roxd.model import Ancestor, Container, EnrichedEvent, ExecEvent, Process

pytestmark = pytest.mark.unit

DOCKER_ROOT = (
    "1234 1200 0:321 / / rw,relatime master:1 - overlay overlay rw,lowerdir=/var/lib/docker/"
    "overlay2/l/AAA:/var/lib/docker/overlay2/l/BBB,upperdir=/var/lib/docker/overlay2/abc/diff,"
    "workdir=/var/lib/docker/overlay2/abc/work\n"
    "1235 1234 0:322 / /proc rw,nosuid - proc proc rw\n")


def test_the_root_overlay_and_its_layers() -> None:
    assert parse_overlay_root(DOCKER_ROOT) == Layers(
        "/var/lib/docker/overlay2/abc/diff",
        ("/var/lib/docker/overlay2/l/AAA", "/var/lib/docker/overlay2/l/BBB"))
    # escaped spaces in a path; a read-only overlay (no upperdir) cannot drift; no overlay at /
    spaced = DOCKER_ROOT.replace("abc/diff", "a\\040b/diff")
    assert parse_overlay_root(spaced).upper == "/var/lib/docker/overlay2/a b/diff"  # type: ignore[union-attr]
    assert parse_overlay_root(DOCKER_ROOT.replace(",upperdir=/var/lib/docker/overlay2/abc/"
                                                  "diff", "")) is None
    assert parse_overlay_root("1 0 8:1 / / rw - ext4 /dev/sda1 rw\n") is None
    assert parse_overlay_root("garbage\n\n") is None


def _exec(pid: int, exe: str) -> EnrichedEvent:
    ev = ExecEvent(time_ns=1, pid=pid, ppid=1, uid=0, gid=0, cgroup_id=7, comm="x",
                   filename=exe, args=(exe,), args_truncated=False)
    return EnrichedEvent(ev, Container("c" * 64, "docker", "web", "img"),
                         Process(pid=pid, ppid=1, uid=0, exe=exe, comm="x", args=(exe,),
                                 cgroup_id=7))


@pytest.fixture
def layered(tmp_path: Path) -> tuple[Path, Path, Path]:
    proc, upper, lower = tmp_path / "proc", tmp_path / "upper", tmp_path / "lower"
    for d in (upper / "usr/local/bin", upper / "bin", lower / "bin"):
        d.mkdir(parents=True)
    (lower / "bin/ls").write_bytes(b"image ls")
    (lower / "bin/cat").write_bytes(b"image cat")
    (upper / "bin/ls").write_bytes(b"trojaned ls")  # copied up and changed
    (upper / "usr/local/bin/miner").write_bytes(b"dropped")
    os.mknod(upper / "bin/cat", 0o600 | 0o020000, os.makedev(0, 0))  # whiteout: cat deleted
    for pid in (100, 101, 102, 103):
        (proc / str(pid)).mkdir(parents=True)
        (proc / str(pid) / "mountinfo").write_text(
            f"1 0 0:1 / / rw - overlay overlay rw,lowerdir={lower},upperdir={upper},"
            f"workdir=/w\n")
    os.symlink("/usr/local/bin/miner", proc / "100/exe")
    os.symlink("/bin/ls", proc / "101/exe")
    os.symlink("/bin/sh", proc / "102/exe")
    os.symlink("/tmp/gone (deleted)", proc / "103/exe")
    return proc, upper, lower


def test_new_modified_none_and_deleted(layered: tuple[Path, Path, Path]) -> None:
    proc, _, _ = layered
    drift = DriftDetector(proc=str(proc))
    assert drift.check(_exec(100, "/usr/local/bin/miner")) == "new"
    assert drift.check(_exec(101, "/bin/ls")) == "modified"
    assert drift.check(_exec(102, "/bin/sh")) == "none"  # the image's own
    assert drift.check(_exec(103, "/tmp/gone")) == "new"  # deleted itself, in no image layer
    # the process is gone: its exe as the enricher knew it, the layers from the cache
    assert drift.check(_exec(999, "/usr/local/bin/miner")) == "new"
    assert drift.counters["new"] == 3 and drift.counters["modified"] == 1


def test_unknown_on_the_host_and_without_a_live_process(tmp_path: Path) -> None:
    drift = DriftDetector(proc=str(tmp_path))
    event = _exec(5, "/bin/x")
    assert drift.check(EnrichedEvent(event.event, None, event.process)) is None
    assert drift.check(event) is None  # no mountinfo to read: unknown, not cached
    assert drift.counters["unknown"] == 1


def test_layers_through_the_containers_cgroup_when_the_exec_is_gone(
        layered: tuple[Path, Path, Path], tmp_path: Path) -> None:
    proc, _, _ = layered
    cgroup = tmp_path / "cgroup" / "docker" / ("c" * 64)
    cgroup.mkdir(parents=True)
    (cgroup / "cgroup.procs").write_text("102\n")  # the entrypoint, still running
    event = _exec(999, "/usr/local/bin/miner")  # exec and parents already exited
    event = EnrichedEvent(event.event, Container("c" * 64, "docker", "web", "img",
                                                 cgroup_path="/docker/" + "c" * 64),
                          event.process)
    assert DriftDetector(proc=str(proc)).check(event) is None  # no live process: unknown
    drift = DriftDetector(proc=str(proc), cgroup_root=str(tmp_path / "cgroup"))
    assert drift.check(event) == "new"


def test_a_new_binary_in_a_container_that_compiled_is_built(
        layered: tuple[Path, Path, Path]) -> None:
    proc, _, _ = layered
    drift = DriftDetector(proc=str(proc))
    assert drift.check(_exec(100, "/usr/local/bin/miner")) == "new"
    drift.check(_exec(102, "/usr/bin/gcc"))  # a compiler ran in this container
    assert drift.check(_exec(100, "/usr/local/bin/miner")) == "built"
    assert drift.check(_exec(101, "/bin/ls")) == "modified"  # a replaced image binary stays


@pytest.mark.parametrize(("program", "params", "script"), [
    ("python3", ("x.py",), "x.py"),
    ("python3.11", ("-u", "-W", "ignore", "/srv/job.py", "--flag"), "/srv/job.py"),
    ("python3", ("-Wignore", "-B", "run.pyc"), "run.pyc"),
    ("python3", ("-c", "print(1)"), None),
    ("python3", ("-m", "http.server"), None),
    ("python3", ("-Bc", "print(1)"), None),
    ("python3", ("-",), None),
    ("bash", ("atomic.sh",), "atomic.sh"),
    ("bash", ("-x", "-o", "pipefail", "ci/release.sh", "a"), "ci/release.sh"),
    ("sh", ("-c", "./x.sh"), None),
    ("sh", ("-s",), None),
    ("perl", ("-le", "print 1"), None),
    ("perl", ("-w", "/tmp/p.pl"), "/tmp/p.pl"),
    ("ruby", ("-r", "json", "tool.rb"), "tool.rb"),
    ("node", ("--require", "x", "app.js"), "app.js"),
    ("node", ("-e", "1"), None),
    ("nodejs", ("--eval=1",), None),
    ("php", ("-d", "a=b", "-f", "/var/www/x.php"), "/var/www/x.php"),
    ("php", ("-r", "echo 1;"), None),
    ("cat", ("x.py",), None),  # not an interpreter
    ("python3", (), None),  # an interactive interpreter
])
def test_the_script_operand_of_an_interpreter(program: str, params: tuple[str, ...],
                                              script: str | None) -> None:
    assert script_operand(program, params) == script


def _interp(pid: int, exe: str, *args: str, parent: int = 0) -> EnrichedEvent:
    argv = (exe, *args)
    ev = ExecEvent(time_ns=1, pid=pid, ppid=parent or 1, uid=0, gid=0, cgroup_id=7, comm="x",
                   filename=exe, args=argv, args_truncated=False)
    ancestors = (Ancestor(parent, "/bin/bash"),) if parent else ()
    return EnrichedEvent(ev, Container("c" * 64, "docker", "web", "img"),
                         Process(pid=pid, ppid=parent or 1, uid=0, exe=exe, comm="x",
                                 args=argv, cgroup_id=7, ancestors=ancestors))


def test_a_script_written_after_the_start_is_new(layered: tuple[Path, Path, Path]) -> None:
    proc, upper, lower = layered
    (upper / "root").mkdir()
    (upper / "root/dropped.py").write_text("import os\n")
    (lower / "app").mkdir()
    (lower / "app/main.py").write_text("print(1)\n")
    (upper / "app").mkdir()
    (upper / "app/edited.sh").write_text("echo changed\n")
    (lower / "app/edited.sh").write_text("echo image\n")
    os.symlink("/root", proc / "102/cwd")  # the parent shell's working directory
    drift = DriftDetector(proc=str(proc))
    # the interpreter is the image's own: no binary drift; its script is new
    event = _interp(101, "/usr/bin/python3", "/root/dropped.py")
    assert drift.check_script(event) == "new"
    # a relative operand: the process is gone (999), its parent's cwd resolves it
    assert drift.check_script(_interp(999, "/usr/bin/python3", "dropped.py", parent=102)) == "new"
    assert drift.check_script(_interp(101, "/bin/bash", "/app/main.py")) == "none"
    assert drift.check_script(_interp(101, "/bin/bash", "/app/edited.sh")) == "modified"
    assert drift.check_script(_interp(101, "/bin/bash", "/app/missing.sh")) == "none"
    # inline code, no operand, and a relative operand with no cwd to read: no verdict
    assert drift.check_script(_interp(101, "/usr/bin/python3", "-c", "1")) is None
    assert drift.check_script(_interp(101, "/usr/bin/python3")) is None
    assert drift.check_script(_interp(999, "/usr/bin/python3", "dropped.py")) is None
    assert drift.counters["script_new"] == 2 and drift.counters["script_modified"] == 1
    on_host = _interp(101, "/usr/bin/python3", "/root/dropped.py")
    assert drift.check_script(EnrichedEvent(on_host.event, None, on_host.process)) is None


def test_the_runtimes_own_processes_do_not_decide_the_containers_layers(
        layered: tuple[Path, Path, Path]) -> None:
    """runc init (before its pivot_root) and the shim are attributed to the container but see
    the host's root: their answer must not stick, or no exec of the container gets a verdict."""
    proc, _, _ = layered
    (proc / "50").mkdir()
    (proc / "50/mountinfo").write_text("1 0 8:1 / / rw - ext4 /dev/sda1 rw\n")  # the host's
    os.symlink("/usr/bin/runc", proc / "50/exe")
    drift = DriftDetector(proc=str(proc))
    assert drift.check(_exec(50, "/usr/bin/runc")) is None
    assert drift.check(_exec(100, "/usr/local/bin/miner")) == "new"
    # a container whose root is no overlay at all: remembered after a run of misses
    other = DriftDetector(proc=str(proc))
    event = _exec(50, "/usr/bin/runc")
    for _ in range(20):
        assert other.check(event) is None
    assert other._layers[event.container.id] is None  # type: ignore[union-attr]


def test_a_pid_that_exec_d_again_is_judged_by_the_events_own_program(
        layered: tuple[Path, Path, Path]) -> None:
    """`sh -c "... && /bin/ls"`: the shell's pid becomes ls before roxd reads /proc/<pid>/exe
    for the shell's exec; the shell must not take ls's verdict."""
    proc, _, _ = layered
    (proc / "101/comm").write_text("ls\n")  # pid 101 is ls now (modified)
    drift = DriftDetector(proc=str(proc))
    shell = _exec(101, "/bin/sh")
    shell = EnrichedEvent(dataclasses.replace(shell.event, comm="sh"),  # type: ignore[arg-type]
                          shell.container, shell.process)
    assert drift.check(shell) == "none"  # /bin/sh as the enricher knew it: the image's
    ls = EnrichedEvent(dataclasses.replace(shell.event, comm="ls"),  # type: ignore[arg-type]
                       shell.container, shell.process)
    assert drift.check(ls) == "modified"


def test_a_relative_script_resolves_through_the_nearest_living_ancestor_in_the_container(
        layered: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """`sh -c "python3 x.py"` where python and the sh have both exited: the entrypoint above
    them (same overlay root) still has the working directory; a host process above it (the
    shim, another root) is never asked."""
    proc, upper, _ = layered
    (upper / "root").mkdir()
    (upper / "root/x.py").write_text("1\n")
    os.symlink("/root", proc / "102/cwd")  # 102: the entrypoint, in the container
    (proc / "60").mkdir()
    (proc / "60/mountinfo").write_text("1 0 8:1 / / rw - ext4 /dev/sda1 rw\n")
    os.symlink("/root", proc / "60/cwd")  # 60: a host process with a /root of its own
    drift = DriftDetector(proc=str(proc))
    ev = _exec(998, "/usr/bin/python3")

    def run(*ancestors: int) -> EnrichedEvent:
        argv = ("/usr/bin/python3", "x.py")
        return EnrichedEvent(
            dataclasses.replace(ev.event, args=argv),  # type: ignore[arg-type]
            ev.container,
            Process(pid=998, ppid=997, uid=0, exe="/usr/bin/python3", comm="python3",
                    args=argv, cgroup_id=7,
                    ancestors=tuple(Ancestor(p, "/bin/sh") for p in ancestors)))
    assert drift.check(_exec(100, "/usr/local/bin/miner")) == "new"  # layers known
    assert drift.check_script(run(997, 102)) == "new"  # 997 (the sh) is gone
    assert drift.check_script(run(997, 996, 60)) is None  # only a host process is left


def test_an_image_binary_modified_after_earlier_execs_is_caught_at_once(
        layered: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """What drift keeps (whether an image layer has a path) cannot hide a change: the upper
    layer, where every write in the container lands, is looked up on every exec."""
    from roxd.baselines import drift as drift_mod

    proc, upper, lower = layered
    (lower / "bin/sh").write_bytes(b"image sh")
    drift = DriftDetector(proc=str(proc))
    for _ in range(3):
        assert drift.check(_exec(102, "/bin/sh")) == "none"
    (upper / "bin/sh").write_bytes(b"trojaned sh")  # overlayfs copies it up, then it changes
    assert drift.check(_exec(102, "/bin/sh")) == "modified"
    (upper / "bin/sh").unlink()
    assert drift.check(_exec(102, "/bin/sh")) == "none"
    # a dropped binary run again and again: the image layers are asked once for its path
    looked: list[str] = []
    real = drift_mod._exists
    monkeypatch.setattr(drift_mod, "_exists",
                        lambda layer, path: looked.append(layer) or real(layer, path))
    for _ in range(5):
        assert drift.check(_exec(100, "/usr/local/bin/miner")) == "new"
    assert looked.count(str(lower)) == 1 and looked.count(str(upper)) == 5


def test_a_gone_process_is_judged_by_its_exe_normalised(
        layered: tuple[Path, Path, Path]) -> None:
    proc, _, _ = layered
    drift = DriftDetector(proc=str(proc))
    drift.check(_exec(100, "/usr/local/bin/miner"))  # the layers, from a live process
    # pid 998 is gone: no /proc/998/exe; the enricher's path, normalised only when it must be
    assert drift.check(_exec(998, "/usr/local//bin/./miner")) == "new"
    assert drift.check(_exec(998, "/usr/local/bin/miner")) == "new"
    assert drift.check(_exec(998, "/bin/sh/")) == "none"
    assert drift.check(_exec(998, "bin/sh")) is None  # not absolute: cannot be told


def test_an_exec_read_with_its_exit_is_judged_without_a_proc_lookup(
        layered: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """exited (the sensor read the process's exit with its exec): /proc/<pid>/exe is not
    read, even where it exists (a pid reused since would name another program): the exe
    as the enricher knew it decides, as for a process found gone."""
    from roxd.baselines import drift as drift_mod

    proc, _, _ = layered
    drift = DriftDetector(proc=str(proc))
    drift.check(_exec(100, "/usr/local/bin/miner"))  # the layers, from a live process
    links: list[str] = []
    real = os.readlink
    monkeypatch.setattr(drift_mod.os, "readlink", lambda p: links.append(p) or real(p))
    # pid 101's link names the trojaned /bin/ls; the exec that exited was the image's sh
    assert drift.check(_exec(101, "/bin/sh"), exited=True) == "none"
    assert drift.check(_exec(101, "/usr/local//bin/miner"), exited=True) == "new"
    assert drift.check(_exec(101, "bin/sh"), exited=True) is None
    assert links == []
    assert drift.check(_exec(101, "/bin/sh")) == "modified"  # alive: the kernel's link
    assert links == [f"{proc}/101/exe"]


@pytest.mark.parametrize("program", ["sh", "bash", "busybox", "python3", "python3.12", "perl",
                                     "node", "nodejs", "php8.2", "ruby", "lua5.4", "tiny",
                                     "curl", "pythonx", "nc", "", "awk", "zsh"])
def test_runs_scripts_answers_as_script_operand(program: str) -> None:
    """check_script's shortcut (issue 22): a program told apart by a set lookup is exactly
    one script_operand() can find a script for."""
    from roxd.baselines.drift import _runs_scripts

    assert _runs_scripts(program) == (script_operand(program, ("x.sh",)) is not None)
