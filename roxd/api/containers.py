"""Containers as the API shows them, and CONTAINER arguments resolved server-side: a name, a
full id or a unique id prefix. Ambiguity is a 409 that lists the candidates."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from roxd.api.port import DaemonPort
from roxd.errors import ApiError


@dataclass(frozen=True)
class ContainerInfo:
    id: str
    name: str | None
    image: str | None
    runtime: str
    labels: dict[str, str] = field(default_factory=dict)
    cgroup_ids: tuple[int, ...] = ()
    running: bool = True


class ApiConflict(ApiError):
    """409 with the candidates attached (the server adds them to the error body)."""

    def __init__(self, reason: str, candidates: list[dict[str, Any]]) -> None:
        super().__init__(409, reason)
        self.extra = {"candidates": candidates}


class ContainerDirectory:
    def __init__(self, daemon: DaemonPort, alert_counts: Callable[[], dict[str, int]]) -> None:
        self.daemon = daemon
        self.alert_counts = alert_counts

    def snapshot(self) -> list[ContainerInfo]:
        """Running containers (deduplicated over their cgroups), then quarantined ones that are
        not running now (they are still someone's to release)."""
        by_id: dict[str, ContainerInfo] = {}
        for cgroup_id, c in self.daemon.containers():
            known = by_id.get(c.id)
            cgroups = (*known.cgroup_ids, cgroup_id) if known else (cgroup_id,)
            by_id[c.id] = ContainerInfo(c.id, c.name, c.image, c.runtime, dict(c.labels),
                                        tuple(sorted(cgroups)))
        quarantine = self.daemon.quarantine()
        for record in quarantine.records() if quarantine is not None else []:
            if record.container_id not in by_id:
                by_id[record.container_id] = ContainerInfo(
                    record.container_id, record.name, None, "docker", running=False)
        return sorted(by_id.values(), key=lambda c: (c.name or "", c.id))

    def resolve(self, ref: str) -> ContainerInfo:
        containers = self.snapshot()
        for match in (lambda c: c.id == ref, lambda c: c.name == ref,
                      lambda c: c.name is not None and c.name.lstrip("/") == ref.lstrip("/")):
            exact = [c for c in containers if match(c)]
            if len(exact) == 1:
                return exact[0]
        prefixed = [c for c in containers if c.id.startswith(ref.lower())]
        if len(prefixed) == 1:
            return prefixed[0]
        if not prefixed:
            raise ApiError(404, f"no container {ref!r} (a name, a full id or a unique id "
                                f"prefix of a running or quarantined container)")
        raise ApiConflict(f"{ref!r} matches {len(prefixed)} containers: give more of the id",
                          [{"id": c.id, "name": c.name} for c in prefixed[:20]])

    def describe(self, c: ContainerInfo) -> dict[str, Any]:
        quarantine = self.daemon.quarantine()
        record = None
        if quarantine is not None:
            record = next((r for r in quarantine.records() if r.container_id == c.id), None)
        monitor = self.daemon.facts.monitor
        seccomp = self.daemon.seccomp()
        return {
            "id": c.id, "name": c.name, "image": c.image, "runtime": c.runtime,
            "labels": c.labels, "cgroup_ids": list(c.cgroup_ids), "running": c.running,
            "mode": "quarantined" if record else ("monitor" if monitor else "enforce"),
            "alerts": self.alert_counts().get(c.id, 0),
            "risk": self.daemon.risk(c.id)["score"],
            "quarantine": None if record is None else {
                "since": record.since, "reason": record.reason, "allow": list(record.allow),
                "shared_with": list(record.shared_with)},
            "seccomp": None if seccomp is None else {"available": True},
        }
