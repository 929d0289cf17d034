"""Enforcement without the runtime's API, in pure Python: the container's cgroup found in a
cgroup tree, the responder's container kill (cgroup.kill first, refusals honest, the runtime's
API as fallback), the shared-namespace and seccomp results, the tamper check's comparison and
its alert. The kernel side runs in tests/kernel/test_enforce_any_runtime.py."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from roxd.enforce.cgroups import CgroupKill, CgroupKillError, ContainerCgroups
from roxd.enforce.protect import ProtectedProcesses
from roxd.enforce.quarantine import (
    Quarantine,
    QuarantineRecord,
    Tampering,
    canonical,
    describe_difference,
)
from roxd.enforce.response import Responder
from roxd.enforce.tamper import TAMPER_RULE, TamperAlerts
from roxd.model import (
    ActionKind,
    ActionResult,
    Container,
    EnrichedEvent,
    ExecEvent,
    Phase,
    Process,
    RuleMatch,
    RuleRef,
    Severity,
)
from roxd.runtime import RuntimeControlError

CID = "a" * 64
OTHER = "b" * 64
RULE = RuleRef("test.rule", "Test", Phase.FOOTHOLD, Severity.WARNING, ("T1059",))


def event(runtime: str = "containerd") -> EnrichedEvent:
    exec_ = ExecEvent(time_ns=1, pid=100, ppid=1, uid=0, gid=0, cgroup_id=7, comm="sh",
                      filename="/bin/sh", args=("sh",), args_truncated=False)
    proc = Process(pid=100, ppid=1, uid=0, exe="/bin/sh", comm="sh", args=("sh",), cgroup_id=7)
    return EnrichedEvent(exec_, Container(id=CID, runtime=runtime), proc)


def outcomes(results: list[ActionResult]) -> list[tuple[str, str, str]]:
    return [(r.action.value, r.outcome.value, r.reason) for r in results]


# ---------------------------------------------------------------------------- the cgroup tree


def test_container_cgroups_in_a_kubepods_tree(tmp_path: Path) -> None:
    """The outermost directory that parses as the container is its cgroup; processes are read
    from every sub-cgroup; the init is the earliest started."""
    pod = tmp_path / "kubepods.slice" / "kubepods-besteffort.slice" / \
        "kubepods-besteffort-pod0d7f1a2e_1111_2222_3333_444455556666.slice"
    top = pod / f"cri-containerd-{CID}.scope"
    (top / "init.scope").mkdir(parents=True)
    (top / "cgroup.procs").write_text("")
    parent = os.getppid()  # started before this process: the "init"
    (top / "init.scope" / "cgroup.procs").write_text(f"{os.getpid()}\n{parent}\n")
    other = tmp_path / "system.slice" / f"docker-{OTHER}.scope"
    other.mkdir(parents=True)
    (other / "cgroup.procs").write_text("")
    (tmp_path / "system.slice" / "sshd.service").mkdir()
    cgroups = ContainerCgroups(str(tmp_path))
    assert cgroups.containers() == {CID: str(top), OTHER: str(other)}
    assert sorted(cgroups.pids(CID)) == sorted([os.getpid(), parent])
    assert cgroups.init_pid(CID) == parent
    assert cgroups.init_pid(OTHER) is None and cgroups.netns_of(OTHER) is None
    assert cgroups.netns_of(CID) == os.stat("/proc/self/ns/net").st_ino
    assert cgroups.sharing_netns(os.stat("/proc/self/ns/net").st_ino) == [CID]
    assert cgroups.exists(CID) and not cgroups.exists("c" * 64)


def test_cgroup_kill_is_refused_without_cgroup_kill_or_with_a_protected_process(
        tmp_path: Path) -> None:
    top = tmp_path / "docker" / CID
    top.mkdir(parents=True)
    (top / "cgroup.procs").write_text(f"{os.getpid()}\n")
    cgroups = ContainerCgroups(str(tmp_path))
    try:
        cgroups.kill(CID, ProtectedProcesses())
        raise AssertionError("killed without cgroup.kill")
    except CgroupKillError as exc:
        assert "cgroup.kill is not available" in str(exc)
    (top / "cgroup.kill").write_text("")
    try:
        cgroups.kill(CID, ProtectedProcesses())  # this process is roxd here: protected
        raise AssertionError("a cgroup holding roxd itself was killed")
    except CgroupKillError as exc:
        assert str(exc).startswith("protected process") and "roxd itself" in str(exc)
    assert (top / "cgroup.kill").read_text() == ""  # nothing written


# ---------------------------------------------------------------------------- the responder


@dataclass
class FakeCgroups:
    """ContainerCgroups.kill as a test double: answers or refuses, records calls."""

    answer: CgroupKill | CgroupKillError
    calls: list[str] = field(default_factory=list)

    def kill(self, container_id: str, protect: Any, wait_s: float = 2.0) -> CgroupKill:
        self.calls.append(container_id)
        if isinstance(self.answer, CgroupKillError):
            raise self.answer
        return self.answer


@dataclass
class FakeRuntime:
    name: str = "docker"
    label: str = "Docker"
    url: str = "unix:///fake.sock"
    configured: bool = True
    refuse: str = ""
    calls: list[tuple[str, str]] = field(default_factory=list)

    def kill(self, cid: str) -> None:
        if self.refuse:
            raise RuntimeControlError(self.refuse)
        self.calls.append(("kill", cid))

    def stop(self, cid: str) -> None:
        self.calls.append(("stop", cid))

    def pause(self, cid: str) -> None:
        self.calls.append(("pause", cid))


def kill_container() -> RuleMatch:
    return RuleMatch(RULE, (ActionKind.KILL,), kill_target="container")


def test_container_kill_through_cgroup_kill_needs_no_runtime() -> None:
    cg = FakeCgroups(CgroupKill("/sys/fs/cgroup/kubepods/x", 3, True))
    rt = FakeRuntime(configured=False)
    r = Responder(runtime=rt, cgroups=cg)  # type: ignore[arg-type]
    assert outcomes(r.respond(kill_container(), event())) == [
        ("kill", "done", f"container {CID[:12]}: SIGKILL to its 3 processes through "
                         "cgroup.kill")]
    assert cg.calls == [CID] and rt.calls == []


def test_container_kill_with_a_protected_process_fails_and_never_falls_back() -> None:
    cg = FakeCgroups(CgroupKillError("protected process 42 (roxd itself) in the container's "
                                     "cgroup: not killed"))
    rt = FakeRuntime()
    r = Responder(runtime=rt, cgroups=cg)  # type: ignore[arg-type]
    got = outcomes(r.respond(kill_container(), event("docker")))
    assert got[0][:2] == ("kill", "failed") and "roxd itself" in got[0][2]
    assert rt.calls == []


def test_container_kill_falls_back_to_the_runtime_and_says_why() -> None:
    cg = FakeCgroups(CgroupKillError("cgroup.kill is not available (Linux 5.14+, cgroup v2)"))
    rt = FakeRuntime()
    r = Responder(runtime=rt, cgroups=cg)  # type: ignore[arg-type]
    assert outcomes(r.respond(kill_container(), event("docker"))) == [
        ("kill", "done", f"container {CID[:12]} killed through the Docker API (cgroup.kill: "
                         "cgroup.kill is not available (Linux 5.14+, cgroup v2))")]
    # a containerd container: the Docker API cannot kill it, and the result says both whys
    got = outcomes(r.respond(kill_container(), event("containerd")))
    assert got[0][:2] == ("kill", "failed")
    assert "a containerd container, and the configured runtime is Docker" in got[0][2]
    assert "cgroup.kill is not available" in got[0][2]


def test_stop_goes_through_the_runtime_only() -> None:
    cg = FakeCgroups(CgroupKill("/x", 1, True))
    rt = FakeRuntime()
    r = Responder(runtime=rt, cgroups=cg, container_kill="stop")  # type: ignore[arg-type]
    assert outcomes(r.respond(kill_container(), event("docker")))[0][:2] == ("kill", "done")
    assert cg.calls == [] and rt.calls == [("stop", CID)]


class SharedNetnsQuarantine(Quarantine):
    def isolate(self, container_id: str, name: str | None, reason: str) -> QuarantineRecord:
        return QuarantineRecord(container_id, name, 0.0, reason, 4026532000, (), (OTHER,))


def test_isolate_names_the_containers_sharing_the_namespace(tmp_path: Path) -> None:
    q = SharedNetnsQuarantine(tmp_path, pid_of=lambda _c: None, exists=lambda _c: True)
    r = Responder(quarantine=q)
    assert outcomes(r.respond(RuleMatch(RULE, (ActionKind.ISOLATE,)), event())) == [
        ("isolate", "done", "nftables table roxd_quarantine in the container's netns; "
                            "quarantined together with 1 other container(s) sharing that "
                            f"network namespace: {OTHER[:12]}")]


def test_seccomp_on_another_runtime_is_not_supported() -> None:
    r = Responder(runtime=FakeRuntime())  # type: ignore[arg-type]
    got = outcomes(r.respond(RuleMatch(RULE, (ActionKind.SECCOMP,)), event("containerd")))
    assert got == [("seccomp", "not_supported",
                    "seccomp is not supported on runtime containerd: roxd learns and applies "
                    "seccomp through the configured runtime's API (Docker)")]


# ---------------------------------------------------------------------------- tampering


LISTING = [
    {"table": {"family": "inet", "name": "roxd_quarantine", "handle": 7}},
    {"chain": {"family": "inet", "table": "roxd_quarantine", "name": "input", "handle": 1,
               "type": "filter", "hook": "input", "prio": -300, "policy": "drop"}},
    {"chain": {"family": "inet", "table": "roxd_quarantine", "name": "output", "handle": 2,
               "type": "filter", "hook": "output", "prio": -300, "policy": "drop"}},
    {"rule": {"family": "inet", "table": "roxd_quarantine", "chain": "output", "handle": 3,
              "expr": [{"counter": {"packets": 12, "bytes": 720}}, {"drop": None}]}},
]


def test_canonical_ignores_handles_and_counter_values() -> None:
    moved = [dict(item) for item in LISTING]
    moved[0] = {"table": {"family": "inet", "name": "roxd_quarantine", "handle": 99}}
    moved[3] = {"rule": {**LISTING[3]["rule"], "handle": 40,
                         "expr": [{"counter": {"packets": 0, "bytes": 0}}, {"drop": None}]}}
    assert canonical(moved) == canonical(LISTING)


def test_describe_difference_names_what_changed() -> None:
    expected = canonical(LISTING)
    assert describe_difference(expected, None) == "the quarantine table was deleted"
    accepting = canonical([LISTING[0], LISTING[1],
                           {"chain": {**LISTING[2]["chain"], "policy": "accept"}}, LISTING[3]])
    assert describe_difference(expected, accepting) == "chain output policy accept"
    flushed = canonical(LISTING[:3])
    assert describe_difference(expected, flushed) == "rules changed (0 rules, 1 expected)"
    extra = canonical([*LISTING, {"chain": {"family": "inet", "table": "roxd_quarantine",
                                            "name": "escape"}}])
    assert describe_difference(expected, extra) == "chain escape added"


def test_tampering_becomes_one_alert_with_the_reapply_result() -> None:
    raised: list[tuple[RuleRef, EnrichedEvent, list[ActionResult]]] = []
    record = QuarantineRecord(CID, "web-1", 0.0, "rule test.rule", 4026532000)
    container = Container(id=CID, runtime="containerd", name="web-1")
    alerts = TamperAlerts(lambda rule, ev, actions: raised.append((rule, ev, list(actions))),
                          lambda cid: container if cid == CID else None)
    alerts(Tampering(record, "chain output policy accept", os.getpid(), True))
    alerts(Tampering(record, "the quarantine table was deleted", os.getpid(), False,
                     "nftables refused the quarantine table: EPERM"))
    (rule, ev, done), (_, _, failed) = raised
    assert rule is TAMPER_RULE and rule.id == "roxd.quarantine-tampered"
    assert rule.phase is Phase.OBJECTIVES and rule.severity is Severity.CRITICAL
    assert ev.container == container and ev.process.pid == os.getpid()
    assert ev.to_dict()["syscall"]["args"]["found"] == "chain output policy accept"
    assert outcomes(done)[1] == ("isolate", "done",
                                 "quarantine table re-applied (chain output policy accept)")
    assert outcomes(failed)[1][:2] == ("isolate", "failed")
    assert "EPERM" in outcomes(failed)[1][2]
