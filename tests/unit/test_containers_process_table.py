"""ProcessTable: exec/exit bookkeeping, /proc fallback, ancestry, eviction, PID reuse."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from roxd.containers.process_table import ProcessTable
from roxd.model import Ancestor, ExecEvent, ExitEvent

pytestmark = pytest.mark.unit


class FakeProc:
    """A /proc tree on disk: stat, cmdline, status, exe (a symlink), cgroup."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        (root / "stat").write_text("cpu  1 2 3\nbtime 1700000000\n")

    def add(self, pid: int, ppid: int, exe: str, args: list[str], *, uid: int = 0,
            start_ticks: int = 100, comm: str | None = None) -> None:
        d = self.root / str(pid)
        d.mkdir(exist_ok=True)
        name = comm or os.path.basename(exe)[:15]
        # 52 fields; after "(comm)": state ppid ... starttime is the 20th.
        rest = ["S", str(ppid)] + ["0"] * 17 + [str(start_ticks)] + ["0"] * 30
        (d / "stat").write_text(f"{pid} ({name}) {' '.join(rest)}\n")
        (d / "cmdline").write_bytes(b"\0".join(a.encode() for a in args) + b"\0")
        (d / "status").write_text(f"Name:\t{name}\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n")
        if (d / "exe").is_symlink():
            (d / "exe").unlink()
        os.symlink(exe, d / "exe")

    def remove(self, pid: int) -> None:
        d = self.root / str(pid)
        for f in d.iterdir():
            f.unlink()
        d.rmdir()


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def proc(tmp_path: Path) -> FakeProc:
    return FakeProc(tmp_path / "proc")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def table(proc: FakeProc, clock: FakeClock, **kw: object) -> ProcessTable:
    return ProcessTable(proc=str(proc.root), clock=clock, **kw)  # type: ignore[arg-type]


def exec_ev(pid: int, ppid: int, filename: str, *args: str, uid: int = 0,
            cgroup_id: int = 7) -> ExecEvent:
    return ExecEvent(time_ns=1, pid=pid, ppid=ppid, uid=uid, gid=0, cgroup_id=cgroup_id,
                     comm=os.path.basename(filename)[:15], filename=filename,
                     args=(filename, *args), args_truncated=False)


def exit_ev(pid: int) -> ExitEvent:
    return ExitEvent(time_ns=2, pid=pid, cgroup_id=7, comm="x", exit_code=0)


def test_ancestry_from_exec_events_nearest_first(proc: FakeProc, clock: FakeClock) -> None:
    t = table(proc, clock)
    t.on_exec(exec_ev(10, 1, "/usr/sbin/sshd", "-D"))
    t.on_exec(exec_ev(20, 10, "/bin/bash"))
    t.on_exec(exec_ev(30, 20, "/usr/bin/curl", "http://127.0.0.1"))
    assert t.ancestry(30) == (
        Ancestor(20, "/bin/bash", ("/bin/bash",)),
        Ancestor(10, "/usr/sbin/sshd", ("/usr/sbin/sshd", "-D")),
    )


def test_ancestry_is_capped_at_eight(proc: FakeProc, clock: FakeClock) -> None:
    t = table(proc, clock)
    for pid in range(100, 120):
        t.on_exec(exec_ev(pid, pid - 1 if pid > 100 else 0, f"/bin/p{pid}"))
    chain = t.ancestry(119)
    assert len(chain) == 8
    assert [a.pid for a in chain] == list(range(118, 110, -1))


def test_unknown_parents_come_from_proc(proc: FakeProc, clock: FakeClock) -> None:
    proc.add(1, 0, "/sbin/init", ["/sbin/init"])
    proc.add(500, 1, "/usr/bin/bash", ["-bash"], start_ticks=200)
    t = table(proc, clock)
    t.on_exec(exec_ev(600, 500, "/bin/ls", "-l"))
    assert t.ancestry(600) == (
        Ancestor(500, "/usr/bin/bash", ("-bash",)),
        Ancestor(1, "/sbin/init", ("/sbin/init",)),
    )


def test_proc_fallback_for_a_process_never_seen(proc: FakeProc, clock: FakeClock) -> None:
    proc.add(1, 0, "/sbin/init", ["/sbin/init"])
    proc.add(77, 1, "/usr/bin/python3", ["python3", "app.py"], uid=1000)
    t = table(proc, clock, cgroup_id_of_pid=lambda pid: 4242)
    info = t.get(77)
    assert info is not None
    assert (info.exe, info.args, info.uid, info.ppid, info.cgroup_id) == (
        "/usr/bin/python3", ("python3", "app.py"), 1000, 1, 4242)
    assert info.start_time_ns == 1700000000 * 10**9 + 100 * 10**9 // os.sysconf("SC_CLK_TCK")
    assert t.get(78) is None


def test_forked_child_without_exec_has_parents_exe(proc: FakeProc, clock: FakeClock) -> None:
    # /proc shows the child with its parent's exe and cmdline (fork copies them).
    proc.add(1, 0, "/sbin/init", ["/sbin/init"])
    proc.add(40, 1, "/usr/sbin/nginx", ["nginx: master"])
    proc.add(41, 40, "/usr/sbin/nginx", ["nginx: worker"])
    t = table(proc, clock)
    assert t.get(41).exe == "/usr/sbin/nginx"  # type: ignore[union-attr]
    assert t.ancestry(41)[0] == Ancestor(40, "/usr/sbin/nginx", ("nginx: master",))


def test_exec_replaces_entry_on_pid_reuse(proc: FakeProc, clock: FakeClock) -> None:
    t = table(proc, clock)
    t.on_exec(exec_ev(10, 1, "/bin/old"))
    t.on_exit(exit_ev(10))
    t.on_exec(exec_ev(10, 2, "/bin/new", uid=33))
    info = t.get(10)
    assert info is not None
    assert (info.exe, info.ppid, info.uid, info.exited_at) == ("/bin/new", 2, 33, None)


def test_exec_of_a_running_pid_replaces_its_image(proc: FakeProc, clock: FakeClock) -> None:
    t = table(proc, clock)
    t.on_exec(exec_ev(10, 1, "/bin/sh", "-c", "exec sleep 1"))
    t.on_exec(exec_ev(10, 1, "/bin/sleep", "1"))
    assert t.get(10).exe == "/bin/sleep"  # type: ignore[union-attr]
    assert len(t) == 1


def test_exited_entries_stay_briefly(proc: FakeProc, clock: FakeClock) -> None:
    t = table(proc, clock, exit_grace=5.0)
    t.on_exec(exec_ev(10, 0, "/bin/parent"))
    t.on_exec(exec_ev(11, 10, "/bin/child"))
    t.on_exit(exit_ev(10))
    clock.now += 4.0
    # A late event of the child still shows the parent that just exited.
    assert t.ancestry(11) == (Ancestor(10, "/bin/parent", ("/bin/parent",)),)
    clock.now += 2.0
    assert t.get(10) is None  # expired, and /proc has no pid 10
    assert t.ancestry(11) == ()


def test_exited_entries_are_pruned_without_being_read(proc: FakeProc, clock: FakeClock) -> None:
    t = table(proc, clock, exit_grace=1.0)
    for pid in range(10, 20):
        t.on_exec(exec_ev(pid, 0, "/bin/x"))
        t.on_exit(exit_ev(pid))
    clock.now += 2.0
    t.on_exec(exec_ev(99, 0, "/bin/y"))
    assert len(t) == 1


def test_capacity_evicts_least_recently_used(proc: FakeProc, clock: FakeClock) -> None:
    t = table(proc, clock, capacity=3)
    for pid in (1, 2, 3):
        t.on_exec(exec_ev(pid, 0, f"/bin/p{pid}"))
    assert t.get(1) is not None  # touch 1: now 2 is the oldest
    t.on_exec(exec_ev(4, 0, "/bin/p4"))
    assert len(t) == 3
    assert t.get(2) is None
    assert {t.get(p).exe for p in (1, 3, 4)} == {"/bin/p1", "/bin/p3", "/bin/p4"}  # type: ignore[union-attr]


def test_relative_filename_resolved_through_proc_exe(proc: FakeProc, clock: FakeClock) -> None:
    proc.add(50, 1, "/opt/app/run", ["./run"])
    t = table(proc, clock)
    assert t.on_exec(exec_ev(50, 1, "./run")).exe == "/opt/app/run"
    # Gone already: keep the path as given.
    assert t.on_exec(exec_ev(51, 1, "./gone")).exe == "./gone"
    # Absolute: as given, even if /proc's exe differs (a script's interpreter).
    proc.add(52, 1, "/bin/busybox", ["/bin/sh"])
    assert t.on_exec(exec_ev(52, 1, "/bin/sh")).exe == "/bin/sh"


def test_ppid_unknown_in_event_is_taken_from_proc(proc: FakeProc, clock: FakeClock) -> None:
    proc.add(60, 5, "/bin/true", ["true"])
    t = table(proc, clock)
    assert t.on_exec(exec_ev(60, 0, "/bin/true")).ppid == 5


def test_reused_parent_pid_is_not_taken_as_ancestor(proc: FakeProc, clock: FakeClock) -> None:
    # The child started at tick 100; what now has pid 70 started later: not its parent.
    proc.add(71, 70, "/bin/child", ["child"], start_ticks=100)
    proc.add(70, 1, "/bin/unrelated", ["unrelated"], start_ticks=900)
    t = table(proc, clock)
    assert t.ancestry(71) == ()


def test_ppid_cycle_terminates(proc: FakeProc, clock: FakeClock) -> None:
    t = table(proc, clock)
    t.on_exec(exec_ev(5, 6, "/bin/a"))
    t.on_exec(exec_ev(6, 5, "/bin/b"))
    assert [a.pid for a in t.ancestry(5)] == [6]


def test_child_of_a_dead_parent_is_re_parented_once(proc: FakeProc, clock: FakeClock) -> None:
    """A container's init was exec'd by runc (pid 40), which exited; the shim (30) adopted it.
    Ancestry follows the adoption and reads /proc for it once, not on every event."""
    proc.add(30, 1, "/usr/bin/containerd-shim-runc-v2", ["containerd-shim-runc-v2"])
    proc.add(50, 30, "/bin/busybox", ["sh", "-c", "loop"])
    t = table(proc, clock)
    t.on_exec(exec_ev(50, 40, "/bin/sh", "-c", "loop"))  # the kernel saw runc fork it
    reads: list[int] = []
    stat = t._proc.stat
    t._proc.stat = lambda pid: reads.append(pid) or stat(pid)  # type: ignore[method-assign]
    for child in (60, 61, 62):
        t.on_exec(exec_ev(child, 50, "/tmp/x", "true"))
        assert [a.pid for a in t.ancestry(child)] == [50, 30]
    assert reads.count(40) == 1 and reads.count(50) == 1


def test_vpid_is_the_last_nspid_field(proc: FakeProc, clock: FakeClock) -> None:
    proc.add(70, 1, "/bin/sh", ["sh"])
    status = proc.root / "70" / "status"
    status.write_text(status.read_text() + "NSpid:\t70\t1\nNSgid:\t70\t1\n")
    assert table(proc, clock).vpid(70) == 1
    proc.add(71, 1, "/bin/sh", ["sh"])  # no NSpid line (an old kernel): unknown, not an error
    assert table(proc, clock).vpid(71) is None


def test_busybox_applet_reexec_of_a_gone_process_has_the_parents_image(
        proc: FakeProc, clock: FakeClock) -> None:
    """busybox sh runs `cat` by re-exec'ing /proc/self/exe; cat may be gone before roxd reads
    its /proc/<pid>/exe. Its image is its parent's *image* (/bin/busybox, the kernel's link of
    the live parent), not the path the parent was started by (/bin/sh, a symlink): with the
    path, exe_basename said "sh" for cat and rules on `cat` missed it now and then (seen in
    tests/kernel/test_runtimes_live.py)."""
    t = table(proc, clock)
    proc.add(20, 1, "/bin/busybox", ["sh", "-c", "cat /etc/hostname"])  # the live parent
    t.on_exec(exec_ev(20, 1, "/bin/sh", "-c", "cat /etc/hostname"))
    cat = ExecEvent(time_ns=2, pid=21, ppid=20, uid=0, gid=0, cgroup_id=7, comm="exe",
                    filename="/proc/self/exe", args=("cat", "/etc/hostname"),
                    args_truncated=False)  # pid 21 already gone: no /proc/21
    assert t.on_exec(cat).exe == "/bin/busybox"
    # the parent gone too: the path it was started by is the best left
    proc.remove(20)
    t.on_exec(exec_ev(20, 1, "/bin/sh", "-c", "x"))
    assert t.on_exec(cat).exe == "/bin/sh"
def test_argument_cut_by_the_kernel_is_completed_from_proc(proc: FakeProc,
                                                           clock: FakeClock) -> None:
    """The kernel keeps 255 bytes of an argument: a long `sh -c` script's end (`| base64 -d |
    sh`) is read from /proc while the shell lives, when /proc extends what the kernel saw."""
    script = "echo " + "x" * 300 + " | base64 -d | sh"
    proc.add(1, 0, "/sbin/init", ["/sbin/init"])
    proc.add(50, 1, "/bin/sh", ["sh", "-c", script])
    t = table(proc, clock)
    cut = dataclasses.replace(exec_ev(50, 1, "/bin/sh", "-c", script[:255]),
                              args=("sh", "-c", script[:255]), args_truncated=True)
    t.on_exec(cut)
    info = t.get(50)
    assert info is not None and info.args == ("sh", "-c", script) and not info.args_truncated


def test_rewritten_argv_in_proc_does_not_replace_the_kernels(proc: FakeProc,
                                                             clock: FakeClock) -> None:
    """A process that rewrote its argv after exec (setproctitle, or to hide) keeps the argv
    the kernel captured at exec."""
    proc.add(1, 0, "/bin/sh", ["/bin/sh"])
    proc.add(60, 1, "/bin/sh", ["sh", "-c", "sleep 1 # harmless"])
    t = table(proc, clock)
    cut = dataclasses.replace(exec_ev(60, 1, "/bin/sh"), args=("sh", "-c", "curl x | sh"),
                              args_truncated=True)
    t.on_exec(cut)
    info = t.get(60)
    assert info is not None and info.args == ("sh", "-c", "curl x | sh") and info.args_truncated


def test_ancestors_follow_a_parents_exec_and_exit(proc: FakeProc, clock: FakeClock) -> None:
    """An exec of the parent or a reused pid shows in its children's ancestry at once."""
    t = table(proc, clock)
    t.on_exec(exec_ev(10, 1, "/bin/bash"))
    first = t.on_exec(exec_ev(20, 10, "/bin/true", "20"))
    assert t.ancestry_of(first)[0] == Ancestor(10, "/bin/bash", ("/bin/bash",))
    t.on_exec(exec_ev(10, 1, "/usr/bin/python3", "-c", "x"))  # the parent exec'd
    child = t.on_exec(exec_ev(22, 10, "/bin/true"))
    assert t.ancestry_of(child)[0] == Ancestor(10, "/usr/bin/python3",
                                               ("/usr/bin/python3", "-c", "x"))
    t.on_exit(exit_ev(10))
    t.on_exec(exec_ev(10, 1, "/bin/sh"))  # the pid reused after the exit
    child = t.on_exec(exec_ev(23, 10, "/bin/true"))
    assert t.ancestry_of(child)[0] == Ancestor(10, "/bin/sh", ("/bin/sh",))


def test_an_exit_keeps_every_field_of_the_entry(proc: FakeProc, clock: FakeClock) -> None:
    """on_exit marks the entry exited in place (issue 22: no copy per exit): the same entry,
    every other field as it was, and its ancestor record (built once per entry) unchanged."""
    t = table(proc, clock)
    info = t.on_exec(exec_ev(40, 1, "/bin/sleep", "5", uid=7))
    info = dataclasses.replace(info, start_time_ns=123, args_truncated=True)
    t._table[40] = info  # every field set to something not a default
    ancestor = info.as_ancestor()
    before = {f.name: getattr(info, f.name) for f in dataclasses.fields(info)}
    assert t.on_exit(exit_ev(40)) is info
    gone = t._table[40]
    assert gone is info and gone.exited_at is not None
    assert {f.name: getattr(gone, f.name) for f in dataclasses.fields(gone)} == {
        **before, "exited_at": gone.exited_at}
    assert gone.as_ancestor() is ancestor
    assert (ancestor.pid, ancestor.exe, ancestor.args) == (40, "/bin/sleep", ("/bin/sleep", "5"))
    assert {f.name for f in dataclasses.fields(info)} == {
        "pid", "ppid", "exe", "args", "uid", "cgroup_id", "comm", "start_time_ns",
        "exec_time_ns", "args_truncated", "exited_at", "_ancestor"}


def test_a_reused_pid_gets_its_own_ancestor_record(proc: FakeProc, clock: FakeClock) -> None:
    """The ancestor record is kept per entry, so a pid that exec'd again (or was reused) is
    named as what it runs now in its children's ancestry."""
    t = table(proc, clock)
    t.on_exec(exec_ev(50, 1, "/bin/sh", "-c", "x"))
    t.on_exec(exec_ev(51, 50, "/bin/ls"))
    assert [a.exe for a in t.ancestry(51)] == ["/bin/sh"]
    t.on_exec(exec_ev(50, 1, "/usr/bin/python3", "app.py"))  # pid 50 exec'd again
    t.on_exec(exec_ev(52, 50, "/bin/cat"))
    assert [(a.exe, a.args) for a in t.ancestry(52)] == [
        ("/usr/bin/python3", ("/usr/bin/python3", "app.py"))]
    assert [a.exe for a in t.ancestry(51)] == ["/usr/bin/python3"]  # the table's word now
