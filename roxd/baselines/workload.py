"""The workload a container belongs to: what a baseline is keyed by.

In order: an operator's label (`[baselines] key_label`, e.g. `roxd.workload=shop-web`);
Kubernetes (namespace/pod owner/container name, from the CRI labels kubelet sets: the pod name
with its replica hash suffix removed stands in for the owner when no owner label exists);
Compose (project/service); else the image repository and the container name with a replica
suffix (`-1`, `_2`, `.3`) stripped. Two replicas of one deployment, or a container and its
restart, get the same key.
"""

from __future__ import annotations

import re

from roxd.model import Container

K8S_NAMESPACE = "io.kubernetes.pod.namespace"
K8S_POD = "io.kubernetes.pod.name"
K8S_CONTAINER = "io.kubernetes.container.name"
COMPOSE_PROJECT = "com.docker.compose.project"
COMPOSE_SERVICE = "com.docker.compose.service"

_REPLICA_SUFFIX = re.compile(r"[-_.]\d+$")
# a Deployment's pod: <deployment>-<replicaset hash>-<pod suffix>; a StatefulSet's: <name>-<n>
_POD_SUFFIX = re.compile(r"(-[a-z0-9]{6,10})?-[a-z0-9]{5}$|-\d+$")


def image_repository(image: str | None) -> str:
    """`docker.io/library/nginx:1.25@sha256:...` -> `nginx`; registries other than Docker
    Hub are kept (`ghcr.io/acme/api`)."""
    if not image:
        return "unknown-image"
    ref = image.split("@", 1)[0]
    last = ref.rsplit("/", 1)[-1]
    if ":" in last:
        ref = ref[: len(ref) - len(last)] + last.split(":", 1)[0]
    for prefix in ("docker.io/library/", "docker.io/", "library/"):
        if ref.startswith(prefix):
            ref = ref[len(prefix):]
            break
    return ref


def workload_key(container: Container, key_label: str = "") -> str:
    labels = container.labels or {}
    if key_label and labels.get(key_label):
        return f"label:{labels[key_label]}"
    if labels.get(K8S_NAMESPACE) and labels.get(K8S_CONTAINER):
        owner = _POD_SUFFIX.sub("", labels.get(K8S_POD, "")) or "pod"
        return f"k8s:{labels[K8S_NAMESPACE]}/{owner}/{labels[K8S_CONTAINER]}"
    if labels.get(COMPOSE_PROJECT) and labels.get(COMPOSE_SERVICE):
        return f"compose:{labels[COMPOSE_PROJECT]}/{labels[COMPOSE_SERVICE]}"
    name = (container.name or "").lstrip("/") or container.id[:12]
    return f"image:{image_repository(container.image)}/{_REPLICA_SUFFIX.sub('', name)}"
