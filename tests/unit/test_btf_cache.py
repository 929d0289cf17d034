"""The BTF offsets cache (roxd/sensor/btf.py offsets(cache_dir=...)): the walk of the kernel's BTF
is done once per kernel, not once per start."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from roxd.sensor import btf

pytestmark = pytest.mark.skipif(not btf.VMLINUX.exists(), reason="no kernel BTF here")


def test_cached_offsets_are_the_walks_and_are_reused(tmp_path: Path) -> None:
    # one entry point, cached or not: a test that hides the BTF by patching offsets()
    # (tests/kernel/test_sensor_exec_paths.py test_without_btf) hides it from the cache too
    first = btf.offsets(cache_dir=tmp_path)
    assert first == btf.offsets()
    cache = tmp_path / "btf-offsets.json"
    stored = json.loads(cache.read_text())
    # the file is read, not only written: a planted value under the same key comes back
    stored["offsets"]["TASK_MM_OFF"] = 12345
    cache.write_text(json.dumps(stored))
    assert btf.offsets(cache_dir=tmp_path)["TASK_MM_OFF"] == 12345


def test_another_btf_or_a_broken_cache_is_walked_again(tmp_path: Path) -> None:
    cache = tmp_path / "btf-offsets.json"
    cache.write_text(json.dumps({"key": "another kernel", "offsets": {"TASK_MM_OFF": 1}}))
    assert btf.offsets(cache_dir=tmp_path) == btf.offsets()
    assert json.loads(cache.read_text())["key"] != "another kernel"  # rewritten for this one
    cache.write_text("{not json")
    assert btf.offsets(cache_dir=tmp_path) == btf.offsets()


def test_an_unwritable_cache_only_costs_the_walk(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("")  # a file where the cache directory should be
    assert btf.offsets(cache_dir=blocked / "cache") == btf.offsets()
