"""File baselines: the directories each workload writes below watched trees.

A container serving one application writes to a few places (its log directory, a cache, a
config it renders at start); an attacker writes where the system will run what they leave:
/etc/cron.d, /etc/systemd/system, /etc/profile.d, ~/.ssh, /usr/local/bin. The element is the
directory of the written file (not the file: a log rotated to a new name is no anomaly), with
first/last seen and a count, under the same lifecycle as the process baseline of the same
workload (window, startup grace, lock, modes, accept, persistence, export/import).

What counts as a write: an access of kind write, create, truncate, rename (the new name) or
link (the new name) that succeeded. Unlinks are not (cleaning up is not placing something),
nor are failed attempts (the rules still see both).

The trees (`[baselines] file_trees`) are watched in the kernel for those kinds only
(`watch_set()`, merged into the rules' watch set by the policy), so reads below them still
stop at the kernel's first lookup. Anomalies are alerted, never blocked: nothing in the
kernel refuses a write.
"""

from __future__ import annotations

import functools
import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from roxd.model import FileEvent, FileWatchSet

# the access kinds that put something into a directory (docs/events.md, "file")
WRITE_KINDS = frozenset({"write", "create", "truncate", "rename", "link"})
# how a directory is named as a baseline element (`show`, `accept`, an alert's element)
ELEMENT_PREFIX = "write "
# learned directories of the same tree named in an anomaly's evidence, at most
EVIDENCE_DIRS = 8


@dataclass(slots=True)
class SeenDir:
    """One learned directory. slots: thousands of workloads hold a few of these each."""

    first_ns: int
    last_ns: int
    count: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {"first_ns": self.first_ns, "last_ns": self.last_ns, "count": self.count}


def tree_problems(trees: Iterable[str]) -> list[str]:
    """What is wrong with `[baselines] file_trees`: each an absolute, normalized directory,
    not the root (that would send every write on the host to userspace)."""
    out = []
    for tree in trees:
        if not isinstance(tree, str) or not tree.startswith("/"):
            out.append(f"baselines.file_trees: {tree!r} is not an absolute directory")
        elif posixpath.normpath(tree) == "/":
            out.append("baselines.file_trees: '/' would watch every write on the host; name "
                       "the trees (/etc, /usr, ...)")
        elif posixpath.normpath(tree) != tree.rstrip("/"):
            out.append(f"baselines.file_trees: {tree!r} is not normalized "
                       f"({posixpath.normpath(tree)!r})")
    return out


@functools.lru_cache(maxsize=8)
def _normalized(trees: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(posixpath.normpath(t) for t in trees)


def _trees(trees: Iterable[str]) -> tuple[str, ...]:
    """The trees normalized; the config's tuple is normalized once (this runs per event)."""
    return _normalized(trees if isinstance(trees, tuple) else tuple(trees))


def watch_set(trees: Iterable[str]) -> FileWatchSet:
    """What the kernel must pass to userspace for file baselines: writes below each tree."""
    return FileWatchSet(prefixes={t + "/": WRITE_KINDS for t in _trees(trees)})


def merged(a: FileWatchSet, b: FileWatchSet) -> FileWatchSet:
    """The union of two watch sets (the rules' and the baselines')."""
    def union(x: Mapping[str, frozenset[str]],
              y: Mapping[str, frozenset[str]]) -> dict[str, frozenset[str]]:
        out = dict(x)
        for key, kinds in y.items():
            out[key] = out.get(key, frozenset()) | kinds
        return out
    return FileWatchSet(exact=union(a.exact, b.exact), prefixes=union(a.prefixes, b.prefixes),
                        basenames=union(a.basenames, b.basenames),
                        everything=a.everything | b.everything)


@functools.lru_cache(maxsize=8)
def _slashed(trees: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(t.rstrip("/") + "/" for t in trees)


def under(directory: str, trees: Iterable[str]) -> bool:
    """`directory` is one of `trees` or below one (one C-level startswith: runs per event)."""
    slashed = _slashed(trees if isinstance(trees, tuple) else tuple(trees))
    return (directory + "/").startswith(slashed)


def written_dir(ev: FileEvent, trees: Iterable[str]) -> str | None:
    """The directory `ev` wrote into, when it is a successful write below one of `trees`;
    None otherwise (a read, an unlink, a failure, a relative path roxd could not resolve)."""
    if ev.errno or not WRITE_KINDS.intersection(ev.access):
        return None
    path = ev.resolved or ev.path  # resolved is normalized already (containers/file_paths)
    if not path.startswith("/"):
        return None
    if ev.resolved is None and ("//" in path or "/." in path or path.endswith("/")):
        path = "/" + posixpath.normpath(path).lstrip("/")  # normpath keeps a leading //
    directory = path.rpartition("/")[0] or "/"
    return directory if under(directory, _trees(trees)) else None


def element(directory: str) -> str:
    """`write /etc/cron.d`: a learned directory as `show` lists it and `accept` takes it."""
    return ELEMENT_PREFIX + directory


def directory_of(elem: str) -> str:
    """The directory an element (`write /etc/cron.d`) names; ValueError when it is not one."""
    directory = elem[len(ELEMENT_PREFIX):] if elem.startswith(ELEMENT_PREFIX) else elem
    return checked_dir(directory)


def checked_dir(directory: Any) -> str:
    if not isinstance(directory, str) or not directory.startswith("/"):
        raise ValueError(f"{directory!r} is not an absolute directory")
    if "\0" in directory or (directory != "/" and posixpath.normpath(directory) != directory):
        raise ValueError(f"{directory!r} is not a normalized directory "
                         f"({posixpath.normpath(directory)!r})")
    return directory


def dirs_from(value: Any) -> dict[str, SeenDir]:
    """`file_dirs` of an exported baseline, checked: a bad entry is a ValueError naming it."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError("file_dirs: not an object of directory -> {first_ns, last_ns, count}")
    out: dict[str, SeenDir] = {}
    for directory, seen in value.items():
        where = f"file_dirs[{directory!r}]"
        try:
            checked_dir(directory)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        if not isinstance(seen, Mapping):
            raise ValueError(f"{where}: not an object with first_ns, last_ns, count")
        missing = [k for k in ("first_ns", "last_ns", "count") if k not in seen]
        if missing:
            raise ValueError(f"{where}: missing {', '.join(missing)}")
        numbers = [seen["first_ns"], seen["last_ns"], seen["count"]]
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in numbers):
            raise ValueError(f"{where}: first_ns, last_ns and count must be integers >= 0")
        out[directory] = SeenDir(*numbers)
    return out


def nearby(learned: Iterable[str], directory: str, trees: Iterable[str]) -> tuple[str, ...]:
    """The learned directories in the same tree as `directory` (the anomaly's evidence: what
    the workload does write there), at most EVIDENCE_DIRS, nearest names first."""
    tree = max((t for t in _trees(trees) if under(directory, (t,))), key=len, default="")
    same = sorted((d for d in learned if under(d, (tree,))),
                  key=lambda d: (-len(posixpath.commonpath((d, directory))), d))
    return tuple(same[:EVIDENCE_DIRS])
