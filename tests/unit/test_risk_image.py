"""Image facts (shells, package managers, network tools, age) read from overlay layers made
here, their factors, and the per-workload score: every factor shown sums to the score."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from roxd.incidents.risk import ContainerRisk
from roxd.incidents.risk_image import (
    AGE_CAP,
    NETWORK_TOOLS_CAP,
    ImageFacts,
    ImageScanner,
    image_reasons,
    parse_created,
    scan_roots,
)
from roxd.incidents.risk_workload import (
    POSTURE_CAP,
    SPREAD_CAP,
    RiskView,
    posture_reasons,
    workload_risk,
)
from roxd.model import Container

pytestmark = pytest.mark.unit


def touch(root: Path, rel: str, link: str | None = None) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    if link is not None:
        p.symlink_to(link)
    else:
        p.write_text("x")


def test_layers_top_first_whiteouts_and_no_symlink_is_followed(tmp_path: Path) -> None:
    top, low = tmp_path / "top", tmp_path / "low"
    touch(low, "usr/bin/curl")
    touch(low, "usr/bin/bash")
    touch(low, "usr/bin/apt")
    touch(low, "bin/sh", link="/bin/busybox")  # a name counts; its target is never read
    touch(top, "usr/bin/wget")
    (top / "usr/bin").mkdir(parents=True, exist_ok=True)
    os.mknod(top / "usr/bin/curl", stat.S_IFCHR | 0o600, 0)  # overlay whiteout: removed
    # an absolute symlinked directory would lead onto the host's /usr/sbin: not followed
    (top / "usr/local").mkdir(parents=True)
    (top / "usr/local/sbin").symlink_to("/usr/sbin")
    found, truncated = scan_roots([str(top), str(low)])
    assert set(found) == {"wget", "bash", "apt", "sh"} and not truncated


def test_scanner_caches_per_image_and_reads_the_lower_dirs(tmp_path: Path) -> None:
    touch(tmp_path, "bin/sh")
    touch(tmp_path, "usr/bin/nc")
    inspect = {"Image": "sha256:" + "a" * 64,
               "GraphDriver": {"Data": {"LowerDir": str(tmp_path)}}}
    scanner = ImageScanner(lambda _i: {"Created": "2024-01-02T03:04:05.123456789Z"})
    facts = scanner.of(inspect)
    assert facts is not None and facts.shells == ("sh",) and facts.network_tools == ("nc",)
    assert facts.source == "image layers" and facts.created == parse_created(
        "2024-01-02T03:04:05.123456Z")
    assert scanner.of(inspect) is facts and scanner.scans == 1  # cached per image id
    assert parse_created("0001-01-01T00:00:00Z") is None  # docker import without a date
    assert parse_created("garbage") is None


def test_image_factors_are_capped_and_documented() -> None:
    now = time.time()
    old = ImageFacts("sha256:x", created=now - 2000 * 86400, shells=("bash", "sh"),
                     package_managers=("apt", "dpkg"),
                     network_tools=("curl", "nc", "socat", "wget"), source="image layers")
    reasons = {r["factor"]: r for r in image_reasons(old, now)}
    assert reasons["image_shell"]["points"] == 3
    assert reasons["image_package_manager"]["points"] == 3
    assert reasons["image_network_tools"]["points"] == NETWORK_TOOLS_CAP  # 8 before the cap
    assert reasons["image_age"]["points"] == AGE_CAP
    assert all(r["points"] <= r["cap"] for r in reasons.values())
    young = ImageFacts("sha256:y", created=now - 10 * 86400)
    assert image_reasons(young, now) == []  # nothing in it, built days ago
    assert image_reasons(None, now) == []


def test_risk_view_adds_image_factors_and_workloads_sum_to_their_score(tmp_path: Path
                                                                      ) -> None:
    shelly, bare = tmp_path / "shelly", tmp_path / "bare"
    for name in ("bin/sh", "bin/nc", "bin/wget"):
        touch(shelly, name)
    touch(bare, "app")
    docs: dict[str, dict[str, Any]] = {
        "a" * 64: {"Image": "sha256:1", "GraphDriver": {"Data": {"LowerDir": str(shelly)}},
                   "Config": {"User": "1000"}},
        "b" * 64: {"Image": "sha256:2", "GraphDriver": {"Data": {"LowerDir": str(bare)}},
                   "Config": {"User": "1000"}},
    }
    containers = [Container("a" * 64, "docker", "web-1", "shop/web"),
                  Container("b" * 64, "docker", "web-2", "shop/web")]
    view = RiskView(ContainerRisk(None, docs.get), ImageScanner(), docs.get,
                    lambda: containers, lambda c: "image:shop/web/web")
    a, b = view.of("a" * 64), view.of("b" * 64)
    assert a["score"] == sum(r["points"] for r in a["reasons"]) == 3 + 4
    assert b["score"] == 0 and b["image"]["shells"] == []
    assert a["score"] > b["score"]
    w = view.workload("image:shop/web/web")
    assert w is not None and w["riskiest"] == "a" * 64
    assert w["score"] == a["score"] == sum(r["points"] for r in w["reasons"])
    assert view.workload("image:nothing/here") is None
    assert [x["workload"] for x in view.workloads()] == ["image:shop/web/web"]


def test_workload_spread_counts_other_attacked_containers_capped() -> None:
    def risk(cid: str, alerts: int, config: int) -> dict[str, Any]:
        reasons = []
        if alerts:
            reasons.append({"factor": "alerts", "points": alerts, "cap": 25, "detail": ""})
        if config:
            reasons.append({"factor": "root_user", "points": config, "cap": 5, "detail": ""})
        return {"container": cid, "score": alerts + config, "reasons": reasons}

    w = workload_risk("k", [risk("c1", 9, 5), risk("c2", 4, 5), risk("c3", 0, 5)])
    assert w["riskiest"] == "c1" and w["score"] == 14 + 3  # one other attacked container
    assert w["score"] == sum(r["points"] for r in w["reasons"])
    many = workload_risk("k", [risk(f"c{i}", 4, 0) for i in range(10)])
    spread = next(r for r in many["reasons"] if r["factor"] == "spread")
    assert spread["points"] == SPREAD_CAP and many["score"] == 4 + SPREAD_CAP
    same = workload_risk("k", [risk("c2", 0, 5), risk("c1", 0, 5)])
    assert same["riskiest"] == "c1" and same["score"] == 5  # replicas add nothing; ties: id


def test_posture_regressions_count_in_the_container_score(tmp_path: Path) -> None:
    docs = {"c" * 64: {"Image": "sha256:3", "GraphDriver": {"Data": {"LowerDir": str(tmp_path)}},
                       "Config": {"User": "1000"}}}
    view = RiskView(ContainerRisk(None, docs.get), ImageScanner(), docs.get, lambda: [],
                    lambda c: "k", posture_of=lambda cid: ["5.32", "5.5", "5.7"])
    r = view.of("c" * 64)
    (p,) = [x for x in r["reasons"] if x["factor"] == "posture_regressions"]
    assert p["points"] == POSTURE_CAP and "5.32" in p["detail"]  # 12 before the cap
    assert r["score"] == sum(x["points"] for x in r["reasons"]) == POSTURE_CAP
    assert posture_reasons([]) == []
