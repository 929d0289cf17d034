"""ContainerResolver and Enricher on a temporary cgroup tree with a fake metadata source."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from roxd.containers.cgroups import CgroupIndex
from roxd.containers.enricher import Enricher
from roxd.containers.metadata import ContainerMetadata, MetadataListener
from roxd.containers.process_table import ProcessTable
from roxd.containers.resolver import ContainerResolver
from roxd.model import Ancestor, ConnectEvent, Container, ExecEvent, ExitEvent

pytestmark = pytest.mark.unit

ID = "3c79270d70136d5d3f9916700ee58f8f50872c19d77f622a21dcbb64778ff218"
ID2 = "9f2d1c5e8a7b6c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d"
POD = "0d5f2b4e-7c1a-4f8e-9b3d-2a6c8e1f4b7d"


class FakeSource:
    runtime = "docker"

    def __init__(self) -> None:
        self.meta: dict[str, ContainerMetadata] = {}
        self.listeners: list[MetadataListener] = []
        self.gets = 0

    def get(self, container_id: str) -> ContainerMetadata | None:
        self.gets += 1
        return self.meta.get(container_id)

    def add_listener(self, listener: MetadataListener) -> None:
        self.listeners.append(listener)

    def publish(self, meta: ContainerMetadata) -> None:
        self.meta[meta.id] = meta
        for listener in self.listeners:
            listener(meta.id)

    def remove(self, container_id: str) -> None:
        del self.meta[container_id]
        for listener in self.listeners:
            listener(container_id)


class FakeClock:
    def __init__(self) -> None:
        self.now = 10.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "cg"
    (root / "docker" / ID / "init.scope").mkdir(parents=True)
    (root / "system.slice" / f"crio-{ID2}.scope").mkdir(parents=True)
    (root / "kubepods" / "burstable" / f"pod{POD}" / ID2).mkdir(parents=True)
    (root / "user.slice").mkdir()
    return root


def ino(p: Path) -> int:
    return os.stat(p).st_ino


WEB = ContainerMetadata(id=ID, name="web", image="nginx:1.25", image_id="sha256:abc",
                        labels={"app": "web"})


def test_docker_container_with_metadata(tree: Path) -> None:
    source = FakeSource()
    source.meta[ID] = WEB
    resolver = ContainerResolver(CgroupIndex(str(tree)), [source])
    c = resolver.resolve(ino(tree / "docker" / ID))
    assert c == Container(id=ID, runtime="docker", name="web", image="nginx:1.25",
                          image_id="sha256:abc", labels={"app": "web"},
                          cgroup_path=f"/docker/{ID}")


def test_sub_cgroup_resolves_to_its_container(tree: Path) -> None:
    source = FakeSource()
    source.meta[ID] = WEB
    resolver = ContainerResolver(CgroupIndex(str(tree)), [source])
    c = resolver.resolve(ino(tree / "docker" / ID / "init.scope"))
    assert c is not None and (c.id, c.name) == (ID, "web")
    assert c.cgroup_path == f"/docker/{ID}/init.scope"


def test_host_cgroups_are_none(tree: Path) -> None:
    resolver = ContainerResolver(CgroupIndex(str(tree)))
    assert resolver.resolve(ino(tree)) is None
    assert resolver.resolve(ino(tree / "user.slice")) is None
    assert resolver.resolve(ino(tree / "docker")) is None


def test_other_runtimes_from_path_alone(tree: Path) -> None:
    resolver = ContainerResolver(CgroupIndex(str(tree)), [FakeSource()])
    crio = resolver.resolve(ino(tree / "system.slice" / f"crio-{ID2}.scope"))
    assert crio == Container(id=ID2, runtime="cri-o", cgroup_path=f"/system.slice/crio-{ID2}.scope")
    kube = resolver.resolve(ino(tree / "kubepods" / "burstable" / f"pod{POD}" / ID2))
    assert kube is not None and (kube.runtime, kube.pod_uid) == ("containerd", POD)


def test_results_are_cached_per_cgroup_id(tree: Path) -> None:
    source = FakeSource()
    source.meta[ID] = WEB
    index = CgroupIndex(str(tree))
    resolver = ContainerResolver(index, [source])
    cg = ino(tree / "docker" / ID)
    first = resolver.resolve(cg)
    for _ in range(50):
        assert resolver.resolve(cg) is first
    assert source.gets == 1
    assert index.walks == 1


def test_metadata_arriving_later_updates_the_cached_container(tree: Path) -> None:
    source = FakeSource()
    resolver = ContainerResolver(CgroupIndex(str(tree)), [source])
    cg, sub = ino(tree / "docker" / ID), ino(tree / "docker" / ID / "init.scope")
    before = resolver.resolve(cg)
    assert before is not None and (before.id, before.runtime, before.name) == (ID, "docker", None)
    assert resolver.resolve(sub).name is None  # type: ignore[union-attr]
    source.publish(WEB)
    assert resolver.resolve(cg).name == "web"  # type: ignore[union-attr]
    assert resolver.resolve(sub).image == "nginx:1.25"  # type: ignore[union-attr]
    source.publish(ContainerMetadata(id=ID, name="web-renamed", image="nginx:1.25"))
    assert resolver.resolve(cg).name == "web-renamed"  # type: ignore[union-attr]
    assert resolver.cgroup_ids_of(ID) == {cg, sub}


def test_removed_container_kept_for_a_grace_period(tree: Path) -> None:
    clock = FakeClock()
    source = FakeSource()
    source.meta[ID] = WEB
    resolver = ContainerResolver(CgroupIndex(str(tree)), [source], gone_grace=30.0, clock=clock)
    cg = ino(tree / "docker" / ID)
    assert resolver.resolve(cg).name == "web"  # type: ignore[union-attr]
    source.remove(ID)
    clock.now += 10
    assert resolver.resolve(cg).name == "web"  # type: ignore[union-attr]  # a late exit event
    assert resolver.containers() == []
    clock.now += 30
    # Past the grace period it is looked up again: only the path is left.
    assert resolver.resolve(cg).name is None  # type: ignore[union-attr]


def test_unknown_id_is_not_cached_as_host(tree: Path) -> None:
    clock = FakeClock()
    index = CgroupIndex(str(tree), min_refresh_interval=5.0, clock=clock)
    index.refresh()
    resolver = ContainerResolver(index, [])
    new = tree / "docker" / ("e" * 64)
    new.mkdir()
    assert resolver.resolve(ino(new)) is None  # within the walk interval: not found yet
    clock.now += 6
    c = resolver.resolve(ino(new))
    assert c is not None and c.id == "e" * 64


def test_pid_hint_finds_a_new_cgroup_without_a_walk(tree: Path, tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    (proc / "42").mkdir(parents=True)
    (proc / "42" / "cgroup").write_text(f"0::/docker/{'f' * 64}\n")
    clock = FakeClock()
    index = CgroupIndex(str(tree), min_refresh_interval=60.0, clock=clock, proc=str(proc))
    index.refresh()
    new = tree / "docker" / ("f" * 64)
    new.mkdir()
    c = ContainerResolver(index, []).resolve(ino(new), pid=42)
    assert c is not None and c.id == "f" * 64
    assert index.walks == 1


def test_capacity_bounds_the_cache(tree: Path) -> None:
    (tree / "system.slice" / "cron.service").mkdir()
    resolver = ContainerResolver(CgroupIndex(str(tree)), [], capacity=2)
    for d in (tree, tree / "user.slice", tree / "docker" / ID, tree / "docker" / ID / "init.scope",
              tree / "system.slice", tree / "system.slice" / "cron.service"):
        resolver.resolve(ino(d))
    # the four host cgroups are bounded to 2; the container's two cgroups are pinned
    assert len(resolver) == 2 + 2
    assert resolver.stats()["running_cgroups"] == 2


def test_concurrent_updates_and_reads(tree: Path) -> None:
    source = FakeSource()
    resolver = ContainerResolver(CgroupIndex(str(tree)), [source])
    cg = ino(tree / "docker" / ID)
    stop = threading.Event()

    def writer() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            source.publish(ContainerMetadata(id=ID, name=f"web-{n}"))

    t = threading.Thread(target=writer)
    t.start()
    try:
        for _ in range(2000):
            c = resolver.resolve(cg)
            assert c is not None and c.id == ID
    finally:
        stop.set()
        t.join()
    final = source.meta[ID].name
    source.publish(ContainerMetadata(id=ID, name=final))
    assert resolver.resolve(cg).name == final  # type: ignore[union-attr]


# ---------------------------------------------------------------------- the enricher


def make_enricher(tree: Path, tmp_path: Path) -> tuple[Enricher, FakeSource]:
    source = FakeSource()
    source.meta[ID] = WEB
    proc = tmp_path / "proc"
    proc.mkdir(exist_ok=True)
    (proc / "stat").write_text("btime 1700000000\n")
    table = ProcessTable(proc=str(proc))
    return Enricher(ContainerResolver(CgroupIndex(str(tree)), [source]), table), source


def test_enrich_exec_connect_exit(tree: Path, tmp_path: Path) -> None:
    enricher, _ = make_enricher(tree, tmp_path)
    cg = ino(tree / "docker" / ID)
    sh = ExecEvent(time_ns=1, pid=100, ppid=0, uid=0, gid=0, cgroup_id=cg, comm="sh",
                   filename="/bin/sh", args=("sh", "-c", "wget x"), args_truncated=False)
    wget = ExecEvent(time_ns=2, pid=101, ppid=100, uid=0, gid=0, cgroup_id=cg, comm="wget",
                     filename="/bin/wget", args=("wget", "x"), args_truncated=True, folded=2)
    enricher.enrich(sh)
    e = enricher.enrich(wget)
    assert e.container is not None and e.container.name == "web"
    assert (e.process.exe, e.process.ppid, e.process.args_truncated) == ("/bin/wget", 100, True)
    assert e.process.ancestors == (Ancestor(100, "/bin/sh", ("sh", "-c", "wget x")),)
    assert e.to_dict()["container"]["image"] == "nginx:1.25"

    conn = ConnectEvent(time_ns=3, pid=101, tid=101, uid=5, cgroup_id=cg, comm="wget",
                        family="ipv4", daddr="127.0.0.1", dport=80, errno=0)
    c = enricher.enrich(conn)
    assert (c.process.exe, c.process.uid, c.process.parent_exe) == ("/bin/wget", 5, "/bin/sh")

    gone = enricher.enrich(ExitEvent(time_ns=4, pid=101, cgroup_id=cg, comm="wget", exit_code=0))
    assert gone.process.exe == "/bin/wget"  # built before the table forgets it
    late = enricher.enrich(conn)
    assert late.process.exe == "/bin/wget"  # exited, but within the grace period


def test_enrich_connect_of_a_vanished_unknown_process(tree: Path, tmp_path: Path) -> None:
    enricher, _ = make_enricher(tree, tmp_path)
    conn = ConnectEvent(time_ns=3, pid=4242, tid=4243, uid=1000, cgroup_id=ino(tree), comm="nc",
                        family="ipv6", daddr="::1", dport=22, errno=111)
    e = enricher.enrich(conn)
    assert e.container is None
    assert (e.process.pid, e.process.exe, e.process.comm, e.process.uid) == (4242, "", "nc", 1000)
    assert e.process.ancestors == ()


# ---------------------------------------------------------------------- containers() and version


def test_prime_lists_every_container_cgroup_of_every_runtime(tree: Path) -> None:
    index = CgroupIndex(str(tree))
    index.refresh()
    resolver = ContainerResolver(index, [FakeSource()])
    assert resolver.version == 0
    assert resolver.prime() == 4
    got = {cg: (c.runtime, c.id) for cg, c in resolver.containers()}
    assert got == {
        ino(tree / "docker" / ID): ("docker", ID),
        ino(tree / "docker" / ID / "init.scope"): ("docker", ID),
        ino(tree / "system.slice" / f"crio-{ID2}.scope"): ("cri-o", ID2),
        ino(tree / "kubepods" / "burstable" / f"pod{POD}" / ID2): ("containerd", ID2),
    }
    assert resolver.version > 0


def test_version_changes_only_when_containers_change(tree: Path) -> None:
    clock = FakeClock()
    source = FakeSource()
    resolver = ContainerResolver(CgroupIndex(str(tree)), [source], gone_grace=5.0, clock=clock)
    resolver.resolve(ino(tree / "user.slice"))
    v0 = resolver.version
    cg = ino(tree / "docker" / ID)
    resolver.resolve(cg)
    v1 = resolver.version
    assert v1 != v0
    resolver.resolve(cg)
    source.publish(ContainerMetadata(id=ID2))  # a container no cgroup here belongs to
    assert resolver.version == v1
    source.publish(WEB)
    v2 = resolver.version
    assert v2 != v1
    source.publish(WEB)  # the same metadata again
    assert resolver.version == v2
    source.remove(ID)
    assert resolver.version != v2 and resolver.containers() == []


def test_started_container_is_listed_before_its_first_event(tree: Path, tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    (proc / "4242").mkdir(parents=True)
    (proc / "4242" / "cgroup").write_text(f"0::/docker/{ID}\n")
    source = FakeSource()
    resolver = ContainerResolver(CgroupIndex(str(tree), proc=str(proc)), [source])
    source.publish(ContainerMetadata(id=ID, name="web", pid=4242))
    assert [(cg, c.name) for cg, c in resolver.containers()] == [(ino(tree / "docker" / ID), "web")]


def test_restarted_container_replaces_its_old_cgroup(tree: Path, tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    (proc / "4242").mkdir(parents=True)
    (proc / "4242" / "cgroup").write_text(f"0::/docker/{ID}\n")
    source = FakeSource()
    resolver = ContainerResolver(CgroupIndex(str(tree), proc=str(proc)), [source])
    source.publish(ContainerMetadata(id=ID, name="web", pid=4242))
    old = ino(tree / "docker" / ID)
    # docker restart: runc removes the cgroup directory and makes a new one at the same path.
    (tree / "docker" / ID / "init.scope").rmdir()
    (tree / "docker" / ID).rename(tmp_path / "old-cgroup")
    (tree / "docker" / ID).mkdir()
    new = ino(tree / "docker" / ID)
    assert new != old
    source.publish(ContainerMetadata(id=ID, name="web", pid=4242))
    assert [cg for cg, _ in resolver.containers()] == [new]
    assert resolver.resolve(old).name == "web"  # type: ignore[union-attr]  # late events


def test_late_event_of_a_removed_cgroup_is_answered_but_not_listed(tree: Path) -> None:
    clock = FakeClock()
    source = FakeSource()
    source.meta[ID] = WEB
    index = CgroupIndex(str(tree))
    index.refresh()
    resolver = ContainerResolver(index, [source], gone_grace=5.0, clock=clock)
    cg = ino(tree / "docker" / ID)
    resolver.resolve(cg)
    source.remove(ID)
    (tree / "docker" / ID / "init.scope").rmdir()
    (tree / "docker" / ID).rmdir()
    clock.now += 10
    # Past the grace period, and the index still has the path (no walk since): not listed.
    late = resolver.resolve(cg)
    assert late is not None and late.id == ID
    assert resolver.containers() == []


def test_churn_past_capacity_never_evicts_running_containers(tree: Path) -> None:
    """Issue 23 item 11: cgroup churn (short-lived host cgroups, containers that come and go)
    past the cache size must not drop a running, idle container from containers() (which
    `roxctl containers`, isolation targets and the kernel's container set are built from)."""
    source = FakeSource()
    source.meta[ID] = WEB
    index = CgroupIndex(str(tree), min_refresh_interval=0.0)  # every new cgroup is found
    resolver = ContainerResolver(index, [source], capacity=4)
    web = ino(tree / "docker" / ID)
    assert resolver.resolve(web) is not None
    for i in range(50):  # churn: new cgroups, each seen once, the container stays idle
        d = tree / "user.slice" / f"session-{i}.scope"
        d.mkdir()
        assert resolver.resolve(ino(d)) is None and ino(d) in dict(index.snapshot())
    listed = dict(resolver.containers())
    assert web in listed and listed[web].name == "web"
    assert web in resolver.cgroup_ids_of(ID)
    assert len(resolver) <= 4 + 1  # the churn itself stays bounded


def test_a_running_container_whose_cgroup_vanished_is_swept(tree: Path) -> None:
    """Pinned entries are not a leak: a container cgroup removed without the runtime saying so
    (no metadata source for its runtime) leaves the listing once the resolver sweeps."""
    resolver = ContainerResolver(CgroupIndex(str(tree)), [], capacity=4)
    crio = tree / "system.slice" / f"crio-{ID2}.scope"
    crio_id = ino(crio)
    assert resolver.resolve(crio_id) is not None
    crio.rmdir()
    resolver.sweep()
    assert crio_id not in dict(resolver.containers())


def test_a_gone_process_is_placed_by_its_parent_while_the_walk_waits(
        tree: Path, tmp_path: Path) -> None:
    """A container's `sh -c ...` child that exited before roxd read its exec (the loop
    behind), while the walk is rate-limited: its parent, still in the cgroup, places it.
    A parent elsewhere (moved, or the pid reused) does not."""
    proc = tmp_path / "proc"
    (proc / "42").mkdir(parents=True)  # the parent; the child (43) is already gone
    (proc / "42" / "cgroup").write_text(f"0::/docker/{'f' * 64}\n")
    (proc / "44").mkdir(parents=True)  # a parent in another cgroup
    (proc / "44" / "cgroup").write_text("0::/user.slice\n")
    clock = FakeClock()
    index = CgroupIndex(str(tree), min_refresh_interval=60.0, clock=clock, proc=str(proc))
    index.refresh()
    new = tree / "docker" / ("f" * 64)
    new.mkdir()
    resolver = ContainerResolver(index, [])
    assert resolver.resolve(ino(new), pid=43, ppid=44) is None  # not placed: no walk yet
    c = resolver.resolve(ino(new), pid=43, ppid=42)
    assert c is not None and c.id == "f" * 64
    assert index.walks == 1
    (proc / "stat").write_text("btime 1700000000\n")
    enricher = Enricher(ContainerResolver(index, []), ProcessTable(proc=str(proc)))
    other = tree / "docker" / ("a" * 64)
    other.mkdir()
    (proc / "42" / "cgroup").write_text(f"0::/docker/{'a' * 64}\n")
    sh = ExecEvent(time_ns=1, pid=43, ppid=42, uid=0, gid=0, cgroup_id=ino(other), comm="sh",
                   filename="/bin/sh", args=("sh", "-c", ":"), args_truncated=False)
    placed = enricher.enrich(sh).container  # the exec's ppid is the enricher's second hint
    assert placed is not None and placed.id == "a" * 64
