"""Seccomp learning, profiles, apply, enforce and denials against the real kernel and dockerd.

One SeccompService (one bcc compile) for the module; containers are created from the offline
test image (never pulled) with the session label, and removed on teardown.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from roxd.seccomp import profile as profiles
from roxd.seccomp.errors import ApplyError
from roxd.seccomp.learner import gate_words
from roxd.seccomp.service import SeccompService
from roxd.seccomp.validate import fetch_docker_default, find_docker_default
from tests.conftest import IMAGE, SESSION, wait_until

pytestmark = pytest.mark.kernel
log = logging.getLogger(__name__)

# A small server and its client in one container: httpd serves /tmp, the loop fetches a page.
WORKLOAD = ("httpd -f -p 8080 -h /tmp & "
            "while true; do date > /tmp/index.html; id -u > /dev/null; "
            "wget -q -O /tmp/got http://127.0.0.1:8080/index.html; sleep 0.2; done")
# runc's own setup, made before the container's filter is installed: never to be learned.
RUNC_SETUP = {"pivot_root", "mount", "umount2", "sethostname", "keyctl", "unshare"}


@pytest.fixture(scope="module")
def service(docker_engine: Any, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[SeccompService]:
    svc = SeccompService(tmp_path_factory.mktemp("seccomp-state"), docker_engine,
                         honor_label=True)
    try:
        yield svc
    finally:
        svc.close()


@pytest.fixture
def containers(docker_engine: Any) -> Iterator[list[Any]]:
    made: list[Any] = []
    yield made
    for c in made:
        with contextlib.suppress(Exception):
            docker_engine.api.remove_container(c, force=True)


def start(docker_engine: Any, made: list[Any], command: str, *, learn: bool,
          image: str = IMAGE) -> str:
    name = f"roxd-test-sc-{uuid.uuid4().hex[:8]}"
    labels = {"roxd-test": SESSION, **({"roxd.learn": "true"} if learn else {})}
    c = docker_engine.containers.create(image, ["/bin/sh", "-c", command], name=name,
                                        labels=labels)
    made.append(name)
    c.start()
    return name


def learned_names(service: SeccompService, name: str) -> frozenset[str]:
    service.poll()
    cid = service._require_container(name).id
    found = service.store.get("container", cid)
    return found.names if found else frozenset()


def exec_in(docker_engine: Any, name: str, *cmd: str) -> tuple[int, str]:
    result = docker_engine.containers.get(name).exec_run(list(cmd))
    return result.exit_code, result.output.decode(errors="replace")


def learn_workload(service: SeccompService, docker_engine: Any, made: list[Any]) -> str:
    name = start(docker_engine, made, WORKLOAD, learn=True)
    # the server accepted a connection and the client's loop went round: the workload ran
    wait_until(lambda: {"accept", "connect", "nanosleep"} <= learned_names(service, name)
               or {"accept4", "connect", "nanosleep"} <= learned_names(service, name),
               timeout=20, message="the workload's syscalls to be learned")
    return name


def docker_default() -> profiles.Profile | None:
    found = find_docker_default()
    if found is None:
        with contextlib.suppress(Exception):
            fetch_docker_default(Path("/var/cache/roxd/docker-default-seccomp.json"))
            found = find_docker_default()
    return found


def test_learned_profile_keeps_the_workload_and_denies_the_rest(
        service: SeccompService, docker_engine: Any, containers: list[Any]) -> None:
    name = learn_workload(service, docker_engine, containers)
    names = learned_names(service, name)

    # the window: runc's calls after the filter (dropping caps, execve) are in; its setup
    # before the filter (pivot_root, mount, ...) is not
    assert {"execve", "capset"} <= names
    assert not names & RUNC_SETUP, names & RUNC_SETUP
    # the host-wide sys_enter program let this cgroup past its gate (one array read for all
    # other cgroups): its bit is set, as the kernel and userspace compute it
    cgroup_ids = [t.cgroup_id for t in service._tracked.values() if t.name == name]
    gate = service._tracer.gate()
    assert cgroup_ids and all(gate.get(w, 0) & bits == bits
                              for cg in cgroup_ids for w, bits in gate_words([cg]).items())
    assert "raw:sys_enter" in service._tracer.attached

    report = service.profile(name)
    assert report.profile["defaultAction"] == "SCMP_ACT_ERRNO"
    assert report.profile["defaultErrnoRet"] == 1
    assert report.validation.bpf_instructions > 0
    default = docker_default()
    if default is not None:
        print(f"\nlearned profile: {report.comparison.summary()}")
        assert report.comparison.docker_default_allowed is not None
        assert report.comparison.allowed * 2 < report.comparison.docker_default_allowed
    else:
        print(f"\nlearned profile allows {report.comparison.allowed} syscalls "
              f"(Docker's default profile unavailable on this machine)")

    prof = profiles.from_document(report.profile, "learned")
    result = service.apply(name, prof)
    assert result.name == name
    new = docker_engine.api.inspect_container(name)
    assert new["Id"] == result.new_id and new["State"]["Running"]
    assert any(o.startswith("seccomp=") for o in new["HostConfig"]["SecurityOpt"])

    # the workload still works under the profile: the page is fetched over and over
    code, out = exec_in(docker_engine, name, "wget", "-q", "-O", "-",
                        "http://127.0.0.1:8080/index.html")
    assert code == 0, out
    # what it never did now fails with EPERM
    code, out = exec_in(docker_engine, name, "unshare", "-n", "true")
    assert code != 0 and "Operation not permitted" in out, out
    code, out = exec_in(docker_engine, name, "mount", "-t", "tmpfs", "none", "/mnt")
    # busybox words EPERM from mount(2) as "permission denied (are you root?)"
    assert code != 0 and "permission denied" in out, out

    # and the denials are reported for this container, at sys_exit
    seen: list[Any] = []
    wait_until(lambda: seen.extend(service.poll()) or
               {"unshare", "mount"} <= {e.syscall for e in seen if e.container_name == name
                                        and e.kind == "denied"},
               timeout=10, message=f"denials of unshare and mount to be reported: {seen}")


def test_enforce_kills_the_offender_and_spares_other_containers(
        service: SeccompService, docker_engine: Any, containers: list[Any]) -> None:
    loop = "while true; do echo tick > /tmp/t; sleep 0.2; done"
    target = start(docker_engine, containers, loop, learn=True)
    other = start(docker_engine, containers, loop, learn=False)
    wait_until(lambda: "nanosleep" in learned_names(service, target)
               or "clock_nanosleep" in learned_names(service, target),
               timeout=20, message="the loop to be learned")
    # docker exec's runc init must be learned too, so exec itself is not killed
    assert exec_in(docker_engine, target, "true")[0] == 0
    learned_names(service, target)
    service.enforce(target)
    try:
        code, _ = exec_in(docker_engine, target, "unshare", "-n", "true")
        assert code == 137  # SIGKILL, not an errno
        kills: list[Any] = []
        wait_until(lambda: kills.extend(e for e in service.poll() if e.kind == "killed") or
                   any(e.container_name == target for e in kills),
                   timeout=10, message="the kill to be reported")
        assert all(e.container_name == target for e in kills)
        # the container's own loop keeps running; the other container is untouched
        assert docker_engine.api.inspect_container(target)["State"]["Running"]
        assert exec_in(docker_engine, other, "unshare", "-n", "true")[0] != 137
        assert exec_in(docker_engine, other, "echo", "fine") == (0, "fine\n")
    finally:
        service.release(target)


def test_apply_failure_rolls_back(service: SeccompService, docker_engine: Any,
                                  containers: list[Any]) -> None:
    tag = f"roxd-test/busybox:sc-{uuid.uuid4().hex[:8]}"
    subprocess.run(["docker", "tag", IMAGE, tag], check=True)
    try:
        name = start(docker_engine, containers, "sleep 1000", learn=False, image=tag)
    finally:
        subprocess.run(["docker", "rmi", tag], check=True, capture_output=True)  # untag only
    old_id = docker_engine.api.inspect_container(name)["Id"]
    prof = profiles.from_document(profiles.generate(["read"]), "tiny")
    with pytest.raises(ApplyError) as err:
        service.apply(name, prof)
    assert err.value.rolled_back, str(err.value)
    back = docker_engine.api.inspect_container(name)
    assert back["Id"] == old_id and back["State"]["Running"]
    assert not docker_engine.containers.list(all=True, filters={"name": f"{name}-roxd-old"})


def test_a_seccomp_kill_becomes_an_alert_through_the_pipeline(roxd_factory: Any,
                                                              run_container: Any) -> None:
    """roxd learns a container over its API, enforces, and the kernel's kill of an unlearned
    syscall comes back as a `seccomp` event matched by the built-in rule, its kill reported as
    done in the kernel."""
    import json

    from roxd.api.client import ApiClient, ApiFailure

    roxd = roxd_factory()
    c = run_container("while true; do echo tick > /tmp/t; sleep 0.2; done")
    with ApiClient(str(roxd.stderr_path.parent / "roxd.sock")) as api:
        api.post("/v1/seccomp/learn", {"target": c.name})

        def learned() -> str:
            try:
                return json.dumps(api.get("/v1/seccomp/profile", {"target": c.name}))
            except ApiFailure as exc:  # 422 "nothing learned yet" until the first poll
                assert exc.status == 422, exc
                return ""

        wait_until(lambda: "nanosleep" in learned(), 20, 0.3, message="the loop to be learned")
        assert c.exec_run(["true"]).exit_code == 0  # runc init of an exec is learned too
        learned()
        api.post("/v1/seccomp/enforce", {"target": c.name})
        try:
            assert c.exec_run(["unshare", "-n", "true"]).exit_code == 137
            alert = roxd.wait_for(lambda o: o.get("type") == "alert"
                                  and o["rule"]["id"] == "seccomp.enforce-kill"
                                  and (o.get("container") or {}).get("id") == c.id,
                                  timeout=20, message="the seccomp kill alert")
        finally:
            api.post("/v1/seccomp/release", {"target": c.name})
    assert alert["event"]["type"] == "seccomp"
    assert alert["event"]["seccomp"]["verdict"] == "killed"
    kill = next(a for a in alert["actions"] if a["action"] == "kill")
    assert kill["outcome"] == "done" and kill["in_kernel"] is True
