"""Risk from image facts with real containers and a real roxd: a busybox-like image (a shell,
nc and wget as applet links) ranks above a scratch-like image holding one static binary,
with the same (no) alerts and the same configuration; every factor shown sums to the score;
the per-workload score and `roxctl risk show W|C`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from roxd.api.client import ApiClient
from tests.conftest import SESSION, wait_until

docker = pytest.importorskip("docker")

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.filterwarnings("ignore::DeprecationWarning:docker.utils.utils"),
]

STATIC_IMAGE = f"roxd-test/static-{SESSION}:latest"


@pytest.fixture(scope="module")
def static_image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A scratch-like image: one static binary (compiled here) that waits, nothing else."""
    if os.geteuid() != 0:
        pytest.skip("kernel tests run as root")
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed (scripts/setup.sh installs it)")
    tmp = tmp_path_factory.mktemp("static")
    (tmp / "wait.c").write_text("#include <unistd.h>\nint main(void) { for (;;) pause(); }\n")
    subprocess.run(["gcc", "-static", "-O2", "-o", str(tmp / "server"), str(tmp / "wait.c")],
                   check=True)
    with tarfile.open(tmp / "root.tar", "w") as tar:
        tar.add(tmp / "server", arcname="server")
    subprocess.run(["docker", "import", "-c", 'CMD ["/server"]', str(tmp / "root.tar"),
                    STATIC_IMAGE], check=True, capture_output=True)
    yield STATIC_IMAGE
    subprocess.run(["docker", "rmi", "-f", STATIC_IMAGE], capture_output=True)


def test_an_image_with_a_shell_and_nc_ranks_above_a_static_binary(
        static_image: str, docker_engine: Any, run_container: Callable[..., Any],
        roxd_factory: Callable[..., Any]) -> None:
    busy = run_container("sleep 300", name=f"roxd-test-busy-{SESSION}")
    made = docker_engine.containers.create(static_image, name=f"roxd-test-static-{SESSION}",
                                           labels={"roxd-test": SESSION})
    try:
        made.start()
        rp = roxd_factory()
        sock = str(rp.stderr_path.parent / "roxd.sock")
        with ApiClient(sock, timeout=60) as api:
            def both() -> Any:
                ids = {c["id"] for c in api.get("/v1/containers")}
                return busy.id in ids and made.id in ids
            wait_until(both, 30, interval=0.3, message="both containers known to roxd")
            b = api.get(f"/v1/containers/{busy.id}/risk")
            s = api.get(f"/v1/containers/{made.id}/risk")
            print("busybox-like:", b["score"], [(x["factor"], x["points"]) for x in b["reasons"]],
                  "static:", s["score"], [(x["factor"], x["points"]) for x in s["reasons"]])
            for r in (b, s):  # every factor shown sums to the score
                assert r["score"] == sum(x["points"] for x in r["reasons"]), r
                assert all(x["points"] <= x["cap"] for x in r["reasons"])
            bf = {x["factor"]: x for x in b["reasons"]}
            sf = {x["factor"]: x for x in s["reasons"]}
            # the same alerts (none) and the same configuration: only the image differs
            assert "alerts" not in bf and "alerts" not in sf
            assert {k for k in bf if not k.startswith("image_")} == set(sf)
            assert bf["image_shell"]["points"] > 0 and "sh" in b["image"]["shells"]
            assert "nc" in b["image"]["network_tools"] and "image_network_tools" in bf
            assert not any(k.startswith("image_") for k in sf)
            assert s["image"]["shells"] == [] and s["image"]["network_tools"] == []
            assert s["image"]["source"] == "image layers"
            assert b["score"] > s["score"]
            # the RISK column is the container's score, most at risk first
            rows = {c["id"]: c["risk"] for c in api.get("/v1/containers")}
            assert rows[busy.id] == b["score"] and rows[made.id] == s["score"]
            # per workload: the busybox container is its workload's riskiest
            every = api.get("/v1/risk/workloads")
            mine = next(w for w in every if w["riskiest"] == busy.id)
            assert mine["score"] == sum(x["points"] for x in mine["reasons"]) >= b["score"]
            one = api.get("/v1/risk/workload", {"workload": mine["workload"]})
            assert one["score"] == mine["score"]
        env = {**os.environ, "ROXD_SOCKET": sock}

        def roxctl(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "roxd.ctl", *args],
                                  capture_output=True, text=True, env=env, timeout=60)

        shown = roxctl("risk", "show", busy.name)
        assert shown.returncode == 0 and "image_shell" in shown.stdout, shown.stderr
        wl = roxctl("risk", "show", mine["workload"])
        assert wl.returncode == 0 and "image_shell" in wl.stdout, wl.stderr
        missing = roxctl("risk", "show", "image:nothing/here")
        assert missing.returncode != 0 and "no running container" in missing.stderr
        listed = roxctl("risk", "list")
        assert listed.returncode == 0 and mine["workload"] in listed.stdout
    finally:
        made.remove(force=True)


def test_image_facts_do_not_leave_the_image(run_container: Callable[..., Any]) -> None:
    """A tool added to a running container after its start is not the image's: the facts
    are read from the image's layers, not from the container's root as it is now."""
    from roxd.incidents.risk_image import ImageScanner
    from roxd.runtime import DockerRuntime

    if os.geteuid() != 0:
        pytest.skip("kernel tests run as root (the image layers are root's)")
    rt = DockerRuntime()
    try:
        c = run_container("mkdir -p /usr/bin; cp /bin/busybox /usr/bin/curl; sleep 300")
        wait_until(lambda: rt.inspect_raw(c.id)["State"]["Running"], 15, message="running")
        wait_until(lambda: c.exec_run(["ls", "/usr/bin/curl"]).exit_code == 0, 15,
                   message="the copy made")
        facts = ImageScanner(rt.inspect_image_raw).of(rt.inspect_raw(c.id))
        assert facts is not None and "curl" not in facts.network_tools
        assert facts.source == "image layers" and "sh" in facts.shells
    finally:
        rt.close()
