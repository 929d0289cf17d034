"""Section 2: Docker daemon configuration, from `docker info`, dockerd's argv and daemon.json."""

from __future__ import annotations

from typing import Any

from roxd.posture.facts import PostureFacts
from roxd.posture.model import Outcome, Result
from roxd.posture.registry import check, outcome

JSON_FIX = ("Set {setting} in /etc/docker/daemon.json (or as a dockerd flag in its unit) and "
            "restart the daemon.")


def _where(f: PostureFacts, flag: str, key: str | None = None) -> str:
    if f.daemon.arg(flag) is not None:
        return f"dockerd --{flag}"
    if (key or flag) in f.daemon.config:
        return f.daemon.config_path
    return "the default"


def _engine(f: PostureFacts) -> Outcome | None:
    if f.info is None:
        return outcome(Result.NOTE, f"the engine could not be read: {f.engine_error}")
    return None


def _dockerd(f: PostureFacts) -> Outcome | None:
    """NOTE when neither a dockerd process nor a configuration file says anything: a default
    is only a PASS for a daemon that runs with it."""
    if f.daemon.argv is None and not f.daemon.config_exists:
        return outcome(Result.NOTE, "no dockerd process on this host and no "
                                    f"{f.daemon.config_path}: its settings are unknown")
    if f.daemon.config_error:
        return outcome(Result.NOTE, f"{f.daemon.config_path} {f.daemon.config_error}")
    return None


def _truthy(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


def _falsy(value: Any) -> bool:
    return value is False or (isinstance(value, str) and value.lower() == "false")


@check("2.1", "Run the Docker daemon as a non-root user, if possible", concerns="daemon",
       automated=False, remediation="Where the workloads allow it, run the engine rootless "
       "(dockerd-rootless-setuptool.sh install as an unprivileged user).")
def c_2_1(f: PostureFacts) -> Outcome:
    if (n := _engine(f)) is not None:
        return n
    if any("name=rootless" in o for o in f.security_options()):
        return outcome(Result.PASS, "the engine runs rootless")
    return outcome(Result.INFO, "the engine runs as root (SecurityOptions has no "
                                "name=rootless)")


@check("2.2", "Ensure network traffic is restricted between containers on the default bridge",
       concerns="daemon", remediation=JSON_FIX.format(setting='"icc": false'))
def c_2_2(f: PostureFacts) -> Outcome:
    if (n := _dockerd(f)) is not None:
        return n
    if _falsy(f.daemon.setting("icc")):
        return outcome(Result.PASS, f"icc is false ({_where(f, 'icc')})")
    return outcome(Result.WARN, "inter-container communication on the default bridge is "
                                f"allowed (icc not false: {_where(f, 'icc')})")


@check("2.3", "Ensure the logging level is set to 'info'", concerns="daemon",
       remediation=JSON_FIX.format(setting='"log-level": "info" (or remove the setting)'))
def c_2_3(f: PostureFacts) -> Outcome:
    if (n := _dockerd(f)) is not None:
        return n
    level = f.daemon.setting("log-level")
    if level in (None, "info"):
        return outcome(Result.PASS, f"log level is {level or 'info (the default)'}")
    return outcome(Result.WARN, f"log level is {level} ({_where(f, 'log-level')})")


@check("2.4", "Ensure Docker is allowed to make changes to iptables", concerns="daemon",
       remediation="Remove --iptables=false and \"iptables\": false so that dockerd manages "
       "the firewall rules of its networks itself.")
def c_2_4(f: PostureFacts) -> Outcome:
    if (n := _dockerd(f)) is not None:
        return n
    if _falsy(f.daemon.setting("iptables")):
        return outcome(Result.WARN, f"iptables management is off ({_where(f, 'iptables')})")
    return outcome(Result.PASS, f"iptables management is on ({_where(f, 'iptables')})")


@check("2.5", "Ensure insecure registries are not used", concerns="daemon",
       remediation="Remove the insecure-registries entries and give each private registry a "
       "TLS certificate (its CA under /etc/docker/certs.d/<registry>/ca.crt).")
def c_2_5(f: PostureFacts) -> Outcome:
    if (n := _engine(f)) is not None:
        return n
    reg = (f.info or {}).get("RegistryConfig") or {}
    cidrs = [c for c in reg.get("InsecureRegistryCIDRs") or [] if c not in ("127.0.0.0/8",
                                                                              "::1/128")]
    names = [n for n, c in (reg.get("IndexConfigs") or {}).items() if not c.get("Secure", True)]
    bad = cidrs + names
    if bad:
        return outcome(Result.WARN, "insecure registries: " + ", ".join(bad), bad)
    return outcome(Result.PASS, "no insecure registries beyond loopback")


@check("2.6", "Ensure aufs storage driver is not used", concerns="daemon",
       remediation="Move to the overlay2 storage driver (\"storage-driver\": \"overlay2\"); "
       "aufs is unmaintained and removed from current engines.")
def c_2_6(f: PostureFacts) -> Outcome:
    if (n := _engine(f)) is not None:
        return n
    driver = (f.info or {}).get("Driver") or "?"
    if driver == "aufs":
        return outcome(Result.WARN, "the storage driver is aufs")
    return outcome(Result.PASS, f"the storage driver is {driver}")


def tcp_hosts(f: PostureFacts) -> list[str]:
    hosts = list(f.daemon.args("host"))
    hosts += [h for h in f.daemon.config.get("hosts") or [] if isinstance(h, str)]
    for i, word in enumerate(f.daemon.argv or ()):
        if word == "-H" and i + 1 < len(f.daemon.argv or ()):
            hosts.append((f.daemon.argv or ())[i + 1])
        elif word.startswith("-H") and len(word) > 2 and not word.startswith("-H="):
            hosts.append(word[2:])
    return sorted({h for h in hosts if h.startswith("tcp://")})


@check("2.7", "Ensure TLS authentication for Docker daemon is configured", concerns="daemon",
       remediation="When dockerd listens on TCP, require client certificates: tlsverify true "
       "with tlscacert, tlscert and tlskey set (or listen on the Unix socket only).")
def c_2_7(f: PostureFacts) -> Outcome:
    if (n := _dockerd(f)) is not None:
        return n
    hosts = tcp_hosts(f)
    if not hosts:
        return outcome(Result.INFO, "dockerd does not listen on TCP (Unix socket only)")
    missing = [k for k in ("tlscacert", "tlscert", "tlskey") if not f.daemon.setting(k)]
    if _truthy(f.daemon.setting("tlsverify")) and not missing:
        return outcome(Result.PASS, f"TCP listeners {', '.join(hosts)} require client "
                                    "certificates", hosts)
    why = "tlsverify is not set" if not _truthy(f.daemon.setting("tlsverify")) else \
        "missing " + ", ".join(missing)
    return outcome(Result.WARN, f"dockerd listens on {', '.join(hosts)} and {why}", hosts)


@check("2.8", "Ensure the default ulimit is configured appropriately", concerns="daemon",
       automated=False, remediation=JSON_FIX.format(
           setting='"default-ulimits" (e.g. nofile and nproc limits)'))
def c_2_8(f: PostureFacts) -> Outcome:
    if (n := _dockerd(f)) is not None:
        return n
    if f.daemon.setting("default-ulimit", "default-ulimits"):
        where = _where(f, "default-ulimit", "default-ulimits")
        return outcome(Result.PASS, f"default ulimits are set ({where})")
    return outcome(Result.INFO, "no default ulimits: containers inherit dockerd's limits")


@check("2.9", "Enable user namespace support", concerns="daemon",
       remediation=JSON_FIX.format(setting='"userns-remap": "default"'),
       impact="Volumes and images owned by root on the host are seen as nobody in containers; "
       "some images need changes.")
def c_2_9(f: PostureFacts) -> Outcome:
    if (n := _engine(f)) is not None:
        return n
    if any("name=userns" in o for o in f.security_options()):
        return outcome(Result.PASS, "user namespace remapping is on")
    return outcome(Result.WARN, "user namespace remapping is off: root in a container is "
                                "root on the host")


@check("2.10", "Ensure the default cgroup usage has been confirmed", concerns="daemon",
       remediation="Leave cgroup-parent unset unless a deliberate resource hierarchy needs it, "
       "and review that hierarchy's limits when it is set.")
def c_2_10(f: PostureFacts) -> Outcome:
    if (n := _dockerd(f)) is not None:
        return n
    parent = f.daemon.setting("cgroup-parent")
    if not parent:
        return outcome(Result.PASS, "containers use the default cgroup parent")
    return outcome(Result.INFO, f"cgroup-parent is {parent}: confirm its limits")


@check("2.11", "Ensure base device size is not changed until needed", concerns="daemon",
       remediation="Remove dm.basesize from storage-opts unless the device-mapper driver's "
       "default is known to be too small.")
def c_2_11(f: PostureFacts) -> Outcome:
    if (n := _dockerd(f)) is not None:
        return n
    opts = f.daemon.args("storage-opt") + [str(o) for o in f.daemon.config.get("storage-opts")
                                           or []]
    changed = [o for o in opts if "dm.basesize" in o]
    if changed:
        return outcome(Result.WARN, "base device size changed: " + ", ".join(changed))
    return outcome(Result.PASS, "the base device size is the default")


@check("2.12", "Ensure that authorization for Docker client commands is enabled",
       concerns="daemon", remediation="Install an authorization plugin and name it in "
       "\"authorization-plugins\" so that API calls are authorized per user and action.")
def c_2_12(f: PostureFacts) -> Outcome:
    if (n := _engine(f)) is not None:
        return n
    plugins = ((f.info or {}).get("Plugins") or {}).get("Authorization") or []
    if plugins:
        return outcome(Result.PASS, "authorization plugins: " + ", ".join(plugins))
    return outcome(Result.WARN, "no authorization plugin: every socket user may do anything")


@check("2.13", "Ensure centralized and remote logging is configured", concerns="daemon",
       remediation=JSON_FIX.format(setting='"log-driver" (syslog, journald, fluentd, gelf, ...) '
                                   'and its "log-opts"'))
def c_2_13(f: PostureFacts) -> Outcome:
    if (n := _engine(f)) is not None:
        return n
    driver = (f.info or {}).get("LoggingDriver") or "?"
    if driver in ("json-file", "local", "none"):
        return outcome(Result.WARN, f"the log driver is {driver}: logs stay on this host")
    return outcome(Result.PASS, f"the log driver is {driver}")


@check("2.14", "Ensure containers are restricted from acquiring new privileges",
       concerns="daemon", remediation=JSON_FIX.format(setting='"no-new-privileges": true'))
def c_2_14(f: PostureFacts) -> Outcome:
    if (n := _dockerd(f)) is not None:
        return n
    if _truthy(f.daemon.setting("no-new-privileges")):
        return outcome(Result.PASS, f"no-new-privileges is the default "
                                    f"({_where(f, 'no-new-privileges')})")
    return outcome(Result.WARN, "no-new-privileges is not the daemon's default: setuid "
                                "binaries in containers can raise privileges")


@check("2.15", "Ensure live restore is enabled", concerns="daemon",
       remediation=JSON_FIX.format(setting='"live-restore": true'))
def c_2_15(f: PostureFacts) -> Outcome:
    if (n := _engine(f)) is not None:
        return n
    if (f.info or {}).get("LiveRestoreEnabled"):
        return outcome(Result.PASS, "live restore is on: containers survive a daemon restart")
    return outcome(Result.WARN, "live restore is off")


@check("2.16", "Ensure Userland Proxy is Disabled", concerns="daemon",
       remediation=JSON_FIX.format(setting='"userland-proxy": false'))
def c_2_16(f: PostureFacts) -> Outcome:
    if (n := _dockerd(f)) is not None:
        return n
    if _falsy(f.daemon.setting("userland-proxy")):
        return outcome(Result.PASS, "the userland proxy is off")
    return outcome(Result.WARN, "the userland proxy is on (the default): published ports are "
                                "also served by docker-proxy processes")


@check("2.17", "Ensure that a daemon-wide custom seccomp profile is applied if appropriate",
       concerns="daemon", automated=False, remediation=JSON_FIX.format(
           setting='"seccomp-profile": "/path/to/profile.json" (when the default is too broad)'))
def c_2_17(f: PostureFacts) -> Outcome:
    if (n := _engine(f)) is not None:
        return n
    seccomp = [o for o in f.security_options() if "name=seccomp" in o]
    if not seccomp:
        return outcome(Result.WARN, "seccomp is not active in the engine")
    if "profile=default" in seccomp[0]:
        return outcome(Result.PASS, "the engine applies its default seccomp profile to every "
                                    "container that does not opt out")
    return outcome(Result.INFO, f"engine seccomp: {seccomp[0]} (a custom daemon-wide profile: "
                                "review it)")


@check("2.18", "Ensure that experimental features are not implemented in production",
       concerns="daemon", remediation="Remove \"experimental\": true / --experimental.")
def c_2_18(f: PostureFacts) -> Outcome:
    if (n := _engine(f)) is not None:
        return n
    if (f.info or {}).get("ExperimentalBuild"):
        return outcome(Result.WARN, "experimental features are on")
    return outcome(Result.PASS, "experimental features are off")
