"""Risk per container with its image facts, and per workload (docs/incidents.md, "Risk").

    view = RiskView(container_risk, scanner, inspect_raw, containers, workload_of)
    view.of(container_id)         # ContainerRisk's score + the image factors (risk_image.py)
    view.workload(key)            # the workload's score: its riskiest container + spread
    view.workloads()              # every workload, most at risk first

A workload is what baselines are keyed by (roxd/baselines/workload.py: an operator's label,
the Kubernetes owner, the Compose service, or image and name without the replica suffix):
replicas of one service share it.

    workload score = max(container scores) + spread
    spread         = 3 per *other* container of the workload with alert points (its alerts
                     or phases factor above 0), capped at 9

The riskiest container's reasons are the workload's reasons, each naming that container, and
spread is one more reason, so the reasons shown always sum to the score. Replicas that only
share the riskiest one's configuration add nothing: ten identical replicas are not ten times
the risk, but an attack that reached three of them is more than one that reached one.
Ties on the score go to the container with the lower id, so the same facts always print the
same way.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from roxd.incidents.risk_image import ImageFacts, ImageScanner, image_reasons
from roxd.model import Container

SPREAD_POINTS, SPREAD_CAP = 3, 9
IMAGE_TTL_S = 60.0
POSTURE_POINTS, POSTURE_CAP = 4, 8  # as a warning alert each, like the alerts factor
ALERT_FACTORS = ("alerts", "phases")


def posture_reasons(cis_ids: list[str]) -> list[dict[str, Any]]:
    """The posture_regressions factor: checks that went from PASS to WARN naming the
    container (roxd.posture-regression alerts, which stay out of incidents) and still do."""
    if not cis_ids:
        return []
    raw = POSTURE_POINTS * len(cis_ids)
    return [{"factor": "posture_regressions", "points": min(POSTURE_CAP, raw),
             "cap": POSTURE_CAP,
             "detail": f"CIS {', '.join(cis_ids)} went from PASS to WARN with this container "
                       f"({raw} before the cap)"}]


def with_image(risk: Mapping[str, Any], reasons: Iterable[Mapping[str, Any]],
               image: Mapping[str, Any] | None) -> dict[str, Any]:
    """`risk` (ContainerRisk's answer) with the image factors added and the reasons re-sorted
    (by points, then name: stable)."""
    merged = sorted([*risk["reasons"], *reasons], key=lambda r: (-r["points"], r["factor"]))
    return {**risk, "score": sum(r["points"] for r in merged), "reasons": merged,
            "image": image}


def workload_risk(key: str, risks: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The workload's score from its containers' risks (each as RiskView.of answers)."""
    ranked = sorted(risks, key=lambda r: (-r["score"], r["container"]))
    if not ranked:
        return {"workload": key, "score": 0, "reasons": [], "containers": [],
                "riskiest": None}
    top = ranked[0]
    reasons = [{**r, "container": top["container"]} for r in top["reasons"]]
    attacked = [r["container"] for r in ranked[1:]
                if any(x["factor"] in ALERT_FACTORS and x["points"] > 0 for x in r["reasons"])]
    if attacked:
        raw = SPREAD_POINTS * len(attacked)
        reasons.append({"factor": "spread", "points": min(SPREAD_CAP, raw), "cap": SPREAD_CAP,
                        "detail": f"{len(attacked)} other container(s) of the workload have "
                                  f"alerts ({raw} before the cap)",
                        "containers": attacked})
    return {"workload": key, "score": sum(r["points"] for r in reasons), "reasons": reasons,
            "riskiest": top["container"],
            "containers": [{"container": r["container"], "score": r["score"]}
                           for r in ranked]}


class RiskView:
    """The API's risk: ContainerRisk (alerts, incidents, configuration, and what other parts
    add to it) plus the image factors, per container and per workload."""

    def __init__(self, container_risk: Any, scanner: ImageScanner | None,
                 inspect_raw: Callable[[str], Any] | None,
                 containers: Callable[[], Iterable[Container]],
                 workload_of: Callable[[Container], str],
                 clock: Callable[[], float] = time.time,
                 posture_of: Callable[[str], list[str]] | None = None) -> None:
        self._posture_of = posture_of
        self._images: dict[str, tuple[float, ImageFacts | None]] = {}
        self._lock = threading.Lock()
        self._risk = container_risk
        self._scanner = scanner
        self._inspect = inspect_raw
        self._containers = containers
        self._workload_of = workload_of
        self._clock = clock

    def of(self, container_id: str) -> dict[str, Any]:
        risk = self._risk.of(container_id)
        extra = posture_reasons(self._posture_of(container_id) if self._posture_of else [])
        if self._scanner is None or self._inspect is None:
            return with_image(risk, extra, None)
        facts = self._image_of(container_id)
        return with_image(risk, [*extra, *image_reasons(facts, self._clock())],
                          facts.to_dict() if facts is not None else None)

    def _image_of(self, container_id: str) -> ImageFacts | None:
        """The container's image facts, its inspect cached IMAGE_TTL_S per container (the
        container list asks for every container's risk on every call)."""
        now = time.monotonic()
        cached = self._images.get(container_id)
        if cached is not None and now - cached[0] < IMAGE_TTL_S:
            return cached[1]
        try:
            attrs = self._inspect(container_id) if self._inspect is not None else None
        except Exception:  # the engine down: the configuration note already says so
            return None
        facts = self._scanner.of(attrs) if attrs and self._scanner is not None else None
        with self._lock:  # the API answers on several threads
            if len(self._images) >= 4096:
                self._images.pop(next(iter(self._images)))
            self._images[container_id] = (now, facts)
        return facts

    def _by_workload(self) -> dict[str, list[Container]]:
        out: dict[str, list[Container]] = {}
        for c in self._containers():
            out.setdefault(self._workload_of(c), []).append(c)
        return out

    def workload(self, key: str) -> dict[str, Any] | None:
        """None: no running container has this workload key."""
        members = self._by_workload().get(key)
        if not members:
            return None
        return workload_risk(key, [self.of(c.id) for c in members])

    def workloads(self) -> list[dict[str, Any]]:
        out = [workload_risk(k, [self.of(c.id) for c in cs])
               for k, cs in self._by_workload().items()]
        out.sort(key=lambda w: (-w["score"], w["workload"]))
        return out


def make_risk_view(container_risk: Any, runtime: Any,
                   containers: Callable[[], Iterable[Container]],
                   key_label: str = "",
                   posture_of: Callable[[str], list[str]] | None = None) -> RiskView:
    """The daemon's RiskView: image facts where the runtime inspects images, workload keys as
    the baselines make them (`[baselines] key_label`)."""
    from roxd.baselines.workload import workload_key

    inspect_raw = getattr(runtime, "inspect_raw", None)
    scanner = ImageScanner(getattr(runtime, "inspect_image_raw", None)) \
        if inspect_raw is not None else None
    return RiskView(container_risk, scanner, inspect_raw, containers,
                    lambda c: workload_key(c, key_label), posture_of=posture_of)
