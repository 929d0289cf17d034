"""Image facts a risk score can know offline (docs/incidents.md, "Risk"): the image's age and
whether it ships a shell, a package manager or network tools, each a capped factor.

    scanner = ImageScanner(inspect_image_raw)
    facts = scanner.of(container_inspect)        # cached per image id
    reasons = image_reasons(facts, now=time.time())

Where the tools are looked for: the program directories (/bin, /sbin, /usr/bin, /usr/sbin,
/usr/local/bin, /usr/local/sbin) of the image's own layers, read from the overlay lower
directories the engine reports (`GraphDriver.Data.LowerDir`: the image's layers under the
container's init layer). Layers are read top first, and an overlay whiteout (a 0/0 character
device) hides a name from the layers below. Without lower directories (another storage
driver), the container's root as it is now (`/proc/<pid>/root`) is read instead, and the facts
say so: then a tool installed after the start counts too.

Bounded work: one directory listing per program directory and layer (at most MAX_LAYERS
layers, MAX_ENTRIES names per listing), a stat only for the names looked for, and no
symlink is followed (a directory that is a symlink, /bin -> usr/bin on merged-/usr
distributions, is read through its target, which is in the list too). An absolute symlink
in an image can therefore never lead the scan onto the host's own files. Facts are cached per
image id (LRU, MAX_CACHED images): an image's content does not change.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import stat
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

PROGRAM_DIRS = ("bin", "sbin", "usr/bin", "usr/sbin", "usr/local/bin", "usr/local/sbin")
SHELLS = frozenset({"sh", "bash", "ash", "dash", "zsh", "ksh", "mksh", "csh", "tcsh", "fish",
                    "busybox"})  # busybox: `busybox sh` is a shell even without the applet link
PACKAGE_MANAGERS = frozenset({"apt", "apt-get", "dpkg", "apk", "yum", "dnf", "microdnf", "rpm",
                              "zypper", "pip", "pip3"})
NETWORK_TOOLS = frozenset({"curl", "wget", "nc", "ncat", "netcat", "socat", "nmap"})
WANTED = SHELLS | PACKAGE_MANAGERS | NETWORK_TOOLS
MAX_LAYERS = 128  # overlay2's own limit is 128 lower directories
MAX_ENTRIES = 50_000  # names read per directory listing
MAX_CACHED = 256

# the factors: points and caps (docs/incidents.md)
SHELL_POINTS = 3
PACKAGE_MANAGER_POINTS = 3
NETWORK_TOOL_POINTS, NETWORK_TOOLS_CAP = 2, 4
AGE_DAYS_PER_POINT, AGE_CAP = 180, 4


@dataclass(frozen=True)
class ImageFacts:
    image_id: str
    created: float | None  # seconds since the epoch; None when the engine did not say
    shells: tuple[str, ...] = ()
    package_managers: tuple[str, ...] = ()
    network_tools: tuple[str, ...] = ()
    source: str = ""  # "image layers" or "container root (now)"
    note: str = ""  # why the contents are unknown ("" when they were read)
    layers: int = 0
    truncated: bool = False  # a listing hit MAX_ENTRIES

    @property
    def contents_known(self) -> bool:
        return not self.note

    def to_dict(self) -> dict[str, Any]:
        return {"image_id": self.image_id, "created": self.created, "shells": list(self.shells),
                "package_managers": list(self.package_managers),
                "network_tools": list(self.network_tools), "source": self.source,
                "note": self.note, "layers": self.layers, "truncated": self.truncated}


def parse_created(value: Any) -> float | None:
    """Docker's `Created` (RFC 3339 with nanoseconds, "2024-01-02T03:04:05.123456789Z")."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip().replace("Z", "+00:00")
    if "." in text:  # Python reads at most microseconds
        head, rest = text.split(".", 1)
        digits = "".join(ch for ch in rest if ch.isdigit())
        zone = rest[len(digits):]
        text = f"{head}.{digits[:6]}{zone}"
    try:
        created = _dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if created.tzinfo is None:
        created = created.replace(tzinfo=_dt.UTC)
    if created.year < 1971:  # `docker import` images without a date say 0001-01-01
        return None
    return created.timestamp()


def _real_dir(root: str, rel: str) -> str | None:
    """root/rel when every component below root is a real directory (no symlink), else None."""
    path = root
    for part in rel.split("/"):
        path = os.path.join(path, part)
        try:
            st = os.lstat(path)
        except OSError:
            return None
        if not stat.S_ISDIR(st.st_mode):  # a symlink (or a file) ends the walk
            return None
    return path


def scan_roots(roots: list[str]) -> tuple[dict[str, bool], bool]:
    """name -> present, for the WANTED names in the program directories of `roots` (overlay
    layers, top first: the first layer that has a name decides; a whiteout hides it)."""
    seen: dict[str, bool] = {}
    truncated = False
    for rel in PROGRAM_DIRS:
        decided: set[str] = set()
        for root in roots[:MAX_LAYERS]:
            d = _real_dir(root, rel)
            if d is None:
                continue
            try:
                with os.scandir(d) as it:
                    for n, entry in enumerate(it):
                        if n >= MAX_ENTRIES:
                            truncated = True
                            break
                        name = entry.name
                        if name.startswith(".wh.") and name[4:] in WANTED:  # aufs-style
                            decided.add(name[4:])
                            continue
                        if name not in WANTED or name in decided:
                            continue
                        decided.add(name)
                        try:
                            st = entry.stat(follow_symlinks=False)
                        except OSError:
                            continue
                        whiteout = stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
                        if not whiteout and not stat.S_ISDIR(st.st_mode):
                            seen[name] = True
            except OSError as exc:
                log.debug("image scan %s: %s", d, exc)
    return seen, truncated


def roots_of(inspect: Mapping[str, Any]) -> tuple[list[str], str]:
    """The directories to read for a container, and what they are."""
    driver = inspect.get("GraphDriver") or {}
    lower = str((driver.get("Data") or {}).get("LowerDir") or "")
    if lower:
        return [p for p in lower.split(":") if p], "image layers"
    pid = int((inspect.get("State") or {}).get("Pid") or 0)
    if pid > 0:
        return [f"/proc/{pid}/root"], "container root (now)"
    return [], ""


@dataclass
class ImageScanner:
    """Image facts per image id, cached (the engine's image inspect gives `Created`)."""

    inspect_image_raw: Callable[[str], Any] | None = None
    _cache: OrderedDict[str, ImageFacts] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    scans: int = 0  # images actually read (not from the cache): for tests and metrics

    def of(self, inspect: Mapping[str, Any]) -> ImageFacts | None:
        image_id = str(inspect.get("Image") or "")
        if not image_id:
            return None
        with self._lock:
            cached = self._cache.get(image_id)
            if cached is not None:
                self._cache.move_to_end(image_id)
                return cached
        facts = self._scan(image_id, inspect)
        if facts.note and facts.note.startswith("the container is not running"):
            return facts  # not cached: a running container of the image can still be read
        with self._lock:
            self._cache[image_id] = facts
            while len(self._cache) > MAX_CACHED:
                self._cache.popitem(last=False)
        return facts

    def _scan(self, image_id: str, inspect: Mapping[str, Any]) -> ImageFacts:
        created = None
        if self.inspect_image_raw is not None:
            try:
                doc = self.inspect_image_raw(image_id)
                created = parse_created((doc or {}).get("Created"))
            except Exception as exc:  # the engine down: the age stays unknown
                log.debug("image inspect %s: %s", image_id, exc)
        roots, source = roots_of(inspect)
        if not roots:
            return ImageFacts(image_id, created, note="the container is not running and the "
                                                      "engine reports no image layers")
        self.scans += 1
        found, truncated = scan_roots(roots)
        return ImageFacts(
            image_id, created,
            shells=tuple(sorted(n for n in found if n in SHELLS)),
            package_managers=tuple(sorted(n for n in found if n in PACKAGE_MANAGERS)),
            network_tools=tuple(sorted(n for n in found if n in NETWORK_TOOLS)),
            source=source, layers=len(roots), truncated=truncated)


def image_reasons(facts: ImageFacts | None, now: float) -> list[dict[str, Any]]:
    """The image factors of one container: each {factor, points, cap, detail}."""
    if facts is None:
        return []
    out: list[dict[str, Any]] = []
    where = f"in the {facts.source}" if facts.source else ""
    if facts.shells:
        out.append({"factor": "image_shell", "points": SHELL_POINTS, "cap": SHELL_POINTS,
                    "detail": f"a shell {where}: {', '.join(facts.shells)}"})
    if facts.package_managers:
        out.append({"factor": "image_package_manager", "points": PACKAGE_MANAGER_POINTS,
                    "cap": PACKAGE_MANAGER_POINTS,
                    "detail": f"a package manager {where}: {', '.join(facts.package_managers)}"})
    if facts.network_tools:
        raw = NETWORK_TOOL_POINTS * len(facts.network_tools)
        out.append({"factor": "image_network_tools", "points": min(NETWORK_TOOLS_CAP, raw),
                    "cap": NETWORK_TOOLS_CAP,
                    "detail": f"network tools {where}: {', '.join(facts.network_tools)} "
                              f"({raw} before the cap)"})
    if facts.created is not None:
        days = max(0.0, now - facts.created) / 86400
        points = min(AGE_CAP, int(days // AGE_DAYS_PER_POINT))
        if points:
            out.append({"factor": "image_age", "points": points, "cap": AGE_CAP,
                        "detail": f"the image was built {days:.0f} days ago (1 point per "
                                  f"{AGE_DAYS_PER_POINT} days)"})
    return out
