"""Container attribution against the real dockerd, real containers and real processes.

Needs root, a Docker engine (scripts/dockerd.sh start) and the offline test images
(scripts/test-images.sh). Containers are created from local images only, never pulled, and
removed on teardown.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from roxd.containers.cgroups import CgroupIndex, find_cgroup2_mount, read_proc_cgroup_path
from roxd.containers.docker_source import DEFAULT_DOCKER_URL, DockerMetadataSource
from roxd.containers.enricher import Enricher
from roxd.containers.process_table import ProcessTable
from roxd.containers.resolver import ContainerResolver
from roxd.model import ExecEvent
from tests.conftest import wait_until

docker = pytest.importorskip("docker")

pytestmark = [
    pytest.mark.kernel,
    # python3-docker 5.0 compares API versions with distutils.
    pytest.mark.filterwarnings("ignore::DeprecationWarning:docker.utils.utils"),
]

REPO = Path(__file__).resolve().parents[2]
IMAGE = "roxd-test/busybox:latest"
OTHER_IMAGE = "roxd-test/busybox:other"
DEADLINE = 15.0


def wait_for(cond: Callable[[], Any], timeout: float = DEADLINE, what: str = "condition") -> Any:
    """Poll `cond` until it is truthy, failing the test at the deadline."""
    return wait_until(cond, timeout, message=what)


# ---------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    if os.geteuid() != 0:
        pytest.skip("kernel tests run as root")
    for script in ("dockerd.sh", "test-images.sh"):
        args = [str(REPO / "scripts" / script)] + (["start"] if script == "dockerd.sh" else [])
        done = subprocess.run(args, capture_output=True, text=True, timeout=180, check=False)
        if done.returncode != 0:
            pytest.fail(f"scripts/{script} failed: {done.stderr.strip()}")
    c = docker.DockerClient(base_url=DEFAULT_DOCKER_URL, version="auto", timeout=30)
    for image in (IMAGE, OTHER_IMAGE):
        c.images.get(image)  # present locally, or the test fails here: nothing is ever pulled
    yield c
    c.close()


@pytest.fixture(scope="module")
def cgroup_root() -> str:
    return find_cgroup2_mount().mount_point


@pytest.fixture
def containers(client: Any) -> Iterator[Callable[..., Any]]:
    """Start containers from local images (create + start: never a pull); remove them after."""
    made: list[Any] = []

    def start(image: str = IMAGE, **kwargs: Any) -> Any:
        kwargs.setdefault("name", f"roxd-test-{uuid.uuid4().hex[:10]}")
        c = client.containers.create(image, command=["sleep", "300"], **kwargs)
        made.append(c)
        c.start()
        c.reload()
        return c

    yield start
    for c in made:
        with contextlib.suppress(docker.errors.NotFound):
            c.remove(force=True)


def cgroup_id_of(pid: int, root: str) -> int:
    path = read_proc_cgroup_path(pid)
    assert path is not None, f"/proc/{pid}/cgroup has no cgroup v2 line"
    return os.stat(root.rstrip("/") + path).st_ino


def container_cgroup_id(container: Any, root: str) -> int:
    pid = container.attrs["State"]["Pid"]
    assert pid > 0
    return cgroup_id_of(pid, root)


@pytest.fixture
def make_source() -> Iterator[Callable[..., DockerMetadataSource]]:
    made: list[DockerMetadataSource] = []

    def make(**kwargs: Any) -> DockerMetadataSource:
        src = DockerMetadataSource(**kwargs)
        made.append(src)
        return src

    yield make
    for src in made:
        src.stop()


# ---------------------------------------------------------------------- docker attribution


def test_container_running_before_start_is_found_by_the_scan(
    containers: Callable[..., Any], cgroup_root: str, make_source: Callable[..., Any]
) -> None:
    c = containers(labels={"roxd.test": "scan", "team": "blue"})
    cgid = container_cgroup_id(c, cgroup_root)
    # No inspect on a miss: only the start-up scan can know this container.
    src = make_source(inspect_on_miss=False)
    resolver = ContainerResolver(CgroupIndex(cgroup_root), [src])
    src.start()
    assert src.wait_connected(DEADLINE), "docker engine did not answer"
    # Listed (for the kernel's container maps) before any event of it was seen.
    listed = wait_for(lambda: dict(resolver.containers()).get(cgid), what="scan to list it")
    assert listed.name == c.name
    got = resolver.resolve(cgid)
    assert got is not None
    assert (got.runtime, got.id, got.name) == ("docker", c.id, c.name)
    assert got.image == IMAGE
    assert got.image_id == c.attrs["Image"]
    assert got.labels["roxd.test"] == "scan" and got.labels["team"] == "blue"
    assert got.cgroup_path.endswith(c.id)


def test_container_started_later_is_named_through_the_event_stream(
    containers: Callable[..., Any], cgroup_root: str, make_source: Callable[..., Any]
) -> None:
    src = make_source(inspect_on_miss=False)
    resolver = ContainerResolver(CgroupIndex(cgroup_root, min_refresh_interval=0.2), [src])
    src.start()
    assert src.wait_connected(DEADLINE)
    c = containers(OTHER_IMAGE, labels={"roxd.test": "events"})
    cgid = container_cgroup_id(c, cgroup_root)
    first = resolver.resolve(cgid, pid=c.attrs["State"]["Pid"])
    assert first is not None and (first.runtime, first.id) == ("docker", c.id)
    # Whether or not the start event was handled yet, the cached answer gets the metadata.
    got = wait_for(lambda: (r := resolver.resolve(cgid)) and r.name and r, what="start event")
    assert (got.name, got.image, got.labels["roxd.test"]) == (c.name, OTHER_IMAGE, "events")
    new_name = c.name + "-renamed"
    c.rename(new_name)
    wait_for(lambda: resolver.resolve(cgid).name == new_name, what="rename event")


def test_restarted_container_is_listed_under_its_new_cgroup(
    containers: Callable[..., Any], cgroup_root: str, make_source: Callable[..., Any]
) -> None:
    c = containers()
    before = container_cgroup_id(c, cgroup_root)
    src = make_source()
    resolver = ContainerResolver(CgroupIndex(cgroup_root), [src])
    src.start()
    assert src.wait_connected(DEADLINE)
    wait_for(lambda: before in dict(resolver.containers()), what="scan to list it")
    c.restart(timeout=0)
    c.reload()
    after = container_cgroup_id(c, cgroup_root)
    assert after != before  # runc made a new cgroup directory: a new id
    listed = wait_for(
        lambda: (d := dict(resolver.containers())) and after in d and before not in d and d,
        what="the restart to be seen",
    )
    assert listed[after].name == c.name


def test_first_event_of_a_new_container_is_named_by_inspect_on_miss(
    containers: Callable[..., Any], cgroup_root: str, make_source: Callable[..., Any]
) -> None:
    src = make_source()
    resolver = ContainerResolver(CgroupIndex(cgroup_root), [src])
    src.start()
    assert src.wait_connected(DEADLINE)
    c = containers()
    got = resolver.resolve(container_cgroup_id(c, cgroup_root), pid=c.attrs["State"]["Pid"])
    assert got is not None and (got.name, got.image) == (c.name, IMAGE)


def test_host_cgroup_is_none(cgroup_root: str, make_source: Callable[..., Any]) -> None:
    src = make_source()
    resolver = ContainerResolver(CgroupIndex(cgroup_root), [src])
    src.start()
    assert resolver.resolve(cgroup_id_of(os.getpid(), cgroup_root), pid=os.getpid()) is None
    assert resolver.resolve(os.stat(cgroup_root).st_ino) is None


def test_docker_unreachable_falls_back_to_the_cgroup_path(
    containers: Callable[..., Any],
    cgroup_root: str,
    make_source: Callable[..., Any],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="roxd.containers")
    c = containers(labels={"roxd.test": "unreachable"})
    src = make_source(base_url=f"unix://{tmp_path}/no-such-docker.sock", backoff_initial=0.05,
                      backoff_max=0.1)
    resolver = ContainerResolver(CgroupIndex(cgroup_root), [src])
    src.start()
    got = resolver.resolve(container_cgroup_id(c, cgroup_root))
    assert got is not None
    assert (got.runtime, got.id, got.name, got.image, dict(got.labels)) == (
        "docker", c.id, None, None, {})
    # Several retries later: still exactly one warning, and no traceback anywhere.
    wait_for(
        lambda: sum("still not reachable" in r.getMessage() for r in caplog.records) >= 3,
        what="three retries",
    )
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    message = warnings[0].getMessage()
    assert "no-such-docker.sock" in message
    assert "falls back to the cgroup path only" in message
    assert not any(r.exc_info for r in caplog.records)
    assert not src.connected


def test_enriched_exec_in_a_container(
    containers: Callable[..., Any], cgroup_root: str, make_source: Callable[..., Any]
) -> None:
    src = make_source()
    index = CgroupIndex(cgroup_root)
    enricher = Enricher(
        ContainerResolver(index, [src]), ProcessTable(cgroup_id_of_pid=index.lookup_pid)
    )
    src.start()
    assert src.wait_connected(DEADLINE)
    c = containers(labels={"roxd.test": "enrich"})
    pid = c.attrs["State"]["Pid"]
    cgid = container_cgroup_id(c, cgroup_root)
    # As the sensor would report the container's entrypoint, with a relative filename.
    ev = ExecEvent(time_ns=time.time_ns(), pid=pid, ppid=0, uid=0, gid=0, cgroup_id=cgid,
                   comm="sleep", filename="sleep", args=("sleep", "300"), args_truncated=False)
    out = enricher.enrich(ev)
    assert out.container is not None and out.container.name == c.name
    # /proc/<pid>/exe of a container process reads as the path inside the container.
    assert out.process.exe == "/bin/busybox"
    # Its parent is the runtime's shim on the host.
    assert out.process.ancestors and out.process.ancestors[0].pid != pid
    assert out.to_dict()["container"]["labels"]["roxd.test"] == "enrich"


# ---------------------------------------------------------------------- real process trees


def children_of(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


@pytest.fixture
def spawn() -> Iterator[Callable[[str], subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []

    def run(script: str) -> subprocess.Popen[bytes]:
        p = subprocess.Popen(["sh", "-c", script], start_new_session=True)
        procs.append(p)
        return p

    yield run
    for p in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=10)


def test_ancestry_of_real_processes_from_proc(
    spawn: Callable[[str], subprocess.Popen[bytes]],
) -> None:
    outer = spawn("sh -c 'sleep 5; true'; true")
    inner = wait_for(lambda: children_of(outer.pid), what="inner sh")[0]
    sleeper = wait_for(lambda: children_of(inner), what="sleep")[0]
    wait_for(lambda: Path(f"/proc/{sleeper}/cmdline").read_bytes().startswith(b"sleep"),
             what="sleep to exec")
    sh = os.path.realpath("/bin/sh")
    table = ProcessTable()
    chain = table.ancestry(sleeper)
    assert [a.pid for a in chain[:3]] == [inner, outer.pid, os.getpid()]
    assert chain[0].exe == sh and chain[0].args == ("sh", "-c", "sleep 5; true")
    assert chain[1].exe == sh and chain[1].args == ("sh", "-c", "sh -c 'sleep 5; true'; true")
    assert chain[2].exe == os.path.realpath(f"/proc/{os.getpid()}/exe")
    assert 3 <= len(chain) <= 8


def test_forked_subshell_has_its_parents_exe(
    spawn: Callable[[str], subprocess.Popen[bytes]],
) -> None:
    outer = spawn("( sleep 5; true ); true")
    subshell = wait_for(lambda: children_of(outer.pid), what="subshell")[0]
    sleeper = wait_for(lambda: children_of(subshell), what="sleep")[0]
    table = ProcessTable()
    # The exec of sleep as the sensor reports it: filename as given, parent from the fork map.
    ev = ExecEvent(time_ns=time.time_ns(), pid=sleeper, ppid=subshell, uid=0, gid=0,
                   cgroup_id=0, comm="sleep", filename="/bin/sleep", args=("sleep", "5"),
                   args_truncated=False)
    table.on_exec(ev)
    chain = table.ancestry(sleeper)
    sh = os.path.realpath("/bin/sh")
    assert (chain[0].pid, chain[0].exe) == (subshell, sh)  # never exec'd: the shell's image
    assert (chain[1].pid, chain[1].exe) == (outer.pid, sh)
