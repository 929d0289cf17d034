"""Fixtures for the alert sink system tests: real journald, rsyslog and an HTTP server.

Every service runs on loopback (or in a private mount namespace) with its own files under
tmp, and is stopped at teardown even when the test failed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_until

REPO = Path(__file__).resolve().parents[2]
JOURNALD = Path("/lib/systemd/systemd-journald")
RSYSLOGD = Path("/usr/sbin/rsyslogd")


def _apt_install(*packages: str) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "-o", "DPkg::Lock::Timeout=300", "install", "-y",
                    "--no-install-recommends", *packages], check=True, env=env,
                   stdout=subprocess.DEVNULL)


def _stop(proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A free high port on 127.0.0.1 (both TCP and UDP free, so one number serves both)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        other = socket.SOCK_DGRAM if kind == socket.SOCK_STREAM else socket.SOCK_STREAM
        try:
            with socket.socket(socket.AF_INET, other) as s:
                s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port")


# ---------------------------------------------------------------------------- journald


@dataclass
class Journald:
    proc: subprocess.Popen[bytes]

    @property
    def nsenter(self) -> list[str]:
        return ["nsenter", f"--mount=/proc/{self.proc.pid}/ns/mnt", "--"]

    def run(self, *cmd: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.nsenter, *cmd], capture_output=True, text=True,
                              timeout=timeout, check=False)

    def journalctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run("journalctl", "--no-pager", "-D", "/run/log/journal", *args)


@pytest.fixture
def journald() -> Iterator[Journald]:
    """systemd-journald in a private mount namespace (tmpfs on /run/systemd, /run/log and
    /var/log/journal), without audit capabilities so it never touches the kernel's audit
    settings. The namespace, its tmpfs and the journal vanish with the process."""
    if not JOURNALD.exists():
        _apt_install("systemd")
    script = ("set -e; mount --make-rprivate /; "
              "for d in /run/systemd /run/log /var/log/journal; do "
              "  [ -d $d ] && mount -t tmpfs -o mode=0755 roxd-test $d; done; "
              "mkdir -p /run/systemd/journal /run/log/journal; "
              f"exec capsh --drop=cap_audit_control,cap_audit_write,cap_audit_read -- "
              f"-c 'exec {JOURNALD}'")
    proc = subprocess.Popen(["unshare", "--mount", "--", "sh", "-c", script],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        j = Journald(proc)
        wait_until(lambda: proc.poll() is not None or
                   j.run("test", "-S", "/run/systemd/journal/socket").returncode == 0,
                   20, message="journald's socket")
        if proc.poll() is not None:
            raise AssertionError(f"journald exited: {proc.stderr.read() if proc.stderr else ''}")
        yield j
    finally:
        _stop(proc)


# ---------------------------------------------------------------------------- TLS material


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    server_name: str = "collector.roxd.test"


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A throwaway CA, a server certificate for collector.roxd.test, and a client cert."""
    d = tmp_path_factory.mktemp("tls")

    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, cwd=d, capture_output=True)

    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=roxd test CA",
        "-keyout", "ca.key", "-out", "ca.pem")
    for name, cn in (("server", "collector.roxd.test"), ("client", "roxd-client")):
        ssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}",
            "-keyout", f"{name}.key", "-out", f"{name}.csr")
        (d / f"{name}.ext").write_text(f"subjectAltName=DNS:{cn}\n")
        ssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem")
    return TlsFiles(d / "ca.pem", d / "server.pem", d / "server.key", d / "client.pem",
                    d / "client.key")


# ---------------------------------------------------------------------------- rsyslog

RSYSLOG_CONF = """\
global(workDirectory="{work}" maxMessageSize="64k"
       defaultNetstreamDriverCAFile="{ca}"
       defaultNetstreamDriverCertFile="{cert}"
       defaultNetstreamDriverKeyFile="{key}")
module(load="imudp")
module(load="imtcp" maxSessions="50")
template(name="parsed" type="list") {{
  property(name="inputname") constant(value="\\t")
  property(name="protocol-version") constant(value="\\t")
  property(name="app-name") constant(value="\\t")
  property(name="msgid") constant(value="\\t")
  property(name="pri") constant(value="\\t")
  property(name="structured-data") constant(value="\\t")
  property(name="msg" droplastlf="on") constant(value="\\n")
}}
template(name="raw" type="string" string="%rawmsg%\\n")
ruleset(name="collect") {{
  action(type="omfile" file="{out}" template="parsed")
  action(type="omfile" file="{raw}" template="raw")
}}
input(type="imudp" address="127.0.0.1" port="{udp}" ruleset="collect")
input(type="imtcp" address="127.0.0.1" port="{tcp}" ruleset="collect")
input(type="imtcp" address="127.0.0.1" port="{tls}" ruleset="collect"
      streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="x509/certvalid")
"""


@dataclass
class Rsyslog:
    workdir: Path
    udp: int
    tcp: int
    tls: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def out(self) -> Path:
        return self.workdir / "parsed.log"

    def lines(self) -> list[list[str]]:
        if not self.out.exists():
            return []
        text = self.out.read_text(errors="replace")
        return [line.split("\t") for line in text.splitlines() if line]

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None
        pidfile = self.workdir / "rsyslogd.pid"
        pidfile.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            [str(RSYSLOGD), "-n", "-f", str(self.workdir / "rsyslog.conf"), "-i", str(pidfile)],
            stdout=(self.workdir / "rsyslogd.out").open("ab"), stderr=subprocess.STDOUT)
        wait_until(lambda: self.proc is not None and (self.proc.poll() is not None or all(
            _listening(p) for p in (self.tcp, self.tls))), 20, message="rsyslogd listening")
        if self.proc.poll() is not None:
            raise AssertionError("rsyslogd exited:\n"
                                 + (self.workdir / "rsyslogd.out").read_text(errors="replace"))

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)
            wait_until(lambda: not _listening(self.tcp), 10, message="rsyslogd gone")


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def rsyslog(tmp_path: Path, tls_files: TlsFiles) -> Iterator[Rsyslog]:
    """rsyslogd -n on 127.0.0.1 (UDP, TCP and TLS inputs on high ports), own config and work
    directory: it never reads /etc/rsyslog.conf nor writes under /var/log."""
    if not RSYSLOGD.exists() or not Path(
            "/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so").exists():
        _apt_install("rsyslog", "rsyslog-gnutls")
    work = tmp_path / "rsyslog"
    (work / "spool").mkdir(parents=True)
    udp = free_port(socket.SOCK_DGRAM)
    tcp = free_port()
    tls = free_port()
    (work / "rsyslog.conf").write_text(RSYSLOG_CONF.format(
        work=work / "spool", ca=tls_files.ca, cert=tls_files.server_cert,
        key=tls_files.server_key, out=work / "parsed.log", raw=work / "raw.log",
        udp=udp, tcp=tcp, tls=tls))
    r = Rsyslog(work, udp, tcp, tls)
    try:
        r.start()
        yield r
    finally:
        if r.proc is not None:
            _stop(r.proc)


# ---------------------------------------------------------------------------- misc


def python_in(prefix: list[str], script: Path, *args: str,
              timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*prefix, sys.executable, str(script), *args], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO, check=False)


def deadline_loop(timeout: float) -> Iterator[None]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        yield
        time.sleep(0.05)


@contextlib.contextmanager
def removed(path: Path) -> Iterator[None]:
    try:
        yield
    finally:
        shutil.rmtree(path, ignore_errors=True)


__all__ = ["Callable", "Journald", "Rsyslog", "TlsFiles", "free_port", "python_in"]
