"""Learned syscall sets, persisted in the state dir: one file per container and one per image
(the union over that image's containers), plus the learning selection. Merge and diff.

Layout under <state_dir>/seccomp/:
    containers/<container id>.json   LearnedSet of one container (all its cgroups, restarts)
    images/<sha256 hex>.json          LearnedSet merged over the image's containers
    selection.json                    images and containers selected for learning
Writes are atomic (temp file + rename), so a crash never leaves half a file.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

WINDOW_FILTER = "filter"  # recorded from the seccomp filter installation (complete)
WINDOW_RUNNING = "running"  # recorded from a running container (misses runc's last calls)


@dataclass(frozen=True)
class LearnedSet:
    key: str  # container id, or image id
    kind: str  # "container" | "image"
    names: frozenset[str]
    unknown_numbers: frozenset[int] = frozenset()  # recorded, but libseccomp has no name
    windows: frozenset[str] = frozenset()
    image_id: str = ""
    image_refs: frozenset[str] = frozenset()
    containers: frozenset[str] = frozenset()  # names or ids that contributed
    updated: float = 0.0

    @property
    def complete(self) -> bool:
        """Every contribution was recorded from its filter installation."""
        return self.windows == {WINDOW_FILTER}

    def merge(self, other: LearnedSet) -> LearnedSet:
        return replace(
            self,
            names=self.names | other.names,
            unknown_numbers=self.unknown_numbers | other.unknown_numbers,
            windows=self.windows | other.windows,
            image_refs=self.image_refs | other.image_refs,
            containers=self.containers | other.containers,
            updated=max(self.updated, other.updated),
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, frozenset):
                d[k] = sorted(v)
        d["count"] = len(self.names)
        d["complete"] = self.complete
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LearnedSet:
        return cls(key=d["key"], kind=d["kind"], names=frozenset(d.get("names", [])),
                   unknown_numbers=frozenset(d.get("unknown_numbers", [])),
                   windows=frozenset(d.get("windows", [])), image_id=d.get("image_id", ""),
                   image_refs=frozenset(d.get("image_refs", [])),
                   containers=frozenset(d.get("containers", [])),
                   updated=float(d.get("updated", 0.0)))


@dataclass(frozen=True)
class Diff:
    a: str
    b: str
    only_a: tuple[str, ...]
    only_b: tuple[str, ...]
    common: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def diff(a: LearnedSet, b: LearnedSet, a_label: str | None = None,
         b_label: str | None = None) -> Diff:
    return Diff(a_label or a.key, b_label or b.key, tuple(sorted(a.names - b.names)),
                tuple(sorted(b.names - a.names)), len(a.names & b.names))


@dataclass(frozen=True)
class Selection:
    images: frozenset[str] = field(default_factory=frozenset)  # image ids
    containers: frozenset[str] = field(default_factory=frozenset)  # container ids

    @property
    def empty(self) -> bool:
        return not self.images and not self.containers


def _safe(key: str) -> str:
    key = key.removeprefix("sha256:")
    if not re.fullmatch(r"[0-9a-zA-Z_.-]{1,128}", key):
        raise ValueError(f"not a storable key: {key!r}")
    return key


class LearnedStore:
    def __init__(self, state_dir: Path) -> None:
        self.root = Path(state_dir) / "seccomp"

    def _path(self, kind: str, key: str) -> Path:
        folder = "containers" if kind == "container" else "images"
        return self.root / folder / f"{_safe(key)}.json"

    def get(self, kind: str, key: str) -> LearnedSet | None:
        try:
            return LearnedSet.from_dict(json.loads(self._path(kind, key).read_text()))
        except FileNotFoundError:
            return None

    def all(self, kind: str) -> list[LearnedSet]:
        folder = self.root / ("containers" if kind == "container" else "images")
        if not folder.is_dir():
            return []
        return [LearnedSet.from_dict(json.loads(p.read_text()))
                for p in sorted(folder.glob("*.json"))]

    def record(self, container: LearnedSet) -> tuple[LearnedSet, LearnedSet | None]:
        """Merge a container's freshly read set into its file and its image's file."""
        container = replace(container, updated=time.time())
        old = self.get("container", container.key)
        merged = old.merge(container) if old else container
        self._write(self._path("container", merged.key), merged.to_dict())
        image = None
        if merged.image_id:
            as_image = replace(merged, key=merged.image_id, kind="image")
            old_image = self.get("image", merged.image_id)
            image = old_image.merge(as_image) if old_image else as_image
            self._write(self._path("image", image.key), image.to_dict())
        return merged, image

    def forget(self, kind: str, key: str) -> bool:
        try:
            self._path(kind, key).unlink()
            return True
        except FileNotFoundError:
            return False

    def selection(self) -> Selection:
        try:
            d = json.loads((self.root / "selection.json").read_text())
        except FileNotFoundError:
            return Selection()
        return Selection(frozenset(d.get("images", [])), frozenset(d.get("containers", [])))

    def save_selection(self, sel: Selection) -> None:
        self._write(self.root / "selection.json",
                    {"images": sorted(sel.images), "containers": sorted(sel.containers)})

    @staticmethod
    def _write(path: Path, data: dict[str, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)
