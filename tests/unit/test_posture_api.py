"""GET /v1/posture and /v1/inventory/* through the real API server on a fake port, and
`roxctl posture` / `roxctl inventory`: the shapes, the formats, and bad arguments as 4xx /
exit 1 with the reason."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from roxd.api.client import ApiClient, ApiFailure
from roxd.api.server import ApiServer
from roxd.api.settings import ApiSettings
from roxd.inventory import ImageRecord, container_record
from roxd.posture import run_checks
from roxd.runtime.base import RuntimeUnavailableError
from tests.unit.test_api_unit import FakePort, roxctl
from tests.unit.test_posture_checks import container, facts, recorded

pytestmark = pytest.mark.unit


class PosturePort(FakePort):
    def __init__(self) -> None:
        super().__init__()
        self.scans = 0
        self.engine_down = False

    def posture(self, refresh: bool = False) -> Any:
        if refresh or self.scans == 0:
            self.scans += 1
        return run_checks(facts(container("plain"), container("socket"),
                                container("published")))

    def inventory_containers(self, all_states: bool = False) -> list[Any]:
        if self.engine_down:
            raise RuntimeUnavailableError("docker not reachable at unix:///x: refused")
        names = ["plain", "socket", "published"] + (["privileged"] if all_states else [])
        return [container_record(recorded(n)["inspect"], "2026-11-29T15:39:33Z")
                for n in names]

    def inventory_images(self) -> list[Any]:
        return [ImageRecord("sha256:" + "e" * 64, ["roxd-test/busybox:latest"], [],
                            "2026-11-29T15:39:33Z", 1984172, 3, "", [], ["/bin/sh"])]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Any:
    daemon = PosturePort()
    path = tmp_path_factory.mktemp("api") / "roxd.sock"
    server = ApiServer(daemon, str(path), ApiSettings())
    server.start()
    yield daemon, str(path)
    server.close()


def test_posture_json_and_refresh(api: Any) -> None:
    daemon, path = api
    with ApiClient(path) as c:
        report = c.get("/v1/posture")
        assert len(report["checks"]) >= 60 and report["counts"]["WARN"] > 0
        by_id = {x["id"]: x for x in report["checks"]}
        assert by_id["5.32"]["result"] == "WARN" and by_id["5.32"]["items"] == [
            "posture-rec-socket"]
        assert by_id["5.14"]["items"] == ["posture-rec-published"]
        assert by_id["5.5"]["result"] == "PASS"
        assert by_id["5.32"]["remediation"] and by_id["5.32"]["concerns"] == "containers"
        before = daemon.scans
        c.get("/v1/posture", {"refresh": True})
        assert daemon.scans == before + 1
        bench = c.get("/v1/posture", {"format": "docker-bench"})
        assert bench["dockerbenchsecurity"] == "1.6.0" and [t["id"] for t in bench["tests"]] \
            == ["1", "2", "3", "5"]


@pytest.mark.parametrize(("params", "status", "reason"), [
    ({"format": "xml"}, 400, "query.format"),
    ({"refresh": "maybe"}, 400, "query.refresh must be true or false"),
    ({"scan": "1"}, 400, "unknown query parameter 'scan'"),
])
def test_bad_posture_arguments(api: Any, params: dict[str, str], status: int,
                               reason: str) -> None:
    with ApiClient(api[1]) as c, pytest.raises(ApiFailure) as exc:
        c.get("/v1/posture", params)
    assert exc.value.status == status and reason in exc.value.reason


def test_posture_disabled_is_503_with_the_reason(tmp_path: Path) -> None:
    daemon = FakePort()  # its posture() answers None: posture.enabled = false
    server = ApiServer(daemon, str(tmp_path / "s.sock"), ApiSettings())
    server.start()
    try:
        with ApiClient(str(tmp_path / "s.sock")) as c, pytest.raises(ApiFailure) as exc:
            c.get("/v1/posture")
        assert exc.value.status == 503 and "posture.enabled = false" in exc.value.reason
    finally:
        server.close()


def test_inventory(api: Any) -> None:
    daemon, path = api
    with ApiClient(path) as c:
        items = c.get("/v1/inventory/containers")
        assert [i["name"] for i in items] == ["posture-rec-plain", "posture-rec-socket",
                                              "posture-rec-published"]
        sock = items[1]
        assert sock["mounts"][0]["writable_host_path"] is True
        assert sock["mounts"][0]["source"] == "/var/run/docker.sock"
        assert len(c.get("/v1/inventory/containers", {"all": True})) == 4
        images = c.get("/v1/inventory/images")
        assert images[0]["tags"] == ["roxd-test/busybox:latest"]
        with pytest.raises(ApiFailure) as exc:
            c.get("/v1/inventory/containers", {"all": "yes please"})
        assert exc.value.status == 400
        daemon.engine_down = True
        try:
            with pytest.raises(ApiFailure) as exc:
                c.get("/v1/inventory/containers")
            assert exc.value.status == 503 and "not reachable" in exc.value.reason
        finally:
            daemon.engine_down = False


def test_roxctl_posture_and_inventory(api: Any) -> None:
    path = api[1]
    table = roxctl("--socket", path, "posture", "-v")
    assert table.returncode == 0, table.stderr
    assert "5.32" in table.stdout and "WARN" in table.stdout and "score" in table.stdout
    assert "5.32 remediation:" in table.stdout
    as_json = roxctl("--socket", path, "posture", "--json")
    assert as_json.returncode == 0 and len(json.loads(as_json.stdout)["checks"]) >= 60
    bench = roxctl("--socket", path, "posture", "--format", "docker-bench")
    assert bench.returncode == 0 and "dockerbenchsecurity" in json.loads(bench.stdout)
    bad = roxctl("--socket", path, "posture", "--format", "xml")
    assert bad.returncode == 2 and "query.format" in bad.stderr and "HTTP 400" in bad.stderr
    inv = roxctl("--socket", path, "inventory")
    assert inv.returncode == 0 and "posture-rec-socket" in inv.stdout
    assert "/var/run/docker.sock" in inv.stdout  # the writable host mount, flagged
    images = roxctl("--socket", path, "inventory", "images", "--json")
    assert images.returncode == 0 and json.loads(images.stdout)[0]["containers"] == 3
    assert roxctl("--socket", path, "inventory", "volumes").returncode == 2  # usage
