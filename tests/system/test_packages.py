"""The packages, built and installed for real.

The .deb goes into a clean Debian 12 root (debootstrap, cached under /var/cache/roxd-test)
booted with systemd in systemd-nspawn: dpkg's postinst creates the group, enables and starts
roxd.service; the service reaches READY (Type=notify) on Debian's own python3-bpfcc,
pyroute2, docker, psutil; reload, watchdog restart, upgrade and purge behave as a user sees
them through systemctl and the journal. The .rpm is built with rpmbuild, its metadata checked,
and its scriptlets run by `rpm --root` against a copy of the Debian root.

The tests of TestDebInMachine share one booted machine and run in file order (install,
reload, watchdog, upgrade, purge), like an administrator would.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system.packaging_root import (
    Machine,
    base_root,
    depends_of,
    overlay_root,
    wait_for,
)

pytestmark = pytest.mark.system

REPO = Path(__file__).resolve().parents[2]
TOOLS = ("systemd-nspawn", "debootstrap", "dpkg-buildpackage", "rpmbuild", "rpm", "lintian",
         "nsenter")


def _require_host() -> None:
    if os.geteuid() != 0:
        pytest.skip("package tests need root (debootstrap, overlay mounts, systemd-nspawn)")
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        pytest.skip(f"missing tools: {', '.join(missing)} (apt-get install systemd-container "
                    "debootstrap rpm lintian debhelper dh-python pybuild-plugin-pyproject)")


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Both packages from scripts/build-packages.sh (which also fails on lintian errors)."""
    _require_host()
    dist = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([str(REPO / "scripts/build-packages.sh"), str(dist)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"build-packages.sh failed:\n{proc.stdout}\n{proc.stderr}"
    debs, rpms = sorted(dist.glob("roxd_*_all.deb")), sorted(dist.glob("roxd-*.noarch.rpm"))
    assert len(debs) == 1 and len(rpms) == 1, sorted(p.name for p in dist.iterdir())
    return {"deb": debs[0], "rpm": rpms[0]}


@pytest.fixture(scope="module")
def debian_root(packages: dict[str, Path]) -> Path:
    """Cached bookworm root holding the .deb's Depends (debootstrap on the first run only)."""
    return base_root(depends_of(packages["deb"]))


@pytest.fixture(scope="module")
def machine(debian_root: Path, packages: dict[str, Path],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Machine]:
    with overlay_root(debian_root) as root:
        shutil.copy(packages["deb"], root / "root" / packages["deb"].name)
        # The machine shares the host's kernel: its roxd's eBPF programs see (and could kill)
        # every process on this host, other test sessions included. Enforce nothing here.
        dropin = root / "etc/systemd/system/roxd.service.d"
        dropin.mkdir(parents=True)
        (dropin / "50-test-monitor.conf").write_text(
            "[Service]\nExecStart=\nExecStart=/usr/bin/roxd --monitor\n")
        m = Machine(root, tmp_path_factory.mktemp("nspawn") / "console.log")
        try:
            m.boot()
            yield m
        finally:
            m.shutdown()


def _main_pid(m: Machine) -> int:
    return int(m.show("roxd", "MainPID")["MainPID"])


def _wait_ready(m: Machine, timeout: float = 120) -> dict[str, str]:
    """Active (READY=1 received: Type=notify) with a status line from roxd."""
    def ready() -> dict[str, str] | None:
        props = m.show("roxd", "ActiveState", "SubState", "StatusText", "MainPID", "NRestarts",
                       "Result")
        if props["ActiveState"] == "failed":
            raise AssertionError(f"roxd failed: {props}\n{m.journal('roxd')[-4000:]}")
        return props if props["ActiveState"] == "active" and props["StatusText"] else None

    try:
        return wait_for(ready, timeout, "roxd.service to report READY")
    except AssertionError as exc:
        props = m.show("roxd", "ActiveState", "SubState", "StatusText", "NRestarts", "Result")
        raise AssertionError(f"{exc}: {props}\n{m.journal('roxd')[-4000:]}") from None


class TestDebInMachine:
    def test_install_starts_the_service(self, machine: Machine,
                                        packages: dict[str, Path]) -> None:
        cursor = machine.journal_cursor()
        started = time.monotonic()
        machine.run("dpkg", "-i", f"/root/{packages['deb'].name}", timeout=300)
        props = _wait_ready(machine)
        print(f"dpkg -i to READY: {time.monotonic() - started:.1f}s")
        assert machine.run("systemctl", "is-active", "roxd").stdout.strip() == "active"
        assert machine.run("systemctl", "is-enabled", "roxd").stdout.strip() == "enabled"
        assert props["StatusText"].startswith("watching "), props
        assert props["NRestarts"] == "0", props
        assert "--monitor" in machine.show("roxd", "ExecStart")["ExecStart"]
        log = machine.journal("roxd", after=cursor)
        assert "roxd is watching:" in log, log[-4000:]
        assert "Started roxd.service" in machine.run(
            "journalctl", "-u", "roxd", "--no-pager", check=False).stdout
        # the postinst created the system group; the unit's directories exist
        group = machine.run("getent", "group", "roxd").stdout
        assert int(group.split(":")[2]) < 1000, group
        listing = machine.run("ls", "-d", "/run/roxd", "/var/lib/roxd", "/var/cache/roxd").stdout
        assert sorted(listing.split()) == ["/run/roxd", "/var/cache/roxd", "/var/lib/roxd"]
        # kernel headers from the host's /usr/src were assembled into the cache directory
        assert machine.run("ls", "/var/cache/roxd/kernel-headers").stdout.strip()
        # roxctl answers as root through the API socket in the RuntimeDirectory
        status = machine.run("roxctl", "--json", "status", check=False)
        assert status.returncode == 0, f"{status.stdout}\n{status.stderr}"
        assert json.loads(status.stdout), status.stdout
        assert machine.run("test", "-S", "/run/roxd/roxd.sock", check=False).returncode == 0

    def test_conffiles_and_layout(self, machine: Machine) -> None:
        conffiles = machine.run("dpkg-query", "-W", "-f=${Conffiles}", "roxd").stdout
        assert "/etc/roxd/roxd.toml" in conffiles
        files = machine.run("dpkg", "-L", "roxd").stdout.split()
        for path in ("/usr/bin/roxd", "/usr/bin/roxctl", "/usr/share/roxd/bpf/roxd.bpf.c",
                     "/usr/share/roxd/rules/10-foothold.toml", "/etc/roxd/rules.d",
                     "/lib/systemd/system/roxd.service", "/usr/lib/sysusers.d/roxd.conf",
                     "/usr/share/man/man8/roxd.8.gz", "/usr/share/man/man1/roxctl.1.gz",
                     "/usr/share/bash-completion/completions/roxctl",
                     "/usr/share/zsh/vendor-completions/_roxctl"):
            assert path in files, path
        # the installed daemon runs on Debian's modules, not on a venv
        versions = machine.run("python3", "-c", "import bcc, docker, pyroute2, psutil, roxd; "
                               "print(roxd.__file__, docker.__version__, psutil.__version__)"
                               ).stdout
        assert versions.startswith("/usr/lib/python3/dist-packages/roxd/"), versions

    def test_unit_verifies_clean(self, machine: Machine) -> None:
        proc = machine.run("systemd-analyze", "verify", "roxd.service", check=False)
        assert proc.returncode == 0 and not proc.stdout.strip() and not proc.stderr.strip(), \
            f"{proc.stdout}\n{proc.stderr}"

    def test_reload_reloads_rules(self, machine: Machine) -> None:
        pid = _main_pid(machine)
        cursor = machine.journal_cursor()
        machine.run("systemctl", "reload", "roxd")
        wait_for(lambda: "rules reloaded:" in machine.journal("roxd", after=cursor), 30,
                 "'rules reloaded' in the journal")
        assert _main_pid(machine) == pid  # reloaded in place, not restarted
        assert machine.show("roxd", "StatusText")["StatusText"].startswith("rules reloaded")

    def test_missed_watchdog_restarts(self, machine: Machine) -> None:
        before = machine.show("roxd", "NRestarts", "MainPID", "WatchdogUSec")
        assert before["WatchdogUSec"] == "30s", before  # the shipped WatchdogSec
        # the main process only: a hung event loop, as the watchdog is meant to catch
        machine.run("systemctl", "kill", "--kill-who=main", "--signal=SIGSTOP", "roxd")
        # WatchdogSec=30s, then SIGABRT, RestartSec=5s, then a new start up to READY
        wait_for(lambda: int(machine.show("roxd", "NRestarts")["NRestarts"]) >
                 int(before["NRestarts"]), 90, "a watchdog restart (NRestarts to increase)")
        props = _wait_ready(machine)
        assert props["MainPID"] != before["MainPID"]
        log = machine.run("journalctl", "-u", "roxd", "--no-pager", check=False).stdout
        assert "Watchdog timeout" in log, log[-3000:]

    def test_upgrade_keeps_config_and_restarts(self, machine: Machine,
                                               packages: dict[str, Path]) -> None:
        machine.run("sh", "-c", "sed -i 's/^stats_interval_s = 30.0/stats_interval_s = 60.0/' "
                    "/etc/roxd/roxd.toml")
        pid = _main_pid(machine)
        machine.run("dpkg", "-i", f"/root/{packages['deb'].name}", timeout=300)
        props = _wait_ready(machine)
        assert props["MainPID"] != str(pid), "the upgrade did not restart roxd"
        config = machine.run("cat", "/etc/roxd/roxd.toml").stdout
        assert "stats_interval_s = 60.0" in config

    def test_purge_stops_and_removes(self, machine: Machine) -> None:
        machine.run("touch", "/var/lib/roxd/alerts.db")
        machine.run("dpkg", "-P", "roxd", timeout=120)
        state = machine.show("roxd", "ActiveState", "LoadState")
        assert state["ActiveState"] == "inactive" and state["LoadState"] == "not-found", state
        assert not machine.run("pgrep", "-x", "roxd", check=False).stdout.strip()
        gone = machine.run("ls", "-d", "/var/lib/roxd", "/var/cache/roxd", "/etc/roxd",
                           "/usr/share/roxd", check=False)
        assert gone.returncode != 0 and not gone.stdout.strip(), gone.stdout


# ---------------------------------------------------------------------------- rpm


def _rpm_query(rpm: Path, *args: str) -> str:
    return subprocess.run(["rpm", "-qp", *args, str(rpm)], check=True, capture_output=True,
                          text=True).stdout


def test_rpm_metadata(packages: dict[str, Path]) -> None:
    rpm = packages["rpm"]
    requires = _rpm_query(rpm, "--requires").split("\n")
    for dep in ("python3-bcc", "python3-pyroute2", "python3-psutil", "python3-systemd",
                "python3-libseccomp", "python3-toml", "python3-docker", "nftables",
                "python3-nftables", "python3-pyyaml"):
        assert dep in requires, dep
    assert "kernel-devel" in _rpm_query(rpm, "--recommends")
    files = _rpm_query(rpm, "-l").split()
    for path in ("/usr/bin/roxd", "/usr/bin/roxctl", "/usr/lib/systemd/system/roxd.service",
                 "/usr/lib/sysusers.d/roxd.conf", "/etc/roxd/roxd.toml", "/etc/roxd/rules.d",
                 "/usr/share/roxd/bpf/roxd.bpf.c", "/usr/share/roxd/rules/10-foothold.toml",
                 "/var/lib/roxd", "/var/cache/roxd",
                 "/usr/share/bash-completion/completions/roxctl",
                 "/usr/share/zsh/site-functions/_roxctl"):
        assert path in files, path
    assert any(f.endswith("/site-packages/roxd/daemon.py") for f in files)
    assert any(f.startswith("/usr/share/man/man1/roxctl.1") for f in files)  # gzipped or not
    flags = dict(line.split(" ", 1) for line in _rpm_query(
        rpm, "--qf", "[%{FILENAMES} %{FILEFLAGS:fflags}\n]").splitlines())
    assert flags["/etc/roxd/roxd.toml"] == "cn"  # %config(noreplace)
    scripts = _rpm_query(rpm, "--scripts")
    for section in ("preinstall", "postinstall", "preuninstall", "postuninstall"):
        assert f"{section} scriptlet" in scripts, section
    assert "groupadd -r roxd" in scripts


def test_rpm_scriptlets_on_debian_root(packages: dict[str, Path], debian_root: Path) -> None:
    """rpm --root on a Debian root (no systemd macros' helpers): install and erase succeed,
    the group is created and the unit enabled (offline, as in an image build), then disabled."""
    force = ["--force-debian"] if "--force-debian" in subprocess.run(
        ["rpm", "--help"], capture_output=True, text=True).stdout else []
    with overlay_root(debian_root) as root:
        rpm = ["rpm", "--root", str(root), "--nodeps", *force]
        inst = subprocess.run([*rpm, "-i", str(packages["rpm"])], capture_output=True,
                              text=True, timeout=120)
        assert inst.returncode == 0, f"{inst.stdout}\n{inst.stderr}"
        assert "scriptlet failed" not in inst.stderr, inst.stderr
        assert any(line.startswith("roxd:") for line in
                   (root / "etc/group").read_text().splitlines())
        wants = root / "etc/systemd/system/multi-user.target.wants/roxd.service"
        assert wants.is_symlink(), "the %post did not enable roxd.service"
        assert (root / "etc/roxd/roxd.toml").is_file()
        erase = subprocess.run([*rpm, "-e", "roxd"], capture_output=True, text=True,
                               timeout=120)
        assert erase.returncode == 0, f"{erase.stdout}\n{erase.stderr}"
        assert "scriptlet failed" not in erase.stderr, erase.stderr
        assert not wants.is_symlink(), "the %preun did not disable roxd.service"
        assert not (root / "usr/share/roxd").exists()
