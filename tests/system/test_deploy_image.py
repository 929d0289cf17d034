"""The Kubernetes deployment for real, without a cluster: the .deb is built, the image is built
from it by deploy/image/build.sh (offline: the package tests' cached Debian root), imported into
a private containerd and run the way the kubelet runs deploy/kubernetes/daemonset.yaml's pod:
exactly its capabilities (every other one dropped), the host's PID namespace, a read-only root,
its mounts, its command. Then what a cluster operator relies on: the exec probe passes, a
pod-shaped containerd container is attributed and the ConfigMap's rule fires on it, and a
ConfigMap update (the kubelet's `..data` symlink swap) is reloaded and its new rule fires.

The pod's roxd shares this host's kernel with every other test session, so it runs in
monitor mode: it enforces nothing."""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import IMAGE, wait_until
from tests.containerd_private import PrivateContainerd, private_containerd
from tests.system.packaging_root import base_root, depends_of

pytestmark = pytest.mark.system

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy/kubernetes"
# The capabilities containerd gives a container unless told otherwise (as runc's default
# spec): the pod drops ALL, so each of these not added back is dropped.
DEFAULT_CAPS = ("CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID",
                "SETUID", "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL",
                "AUDIT_WRITE")

RELOAD_RULE = """
[[rule]]
id = "cluster.reload-marker"
name = "Reload marker"
description = "Test rule: only in the second version of the ConfigMap."
phase = "foothold"
severity = "warning"
mitre = ["T1059"]
event = "exec"
actions = ["alert"]
[rule.when]
cmdline = { contains = ["roxd-k8s-reload-marker"] }
[rule.scope]
host = false
"""


def _manifest(name: str) -> dict[str, Any]:
    return yaml.safe_load((K8S / name).read_text())


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    dist = tmp_path_factory.mktemp("dist")
    build = subprocess.run([str(REPO / "scripts/build-packages.sh"), str(dist)],
                           env={**os.environ, "ROXD_PACKAGES": "deb",
                                "ROXD_PACKAGE_TREE": "worktree"},
                           capture_output=True, text=True, timeout=900)
    assert build.returncode == 0, f"{build.stdout[-3000:]}\n{build.stderr[-3000:]}"
    (deb,) = dist.glob("roxd_*_all.deb")
    root = base_root(depends_of(deb))  # cached: debootstrap only on a first run
    tag = f"roxd-test/roxd:k8s-{uuid.uuid4().hex[:8]}"
    made = subprocess.run([str(REPO / "deploy/image/build.sh"), str(deb), tag],
                          env={**os.environ, "ROXD_IMAGE_ROOT": str(root)},
                          capture_output=True, text=True, timeout=900)
    assert made.returncode == 0, f"{made.stdout[-3000:]}\n{made.stderr[-3000:]}"
    assert made.stdout.strip() == tag
    try:
        yield tag
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)


@pytest.fixture(scope="module")
def containerd(image: str) -> Iterator[PrivateContainerd]:
    subprocess.run([str(REPO / "scripts/test-images.sh")], check=True)
    with private_containerd() as ctrd:
        ctrd.import_docker_image(image)
        ctrd.import_docker_image(IMAGE)
        yield ctrd


def configmap_dir(mount: Path, version: int, files: dict[str, str]) -> None:
    """Write a ConfigMap volume as the kubelet does: a fresh hidden directory, a `..data`
    symlink swapped onto it by rename, the visible names symlinks through `..data`."""
    data = mount / f"..2026_11_29_00_00_0{version}.{uuid.uuid4().hex[:6]}"
    data.mkdir(parents=True)
    for name, text in files.items():
        (data / name).write_text(text)
    old = os.readlink(mount / "..data") if (mount / "..data").is_symlink() else None
    (mount / "..data_tmp").symlink_to(data.name)
    os.rename(mount / "..data_tmp", mount / "..data")
    for name in files:
        if not (mount / name).is_symlink():
            (mount / name).symlink_to(f"..data/{name}")
    if old is not None:
        for f in (mount / old).iterdir():
            f.unlink()
        (mount / old).rmdir()


def pod_run_args(workdir: Path, ctrd: PrivateContainerd) -> tuple[list[str], list[str],
                                                                   Path]:
    """The DaemonSet's pod as `ctr run` options and command; the ConfigMaps and the node's
    own directories (state, socket, runtime socket) become directories of this test; the
    kernel-facing host paths are the host's."""
    ds = _manifest("daemonset.yaml")
    pod = ds["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["capabilities"]["drop"] == ["ALL"]
    add = set(sc["capabilities"]["add"])
    args = [f"--cap-drop=CAP_{c}" for c in DEFAULT_CAPS if c not in add]
    args += [f"--cap-add=CAP_{c}" for c in sorted(add)]
    if pod.get("hostPID"):
        # the host's PID namespace (runc joins the namespace of its own, the host's)
        args.append("--with-ns=pid:/proc/self/ns/pid")
    if sc.get("readOnlyRootFilesystem"):
        args.append("--read-only")
    if sc.get("allowPrivilegeEscalation", True):
        args.append("--allow-new-privs")
    assert sc["seccompProfile"]["type"] == "Unconfined"  # ctr applies no profile by default
    volumes = {v["name"]: v for v in pod["volumes"]}
    node_dirs = {"/var/lib/roxd", "/run/roxd", "/run/containerd"}  # this test's, not the host's
    rules_dir = workdir / "configmap-rules"
    for m in container["volumeMounts"]:
        v = volumes[m["name"]]
        mode = "ro" if m.get("readOnly") else "rw"
        if "configMap" in v:
            src = workdir / f"configmap-{v['configMap']['name'].removeprefix('roxd-')}"
            cm = _manifest(f"configmap-{src.name.removeprefix('configmap-')}.yaml")
            configmap_dir(src, 1, cm["data"])
        elif "emptyDir" in v:
            args.append(f"--mount=type=tmpfs,src=tmpfs,dst={m['mountPath']},options=rw")
            continue
        elif v["hostPath"]["path"] in node_dirs:
            src = workdir / "node" / v["hostPath"]["path"].strip("/").replace("/", "_")
            src.mkdir(parents=True)
        else:
            src = Path(v["hostPath"]["path"])
            assert src.is_dir(), f"this host has no {src}"
        args.append(f"--mount=type=bind,src={src},dst={m['mountPath']},options=rbind:{mode}")
    command = list(container["command"])
    # This test machine's pid 1 is a VM agent whose namespaces a container may not open; any
    # host process in the host's cgroup namespace serves: the private containerd.
    command = [c.replace("/proc/1/ns/cgroup", f"/proc/{ctrd.proc.pid}/ns/cgroup")
               for c in command]
    return args, [*command, "--monitor"], rules_dir


@pytest.fixture(scope="module")
def roxd_pod(containerd: PrivateContainerd, image: str,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, Path]]:
    workdir = tmp_path_factory.mktemp("node")
    args, command, rules_dir = pod_run_args(workdir, containerd)
    log = workdir / "roxd.log"
    name = f"roxd-{uuid.uuid4().hex[:8]}"
    containerd.ctr("run", "-d", f"--log-uri=file://{log}", *args,
                   f"docker.io/{image}", name, *command)
    try:
        yield name, log, rules_dir
    finally:
        containerd.ctr("task", "kill", name, check=False)  # SIGTERM: roxd stops cleanly
        with contextlib.suppress(AssertionError):
            wait_until(lambda: containerd.task_status(name) in ("STOPPED", "GONE"), 30)
        containerd.remove(name)


def _probe(ctrd: PrivateContainerd, name: str, command: list[str]) -> int:
    return ctrd.ctr("task", "exec", "--exec-id", f"probe-{uuid.uuid4().hex[:8]}", name,
                    *command, check=False, timeout=30).returncode


def _log(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def test_pod_becomes_ready_with_only_the_manifests_permissions(
        containerd: PrivateContainerd, roxd_pod: tuple[str, Path, Path]) -> None:
    name, log, _rules = roxd_pod
    container = _manifest("daemonset.yaml")["spec"]["template"]["spec"]["containers"][0]
    probe = container["startupProbe"]["exec"]["command"]
    limit = container["startupProbe"]["periodSeconds"] * container["startupProbe"][
        "failureThreshold"]
    wait_until(lambda: _probe(containerd, name, probe) == 0, limit, interval=2,
               message=f"the startup probe to pass; roxd's log:\n{_log(log)[-3000:]}")
    assert _probe(containerd, name, container["livenessProbe"]["exec"]["command"]) == 0
    assert _probe(containerd, name, container["readinessProbe"]["exec"]["command"]) == 0
    status = containerd.ctr("task", "exec", "--exec-id", "caps", name, "grep", "CapEff",
                            "/proc/self/status").stdout.split()[1]
    effective = int(status, 16)
    add = container["securityContext"]["capabilities"]["add"]
    numbers = {"CHOWN": 0, "FOWNER": 3, "KILL": 5, "NET_ADMIN": 12, "SYS_PTRACE": 19,
               "SYS_ADMIN": 21, "PERFMON": 38, "BPF": 39}
    assert effective == sum(1 << numbers[c] for c in add), hex(effective)
    assert "roxd is watching" in _log(log)


def _pod_container(ctrd: PrivateContainerd, command: str) -> tuple[str, str]:
    cid = uuid.uuid4().hex + uuid.uuid4().hex
    pod = str(uuid.uuid4())
    ctrd.ctr("run", "-d", "--null-io", "--cgroup", f"/kubepods/besteffort/pod{pod}/{cid}",
             f"docker.io/{IMAGE}", cid, "/bin/sh", "-c", command)
    return cid, pod


def _cleanup_pod(ctrd: PrivateContainerd, cid: str, pod: str) -> None:
    ctrd.remove(cid)
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        pod_dir = hierarchy / "kubepods" / "besteffort" / f"pod{pod}"
        for d in (pod_dir, pod_dir.parent, pod_dir.parent.parent):
            with contextlib.suppress(OSError):
                d.rmdir()  # only when empty


def test_configmap_rule_fires_and_a_configmap_update_is_reloaded(
        containerd: PrivateContainerd, roxd_pod: tuple[str, Path, Path]) -> None:
    name, log, rules_dir = roxd_pod
    wait_until(lambda: _probe(containerd, name, ["roxctl", "health"]) == 0, 300, interval=2,
               message=f"roxd ready; its log:\n{_log(log)[-3000:]}")
    cid, pod = _pod_container(containerd, "sleep 600")
    try:
        token = "/var/run/secrets/kubernetes.io/serviceaccount/token"
        containerd.ctr("task", "exec", "--exec-id", "token", cid, "/bin/sh", "-c",
                       f"mkdir -p {os.path.dirname(token)} && echo t > {token} && cat {token}")
        wait_until(lambda: "(cluster.serviceaccount-token-read) in container "
                   f"{cid[:12]}" in _log(log), 30,
                   message=f"the ConfigMap rule's alert; roxd's log:\n{_log(log)[-3000:]}")
        # the kubelet's update of the ConfigMap volume: a new version, swapped in
        cm = _manifest("configmap-rules.yaml")["data"]
        before = _log(log).count("rules reloaded")
        configmap_dir(rules_dir, 2, {**cm, "reload.toml": RELOAD_RULE})
        wait_until(lambda: _log(log).count("rules reloaded") > before, 30,
                   message=f"the reload; roxd's log:\n{_log(log)[-3000:]}")
        assert "rule files changed on disk" in _log(log)
        containerd.ctr("task", "exec", "--exec-id", "marker", cid, "/bin/sh", "-c",
                       "echo roxd-k8s-reload-marker")
        wait_until(lambda: f"(cluster.reload-marker) in container {cid[:12]}" in _log(log), 30,
                   message=f"the new rule's alert; roxd's log:\n{_log(log)[-3000:]}")
    finally:
        _cleanup_pod(containerd, cid, pod)
