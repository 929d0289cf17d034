"""cgroup2 mount discovery and the cgroup id -> path index, on temporary directory trees."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from roxd.containers import cgroups
from roxd.containers.cgroups import (
    CgroupIndex,
    choose_cgroup2_mount,
    find_cgroup2_mount,
    read_proc_cgroup_path,
)
from roxd.errors import CgroupError

pytestmark = pytest.mark.unit

V2_ONLY = """\
22 28 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
25 22 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate
26 22 0:24 / /sys/fs/pstore rw,nosuid,nodev,noexec,relatime shared:10 - pstore pstore rw
"""

# This machine: v1 controllers, and the unified hierarchy beside them.
HYBRID = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""

V1_ONLY = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
"""

ELSEWHERE = """\
50 23 0:40 /kubepods /mnt/my\\040cgroups rw,relatime shared:1 master:2 - cgroup2 none rw
"""


def test_v2_only_host() -> None:
    mount = choose_cgroup2_mount(V2_ONLY.splitlines())
    assert mount.mount_point == "/sys/fs/cgroup"
    assert mount.root == "/"


def test_hybrid_host_uses_unified() -> None:
    assert choose_cgroup2_mount(HYBRID.splitlines()).mount_point == "/sys/fs/cgroup/unified"


def test_both_mounted_prefers_sys_fs_cgroup() -> None:
    text = HYBRID.replace(
        "/sys/fs/cgroup rw,relatime - tmpfs tmpfs", "/sys/fs/cgroup rw - cgroup2 x"
    )
    assert choose_cgroup2_mount(text.splitlines()).mount_point == "/sys/fs/cgroup"


def test_unusual_mount_point_with_optional_fields_and_escapes() -> None:
    mount = choose_cgroup2_mount(ELSEWHERE.splitlines())
    assert mount.mount_point == "/mnt/my cgroups"
    assert mount.root == "/kubepods"


def test_no_cgroup2_is_a_clear_error() -> None:
    with pytest.raises(CgroupError) as info:
        choose_cgroup2_mount(V1_ONLY.splitlines(), source="/proc/self/mountinfo")
    message = str(info.value)
    assert "no cgroup2 filesystem is mounted" in message
    assert "/proc/self/mountinfo" in message
    assert "/sys/fs/cgroup/unified" in message


def test_unreadable_mountinfo_is_a_cgroup_error(tmp_path: Path) -> None:
    with pytest.raises(CgroupError, match="cannot read"):
        find_cgroup2_mount(str(tmp_path / "missing"))


def test_find_from_file(tmp_path: Path) -> None:
    f = tmp_path / "mountinfo"
    f.write_text(HYBRID)
    assert find_cgroup2_mount(str(f)).mount_point == "/sys/fs/cgroup/unified"


# ---------------------------------------------------------------------- the index

ID = "3c79270d70136d5d3f9916700ee58f8f50872c19d77f622a21dcbb64778ff218"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "cg"
    (root / "docker" / ID / "init.scope").mkdir(parents=True)
    (root / "system.slice" / "cron.service").mkdir(parents=True)
    (root / "cgroup.procs").write_text("")
    (root / "docker" / "cgroup.procs").write_text("")
    return root


def ino(p: Path) -> int:
    return os.stat(p).st_ino


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_index_maps_inodes_to_relative_paths(tree: Path) -> None:
    index = CgroupIndex(str(tree))
    index.refresh()
    assert index.path_of(ino(tree)) == "/"
    assert index.path_of(ino(tree / "docker" / ID)) == f"/docker/{ID}"
    assert index.path_of(ino(tree / "docker" / ID / "init.scope")) == f"/docker/{ID}/init.scope"
    cron = tree / "system.slice" / "cron.service"
    assert index.path_of(ino(cron)) == "/system.slice/cron.service"
    assert index.path_of(ino(tree / "cgroup.procs")) is None  # files are not cgroups
    assert len(index) == 6


def test_unknown_id_walks_again_but_rate_limited(tree: Path) -> None:
    clock = FakeClock()
    index = CgroupIndex(str(tree), min_refresh_interval=2.0, clock=clock)
    index.refresh()
    assert index.walks == 1
    new = tree / "docker" / ("b" * 64)
    new.mkdir()
    # Within the interval: no walk, however many unknown ids arrive.
    clock.now += 0.5
    for bogus in range(10**9, 10**9 + 100):
        assert index.path_of(bogus) is None
    assert index.path_of(ino(new)) is None
    assert index.walks == 1
    # After it: one walk finds the new cgroup.
    clock.now += 2.0
    assert index.path_of(ino(new)) == "/docker/" + "b" * 64
    assert index.walks == 2


def test_lookup_path_is_one_stat_and_remembered(tree: Path) -> None:
    clock = FakeClock()
    index = CgroupIndex(str(tree), min_refresh_interval=60.0, clock=clock)
    index.refresh()
    new = tree / "system.slice" / f"docker-{'c' * 64}.scope"
    new.mkdir()
    assert index.lookup_path(f"/system.slice/docker-{'c' * 64}.scope") == ino(new)
    assert index.path_of(ino(new)) == f"/system.slice/docker-{'c' * 64}.scope"
    assert index.walks == 1
    assert index.lookup_path("/docker/" + "d" * 64) is None


def test_walk_is_depth_bounded(tree: Path) -> None:
    deep = tree / "a" / "b" / "c" / "d"
    deep.mkdir(parents=True)
    index = CgroupIndex(str(tree), max_depth=2)
    index.refresh()
    assert index.known_path_of(ino(tree / "a" / "b")) == "/a/b"
    assert index.known_path_of(ino(tree / "a" / "b" / "c")) is None


def test_walk_tolerates_directories_vanishing(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_scandir = os.scandir
    gone = str(tree / "docker" / ID)

    def flaky_scandir(path: str):  # type: ignore[no-untyped-def]
        if str(path) == gone:
            raise FileNotFoundError(2, "No such file or directory", path)
        return real_scandir(path)

    monkeypatch.setattr(cgroups.os, "scandir", flaky_scandir)
    index = CgroupIndex(str(tree))
    index.refresh()
    assert index.known_path_of(ino(tree / "system.slice" / "cron.service")) is not None
    assert index.known_path_of(ino(tree / "docker" / ID)) == f"/docker/{ID}"
    assert index.known_path_of(ino(tree / "docker" / ID / "init.scope")) is None


def test_missing_root_gives_empty_index_not_an_exception(tmp_path: Path) -> None:
    index = CgroupIndex(str(tmp_path / "nope"))
    index.refresh()
    assert len(index) == 0


def test_entries_are_bounded(tree: Path) -> None:
    index = CgroupIndex(str(tree), max_entries=3)
    index.refresh()
    assert len(index) == 3


def fake_proc(tmp_path: Path, pid: int, cgroup_text: str) -> Path:
    proc = tmp_path / "proc"
    (proc / str(pid)).mkdir(parents=True)
    (proc / str(pid) / "cgroup").write_text(cgroup_text)
    return proc


def test_read_proc_cgroup_path_v2_and_hybrid(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, 42, f"4:memory:/docker/{ID}\n1:cpu:/\n0::/docker/{ID}\n")
    assert read_proc_cgroup_path(42, str(proc)) == f"/docker/{ID}"
    assert read_proc_cgroup_path(43, str(proc)) is None
    (proc / "42" / "cgroup").write_text("0::/system.slice/gone.scope (deleted)\n")
    assert read_proc_cgroup_path(42, str(proc)) == "/system.slice/gone.scope"
    (proc / "42" / "cgroup").write_text("9:name=systemd:/\n")  # v1 only
    assert read_proc_cgroup_path(42, str(proc)) is None


def test_lookup_pid_checks_the_expected_id(tree: Path, tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, 42, f"0::/docker/{ID}\n")
    index = CgroupIndex(str(tree), proc=str(proc))
    container = ino(tree / "docker" / ID)
    assert index.lookup_pid(42, expected_id=container + 1) is None  # moved / reused pid
    assert index.known_path_of(container) is None
    assert index.lookup_pid(42, expected_id=container) == container
    assert index.known_path_of(container) == f"/docker/{ID}"
    assert index.walks == 0
