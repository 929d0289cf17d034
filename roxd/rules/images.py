"""Container image references and the patterns rules use to match them.

Runtimes report the same image in several spellings: `nginx`, `nginx:1.25`,
`docker.io/library/nginx:1.25`, `nginx@sha256:...`. A rule author writes `nginx` and means all of
them, so both the image and the pattern are reduced to (repository, tag, digest) with Docker Hub's
implicit registry and `library/` namespace removed, and the pattern only constrains the parts it
names.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from functools import lru_cache

_DOCKER_HUB = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})


@dataclass(frozen=True, slots=True)
class ImageRef:
    repository: str  # normalized: "nginx", "bitnami/nginx", "ghcr.io/org/app"
    tag: str | None
    digest: str | None  # "sha256:..."


@lru_cache(maxsize=4096)
def parse_image_ref(reference: str) -> ImageRef:
    """Split an image reference into normalized repository, tag and digest.

    Cached: a host runs few distinct images and every scoped rule asks about them per event.
    """
    name, _, digest = reference.strip().partition("@")
    tag: str | None = None
    last_slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > last_slash:  # a colon before the last slash is a registry port, not a tag
        name, tag = name[:colon], name[colon + 1 :]
    return ImageRef(normalize_repository(name), tag or None, digest or None)


def normalize_repository(name: str) -> str:
    parts = name.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        registry, path = parts[0], parts[1:]
    else:
        registry, path = "docker.io", parts
    if registry in _DOCKER_HUB:
        if len(path) == 2 and path[0] == "library":
            path = path[1:]
        return "/".join(path)
    return "/".join([registry, *path])


def glob_regex(patterns: list[str] | tuple[str, ...]) -> re.Pattern[str]:
    """One compiled regex that fully matches any of the shell-style globs (case-sensitive)."""
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))


@dataclass(frozen=True, slots=True)
class ImagePattern:
    """`nginx`, `nginx:1.*`, `*/nginx`, `ghcr.io/acme/*`, `nginx@sha256:ab*` or `*`."""

    text: str
    any_image: bool
    raw: re.Pattern[str]
    repository: re.Pattern[str]
    tag: re.Pattern[str] | None
    digest: re.Pattern[str] | None

    @classmethod
    def compile(cls, text: str) -> ImagePattern:
        ref = parse_image_ref(text)
        return cls(
            text=text,
            any_image=text.strip() == "*",
            raw=glob_regex([text]),
            repository=glob_regex([ref.repository]),
            tag=glob_regex([ref.tag]) if ref.tag else None,
            digest=glob_regex([ref.digest]) if ref.digest else None,
        )

    def matches(self, image: str | None) -> bool:
        if self.any_image:
            return True  # `*` also covers a container whose image the runtime did not tell us
        if not image:
            return False
        if self.raw.match(image):
            return True
        ref = parse_image_ref(image)
        if not self.repository.match(ref.repository):
            return False
        if self.tag is not None:
            # An untagged reference without a digest means the runtime's default tag.
            tag = ref.tag or (None if ref.digest else "latest")
            if tag is None or not self.tag.match(tag):
                return False
        return self.digest is None or (
            ref.digest is not None and bool(self.digest.match(ref.digest))
        )
