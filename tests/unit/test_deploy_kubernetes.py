"""deploy/kubernetes: every manifest of the kustomize base is valid against the Kubernetes
schemas (kubernetes-validate ships them: offline, strict, so a misspelled field fails), and
what the manifests hold is what roxd needs: its configuration loads, the rules ConfigMap
validates, the DaemonSet asks for exactly the capabilities docs/kubernetes.md justifies."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from roxd.config import load_config
from roxd.rules.loader import validate_paths

REPO = Path(__file__).resolve().parents[2]
BASE = REPO / "deploy/kubernetes"
K8S_VERSION = "1.30.0"  # the oldest Kubernetes the manifests promise to run on (docs)
CAPABILITIES = {"BPF", "PERFMON", "SYS_ADMIN", "SYS_PTRACE", "NET_ADMIN", "KILL", "CHOWN",
                "FOWNER"}


def _kustomization() -> dict[str, Any]:
    return yaml.safe_load((BASE / "kustomization.yaml").read_text())


def _resources() -> list[dict[str, Any]]:
    """The base's resources as kustomize would emit them (its namespace applied)."""
    k = _kustomization()
    out = []
    for name in k["resources"]:
        for doc in yaml.safe_load_all((BASE / name).read_text()):
            if doc is None:
                continue
            if doc["kind"] != "Namespace":
                doc.setdefault("metadata", {})["namespace"] = k["namespace"]
            out.append(doc)
    return out


def _one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [r for r in _resources() if r["kind"] == kind
             and (name is None or r["metadata"]["name"] == name)]
    assert len(found) == 1, (kind, name, found)
    return found[0]


def test_every_file_of_the_directory_is_in_the_kustomization() -> None:
    listed = set(_kustomization()["resources"])
    present = {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present


@pytest.mark.parametrize("resource", _resources(),
                         ids=lambda r: f"{r['kind']}/{r['metadata']['name']}")
def test_manifest_is_valid_against_the_kubernetes_schema(resource: dict[str, Any]) -> None:
    try:
        checked = kubernetes_validate.validate(resource, K8S_VERSION, strict=True)
        problem = None
    except kubernetes_validate.ValidationError as exc:
        checked, problem = None, str(exc)
    assert problem is None, problem
    # validated against the schema of the version the docs promise (strict: no unknown field)
    assert checked == K8S_VERSION.rsplit(".", 1)[0]


def test_the_validator_catches_a_misspelled_field() -> None:
    """The check above is not vacuous: strict mode refuses an unknown field."""
    ds = _one("DaemonSet")
    ds["spec"]["template"]["spec"]["hostPid"] = True  # hostPID misspelled
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(ds, K8S_VERSION, strict=True)


def test_daemonset_permissions_are_exactly_the_documented_ones() -> None:
    pod = _one("DaemonSet")["spec"]["template"]["spec"]
    assert pod["hostPID"] is True and not pod.get("hostNetwork")
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert not sc.get("privileged")
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert set(sc["capabilities"]["add"]) == CAPABILITIES
    docs = (REPO / "docs/kubernetes.md").read_text()
    for cap in CAPABILITIES:  # each one justified for the reader
        assert f"`CAP_{cap}`" in docs, cap
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["exec"]["command"] == ["roxctl", "health"], probe
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert set(mounts) == set(volumes)
    host_paths = {v["hostPath"]["path"] for v in volumes.values() if "hostPath" in v}
    assert {"/sys/kernel/tracing", "/sys/fs/cgroup", "/lib/modules", "/usr/src",
            "/var/lib/roxd"} <= host_paths
    for name in ("modules", "usr-src", "config", "rules", "containerd"):
        assert mounts[name].get("readOnly") is True, name


def test_the_config_map_holds_a_valid_configuration(tmp_path: Path) -> None:
    cm = _one("ConfigMap", "roxd-config")
    path = tmp_path / "roxd.toml"
    path.write_text(cm["data"]["roxd.toml"])
    config = load_config(path)
    assert config.containers.docker_url == ""  # no dockerd on a Kubernetes node
    assert config.rules.watch_interval_s > 0  # ConfigMap rule updates are noticed
    pod = _one("DaemonSet")["spec"]["template"]["spec"]
    command = pod["containers"][0]["command"]
    assert command[command.index("--config") + 1] == "/etc/roxd/conf/roxd.toml"
    mounted = {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert "/etc/roxd/rules.d" in mounted and "/etc/roxd/rules.d" in config.rules.paths
    for path_value in (config.daemon.state_dir, config.daemon.cache_dir):
        assert path_value in mounted, path_value
    assert str(Path(config.daemon.socket).parent) in mounted


def test_the_rules_config_map_validates() -> None:
    cm = _one("ConfigMap", "roxd-rules")
    with tempfile.TemporaryDirectory() as d:
        for name, text in cm["data"].items():
            assert name.endswith(".toml"), name
            (Path(d) / name).write_text(text)
        assert validate_paths([Path(d)]) == []
