"""`roxctl health`, the Kubernetes exec probe (deploy/kubernetes/daemonset.yaml): exit 0 when
roxd says it is healthy, 1 with the problems when it does not, 3 when nothing answers."""

from __future__ import annotations

from pathlib import Path

from roxd.api.port import Programs
from roxd.api.server import ApiServer
from tests.unit.test_api_unit import FakePort, roxctl


class NothingAttached(FakePort):
    def programs(self) -> Programs:
        return Programs((), 0.0)


def _serve(port: FakePort, path: Path) -> ApiServer:
    server = ApiServer(port, str(path))
    server.start()
    return server


def test_health_exit_codes(tmp_path: Path) -> None:
    healthy = _serve(FakePort(), tmp_path / "ok.sock")
    sick = _serve(NothingAttached(), tmp_path / "sick.sock")
    try:
        ok = roxctl("--socket", str(tmp_path / "ok.sock"), "health")
        assert (ok.returncode, ok.stdout.strip()) == (0, "ok")
        bad = roxctl("--socket", str(tmp_path / "sick.sock"), "health")
        assert bad.returncode == 1
        assert bad.stdout.strip() == "unhealthy: no eBPF programs attached"
        as_json = roxctl("--socket", str(tmp_path / "sick.sock"), "--json", "health")
        assert as_json.returncode == 1 and '"ok": false' in as_json.stdout
    finally:
        healthy.close()
        sick.close()
    gone = roxctl("--socket", str(tmp_path / "none.sock"), "health")
    assert gone.returncode == 3
