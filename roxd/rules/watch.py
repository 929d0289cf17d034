"""Notice when the rule files change on disk, so roxd reloads them without a SIGHUP.

A Kubernetes ConfigMap mounted as a directory is updated by an atomic swap: the kubelet writes
the new files into a fresh hidden directory and renames the `..data` symlink to point at it;
each `<name>.toml` in the mount is a symlink through `..data`. Nothing is written to the file
names roxd reads, so an inotify watch on them sees nothing; a stat that follows the symlinks
sees a different inode. The signature is therefore, for every file the loader would read (the
same listing), its device, inode, size and modification time through the symlinks, plus the
listing itself (a file added or removed). Polled by the daemon's housekeeping: a few stats
every few seconds.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from roxd.errors import RuleError
from roxd.rules.loader import rule_files

Signature = tuple[tuple[object, ...], ...]


def signature(paths: Sequence[Path]) -> Signature:
    """What identifies the content of the rule files under `paths` now."""
    errors: list[RuleError] = []
    out: list[tuple[object, ...]] = []
    for f in rule_files(paths, errors):
        try:
            st = os.stat(f)  # follows the symlinks: a ConfigMap swap changes the inode
        except OSError:
            out.append((str(f), "unreadable"))
            continue
        out.append((str(f), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
    out.extend((e.file, "missing") for e in errors)
    return tuple(out)


@dataclass
class RuleFilesWatch:
    paths: Sequence[Path]
    _last: Signature | None = field(default=None, init=False)

    def mark(self) -> None:
        """Take the files as they are now as the loaded ones."""
        self._last = signature(self.paths)

    def changed(self) -> bool:
        """True once per change since the last call (or `mark`)."""
        now = signature(self.paths)
        if self._last is None:
            self._last = now
            return False
        if now == self._last:
            return False
        self._last = now
        return True
