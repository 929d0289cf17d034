"""The container-runtime port without a kernel or an engine: NoRuntime's answers, DockerRuntime
over a fake SDK client, the Responder's container actions over a fake runtime and its seccomp
action over a fake SeccompControl, and SeccompService's attribution through a shared index."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker.errors
import pytest
import requests.exceptions

from roxd.config import ContainersSection
from roxd.containers.cgroups import CgroupIndex
from roxd.enforce.quarantine import Quarantine, QuarantineError
from roxd.enforce.response import Responder
from roxd.model import (
    ActionKind,
    Container,
    EnrichedEvent,
    ExecEvent,
    Phase,
    Process,
    RuleMatch,
    RuleRef,
    Severity,
)
from roxd.runtime import (
    NOT_CONFIGURED,
    ContainerMetadata,
    ContainerRuntime,
    DockerRuntime,
    NoRuntime,
    RuntimeControlError,
    RuntimeEvent,
    RuntimeUnavailableError,
    as_runtime,
    connect_runtime,
)
from roxd.seccomp.control import SeccompEnforcement
from roxd.seccomp.errors import SeccompTargetError
from roxd.seccomp.learner import CG_LEARN, CG_PROVISIONAL, CgroupState

pytestmark = pytest.mark.unit

CID = "3c79270d70136d5d3f9916700ee58f8f50872c19d77f622a21dcbb64778ff218"


# ---------------------------------------------------------------------- NoRuntime, the factory


def test_no_runtime_says_why_for_every_action() -> None:
    rt = NoRuntime()
    assert isinstance(rt, ContainerRuntime) and not rt.configured
    calls = [rt.ping, rt.version, rt.running_ids, lambda: rt.inspect(CID), lambda: rt.events(),
             lambda: rt.image_id("busybox"), lambda: rt.kill(CID), lambda: rt.stop(CID),
             lambda: rt.pause(CID), lambda: rt.apply_seccomp(CID, "{}")]
    for call in calls:
        with pytest.raises(RuntimeUnavailableError) as err:
            call()
        assert err.value.reason == NOT_CONFIGURED
        assert "containers.docker_url is empty" in str(err.value)
    # queries that can be answered say "cannot tell", never "gone"
    assert rt.exists(CID) is True
    assert rt.pid_of(CID) is None
    rt.close()
    assert str(NoRuntime("engine disabled").reason) == "engine disabled"


def test_connect_runtime_from_the_containers_section() -> None:
    assert isinstance(connect_runtime(ContainersSection(docker_url="")), NoRuntime)
    rt = connect_runtime(ContainersSection(docker_url="unix:///nowhere.sock",
                                           docker_timeout_s=2.5))
    assert isinstance(rt, DockerRuntime) and isinstance(rt, ContainerRuntime)
    assert (rt.url, rt.timeout, rt.configured) == ("unix:///nowhere.sock", 2.5, True)
    assert rt._client is None  # nothing connects before the first use


# ---------------------------------------------------------------------- DockerRuntime


def inspect_doc(cid: str = CID, name: str = "web", running: bool = True) -> dict[str, Any]:
    return {"Id": cid, "Name": f"/{name}", "Image": "sha256:19021ce95b2e",
            "Config": {"Image": "roxd-test/busybox:latest", "Labels": {"team": "a"}},
            "State": {"Running": running, "Pid": 4242 if running else 0}}


class FakeAPI:
    def __init__(self) -> None:
        self.containers_: dict[str, dict[str, Any]] = {}
        self.down = False
        self.calls: list[tuple[str, str]] = []
        self.refuse: set[str] = set()

    def _check(self) -> None:
        if self.down:
            raise requests.exceptions.ConnectionError(
                FileNotFoundError(2, "No such file or directory"))

    def inspect_container(self, cid: str) -> dict[str, Any]:
        self._check()
        for doc in self.containers_.values():
            if cid in (doc["Id"], doc["Name"].lstrip("/")):
                return doc
        raise docker.errors.NotFound("no such container")

    def containers(self, quiet: bool = False) -> list[dict[str, str]]:
        self._check()
        return [{"Id": cid} for cid in self.containers_]

    def inspect_image(self, ref: str) -> dict[str, str]:
        if ref != "roxd-test/busybox:latest":
            raise docker.errors.NotFound("no such image")
        return {"Id": "sha256:19021ce95b2e"}

    def _verb(self, verb: str, cid: str) -> None:
        self._check()
        if verb in self.refuse:
            raise docker.errors.APIError(f"cannot {verb}: container is paused")
        self.calls.append((verb, cid))

    def kill(self, cid: str) -> None:
        self._verb("kill", cid)

    def stop(self, cid: str) -> None:
        self._verb("stop", cid)

    def pause(self, cid: str) -> None:
        self._verb("pause", cid)


class FakeClient:
    def __init__(self) -> None:
        self.api = FakeAPI()
        self.closed = False
        self.event_docs: list[dict[str, Any]] = []

    def events(self, **kw: Any) -> Any:
        docs = self.event_docs

        class Stream:
            def __iter__(self) -> Iterator[dict[str, Any]]:
                return iter(docs)

            def close(self) -> None:
                pass

        return Stream()

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def client() -> FakeClient:
    c = FakeClient()
    c.api.containers_[CID] = inspect_doc()
    return c


def test_docker_runtime_metadata_and_control(client: FakeClient) -> None:
    rt = DockerRuntime.from_client(client)
    meta = rt.inspect("web")
    assert meta == ContainerMetadata(CID, "web", "roxd-test/busybox:latest", "sha256:19021ce95b2e",
                                     {"team": "a"}, 4242)
    assert meta is not None and meta.running and meta.display_name == "web"
    assert rt.inspect("nope") is None
    assert rt.running_ids() == [CID]
    assert rt.image_id("roxd-test/busybox:latest") == "sha256:19021ce95b2e"
    assert rt.image_id("other") is None
    assert (rt.exists(CID), rt.exists("nope"), rt.pid_of(CID), rt.pid_of("nope")) == (
        True, False, 4242, None)
    rt.kill(CID)
    rt.stop(CID)
    rt.pause(CID)
    assert client.api.calls == [("kill", CID), ("stop", CID), ("pause", CID)]
    with pytest.raises(RuntimeControlError, match="no longer exists"):
        rt.kill("f" * 64)
    client.api.refuse.add("stop")
    with pytest.raises(RuntimeControlError, match="docker stop 3c79270d7013: .*paused"):
        rt.stop(CID)
    rt.close()
    assert not client.closed  # a client handed in belongs to the caller


def test_docker_runtime_events_are_typed(client: FakeClient) -> None:
    client.event_docs[:] = [{"Type": "container", "Action": "start", "Actor": {"ID": CID}},
                            {"status": "die", "id": CID}, {"Action": "start", "Actor": {}}]
    got = list(DockerRuntime.from_client(client).events(since=0, actions=("start", "die")))
    assert got == [RuntimeEvent("start", CID), RuntimeEvent("die", CID)]


def test_docker_runtime_unreachable_engine(client: FakeClient) -> None:
    rt = DockerRuntime.from_client(client, base_url="unix:///run/fake.sock")
    client.api.down = True
    with pytest.raises(RuntimeUnavailableError,
                       match="docker not reachable at unix:///run/fake.sock: No such file"):
        rt.inspect(CID)
    with pytest.raises(RuntimeUnavailableError):
        rt.kill(CID)
    assert rt.exists(CID) is True  # cannot tell: quarantine state is kept
    assert rt.pid_of(CID) is None


def test_docker_runtime_engine_down_at_first_use(tmp_path: Path) -> None:
    rt = DockerRuntime(f"unix://{tmp_path}/no-such-docker.sock", timeout=1)
    with pytest.raises(RuntimeUnavailableError, match="no-such-docker.sock"):
        rt.ping()
    assert rt._client is None  # built again on the next use
    assert rt.exists(CID) and rt.pid_of(CID) is None


def test_as_runtime_wraps_an_sdk_client_once(client: FakeClient) -> None:
    rt = as_runtime(client)
    assert isinstance(rt, DockerRuntime) and rt.client() is client
    assert as_runtime(rt) is rt


# ---------------------------------------------------------------------- Responder


@dataclass
class FakeRuntime:
    """A ContainerRuntime that records container actions and can refuse them."""

    name: str = "docker"
    label: str = "Docker"
    url: str = "unix:///fake.sock"
    configured: bool = True
    refuse: str = ""
    calls: list[tuple[str, str]] = field(default_factory=list)

    def _do(self, verb: str, cid: str) -> None:
        if self.refuse:
            raise RuntimeControlError(self.refuse)
        self.calls.append((verb, cid))

    def kill(self, cid: str) -> None:
        self._do("kill", cid)

    def stop(self, cid: str) -> None:
        self._do("stop", cid)

    def pause(self, cid: str) -> None:
        self._do("pause", cid)

    def pid_of(self, cid: str) -> int | None:
        return 4242

    def exists(self, cid: str) -> bool:
        return True


RULE = RuleRef("test.rule", "Test", Phase.FOOTHOLD, Severity.WARNING, ("T1059",))
CONTAINER = Container(id=CID, runtime="docker", name="web-1")


def event(container: Container | None = CONTAINER) -> EnrichedEvent:
    exec_ = ExecEvent(time_ns=1, pid=100, ppid=1, uid=0, gid=0, cgroup_id=7, comm="sh",
                      filename="/bin/sh", args=("sh",), args_truncated=False)
    proc = Process(pid=100, ppid=1, uid=0, exe="/bin/sh", comm="sh", args=("sh",), cgroup_id=7)
    return EnrichedEvent(exec_, container, proc)


def kill_container(**kw: Any) -> RuleMatch:
    return RuleMatch(RULE, (ActionKind.KILL,), kill_target="container", **kw)


def outcomes(results: Sequence[Any]) -> list[tuple[str, str, str]]:
    return [(r.action.value, r.outcome.value, r.reason) for r in results]


def test_kill_target_container_goes_through_the_runtime() -> None:
    rt = FakeRuntime()
    assert outcomes(Responder(runtime=rt).respond(kill_container(), event())) == [
        ("kill", "done", "container web-1 killed through the Docker API")]
    assert outcomes(Responder(runtime=rt, container_kill="stop").respond(
        kill_container(), event())) == [
        ("kill", "done", "container web-1 stopped through the Docker API")]
    assert rt.calls == [("kill", CID), ("stop", CID)]
    rt.refuse = "docker kill 3c79270d7013: is paused"
    assert outcomes(Responder(runtime=rt).respond(kill_container(), event())) == [
        ("kill", "failed", "docker kill 3c79270d7013: is paused")]


def test_kill_target_container_without_a_runtime() -> None:
    for responder in (Responder(), Responder(runtime=None), Responder(runtime=NoRuntime())):
        assert isinstance(responder.runtime, NoRuntime)
        assert outcomes(responder.respond(kill_container(), event())) == [
            ("kill", "not_supported", "kill_target container: no container runtime configured")]
    assert outcomes(Responder(runtime=FakeRuntime()).respond(kill_container(), event(None))) == [
        ("kill", "not_supported", "kill_target container: the process runs on the host")]


class HostNetworkQuarantine(Quarantine):
    def isolate(self, container_id: str, name: str | None, reason: str) -> Any:
        raise QuarantineError(f"container {name} shares the host's network namespace: an "
                              "nftables table there would cut off the host itself")


def isolate_responder(tmp_path: Path, fallback: str, runtime: Any) -> Responder:
    q = HostNetworkQuarantine.for_runtime(tmp_path, runtime)
    return Responder(quarantine=q, runtime=runtime, isolate_fallback=fallback)


def test_isolate_falls_back_through_the_runtime(tmp_path: Path) -> None:
    match = RuleMatch(RULE, (ActionKind.ISOLATE,))
    rt = FakeRuntime()
    got = outcomes(isolate_responder(tmp_path, "pause", rt).respond(match, event()))
    assert got[0][:2] == ("isolate", "failed") and "host's network" in got[0][2]
    assert got[1] == ("kill", "done", "isolate fallback: container paused through the Docker API")
    got = outcomes(isolate_responder(tmp_path, "kill", rt).respond(match, event()))
    assert got[1] == ("kill", "done", "isolate fallback: container killed through the Docker API")
    assert rt.calls == [("pause", CID), ("kill", CID)]
    rt.refuse = "docker pause 3c79270d7013: already paused"
    got = outcomes(isolate_responder(tmp_path, "pause", rt).respond(match, event()))
    assert got[1] == ("kill", "failed",
                      "isolate fallback pause: docker pause 3c79270d7013: already paused")
    got = outcomes(isolate_responder(tmp_path, "none", FakeRuntime()).respond(match, event()))
    assert [g[:2] for g in got] == [("isolate", "failed")]
    got = outcomes(isolate_responder(tmp_path, "pause", NoRuntime()).respond(match, event()))
    assert got[1] == ("kill", "not_supported", "isolate fallback pause: no container runtime")


# ---------------------------------------------------------------------- the seccomp action


@dataclass
class FakeSeccomp:
    """A SeccompControl."""

    fail: Exception | None = None
    enforced: list[str] = field(default_factory=list)

    def enforce(self, target: str) -> SeccompEnforcement:
        if self.fail is not None:
            raise self.fail
        self.enforced.append(target)
        return SeccompEnforcement(container=target, cgroup_id=7, denied=312, allowed=61)


def test_seccomp_action_through_seccomp_control() -> None:
    match = RuleMatch(RULE, (ActionKind.SECCOMP,))
    fake = FakeSeccomp()
    assert outcomes(Responder(seccomp=fake).respond(match, event())) == [
        ("seccomp", "done", "enforce mode: 312 syscalls now killed")]
    assert fake.enforced == [CID]
    fake.fail = SeccompTargetError("web-1", "nothing learned yet")
    got = outcomes(Responder(seccomp=fake).respond(match, event()))
    assert got[0][:2] == ("seccomp", "failed") and "nothing learned yet" in got[0][2]
    assert outcomes(Responder().respond(match, event())) == [
        ("seccomp", "not_supported", "seccomp service unavailable")]
    assert outcomes(Responder(seccomp=fake, monitor=True).respond(match, event())) == [
        ("seccomp", "would", "monitor mode")]
    assert outcomes(Responder(seccomp=fake).respond(match, event(None))) == [
        ("seccomp", "not_supported", "host process: no container")]


# ---------------------------------------------------------------------- seccomp attribution


class FakeTracer:
    """The part of SyscallTracer SeccompService drives, in memory."""

    def __init__(self) -> None:
        self.loaded = False
        self.attached: tuple[str, ...] = ()
        self.flags: dict[int, int] = {}
        self.dropped: list[int] = []

    def load(self) -> None:
        self.loaded = True

    def set_groups(self, groups: Sequence[str]) -> None:
        self.attached = tuple(groups)

    def set_provisional(self, on: bool) -> None:
        pass

    def set_state(self, cg: int, flags: int, **kw: Any) -> None:
        self.flags[cg] = flags

    def drop_state(self, cg: int) -> None:
        self.flags.pop(cg, None)
        self.dropped.append(cg)

    def states(self) -> list[CgroupState]:
        return [CgroupState(cg, f, first_tgid=0, armed_ns=1, out_of_range=0, kills=0,
                            learned=frozenset()) for cg, f in self.flags.items()]

    def state(self, cg: int) -> CgroupState | None:
        return next((s for s in self.states() if s.cgroup_id == cg), None)

    def events(self) -> list[Any]:
        return []

    def arm_tasks(self, cg: int, tgids: Sequence[int]) -> int:
        return 0

    def counters(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        pass


def test_seccomp_classifies_cgroups_through_the_shared_index(
        tmp_path: Path, client: FakeClient) -> None:
    from roxd.seccomp.service import SeccompService

    root = tmp_path / "cgroup"
    (root / "docker" / CID).mkdir(parents=True)
    (root / "system.slice").mkdir()
    container_cg = os.stat(root / "docker" / CID).st_ino
    host_cg = os.stat(root / "system.slice").st_ino
    client.api.containers_[CID]["Config"]["Labels"] = {"roxd.learn": "true"}
    index = CgroupIndex(str(root))
    tracer = FakeTracer()
    service = SeccompService(tmp_path / "state", DockerRuntime.from_client(client),
                             honor_label=True, tracer=tracer,  # type: ignore[arg-type]
                             index=index)
    assert service._index is index and service._root == index.root
    tracer.flags = {container_cg: CG_PROVISIONAL, host_cg: CG_PROVISIONAL}
    service.poll()
    # the labelled container is learned, the host cgroup forgotten; both paths came from the
    # shared index, whose walk now knows them for every other stage too
    assert tracer.flags == {container_cg: CG_LEARN}
    assert tracer.dropped == [host_cg]
    assert index.known_path_of(container_cg) == f"/docker/{CID}"
    status = service.status()
    assert [(c["container"], c["id"], c["modes"]) for c in status["cgroups"]] == [
        ("web", CID, ["learn"])]


def test_reading_a_profile_never_consumes_pending_seccomp_events(
        tmp_path: Path, client: FakeClient) -> None:
    """Issue 23, item 5: `GET /v1/seccomp/profile` (read access) ran poll(), which hands out
    and forgets the kernel's new kill/deny counts; the daemon's next poll then had nothing to
    raise alerts for. Reads refresh the learned sets and queue the events for the daemon."""
    from roxd.seccomp.errors import SeccompTargetError
    from roxd.seccomp.learner import KIND_KILL, SyscallEvent
    from roxd.seccomp.service import SeccompService
    from roxd.seccomp.syscalls import number_of

    tracer = FakeTracer()
    service = SeccompService(tmp_path / "state", DockerRuntime.from_client(client),
                             tracer=tracer,  # type: ignore[arg-type]
                             index=CgroupIndex(str(tmp_path)))
    tracer.loaded = True
    unshare = number_of("unshare")
    assert unshare is not None
    kernel = [SyscallEvent(cgroup_id=77, nr=unshare, kind=KIND_KILL, count=1, last_pid=4242,
                           last_ns=1)]
    tracer.events = lambda: list(kernel)  # type: ignore[method-assign]
    for _ in range(3):  # an operator (or any roxd-group reader) asking, again and again
        with pytest.raises(SeccompTargetError):
            service.profile(CID)
    kernel[0] = SyscallEvent(cgroup_id=77, nr=unshare, kind=KIND_KILL, count=3, last_pid=4243,
                             last_ns=2)
    with pytest.raises(SeccompTargetError):
        service.learned("web")
    events = service.poll()  # the daemon's poll
    assert [(e.kind, e.syscall, e.count, e.pid) for e in events] == [
        ("killed", "unshare", 1, 4242), ("killed", "unshare", 2, 4243)]
    assert service.poll() == []  # each kill is reported once


def test_a_hung_engine_never_holds_the_seccomp_poll_or_its_api_calls(
        tmp_path: Path, client: FakeClient) -> None:
    """Issue 23, item 12: the seccomp service's engine calls (the inspect of each new cgroup's
    container in poll(), the API's learn/apply/...) ran on the event loop; a hung dockerd held
    every event for the engine's timeout. They run on the service's worker now."""
    import threading

    from roxd.seccomp.errors import SeccompBusy
    from roxd.seccomp.service import SeccompService
    from tests.conftest import wait_until

    root = tmp_path / "cgroup"
    (root / "docker" / CID).mkdir(parents=True)
    container_cg = os.stat(root / "docker" / CID).st_ino
    client.api.containers_[CID]["Config"]["Labels"] = {"roxd.learn": "true"}
    answering = threading.Event()  # cleared: the engine hangs (a SIGSTOPped dockerd)
    inspect = client.api.inspect_container

    def hung_inspect(cid: str) -> dict[str, Any]:
        answering.wait()
        return inspect(cid)

    client.api.inspect_container = hung_inspect  # type: ignore[method-assign]
    tracer = FakeTracer()
    service = SeccompService(tmp_path / "state", DockerRuntime.from_client(client),
                             honor_label=True, tracer=tracer,  # type: ignore[arg-type]
                             index=CgroupIndex(str(root)), poll_wait=0.05)

    def returns(call: Any) -> list[Any]:
        """[result] once call returned; [] while it is held (the engine never answers)."""
        out: list[Any] = []
        t = threading.Thread(target=lambda: out.append(call()), daemon=True)
        t.start()
        t.join(10)
        return out

    try:
        tracer.flags = {container_cg: CG_PROVISIONAL}
        # the daemon's poll: the new cgroup's inspect waits on the worker, not in poll()
        assert returns(service.poll) == [[]]
        assert tracer.flags == {container_cg: CG_PROVISIONAL}  # not classified yet
        # an API call queued behind it: given up after its timeout, withdrawn, never runs
        with pytest.raises(SeccompBusy) as withdrawn:
            service.call(lambda s: s.learn("web"), timeout=0.2)
        assert withdrawn.value.started is False
        assert "withdrawn, nothing changed" in str(withdrawn.value)
        answering.set()  # the engine answers: the next polls finish the classification
        wait_until(lambda: service.poll() == [] and tracer.flags == {container_cg: CG_LEARN},
                   5, message="the cgroup classified once the engine answered")
        assert service.store.selection().containers == frozenset()  # the withdrawn learn
        # a call the worker had started when its caller gave up: "may still complete"
        answering.clear()
        with pytest.raises(SeccompBusy) as started:
            service.call(lambda s: s.learn("web"), timeout=0.2)
        assert started.value.started is True
        answering.set()
        wait_until(lambda: CID in service.store.selection().containers, 5,
                   message="the started learn completing")
    finally:
        answering.set()
        service.close()
