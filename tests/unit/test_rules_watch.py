"""Rule files changed on disk are noticed, a Kubernetes ConfigMap update (the kubelet's
atomic `..data` symlink swap) included: the daemon's housekeeping reloads on `changed()`."""

from __future__ import annotations

import os
from pathlib import Path

from roxd.rules.watch import RuleFilesWatch

RULE = """
[[rule]]
id = "test.{name}"
name = "Test {name}"
description = "Test rule."
phase = "foothold"
severity = "warning"
event = "exec"
actions = ["alert"]
[rule.when]
exe = "/bin/{name}"
"""


def _configmap_version(mount: Path, version: int, files: dict[str, str]) -> None:
    """What the kubelet's AtomicWriter does: write a fresh timestamped directory, point a new
    symlink at it, rename that over `..data`, remove the old directory; the user-visible
    names are symlinks through `..data`, created once."""
    data_dir = mount / f"..2026_11_29_18_00_0{version}.{version}"
    data_dir.mkdir()
    for name, text in files.items():
        (data_dir / name).write_text(text)
    tmp = mount / "..data_tmp"
    tmp.symlink_to(data_dir.name)
    old = os.readlink(mount / "..data") if (mount / "..data").is_symlink() else None
    os.rename(tmp, mount / "..data")
    for name in files:
        if not (mount / name).is_symlink():
            (mount / name).symlink_to(f"..data/{name}")
    if old is not None:
        for f in (mount / old).iterdir():
            f.unlink()
        (mount / old).rmdir()


def test_configmap_swap_is_noticed_once(tmp_path: Path) -> None:
    mount = tmp_path / "rules.d"
    mount.mkdir()
    _configmap_version(mount, 1, {"rules.toml": RULE.format(name="one")})
    watch = RuleFilesWatch([mount])
    watch.mark()
    assert not watch.changed()
    # same size, same names: only the inode behind the symlinks differs
    _configmap_version(mount, 2, {"rules.toml": RULE.format(name="two")})
    assert watch.changed()
    assert not watch.changed()
    assert "test.two" in (mount / "rules.toml").read_text()


def test_files_added_removed_and_edited_in_place(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "a.toml").write_text(RULE.format(name="a"))
    watch = RuleFilesWatch([rules])
    assert not watch.changed()  # the first call takes the baseline
    (rules / "b.toml").write_text(RULE.format(name="b"))
    assert watch.changed()
    (rules / "notes.txt").write_text("not a rule file")
    assert not watch.changed()
    with (rules / "a.toml").open("a") as f:
        f.write("# edited in place\n")
    assert watch.changed()
    (rules / "b.toml").unlink()
    assert watch.changed()


def test_a_missing_path_and_its_return(tmp_path: Path) -> None:
    single = tmp_path / "only.toml"
    watch = RuleFilesWatch([single])
    watch.mark()
    single.write_text(RULE.format(name="x"))
    assert watch.changed()
    single.unlink()
    assert watch.changed()
