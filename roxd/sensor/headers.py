"""Find kernel headers bcc can compile roxd's programs against, with no manual step.

roxd's programs read only tracepoint arguments (layouts generated from tracefs at load time)
and call helpers, so any reasonably recent kernel header tree works even when it does not
match the running kernel exactly. Order of preference:

1. /lib/modules/<release>/build: the running kernel's own headers (bcc finds them itself);
2. /sys/kernel/kheaders.tar.xz: the kernel's built-in headers (CONFIG_IKHEADERS; bcc unpacks
   them itself);
3. any installed header tree under /usr/src (Debian/Ubuntu linux-headers-*, Fedora
   kernel-devel), newest first. Debian splits a tree in two (linux-headers-X-<flavour> with
   the generated files, linux-headers-X-common with the rest); bcc wants one tree, so roxd
   assembles a tree of symlinks in its cache directory and points BCC_KERNEL_SOURCE at it.

When nothing is found, KernelHeadersError names the package to install.
"""

from __future__ import annotations

import logging
import os
import platform
import re
from dataclasses import dataclass
from pathlib import Path

from roxd.errors import KernelHeadersError

log = logging.getLogger(__name__)

_ARCH_DIRS = {"x86_64": "x86", "aarch64": "arm64", "arm64": "arm64", "ppc64le": "powerpc",
              "s390x": "s390", "riscv64": "riscv"}


@dataclass(frozen=True)
class HeaderTree:
    """Where bcc's headers come from, and the environment that tells bcc so."""

    kind: str  # "running-kernel" | "kheaders" | "installed-tree"
    path: str
    release: str  # the kernel release the tree was built for
    env: dict[str, str]

    @property
    def matches_running_kernel(self) -> bool:
        return self.release == platform.release()

    def describe(self) -> str:
        note = "" if self.matches_running_kernel else (
            f" (built for {self.release}; fine for roxd's tracepoint-only programs)")
        return f"{self.kind} {self.path}{note}"


def resolve_headers(
    cache_dir: Path,
    release: str | None = None,
    modules_root: Path = Path("/lib/modules"),
    kheaders: Path = Path("/sys/kernel/kheaders.tar.xz"),
    src_root: Path = Path("/usr/src"),
    arch: str | None = None,
) -> HeaderTree:
    release = release or platform.release()
    arch_dir = _ARCH_DIRS.get(arch or platform.machine(), "x86")

    env_source = os.environ.get("BCC_KERNEL_SOURCE")
    if env_source:
        return HeaderTree("environment", env_source, release, {"BCC_KERNEL_SOURCE": env_source})

    build = modules_root / release / "build"
    if (build / "include").is_dir():
        return HeaderTree("running-kernel", str(build), release, {})

    if kheaders.exists():
        return HeaderTree("kheaders", str(kheaders), release, {})

    for tree in _installed_trees(src_root):
        merged = _assemble(tree, cache_dir, arch_dir)
        if merged is not None:
            return HeaderTree("installed-tree", str(merged), tree.release,
                              {"BCC_KERNEL_SOURCE": str(merged)})

    raise KernelHeadersError(
        f"no kernel headers for bcc: /lib/modules/{release}/build is missing, the kernel has no "
        f"built-in headers (/sys/kernel/kheaders.tar.xz), and no tree is installed under "
        f"{src_root}. Install one: Debian/Ubuntu `apt-get install linux-headers-{release}` "
        f"(or linux-headers-amd64 / linux-headers-generic when that does not exist), "
        f"Fedora/RHEL `dnf install kernel-devel`."
    )


@dataclass(frozen=True)
class _Tree:
    release: str
    parts: tuple[Path, ...]  # directories whose contents together form one tree


def _version_key(release: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", release))


def _installed_trees(src_root: Path) -> list[_Tree]:
    """Header trees under /usr/src, newest first."""
    if not src_root.is_dir():
        return []
    trees: list[_Tree] = []
    for entry in src_root.iterdir():
        name = entry.name
        if name.startswith("linux-headers-") and not name.endswith("-common"):
            common = _debian_common_part(entry)
            parts = (entry,) if common is None else (entry, common)
            trees.append(_Tree(name.removeprefix("linux-headers-"), parts))
    # Fedora/RHEL: /usr/src/kernels/<release>/ is one complete tree
    fedora = src_root / "kernels"
    if fedora.is_dir():
        trees.extend(_Tree(sub.name, (sub,)) for sub in fedora.iterdir() if sub.is_dir())
    trees.sort(key=lambda t: _version_key(t.release), reverse=True)
    return trees


def _debian_common_part(flavour_tree: Path) -> Path | None:
    """Debian's flavour tree has a Makefile that includes the -common tree's Makefile."""
    makefile = flavour_tree / "Makefile"
    try:
        text = makefile.read_text()
    except OSError:
        return None
    match = re.search(r"^include\s+(\S+)/Makefile\s*$", text, re.MULTILINE)
    if match and Path(match.group(1)).is_dir():
        return Path(match.group(1))
    return None


def _assemble(tree: _Tree, cache_dir: Path, arch_dir: str) -> Path | None:
    """One directory bcc can use as a kernel tree: symlinks to the parts' include dirs."""
    have_kconfig = any((p / "include/linux/kconfig.h").exists() for p in tree.parts)
    have_autoconf = any((p / "include/generated/autoconf.h").exists() for p in tree.parts)
    if not (have_kconfig and have_autoconf):
        log.debug("header tree %s incomplete (kconfig.h %s, autoconf.h %s)",
                  tree.parts, have_kconfig, have_autoconf)
        return None
    if len(tree.parts) == 1:
        return tree.parts[0]
    target = cache_dir / "kernel-headers" / tree.release
    for rel in ("include", f"arch/{arch_dir}/include"):
        out = target / rel
        out.mkdir(parents=True, exist_ok=True)
        for part in tree.parts:
            src = part / rel
            if not src.is_dir():
                continue
            for child in src.iterdir():
                link = out / child.name
                if link.is_symlink() and os.readlink(link) == str(child):
                    continue
                if link.is_symlink() or link.exists():
                    link.unlink()
                link.symlink_to(child)
    return target
