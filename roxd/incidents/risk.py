"""A risk score per container, with its reasons (docs/incidents.md, "Risk").

    score = sum of the factors' points, each factor capped; 0..117 (the caps' sum) for
    the factors here; the image facts and posture regressions added around it (risk_image.py)
    bring the whole to 0..139

| factor | points | cap |
|---|---|---|
| alerts | per alert of the container in its incidents (severity points below) | 25 |
| phases | 4 per phase reached by its worst open incident | 20 |
| privileged | 15 when the container runs privileged | 15 |
| docker_socket | 15 when the runtime's socket is mounted into it | 15 |
| host_mount_rw | 10 when a host path is bind-mounted writable | 10 |
| host_network / host_pid | 5 each when it shares the host's network / pid namespace | 5 |
| root_user | 5 when its configured user is root (none given, 0 or root) | 5 |
| added_capabilities | 5 when capabilities are added beyond the runtime's default set | 5 |
| no_seccomp / no_apparmor | 3 / 2 when its seccomp / AppArmor profile is turned off | 3 / 2 |
| published_ports | 3 when a port is published on the host (reachable from outside) | 3 |
| listening_sockets | 2 per (protocol, port) observed listening beyond loopback | 4 |

Privileged counts once: it already means every capability and no profiles, so the three
factors above are not added to it.

Severity points per alert: critical or worse 16, error 9, warning 4, notice 1, info/debug 0.
Additive, so every reason shown sums to the score; the reasons are ordered by points, then by
name, so the same facts always print the same way. Configuration facts come from the runtime's
inspect (`docker inspect`), where the adapter offers it; without it those factors are absent
and `config` says why.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

SEVERITY_POINTS = {"emergency": 16, "alert": 16, "critical": 16, "error": 9, "warning": 4,
                   "notice": 1, "info": 0, "debug": 0}
ALERTS_CAP = 25
PHASE_POINTS, PHASES_CAP = 4, 20
CONFIG_POINTS = {"privileged": 15, "docker_socket": 15, "host_mount_rw": 10, "host_network": 5,
                 "host_pid": 5, "root_user": 5, "added_capabilities": 5, "no_seccomp": 3,
                 "no_apparmor": 2, "published_ports": 3}
RUNTIME_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock", "/run/containerd/containerd.sock",
                   "/var/run/containerd/containerd.sock", "/run/crio/crio.sock",
                   "/run/podman/podman.sock")
CONFIG_DETAILS = {
    "privileged": "runs privileged: every capability, every device, no seccomp/AppArmor",
    "docker_socket": "the container runtime's socket is mounted: root on the host",
    "host_mount_rw": "a host path is bind-mounted writable",
    "host_network": "shares the host's network namespace",
    "host_pid": "shares the host's pid namespace: sees and signals host processes",
    "root_user": "runs as root (no user configured, or 0/root)",
    "added_capabilities": "capabilities added beyond the runtime's default set",
    "no_seccomp": "runs without a seccomp profile (seccomp=unconfined)",
    "no_apparmor": "runs without an AppArmor profile (apparmor=unconfined)",
    "published_ports": "publishes a port on the host: reachable from outside",
}


@dataclass(frozen=True)
class ConfigFacts:
    privileged: bool = False
    docker_socket: bool = False
    host_mount_rw: bool = False
    host_network: bool = False
    host_pid: bool = False
    root_user: bool = False
    added_capabilities: bool = False
    no_seccomp: bool = False
    no_apparmor: bool = False
    published_ports: bool = False

    def present(self) -> list[str]:
        return [name for name in CONFIG_POINTS if getattr(self, name)]


def facts_from_inspect(attrs: Mapping[str, Any]) -> ConfigFacts:
    """The facts from `docker inspect` output (missing keys count as not set)."""
    host = attrs.get("HostConfig") or {}
    config = attrs.get("Config") or {}
    mounts = [m for m in attrs.get("Mounts") or [] if isinstance(m, Mapping)]
    sources = [str(m.get("Source", "")) for m in mounts]
    sources += [str(b).split(":", 1)[0] for b in host.get("Binds") or []]
    writable = [str(m.get("Source", "")) for m in mounts
                if m.get("Type") == "bind" and m.get("RW", True)]
    user = str(config.get("User") or "").split(":", 1)[0]
    privileged = bool(host.get("Privileged"))
    options = [str(o).replace(":", "=", 1) for o in host.get("SecurityOpt") or []]
    ports = dict(host.get("PortBindings") or {})
    ports.update((attrs.get("NetworkSettings") or {}).get("Ports") or {})
    published = any(any(b.get("HostPort") for b in bindings if isinstance(b, Mapping))
                    for bindings in ports.values() if bindings)
    return ConfigFacts(
        privileged=privileged,
        # privileged already means all of these: counted once
        added_capabilities=not privileged and bool(host.get("CapAdd")),
        no_seccomp=not privileged and "seccomp=unconfined" in options,
        no_apparmor=not privileged and "apparmor=unconfined" in options,
        published_ports=published,
        docker_socket=any(s in RUNTIME_SOCKETS for s in sources),
        host_mount_rw=any(s not in RUNTIME_SOCKETS for s in writable),
        host_network=host.get("NetworkMode") == "host",
        host_pid=host.get("PidMode") == "host",
        root_user=user in ("", "0", "root"))


def risk_of(container_id: str, incidents: Iterable[Mapping[str, Any]],
            facts: ConfigFacts | None, facts_note: str = "") -> dict[str, Any]:
    reasons: list[dict[str, Any]] = []
    by_severity: dict[str, int] = {}
    worst_open = 0
    for inc in incidents:
        for e in inc.get("timeline", ()):
            if e.get("container") == container_id:
                by_severity[e["severity"]] = by_severity.get(e["severity"], 0) + 1
        if inc.get("state") == "open":
            worst_open = max(worst_open, len(inc.get("phases", ())))
    raw = sum(SEVERITY_POINTS.get(s, 0) * n for s, n in by_severity.items())
    if raw:
        detail = ", ".join(f"{n} {s}" for s, n in sorted(
            by_severity.items(), key=lambda kv: -SEVERITY_POINTS.get(kv[0], 0)))
        reasons.append({"factor": "alerts", "points": min(ALERTS_CAP, raw), "cap": ALERTS_CAP,
                        "detail": f"{detail} ({raw} before the cap)"})
    if worst_open:
        reasons.append({"factor": "phases", "points": min(PHASES_CAP, PHASE_POINTS * worst_open),
                        "cap": PHASES_CAP,
                        "detail": f"an open incident reached {worst_open} of 5 phases"})
    for name in facts.present() if facts is not None else []:
        reasons.append({"factor": name, "points": CONFIG_POINTS[name],
                        "cap": CONFIG_POINTS[name], "detail": CONFIG_DETAILS[name]})
    reasons.sort(key=lambda r: (-r["points"], r["factor"]))
    return {"container": container_id, "score": sum(r["points"] for r in reasons),
            "reasons": reasons,
            "config": "known" if facts is not None else (facts_note or "unknown")}


# exposure: listening sockets observed (roxd/netmap/listeners.py), loopback ones left out
LISTENING_POINTS, LISTENING_CAP = 2, 4
LOOPBACK_ADDRESSES = ("127.", "::1")


def listening_reason(listening: Iterable[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The `listening_sockets` factor: 2 points per distinct (protocol, port) listening on a
    non-loopback address, capped at 4; None when there is none."""
    ports = sorted({(str(s["protocol"]), int(s["port"])) for s in listening
                    if not str(s["address"]).startswith(LOOPBACK_ADDRESSES)})
    if not ports:
        return None
    raw = LISTENING_POINTS * len(ports)
    shown = ", ".join(f"{p}/{n}" for p, n in ports[:8]) + (" ..." if len(ports) > 8 else "")
    return {"factor": "listening_sockets", "points": min(LISTENING_CAP, raw),
            "cap": LISTENING_CAP,
            "detail": f"listening beyond loopback (observed): {shown} ({raw} before the cap)"}


def with_listening(risk: dict[str, Any], listening: Iterable[Mapping[str, Any]]
                   ) -> dict[str, Any]:
    """`risk` (risk_of's answer) with the listening_sockets factor added, reasons re-sorted."""
    reason = listening_reason(listening)
    if reason is None:
        return risk
    reasons = sorted([*risk["reasons"], reason], key=lambda r: (-r["points"], r["factor"]))
    return {**risk, "score": sum(r["points"] for r in reasons), "reasons": reasons}


class ContainerRisk:
    """Risk per container for the API: incidents from the tracker, configuration facts from
    the runtime's inspect (cached `ttl_s` per container; None: not offered by this runtime),
    listening sockets observed (`listening_of`, None: not observed)."""

    def __init__(self, incidents: Any, inspect_raw: Callable[[str], Any] | None,
                 ttl_s: float = 60.0, clock: Callable[[], float] = time.monotonic,
                 listening_of: Callable[[str], list[dict[str, Any]]] | None = None) -> None:
        self._listening_of = listening_of
        self._incidents = incidents
        self._inspect = inspect_raw
        self._ttl = ttl_s
        self._clock = clock
        self._facts: dict[str, tuple[float, ConfigFacts | None, str]] = {}
        self._lock = threading.Lock()

    def facts(self, container_id: str) -> tuple[ConfigFacts | None, str]:
        if self._inspect is None:
            return None, "the container runtime adapter offers no inspect"
        now = self._clock()
        with self._lock:
            cached = self._facts.get(container_id)
        if cached is not None and now - cached[0] < self._ttl:
            return cached[1], cached[2]
        try:
            attrs = self._inspect(container_id)
            facts, note = (facts_from_inspect(attrs), "") if attrs else (None, "not known to "
                                                                         "the runtime")
        except Exception as exc:  # the engine down: say so, try again next time
            return None, f"inspect failed: {exc}"
        with self._lock:
            self._facts[container_id] = (now, facts, note)
            if len(self._facts) > 4096:
                self._facts.pop(next(iter(self._facts)))
        return facts, note

    def of(self, container_id: str) -> dict[str, Any]:
        from roxd.incidents.tracker import IncidentQuery

        incidents = (self._incidents.query(IncidentQuery(container=container_id, limit=1000))
                     if self._incidents is not None else [])
        facts, note = self.facts(container_id)
        risk = risk_of(container_id, incidents, facts, note)
        if self._listening_of is not None:
            risk = with_listening(risk, self._listening_of(container_id))
        return risk
