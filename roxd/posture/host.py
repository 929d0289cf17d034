"""Section 1: host configuration (a separate partition, who may drive dockerd, audit rules)."""

from __future__ import annotations

from roxd.posture.facts import PostureFacts
from roxd.posture.model import Outcome, Result
from roxd.posture.registry import audit_watch, check, outcome

AUDIT_FIX = ("Add a watch rule for {path} to a file under /etc/audit/rules.d/ (for example "
             "`-w {path} -k docker`) and load it with `augenrules --load`; auditd must be "
             "installed and running.")


@check("1.1.1", "Ensure a separate partition for containers has been created",
       concerns="host", remediation="Give Docker's data root (DockerRootDir, usually "
       "/var/lib/docker) its own file system (a logical volume or disk mounted there, listed "
       "in /etc/fstab), so that a container filling it cannot fill the root file system.")
def c_1_1_1(f: PostureFacts) -> Outcome:
    if f.info is None:
        return outcome(Result.NOTE, f"the engine could not be read ({f.engine_error}): its "
                                    "data root is unknown")
    root = str((f.info or {}).get("DockerRootDir") or "/var/lib/docker")
    if root in f.mountpoints:
        return outcome(Result.PASS, f"{root} is a mount point of its own", [root])
    return outcome(Result.WARN, f"{root} is not a mount point: it shares its parent's file "
                                "system", [root])


@check("1.1.2", "Ensure only trusted users are allowed to control the Docker daemon",
       concerns="host", automated=True, remediation="Review the members of the docker group: "
       "each of them is root-equivalent on this host. Remove users who do not need it with "
       "`gpasswd -d USER docker`.")
def c_1_1_2(f: PostureFacts) -> Outcome:
    if f.docker_group is None:
        return outcome(Result.INFO, "there is no docker group: only root can use the socket")
    members = ", ".join(f.docker_group) or "no members"
    return outcome(Result.INFO, f"docker group members (root-equivalent): {members}",
                   f.docker_group)


def _audit(cis_id: str, path: str, label: str, *, dynamic: str = "") -> None:
    @check(cis_id, f"Ensure auditing is configured for {label}", concerns="files",
           remediation=AUDIT_FIX.format(path=path if not dynamic else f"<{dynamic}>"))
    def decide(f: PostureFacts) -> Outcome:
        return audit_watch(f, path)


@check("1.1.3", "Ensure auditing is configured for the Docker daemon", concerns="files",
       remediation=AUDIT_FIX.format(path="/usr/bin/dockerd"))
def c_1_1_3(f: PostureFacts) -> Outcome:
    if f.daemon.argv is None:
        return outcome(Result.NOTE, "no dockerd process on this host: its binary is unknown")
    return audit_watch(f, f.daemon.binary or "/usr/bin/dockerd", need_file=False)


_audit("1.1.4", "/run/containerd", "Docker files and directories - /run/containerd")
_audit("1.1.5", "/var/lib/docker", "Docker files and directories - /var/lib/docker")
_audit("1.1.6", "/etc/docker", "Docker files and directories - /etc/docker")


@check("1.1.7", "Ensure auditing is configured for Docker files and directories - "
       "docker.service", concerns="files",
       remediation=AUDIT_FIX.format(path="<path of docker.service>"))
def c_1_1_7(f: PostureFacts) -> Outcome:
    unit = f.unit_files.get("docker.service")
    if unit is None:
        return outcome(Result.NOTE, "no docker.service unit file on this host")
    return audit_watch(f, unit)


# the containerd socket dockerd talks to: a system containerd's, or the one dockerd starts
# itself (docker.io without containerd.service keeps it under /run/docker/containerd)
CONTAINERD_SOCKETS = ("/run/containerd/containerd.sock", "/run/docker/containerd/containerd.sock")


@check("1.1.8", "Ensure auditing is configured for Docker files and directories - "
       "containerd.sock", concerns="files",
       remediation=AUDIT_FIX.format(path="<path of containerd.sock>"))
def c_1_1_8(f: PostureFacts) -> Outcome:
    for path in CONTAINERD_SOCKETS:
        if f.file(path).exists:
            return audit_watch(f, path)
    return audit_watch(f, CONTAINERD_SOCKETS[0])


@check("1.1.9", "Ensure auditing is configured for Docker files and directories - "
       "docker.socket", concerns="files",
       remediation=AUDIT_FIX.format(path="<path of docker.socket>"))
def c_1_1_9(f: PostureFacts) -> Outcome:
    unit = f.unit_files.get("docker.socket")
    if unit is None:
        return outcome(Result.NOTE, "no docker.socket unit file on this host")
    return audit_watch(f, unit)


_audit("1.1.10", "/etc/default/docker", "Docker files and directories - /etc/default/docker")
_audit("1.1.11", "/etc/docker/daemon.json",
       "Docker files and directories - /etc/docker/daemon.json")
_audit("1.1.12", "/etc/containerd/config.toml",
       "Docker files and directories - /etc/containerd/config.toml")
_audit("1.1.13", "/etc/sysconfig/docker", "Docker files and directories - /etc/sysconfig/docker")
_audit("1.1.14", "/usr/bin/containerd", "Docker files and directories - /usr/bin/containerd")
_audit("1.1.15", "/usr/bin/containerd-shim",
       "Docker files and directories - /usr/bin/containerd-shim")
_audit("1.1.16", "/usr/bin/containerd-shim-runc-v1",
       "Docker files and directories - /usr/bin/containerd-shim-runc-v1")
_audit("1.1.17", "/usr/bin/containerd-shim-runc-v2",
       "Docker files and directories - /usr/bin/containerd-shim-runc-v2")


@check("1.1.18", "Ensure auditing is configured for Docker files and directories - runc",
       concerns="files", remediation=AUDIT_FIX.format(path="/usr/bin/runc"))
def c_1_1_18(f: PostureFacts) -> Outcome:
    for path in ("/usr/bin/runc", "/usr/sbin/runc"):
        if f.file(path).exists:
            return audit_watch(f, path)
    return audit_watch(f, "/usr/bin/runc")


@check("1.2.1", "Ensure the container host has been hardened", concerns="host",
       automated=False, remediation="Harden the host itself (a minimal distribution, kernel "
       "and package updates, the CIS benchmark for the distribution); a container is only as "
       "safe as the kernel it shares.")
def c_1_2_1(f: PostureFacts) -> Outcome:
    return outcome(Result.INFO, "a manual check: roxd cannot judge the host's hardening as a "
                                "whole (see the distribution's own CIS benchmark)")


@check("1.2.2", "Ensure that the version of Docker is up to date", concerns="daemon",
       automated=False, remediation="Compare the engine's version with the current releases "
       "of the distribution's or Docker's packages and upgrade when it is behind.")
def c_1_2_2(f: PostureFacts) -> Outcome:
    if f.info is None:
        return outcome(Result.NOTE, f"the engine could not be read: {f.engine_error}")
    version = (f.info or {}).get("ServerVersion") or "?"
    return outcome(Result.INFO, f"engine version {version}: roxd works offline and cannot "
                                "tell whether a newer release exists")
