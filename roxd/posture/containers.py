"""Section 5: the container runtime, from each running container's inspect data, its exec
instances (the engine keeps them while the container lives) and the processes roxd sees in its
pid namespace."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from roxd.posture.facts import ContainerFacts, PostureFacts
from roxd.posture.model import Outcome, Result
from roxd.posture.registry import NO_CONTAINERS, check, outcome, per_container

# the capabilities Docker grants by default (moby's oci/caps/defaults.go)
DEFAULT_CAPS = frozenset({"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL",
                          "MKNOD", "NET_BIND_SERVICE", "NET_RAW", "SETFCAP", "SETGID",
                          "SETPCAP", "SETUID", "SYS_CHROOT"})
SENSITIVE_DIRS = ("/", "/boot", "/dev", "/etc", "/lib", "/proc", "/sys", "/usr")
SENSITIVE_TREES = ("/boot", "/dev", "/etc", "/proc", "/sys")  # their subpaths too
DOCKER_SOCKETS = ("docker.sock", "containerd.sock", "crio.sock", "podman.sock")
RUN_FIX = "Recreate the container {how}."


def cap_name(cap: str) -> str:
    cap = cap.upper()
    return cap[4:] if cap.startswith("CAP_") else cap


def security_opts(c: ContainerFacts) -> list[str]:
    return [str(o) for o in c.host_config.get("SecurityOpt") or []]


def published(c: ContainerFacts) -> list[tuple[str, str, str]]:
    """(container port/proto, host ip, host port) of every published port."""
    ports: Mapping[str, Any] = (c.inspect.get("NetworkSettings") or {}).get("Ports") or {}
    out = []
    for cport, bindings in ports.items():
        for b in bindings or []:
            out.append((cport, str(b.get("HostIp") or ""), str(b.get("HostPort") or "")))
    return out


def mounts(c: ContainerFacts) -> list[Mapping[str, Any]]:
    return list(c.inspect.get("Mounts") or [])


@check("5.1", "Ensure swarm mode is not enabled, if not needed", concerns="daemon",
       remediation="Leave the swarm (`docker swarm leave`) on hosts that do not need it: "
       "swarm mode opens management ports and holds cluster secrets.")
def c_5_1(f: PostureFacts) -> Outcome:
    if f.info is None:
        return outcome(Result.NOTE, f"the engine could not be read: {f.engine_error}")
    state = ((f.info or {}).get("Swarm") or {}).get("LocalNodeState") or "?"
    if state in ("inactive", ""):
        return outcome(Result.PASS, "swarm mode is inactive")
    return outcome(Result.WARN, f"swarm mode is {state}")


@check("5.2", "Ensure that, if applicable, an AppArmor profile is enabled", concerns="containers",
       remediation=RUN_FIX.format(how="with an AppArmor profile (the engine's docker-default, "
                                  "or --security-opt apparmor=PROFILE)"))
def c_5_2(f: PostureFacts) -> Outcome:
    if f.info is not None and not any("name=apparmor" in o for o in f.security_options()):
        return outcome(Result.INFO, "not applicable: AppArmor is not active in this engine "
                                    "(SecurityOptions has no name=apparmor)")

    def bad(c: ContainerFacts) -> str | None:
        profile = str(c.inspect.get("AppArmorProfile") or "")
        return None if profile and profile != "unconfined" else \
            f"AppArmor profile {profile or 'none'}"
    return per_container(f, bad, what="run without an AppArmor profile")


@check("5.3", "Ensure that, if applicable, SELinux security options are set",
       concerns="containers", remediation=RUN_FIX.format(
           how="with --security-opt label=... on an SELinux host with selinux-enabled"))
def c_5_3(f: PostureFacts) -> Outcome:
    if f.info is not None and not any("name=selinux" in o for o in f.security_options()):
        return outcome(Result.INFO, "not applicable: SELinux is not enabled in this engine "
                                    "(SecurityOptions has no name=selinux)")

    def bad(c: ContainerFacts) -> str | None:
        return None if any(o.startswith("label") for o in security_opts(c)) else \
            "no SELinux label option"
    return per_container(f, bad, what="have no SELinux options")


@check("5.4", "Ensure that Linux kernel capabilities are restricted within containers",
       concerns="containers", remediation=RUN_FIX.format(
           how="with --cap-drop=ALL and --cap-add only for the capabilities it uses"),
       impact="A process that needs a dropped capability fails with EPERM.")
def c_5_4(f: PostureFacts) -> Outcome:
    def bad(c: ContainerFacts) -> str | None:
        added = sorted({cap_name(x) for x in c.host_config.get("CapAdd") or []} - DEFAULT_CAPS)
        return "adds " + ",".join(added) if added else None
    return per_container(f, bad, what="add capabilities beyond Docker's default set")


@check("5.5", "Ensure that privileged containers are not used", concerns="containers",
       remediation=RUN_FIX.format(how="without --privileged (add the single capability or "
                                  "device it needs instead)"))
def c_5_5(f: PostureFacts) -> Outcome:
    return per_container(f, lambda c: "privileged" if c.host_config.get("Privileged") else None,
                         what="run privileged")


def sensitive_source(source: str) -> bool:
    src = source.rstrip("/") or "/"
    if src in SENSITIVE_DIRS:
        return True
    return any(src.startswith(t + "/") for t in SENSITIVE_TREES)


@check("5.6", "Ensure sensitive host system directories are not mounted on containers",
       concerns="containers", remediation=RUN_FIX.format(
           how="without bind mounts of /, /boot, /dev, /etc, /lib, /proc, /sys or /usr (mount "
               "the single file it needs, read-only)"))
def c_5_6(f: PostureFacts) -> Outcome:
    def bad(c: ContainerFacts) -> str | None:
        hits = [f"{m.get('Source')} ({'rw' if m.get('RW') else 'ro'})" for m in mounts(c)
                if m.get("Type") == "bind" and sensitive_source(str(m.get("Source") or ""))]
        return "mounts " + ", ".join(hits) if hits else None
    return per_container(f, bad, what="mount sensitive host directories")


@check("5.7", "Ensure sshd is not run within containers", concerns="containers",
       remediation="Remove the SSH server from the image; use `docker exec` for maintenance.")
def c_5_7(f: PostureFacts) -> Outcome:
    unseen = [c.name for c in f.containers if c.processes is None]

    def bad(c: ContainerFacts) -> str | None:
        return "observed running sshd" if c.processes and any(
            p.startswith("sshd") for p in c.processes) else None
    # observed, not configured: the processes roxd reads in each pid namespace at the scan
    result = per_container(f, bad, what="run sshd (observed: a process named sshd* in the "
                                        "container's pid namespace, read from /proc)")
    if result.result is Result.PASS and unseen:
        return outcome(Result.NOTE, f"no sshd observed, but the processes of {', '.join(unseen)} "
                                    "could not be read (host pid namespace or not running)",
                       unseen)
    return result


@check("5.8", "Ensure privileged ports are not mapped within containers", concerns="containers",
       remediation=RUN_FIX.format(how="with its ports published on host ports above 1024"))
def c_5_8(f: PostureFacts) -> Outcome:
    def bad(c: ContainerFacts) -> str | None:
        low = [f"{hp}->{cp}" for cp, _ip, hp in published(c) if hp.isdigit() and int(hp) < 1025]
        return "publishes " + ", ".join(low) if low else None
    return per_container(f, bad, what="publish privileged host ports")


def declared_ports(c: ContainerFacts) -> set[str]:
    """"80/tcp" keys the container declares: its image's EXPOSE and --expose (the engine merges
    both into Config.ExposedPorts) and its published ports (HostConfig.PortBindings and
    NetworkSettings.Ports)."""
    keys = set((c.inspect.get("Config") or {}).get("ExposedPorts") or {})
    keys |= set(c.host_config.get("PortBindings") or {})
    keys |= {cp for cp, _ip, _hp in published(c)}
    return {k if "/" in k else f"{k}/tcp" for k in map(str, keys)}


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def undeclared_listeners(c: ContainerFacts) -> list[str]:
    """"tcp/8081 on 0.0.0.0 (nc)" for every observed listener beyond loopback whose port the
    container neither publishes nor declares."""
    declared = declared_ports(c)
    out = []
    for row in c.listening or ():
        protocol, port = str(row.get("protocol") or "tcp"), int(row.get("port") or 0)
        address = str(row.get("address") or "")
        if not port or _loopback(address) or f"{port}/{protocol}" in declared:
            continue
        who = f" ({row['process']})" if row.get("process") else ""
        out.append(f"{protocol}/{port} on {address or '*'}{who}")
    return sorted(set(out))


@check("5.9", "Ensure that only needed ports are open on the container", concerns="containers",
       automated=False, remediation="Stop the service listening on a port the container does "
       "not declare, or declare it (EXPOSE in the image, --expose) and publish it only where "
       "it is needed (no -P); `roxctl inventory` lists what each container listens on.")
def c_5_9(f: PostureFacts) -> Outcome:
    # Answered from observation: the listening sockets roxd saw each container open (issue
    # 17: "containers listening on ports they do not need"). A port the image declares or
    # the container publishes is taken as needed; anything else reachable beyond loopback is
    # a service nobody declared (a backdoor, a debug port, a forgotten admin endpoint).
    if f.info is None:
        return outcome(Result.NOTE, f"the engine could not be read: {f.engine_error}")
    if not f.containers:
        return outcome(Result.INFO, NO_CONTAINERS)
    if not f.listening_observed:
        return outcome(Result.INFO, f"not decided: {f.listening}")
    hits, unseen = [], []
    for c in f.containers:
        if c.listening is None:
            unseen.append(c.name)
            continue
        if found := undeclared_listeners(c):
            hits.append((c.name, found))
    how = f"observed listening sockets ({f.listening})"
    if hits:
        detail = "; ".join(f"{n}: {', '.join(ports)}" for n, ports in hits[:20])
        more = f" (+{len(hits) - 20} more)" if len(hits) > 20 else ""
        return outcome(Result.WARN, f"{len(hits)} of {len(f.containers)} containers listen "
                                    f"beyond loopback on ports neither published nor declared "
                                    f"by the image: {detail}{more}; {how}",
                       [n for n, _ in hits])
    if len(unseen) == len(f.containers):
        return outcome(Result.INFO, f"not decided: the listening sockets of no container "
                                    f"could be read ({f.listening})")
    missing = f" ({len(unseen)} could not be read: {', '.join(unseen[:20])})" if unseen else ""
    return outcome(Result.PASS, f"none of {len(f.containers) - len(unseen)} running containers "
                                f"listens beyond loopback on a port it neither publishes nor "
                                f"declares{missing}; {how}")


def _mode_check(cis_id: str, title: str, key: str, what: str, fix: str) -> None:
    @check(cis_id, title, concerns="containers", remediation=RUN_FIX.format(how=fix))
    def decide(f: PostureFacts) -> Outcome:
        return per_container(
            f, lambda c: f"{key}=host" if str(c.host_config.get(key) or "") == "host" else None,
            what=what)


_mode_check("5.10", "Ensure that the host's network namespace is not shared", "NetworkMode",
            "share the host's network namespace", "without --network=host")


@check("5.11", "Ensure that the memory usage for containers is limited", concerns="containers",
       remediation=RUN_FIX.format(how="with --memory (and --memory-swap) sized for it"))
def c_5_11(f: PostureFacts) -> Outcome:
    return per_container(f, lambda c: None if c.host_config.get("Memory") else "no memory limit",
                         what="have no memory limit")


@check("5.12", "Ensure that CPU priority is set appropriately on containers",
       concerns="containers", remediation=RUN_FIX.format(how="with --cpu-shares or --cpus"))
def c_5_12(f: PostureFacts) -> Outcome:
    def bad(c: ContainerFacts) -> str | None:
        hc = c.host_config
        return None if hc.get("CpuShares") or hc.get("NanoCpus") or hc.get("CpuQuota") else \
            "no CPU shares or limit"
    return per_container(f, bad, what="have no CPU priority or limit")


@check("5.13", "Ensure that the container's root filesystem is mounted as read only",
       concerns="containers", remediation=RUN_FIX.format(
           how="with --read-only and a tmpfs or volume for the paths it writes"))
def c_5_13(f: PostureFacts) -> Outcome:
    return per_container(
        f, lambda c: None if c.host_config.get("ReadonlyRootfs") else "writable root fs",
        what="have a writable root file system")


@check("5.14", "Ensure that incoming container traffic is bound to a specific host interface",
       concerns="containers", remediation=RUN_FIX.format(
           how="with each port published on one address (-p 10.0.0.5:8080:80)"))
def c_5_14(f: PostureFacts) -> Outcome:
    def bad(c: ContainerFacts) -> str | None:
        anyaddr = [f"{ip or '*'}:{hp}" for _cp, ip, hp in published(c)
                   if ip in ("", "0.0.0.0", "::")]
        return "listens on " + ", ".join(anyaddr) if anyaddr else None
    return per_container(f, bad, what="publish ports on every host address")


@check("5.15", "Ensure that the 'on-failure' container restart policy is set to '5'",
       concerns="containers", remediation=RUN_FIX.format(
           how="with --restart on-failure:5 (or no restart policy)"))
def c_5_15(f: PostureFacts) -> Outcome:
    def bad(c: ContainerFacts) -> str | None:
        policy = c.host_config.get("RestartPolicy") or {}
        name = policy.get("Name") or "no"
        retries = int(policy.get("MaximumRetryCount") or 0)
        if name in ("always", "unless-stopped"):
            return f"restart policy {name} (restarts forever)"
        if name == "on-failure" and (retries == 0 or retries > 5):
            return f"on-failure with {retries or 'unlimited'} retries"
        return None
    return per_container(f, bad, what="restart without a bound of 5")


_mode_check("5.16", "Ensure that the host's process namespace is not shared", "PidMode",
            "share the host's process namespace", "without --pid=host")
_mode_check("5.17", "Ensure that the host's IPC namespace is not shared", "IpcMode",
            "share the host's IPC namespace", "without --ipc=host")


@check("5.18", "Ensure that host devices are not directly exposed to containers",
       concerns="containers", automated=False, remediation=RUN_FIX.format(
           how="without --device, or with the device's permissions reduced (:r)"))
def c_5_18(f: PostureFacts) -> Outcome:
    def bad(c: ContainerFacts) -> str | None:
        devs = [str(d.get("PathOnHost")) for d in c.host_config.get("Devices") or []]
        return "devices " + ", ".join(devs) if devs else None
    return per_container(f, bad, what="have host devices (review each)", warn=Result.INFO)


@check("5.19", "Ensure that the default ulimit is overwritten at runtime if needed",
       concerns="containers", automated=False,
       remediation=RUN_FIX.format(how="with --ulimit where the daemon's default does not fit"))
def c_5_19(f: PostureFacts) -> Outcome:
    return per_container(
        f, lambda c: None if c.host_config.get("Ulimits") else "daemon default ulimits",
        what="use the daemon's default ulimits (review)", warn=Result.INFO)


@check("5.20", "Ensure mount propagation mode is not set to shared", concerns="containers",
       remediation=RUN_FIX.format(how="with private or slave propagation on its bind mounts"))
def c_5_20(f: PostureFacts) -> Outcome:
    def bad(c: ContainerFacts) -> str | None:
        shared = [str(m.get("Destination")) for m in mounts(c)
                  if str(m.get("Propagation") or "") in ("shared", "rshared")]
        return "shared propagation on " + ", ".join(shared) if shared else None
    return per_container(f, bad, what="mount with shared propagation")


_mode_check("5.21", "Ensure that the host's UTS namespace is not shared", "UTSMode",
            "share the host's UTS namespace", "without --uts=host")


@check("5.22", "Ensure the default seccomp profile is not disabled", concerns="containers",
       remediation=RUN_FIX.format(how="without --security-opt seccomp=unconfined"))
def c_5_22(f: PostureFacts) -> Outcome:
    def bad(c: ContainerFacts) -> str | None:
        if any(o.replace(":", "=") == "seccomp=unconfined" for o in security_opts(c)):
            return "seccomp=unconfined"
        return None
    return per_container(f, bad, what="disable seccomp")


def _configured_user(c: ContainerFacts) -> str:
    return str((c.inspect.get("Config") or {}).get("User") or "").split(":", 1)[0]


def _exec_problem(c: ContainerFacts, test: str) -> str | None:
    """From the engine's exec records, and from the sessions observed in /proc now (which
    also sees sessions the engine never recorded: `runc exec`, `nsenter`)."""
    hits = []
    for e in c.execs:
        pc = e.get("ProcessConfig") or {}
        argv = " ".join([str(pc.get("entrypoint") or ""), *map(str, pc.get("arguments") or [])])
        if test == "privileged" and (pc.get("privileged") or e.get("Privileged")):
            hits.append(f"privileged exec `{argv.strip()[:60]}` (engine's exec record)")
        if test == "root" and str(pc.get("user") or "") in ("root", "0", "0:0"):
            hits.append(f"exec as {pc.get('user')} `{argv.strip()[:60]}` (engine's exec record)")
    user = _configured_user(c)
    for s in c.sessions:
        if test == "privileged" and s.cap_bnd & ~s.init_cap_bnd:
            hits.append(f"observed: session pid {s.pid} `{s.comm}` holds capabilities beyond "
                        "the container's bounding set (read from /proc)")
        # in a root container every exec is root: only a session that became root where the
        # container runs as another user is an exec "with user=root"
        if test == "root" and s.uid == 0 and user not in ("", "0", "root"):
            hits.append(f"observed: session pid {s.pid} `{s.comm}` runs as root in a container "
                        f"configured as user {user} (read from /proc)")
    return "; ".join(hits) if hits else None


@check("5.23", "Ensure that docker exec commands are not used with the privileged option",
       concerns="containers", remediation="Do not run `docker exec --privileged`; give the "
       "container the one capability the task needs, or use a separate debug container.")
def c_5_23(f: PostureFacts) -> Outcome:
    return per_container(f, lambda c: _exec_problem(c, "privileged"),
                         what="had privileged exec sessions (observed: the engine's exec "
                              "records and the sessions running now, from /proc)")


@check("5.24", "Ensure that docker exec commands are not used with the user=root option",
       concerns="containers", automated=False, remediation="Run `docker exec` as the "
       "container's own user; keep `--user root` for audited break-glass work.")
def c_5_24(f: PostureFacts) -> Outcome:
    return per_container(f, lambda c: _exec_problem(c, "root"),
                         what="had exec sessions as root (observed: the engine's exec records "
                              "and the sessions running now, from /proc)", warn=Result.INFO)


@check("5.25", "Ensure that cgroup usage is confirmed", concerns="containers",
       remediation=RUN_FIX.format(how="without --cgroup-parent unless that hierarchy's limits "
                                  "are intended"))
def c_5_25(f: PostureFacts) -> Outcome:
    return per_container(
        f, lambda c: (f"cgroup parent {c.host_config.get('CgroupParent')}"
                      if c.host_config.get("CgroupParent") else None),
        what="use a non-default cgroup parent")


@check("5.26", "Ensure that the container is restricted from acquiring additional privileges",
       concerns="containers", remediation=RUN_FIX.format(
           how="with --security-opt no-new-privileges (or set it daemon-wide, 2.14)"))
def c_5_26(f: PostureFacts) -> Outcome:
    daemon_wide = f.daemon.setting("no-new-privileges") in (True, "true")
    if daemon_wide:
        return outcome(Result.PASS, "no-new-privileges is the daemon's default (2.14)")

    def bad(c: ContainerFacts) -> str | None:
        opts = [o.replace("=", ":") for o in security_opts(c)]
        return None if any(o in ("no-new-privileges", "no-new-privileges:true")
                           for o in opts) else "no no-new-privileges"
    return per_container(f, bad, what="may gain privileges through setuid binaries")


@check("5.27", "Ensure that container health is checked at runtime", concerns="containers",
       remediation=RUN_FIX.format(how="with --health-cmd (or a HEALTHCHECK in its image)"))
def c_5_27(f: PostureFacts) -> Outcome:
    return per_container(
        f, lambda c: None if (c.inspect.get("State") or {}).get("Health") else "no healthcheck",
        what="have no health check")


@check("5.28", "Ensure that Docker commands always make use of the latest version of their "
       "image", concerns="containers", automated=False, remediation="Pull images by digest "
       "or with --pull always in deployment, and recreate containers when the image changes.")
def c_5_28(f: PostureFacts) -> Outcome:
    return outcome(Result.INFO, "a manual check: roxd does not contact registries, so it "
                                "cannot tell whether a newer image exists")


@check("5.29", "Ensure that the PIDs cgroup limit is used", concerns="containers",
       remediation=RUN_FIX.format(how="with --pids-limit (e.g. 100)"))
def c_5_29(f: PostureFacts) -> Outcome:
    def bad(c: ContainerFacts) -> str | None:
        limit = c.host_config.get("PidsLimit")
        return None if limit and int(limit) > 0 else "no pids limit"
    return per_container(f, bad, what="have no pids limit (fork bombs)")


@check("5.30", "Ensure that Docker's default bridge 'docker0' is not used", concerns="containers",
       automated=False, remediation=RUN_FIX.format(
           how="on a user-defined network (`docker network create`) instead of the default bridge"))
def c_5_30(f: PostureFacts) -> Outcome:
    def bad(c: ContainerFacts) -> str | None:
        nets = (c.inspect.get("NetworkSettings") or {}).get("Networks") or {}
        return "on the default bridge" if "bridge" in nets else None
    return per_container(f, bad, what="use the default bridge docker0", warn=Result.INFO)


_mode_check("5.31", "Ensure that the host's user namespaces are not shared", "UsernsMode",
            "share the host's user namespace", "without --userns=host")


@check("5.32", "Ensure that the Docker socket is not mounted inside any containers",
       concerns="containers", remediation=RUN_FIX.format(
           how="without the engine's socket: whoever holds it controls the host"))
def c_5_32(f: PostureFacts) -> Outcome:
    def bad(c: ContainerFacts) -> str | None:
        socks = [str(m.get("Source")) for m in mounts(c)
                 if any(str(m.get("Source") or "").endswith(s) or
                        str(m.get("Destination") or "").endswith(s) for s in DOCKER_SOCKETS)]
        return "mounts " + ", ".join(socks) if socks else None
    return per_container(f, bad, what="mount a container engine's socket")
