"""A new image digest reopens learning (issue 15, adaptation), on real parts: two images built
here offline (`docker build` from the local busybox test image, told apart by a label, so two
digests under one repository) run one after the other under the same container name, which is
one workload. The first locks; the second's first exec reopens learning, said by a
`baseline.reopened` alert naming the new digest."""

from __future__ import annotations

import contextlib
import io
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from roxd.api.client import ApiClient
from tests.conftest import start_roxd, wait_until

pytestmark = pytest.mark.kernel

CONFIG = """
[daemon]
stats_interval_s = 1.0
[baselines]
window_s = 6.0
startup_grace_s = 1.0
reopen_on_new_digest = true
"""
REPOSITORY = "roxd-test/busybox-versions"


@pytest.fixture
def two_versions(docker_engine: Any) -> Any:
    """Two tags of one repository with different image ids, removed afterwards."""
    tags = []
    for version in ("1", "2"):
        dockerfile = (f"FROM roxd-test/busybox:latest\nLABEL roxd.test.version={version}\n"
                      ).encode()
        image, _log = docker_engine.images.build(fileobj=io.BytesIO(dockerfile),
                                                 tag=f"{REPOSITORY}:v{version}", pull=False,
                                                 rm=True)
        tags.append((f"{REPOSITORY}:v{version}", image.id))
    assert tags[0][1] != tags[1][1]
    yield tags
    for tag, _ in tags:
        with contextlib.suppress(Exception):  # a container of it may still be going away
            docker_engine.images.remove(tag, noprune=False)


def test_a_new_digest_reopens_learning(run_container: Any, two_versions: Any) -> None:
    (v1, v1_id), (v2, v2_id) = two_versions
    workdir = Path(tempfile.mkdtemp(prefix="roxd-reopen-"))
    sock = str(workdir / "roxd.sock")
    rp = start_roxd(workdir, "--print-alerts", config=CONFIG)
    name = f"roxd-reopen-{uuid.uuid4().hex[:6]}"
    try:
        rp.wait_ready()
        first = run_container("sleep 600", image=v1, name=name)
        time.sleep(1.5)
        first.exec_run(["sh", "-c", "true"])
        seen = rp.wait_for(lambda o: o.get("type") == "exec"
                           and (o.get("container") or {}).get("id") == first.id
                           and o.get("baseline"), timeout=60,
                           message="an exec of the first version judged by its baseline")
        workload = seen["baseline"]["workload"]

        def state() -> dict[str, Any]:
            with ApiClient(sock) as api:
                return api.get("/v1/baselines/show", {"workload": workload})

        wait_until(lambda: state()["state"] == "locked", 30, message="the baseline locked")
        assert state()["image_ids"] == [v1_id]
        first.remove(force=True)

        second = run_container("sleep 600", image=v2, name=name)  # same workload, new digest
        second.exec_run(["sh", "-c", "true"])
        alert = rp.wait_for(lambda o: o.get("type") == "alert"
                            and o["rule"]["id"] == "baseline.reopened", timeout=60,
                            message="the reopen said")
        args = alert["event"]["syscall"]["args"]
        assert args["workload"] == workload and v2_id in args["reason"]
        shown = state()
        assert shown["state"] == "learning" and shown["image_ids"] == [v1_id, v2_id]
        assert shown["image"] == v2
    finally:
        rp.stop()
