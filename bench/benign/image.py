"""The benign suite's base image, built offline from the host's own Debian packages.

No registry is reachable from a build, so the image is assembled, not pulled: the files of a
set of packages installed on this host (`dpkg -L`, with their dependency closure), plus the
files of a few .deb archives that are not installed here (a web server, redis, cron, ...),
unpacked with `dpkg -x`. Those archives are fetched once by scripts/setup.sh into DEB_DIR
(`apt-get install --download-only`, a Debian registry look-up); the build itself reads only
local files. The image carries a dpkg database of what it holds, so an image build step can
`dpkg -i` a local package on top of it as real builds do.

Usage: python -m bench.benign.image [--force]   (idempotent: an existing image is kept)
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

BASE_IMAGE = "roxd-bench/debian:latest"
DEB_DIR = Path(os.environ.get("ROXD_BENIGN_DEBS", "/var/cache/roxd/benign-debs"))

# What production images run, taken from this host's installed packages.
HOST_PACKAGES = (
    "dash", "bash", "coreutils", "findutils", "grep", "sed", "mawk", "diffutils", "tar",
    "gzip", "xz-utils", "procps", "libc-bin", "dpkg", "curl", "sqlite3", "tini", "make",
    "gcc-12", "binutils", "libc6-dev", "python3.11", "python3-minimal", "python3-pkg-resources",
    "libpam-modules", "libpam-runtime",
)
# Not installed on the host (or not wanted there, like a web server): fetched as archives.
DEB_PACKAGES = (
    "rsync", "logrotate", "cron", "cron-daemon-common", "redis-server", "redis-tools",
    "libjemalloc2", "liblzf1", "dumb-init", "supervisor", "gunicorn", "python3-gunicorn",
    "nginx", "nginx-common", "python3-pytest", "python3-pluggy", "python3-iniconfig",
    "python3-py",
)
# Never copied from the host: service managers and things an image has no use for.
EXCLUDED = frozenset({"systemd", "systemd-sysv", "udev", "init", "sysvinit-utils",
                      "debconf", "perl", "perl-modules-5.36", "libperl5.36",
                      "adduser", "passwd", "login", "ucf", "lsb-base"})
# Paths under these prefixes are documentation: skipped to keep the image small.
SKIPPED_PREFIXES = ("/usr/share/doc/", "/usr/share/man/", "/usr/share/info/",
                    "/usr/share/locale/", "/usr/share/lintian/")

PASSWD = """root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
bin:x:2:2:bin:/bin:/usr/sbin/nologin
www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin
backup:x:34:34:backup:/var/backups:/usr/sbin/nologin
redis:x:100:101::/var/lib/redis:/usr/sbin/nologin
app:x:1000:1000:app:/home/app:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
"""
GROUP = """root:x:0:
daemon:x:1:
bin:x:2:
adm:x:4:
www-data:x:33:
backup:x:34:
crontab:x:102:
redis:x:101:
app:x:1000:
nogroup:x:65534:
"""


# What Debian's pam-auth-update writes at install (not in any package's file list): cron opens
# a PAM session for every job.
PAM = {
    "common-auth": "auth [success=1 default=ignore] pam_unix.so nullok\n"
                   "auth requisite pam_deny.so\nauth required pam_permit.so\n",
    "common-account": "account [success=1 new_authtok_reqd=done default=ignore] pam_unix.so\n"
                      "account requisite pam_deny.so\naccount required pam_permit.so\n",
    "common-password": "password [success=1 default=ignore] pam_unix.so obscure yescrypt\n"
                       "password requisite pam_deny.so\npassword required pam_permit.so\n",
    "common-session": "session [default=1] pam_permit.so\nsession requisite pam_deny.so\n"
                      "session required pam_permit.so\nsession required pam_unix.so\n",
}
PAM["common-session-noninteractive"] = PAM["common-session"]


@dataclass
class Inventory:
    """Packages this build can take: installed on the host or present as an archive."""

    installed: dict[str, dict[str, str]] = field(default_factory=dict)
    debs: dict[str, Path] = field(default_factory=dict)
    deb_fields: dict[str, dict[str, str]] = field(default_factory=dict)
    provides: dict[str, str] = field(default_factory=dict)

    @classmethod
    def read(cls, deb_dirs: tuple[Path, ...] = (DEB_DIR,)) -> Inventory:
        """deb_dirs: where fetched archives lie (bench/apps adds its own, for PostgreSQL and
        wrk, so this image's closure never changes because of them)."""
        inv = cls()
        out = subprocess.run(
            ["dpkg-query", "-W", "-f",
             "${Package}\t${Status}\t${Depends}\t${Pre-Depends}\t${Provides}\n"],
            check=True, capture_output=True, text=True).stdout
        for line in out.splitlines():
            name, status, dep, pre, prov = (line.split("\t") + [""] * 5)[:5]
            if "installed" not in status.split():
                continue
            inv.installed[name] = {"Depends": dep, "Pre-Depends": pre}
            for p in _names(prov):
                inv.provides.setdefault(p, name)
        for deb_dir in deb_dirs:
            for deb in sorted(deb_dir.glob("*.deb")) if deb_dir.is_dir() else ():
                got = subprocess.run(["dpkg-deb", "-f", str(deb), "Package", "Depends",
                                      "Pre-Depends", "Provides"],
                                     check=True, capture_output=True, text=True).stdout
                fields = _control_fields(got)
                name = fields.get("Package", "")
                inv.debs[name] = deb
                inv.deb_fields[name] = fields
                for p in _names(fields.get("Provides", "")):
                    inv.provides.setdefault(p, name)
        return inv

    def depends(self, name: str) -> list[list[str]]:
        fields = self.deb_fields.get(name) or self.installed.get(name) or {}
        text = ", ".join(x for x in (fields.get("Pre-Depends", ""), fields.get("Depends", ""))
                         if x)
        return [[_bare(alt) for alt in group.split("|")] for group in text.split(",")
                if group.strip()]

    def have(self, name: str) -> str | None:
        if name in self.debs or name in self.installed:
            return name
        return self.provides.get(name)

    def closure(self, roots: tuple[str, ...]) -> tuple[set[str], set[str]]:
        """(host packages, archive packages) needed by roots; a dependency that is neither
        installed nor an archive is left out (an image needs no service manager)."""
        host: set[str] = set()
        debs: set[str] = set()
        todo = list(roots)
        while todo:
            name = self.have(todo.pop())
            if name is None or name in EXCLUDED or name in host or name in debs:
                continue
            (debs if name in self.debs else host).add(name)
            for group in self.depends(name):
                pick = next((a for a in group if self.have(a) and a not in EXCLUDED), None)
                if pick is not None:
                    todo.append(pick)
        return host, debs


def _names(text: str) -> list[str]:
    return [_bare(x) for x in text.split(",") if x.strip()]


def _bare(dep: str) -> str:
    """'libc6 (>= 2.34)' -> 'libc6'; 'python3:any' -> 'python3'."""
    return re.split(r"[\s(]", dep.strip(), maxsplit=1)[0].split(":")[0]


def _control_fields(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and not line.startswith(" "):
            out[key.strip()] = value.strip()
    return out


def _host_files(packages: set[str]) -> list[str]:
    """Every regular file and symlink the host packages own, directories resolved (usrmerge:
    /bin/x is /usr/bin/x here, and in the image)."""
    seen: set[str] = set()
    for pkg in sorted(packages):
        listing = subprocess.run(["dpkg", "-L", pkg], capture_output=True, text=True).stdout
        for path in listing.splitlines():
            if not path.startswith("/") or path.startswith(SKIPPED_PREFIXES):
                continue
            real = os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))
            if os.path.islink(real) or os.path.isfile(real):
                seen.add(real)
    return sorted(seen)


def _dpkg_status(host: set[str], inv: Inventory) -> str:
    """The host's status stanzas of the copied packages: dpkg inside knows what is there."""
    text = Path("/var/lib/dpkg/status").read_text(errors="replace")
    out = []
    for stanza in text.split("\n\n"):
        m = re.search(r"^Package: (\S+)", stanza, re.M)
        if m and m.group(1) in host:
            out.append(stanza.strip())
    return "\n\n".join(out) + "\n"


def build_rootfs(root: Path, inv: Inventory,
                 extra: tuple[str, ...] = ()) -> tuple[set[str], set[str]]:
    """extra: more root packages (bench/apps: PostgreSQL, wrk) on top of this image's."""
    host, debs = inv.closure(HOST_PACKAGES + tuple(
        p for p in DEB_PACKAGES + extra if p in inv.debs or p in inv.installed))
    for d in ("usr/bin", "usr/sbin", "usr/lib", "usr/lib64"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for link, target in (("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib"),
                         ("lib64", "usr/lib64")):
        (root / link).symlink_to(target)
    files = _host_files(host)
    listing = root.parent / "files.txt"
    listing.write_text("\n".join(f.lstrip("/") for f in files) + "\n")
    subprocess.run(f"tar -C / --no-recursion -cf - -T {listing} | tar -C {root} -xf -",
                   shell=True, check=True)
    for name in sorted(debs):
        unpack = root.parent / f"deb-{name}"
        subprocess.run(["dpkg-deb", "-x", str(inv.debs[name]), str(unpack)], check=True)
        # merge through the usrmerge links: /bin/x in an archive lands in /usr/bin/x
        subprocess.run(f"tar -C {unpack} -cf - . | tar -C {root} --keep-directory-symlink -xf -",
                       shell=True, check=True)
        shutil.rmtree(unpack)
    for d in ("tmp", "var/tmp"):
        (root / d).mkdir(parents=True, exist_ok=True)
        (root / d).chmod(0o1777)
    for d in ("etc", "proc", "sys", "dev", "root", "home/app", "var/log", "var/lib/dpkg/info",
              "var/lib/dpkg/updates", "var/lib/dpkg/triggers", "var/lib/dpkg/alternatives",
              "var/lib/redis", "var/www/html", "var/backups", "var/spool/cron/crontabs",
              "run", "etc/cron.d", "var/cache/apt/archives"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "etc/passwd").write_text(PASSWD)
    # locked accounts, as a Debian image has them (pam_unix reads it for cron's account check)
    shadow = root / "etc/shadow"
    shadow.write_text("".join(f"{line.split(':')[0]}:*:19000:0:99999:7:::\n"
                              for line in PASSWD.splitlines()))
    shadow.chmod(0o640)
    (root / "etc/pam.d").mkdir(parents=True, exist_ok=True)
    for name, text in PAM.items():
        (root / "etc/pam.d" / name).write_text(text)
    os.chown(root / "var/lib/redis", 100, 101)
    (root / "etc/group").write_text(GROUP)
    (root / "etc/hostname").write_text("bench\n")
    (root / "etc/nsswitch.conf").write_text("passwd: files\ngroup: files\nhosts: files\n")
    (root / "etc/hosts").write_text("127.0.0.1 localhost\n")
    (root / "var/lib/dpkg/status").write_text(_dpkg_status(host, inv))
    (root / "var/lib/dpkg/available").write_text("")
    (root / "usr/bin/python3").unlink(missing_ok=True)
    (root / "usr/bin/python3").symlink_to("python3.11")
    if not (root / "usr/bin/sh").exists():
        (root / "usr/bin/sh").symlink_to("dash")
    if not (root / "usr/bin/gcc").exists():
        (root / "usr/bin/gcc").symlink_to("gcc-12")
    if not (root / "usr/bin/cc").exists():
        (root / "usr/bin/cc").symlink_to("gcc-12")
    for tool in ("x86_64-linux-gnu-gcc-12",):
        if not (root / "usr/bin" / tool).exists():
            (root / "usr/bin" / tool).symlink_to("gcc-12")
    return host, debs


def image_exists(name: str = BASE_IMAGE) -> bool:
    return subprocess.run(["docker", "image", "inspect", name], capture_output=True).returncode == 0


def build(force: bool = False) -> str:
    """Build BASE_IMAGE unless it exists; returns its name."""
    if image_exists() and not force:
        return BASE_IMAGE
    inv = Inventory.read()
    missing = [p for p in DEB_PACKAGES if p not in inv.debs and p not in inv.installed]
    if missing:
        print(f"bench.benign.image: archives not in {DEB_DIR} (run scripts/setup.sh): "
              f"{' '.join(missing)}; the workloads that need them are skipped", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="roxd-benign-") as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        host, debs = build_rootfs(root, inv)
        import_rootfs(root, BASE_IMAGE, IMAGE_PATH)
    print(f"bench.benign.image: built {BASE_IMAGE} from {len(host)} host packages and "
          f"{len(debs)} archives", file=sys.stderr)
    return BASE_IMAGE


IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def import_rootfs(root: Path, image: str, path: str) -> None:
    """Make `image` from the root filesystem in `root` (tar beside it, `docker import`, a
    shell as CMD and `path` as PATH): the offline builds' last step."""
    tarball = root.parent / f"{root.name}.tar"
    subprocess.run(["tar", "-C", str(root), "-cf", str(tarball), "."], check=True)
    subprocess.run(["docker", "import", "-c", 'CMD ["/bin/sh"]', "-c", f"ENV PATH={path}",
                    str(tarball), image], check=True, capture_output=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--force", action="store_true", help="rebuild even if the image exists")
    args = ap.parse_args()
    build(force=args.force)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
