"""Containers as the API shows them, and CONTAINER arguments resolved server-side: a name, a
full id or a unique id prefix. Ambiguity is a 409 that lists the candidates."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from roxd.api.port import DaemonPort
from roxd.errors import ApiError
from roxd.model import Container

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ContainerInfo:
    id: str
    name: str | None
    image: str | None
    runtime: str
    labels: dict[str, str] = field(default_factory=dict)
    cgroup_ids: tuple[int, ...] = ()
    running: bool = True
    pod: str | None = None
    namespace: str | None = None
    pod_uid: str | None = None
    pod_labels: dict[str, str] = field(default_factory=dict)
    runtime_namespace: str | None = None


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
                                        tuple(sorted(cgroups)), pod=c.pod,
                                        namespace=c.namespace, pod_uid=c.pod_uid,
                                        pod_labels=dict(c.pod_labels),
                                        runtime_namespace=c.runtime_namespace)
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

    def describe_all(self, containers: list[ContainerInfo]) -> list[dict[str, Any]]:
        """Many containers with one read of the baselines and the event counts."""
        baselines, events = self._baselines(), self.daemon.container_events()
        return [self.describe(c, baselines, events) for c in containers]

    def _baselines(self) -> Callable[[ContainerInfo], dict[str, Any] | None]:
        """container -> its workload's baseline (workload, state, mode), or None: baselines
        off, or the workload has not executed anything since roxd started learning it."""
        engine = self.daemon.baselines()
        if engine is None:
            return lambda _c: None
        try:
            rows = {b["workload"]: b for b in self.daemon.call_in_loop(engine.list, timeout=5.0)}
        except Exception as exc:  # a stopping or stalled loop: the list still answers
            log.warning("container list without baselines: %s", exc or type(exc).__name__)
            return lambda _c: None

        def of(c: ContainerInfo) -> dict[str, Any] | None:
            key = engine.workload_of(Container(id=c.id, runtime=c.runtime, name=c.name,
                                               image=c.image, labels=c.labels))
            b = rows.get(key)
            return None if b is None else {"workload": key, "state": b["state"],
                                           "mode": b["mode"], "anomalies": b["anomalies"]}
        return of

    def describe(self, c: ContainerInfo,
                 baselines: Callable[[ContainerInfo], dict[str, Any] | None] | None = None,
                 events: Mapping[str, int] | None = None) -> dict[str, Any]:
        baselines = baselines or self._baselines()
        events = self.daemon.container_events() if events is None else events
        quarantine = self.daemon.quarantine()
        record = None
        if quarantine is not None:
            record = next((r for r in quarantine.records() if r.container_id == c.id), None)
        monitor = self.daemon.facts.monitor
        seccomp = self.daemon.seccomp()
        engine = self.daemon.baselines()
        return {
            "id": c.id, "name": c.name, "image": c.image, "runtime": c.runtime,
            "labels": c.labels, "cgroup_ids": list(c.cgroup_ids), "running": c.running,
            "pod": c.pod, "namespace": c.namespace, "pod_uid": c.pod_uid,
            "pod_labels": c.pod_labels, "runtime_namespace": c.runtime_namespace,
            "mode": "quarantined" if record else ("monitor" if monitor else "enforce"),
            "alerts": self.alert_counts().get(c.id, 0),
            "risk": self.daemon.risk(c.id)["score"],
            "quarantine": None if record is None else {
                "since": record.since, "reason": record.reason, "allow": list(record.allow),
                "shared_with": list(record.shared_with)},
            "seccomp": None if seccomp is None else {"available": True},
            # the key of its process baseline (workload_of reads only the settings: no loop)
            "workload": None if engine is None else engine.workload_of(
                Container(c.id, c.runtime, c.name, c.image, labels=c.labels)),
            "events": events.get(c.id, 0),
            "baseline": baselines(c),
        }
