"""Section 3: owners and modes of the daemon's files (units, /etc/docker, certificates, sockets,
daemon.json, the environment files)."""

from __future__ import annotations

from collections.abc import Callable

from roxd.posture.facts import FileFact, PostureFacts
from roxd.posture.model import Outcome, Result
from roxd.posture.registry import absent, check, outcome, ownership, permissions

OWN_FIX = "Run `chown root:root {path}`."
MODE_FIX = "Run `chmod {mode} {path}`."


def _unit(f: PostureFacts, name: str) -> FileFact | None:
    path = f.unit_files.get(name)
    return f.file(path) if path else None


def _unit_check(name: str, test: Callable[[FileFact], Outcome]) -> Callable[[PostureFacts],
                                                                             Outcome]:
    def decide(f: PostureFacts) -> Outcome:
        ff = _unit(f, name)
        if ff is None:
            return outcome(Result.NOTE, f"no {name} unit file on this host (dockerd is not "
                                        "managed by this systemd unit)")
        return test(ff)
    return decide


check("3.1", "Ensure that the docker.service file ownership is set to root:root",
      concerns="files", remediation=OWN_FIX.format(path="<docker.service path>"))(
    _unit_check("docker.service", ownership))
check("3.2", "Ensure that docker.service file permissions are appropriately set",
      concerns="files", remediation=MODE_FIX.format(mode=644, path="<docker.service path>"))(
    _unit_check("docker.service", lambda ff: permissions(ff, 0o644)))
check("3.3", "Ensure that docker.socket file ownership is set to root:root",
      concerns="files", remediation=OWN_FIX.format(path="<docker.socket path>"))(
    _unit_check("docker.socket", ownership))
check("3.4", "Ensure that docker.socket file permissions are set to 644 or more restrictive",
      concerns="files", remediation=MODE_FIX.format(mode=644, path="<docker.socket path>"))(
    _unit_check("docker.socket", lambda ff: permissions(ff, 0o644)))


def _file(cis_id: str, title: str, path: str, *, mode: int | None = None,
          groups: tuple[str, ...] = ("root",)) -> None:
    if mode is None:
        fix = f"Run `chown root:{groups[0]} {path}`."
        check(cis_id, title, concerns="files", remediation=fix)(
            lambda f: ownership(f.file(path), groups))
    else:
        fix = MODE_FIX.format(mode=f"{mode:o}", path=path)
        check(cis_id, title, concerns="files", remediation=fix)(
            lambda f: permissions(f.file(path), mode))


_file("3.5", "Ensure that the /etc/docker directory ownership is set to root:root",
      "/etc/docker")
_file("3.6", "Ensure that /etc/docker directory permissions are set to 755 or more "
      "restrictively", "/etc/docker", mode=0o755)


def _certs(f: PostureFacts, test: Callable[[FileFact], Outcome]) -> Outcome:
    if f.registry_certs is None:
        return outcome(Result.NOTE, "/etc/docker/certs.d is not on this host: no registry "
                                    "certificates to check")
    if not f.registry_certs:
        return outcome(Result.NOTE, "/etc/docker/certs.d holds no files")
    bad = [o for o in (test(f.file(p)) for p in f.registry_certs) if o.result is Result.WARN]
    if bad:
        return outcome(Result.WARN, "; ".join(o.reason for o in bad),
                       [i for o in bad for i in o.items])
    return outcome(Result.PASS, f"all {len(f.registry_certs)} files under "
                                "/etc/docker/certs.d are fine", f.registry_certs)


check("3.7", "Ensure that registry certificate file ownership is set to root:root",
      concerns="files", remediation="Run `chown root:root /etc/docker/certs.d/<registry>/*`.")(
    lambda f: _certs(f, ownership))
check("3.8", "Ensure that registry certificate file permissions are set to 444 or more "
      "restrictively", concerns="files",
      remediation="Run `chmod 444 /etc/docker/certs.d/<registry>/*`.")(
    lambda f: _certs(f, lambda ff: permissions(ff, 0o444)))


def _tls(key: str, test: Callable[[FileFact], Outcome]) -> Callable[[PostureFacts], Outcome]:
    def decide(f: PostureFacts) -> Outcome:
        path = f.daemon.setting(key)
        if not isinstance(path, str) or not path:
            return outcome(Result.NOTE, f"{key} is not configured (dockerd has no TLS "
                                        "listener): no file to check")
        ff = f.file(path)
        return test(ff) if ff.exists else absent(ff)
    return decide


for _id, _what, _key in (("3.9", "TLS CA certificate", "tlscacert"),
                         ("3.11", "Docker server certificate", "tlscert"),
                         ("3.13", "Docker server certificate key", "tlskey")):
    check(_id, f"Ensure that the {_what} file ownership is set to root:root",
          concerns="files", remediation=OWN_FIX.format(path=f"<{_key} path>"))(
        _tls(_key, ownership))
for _id, _what, _key, _mode in (("3.10", "TLS CA certificate", "tlscacert", 0o444),
                                ("3.12", "Docker server certificate", "tlscert", 0o444),
                                ("3.14", "Docker server certificate key", "tlskey", 0o400)):
    check(_id, f"Ensure that the {_what} file permissions are set to {_mode:o} or more "
          "restrictively", concerns="files",
          remediation=MODE_FIX.format(mode=f"{_mode:o}", path=f"<{_key} path>"))(
        _tls(_key, lambda ff, m=_mode: permissions(ff, m)))

_file("3.15", "Ensure that the Docker socket file ownership is set to root:docker",
      "/var/run/docker.sock", groups=("docker", "root"))
_file("3.16", "Ensure that the Docker socket file permissions are set to 660 or more "
      "restrictively", "/var/run/docker.sock", mode=0o660)


def _daemon_json(test: Callable[[FileFact], Outcome]) -> Callable[[PostureFacts], Outcome]:
    def decide(f: PostureFacts) -> Outcome:
        return test(f.file(f.daemon.config_path))
    return decide


check("3.17", "Ensure that the daemon.json file ownership is set to root:root",
      concerns="files", remediation=OWN_FIX.format(path="/etc/docker/daemon.json"))(
    _daemon_json(ownership))
check("3.18", "Ensure that daemon.json file permissions are set to 644 or more restrictive",
      concerns="files", remediation=MODE_FIX.format(mode=644, path="/etc/docker/daemon.json"))(
    _daemon_json(lambda ff: permissions(ff, 0o644)))

_file("3.19", "Ensure that the /etc/default/docker file ownership is set to root:root",
      "/etc/default/docker")
_file("3.20", "Ensure that the /etc/default/docker file permissions are set to 644 or more "
      "restrictively", "/etc/default/docker", mode=0o644)
_file("3.21", "Ensure that the /etc/sysconfig/docker file permissions are set to 644 or more "
      "restrictively", "/etc/sysconfig/docker", mode=0o644)
_file("3.22", "Ensure that the /etc/sysconfig/docker file ownership is set to root:root",
      "/etc/sysconfig/docker")
_file("3.23", "Ensure that the containerd socket file ownership is set to root:root",
      "/run/containerd/containerd.sock")
_file("3.24", "Ensure that the containerd socket file permissions are set to 660 or more "
      "restrictively", "/run/containerd/containerd.sock", mode=0o660)
