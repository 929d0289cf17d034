"""Fixtures of the fault-injection suite: the real collector (rsyslogd) of the system tests, and
a small filesystem (tmpfs with size=) to fill, made and removed by the test that asks for it."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system.conftest import Rsyslog, TlsFiles, rsyslog, tls_files  # noqa: F401


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs of this test's own (never the host's state dir), unmounted at teardown."""
    mnt = tmp_path / "small-fs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "roxd-faults", str(mnt)],
                   check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(fs: Path) -> Path:
    """Fill the filesystem to the last byte; the file to delete to free it again."""
    filler = fs / "filler"
    with contextlib.suppress(OSError), filler.open("wb") as f:
        while True:
            f.write(b"\0" * 65536)
            f.flush()
    with contextlib.suppress(OSError), filler.open("ab") as f:  # the last partial block
        while True:
            f.write(b"\0" * 512)
            f.flush()
    return filler
