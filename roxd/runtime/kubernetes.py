"""What the CRI path (kubelet -> containerd's CRI plugin, or CRI-O) records about a pod's
containers, read back into pod name, namespace, uid, container name and pod labels. Pure.

kubelet hands the CRI runtime a container config whose labels are `io.kubernetes.pod.name`,
`io.kubernetes.pod.namespace`, `io.kubernetes.pod.uid` and `io.kubernetes.container.name`; the
CRI plugin stores them as the containerd container's labels, adds `io.cri-containerd.kind`
(`sandbox` for the pod's pause container, `container` otherwise) and writes OCI annotations
`io.kubernetes.cri.container-type`, `io.kubernetes.cri.sandbox-id`,
`io.kubernetes.cri.sandbox-name`, `io.kubernetes.cri.sandbox-namespace`,
`io.kubernetes.cri.sandbox-uid` (1.7+) and `io.kubernetes.cri.container-name`. The pod's own
labels (`app=web`) are only on the sandbox container: an app container's pod labels are read
from its sandbox.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

POD_NAME = "io.kubernetes.pod.name"
POD_NAMESPACE = "io.kubernetes.pod.namespace"
POD_UID = "io.kubernetes.pod.uid"
CONTAINER_NAME = "io.kubernetes.container.name"
CRI_KIND = "io.cri-containerd.kind"  # sandbox | container
CONTAINER_TYPE = "io.kubernetes.cri.container-type"  # sandbox | container
SANDBOX_ID = "io.kubernetes.cri.sandbox-id"
SANDBOX_NAME = "io.kubernetes.cri.sandbox-name"
SANDBOX_NAMESPACE = "io.kubernetes.cri.sandbox-namespace"
SANDBOX_UID = "io.kubernetes.cri.sandbox-uid"
ANN_CONTAINER_NAME = "io.kubernetes.cri.container-name"
ANN_IMAGE_NAME = "io.kubernetes.cri.image-name"
# CRI-O writes its own annotation names for the same facts.
CRIO_SANDBOX_ID = "io.kubernetes.cri-o.SandboxID"
CRIO_CONTAINER_TYPE = "io.kubernetes.cri-o.ContainerType"

# Labels the runtime or kubelet add for their own bookkeeping: not the pod's labels.
_SYSTEM_PREFIXES = ("io.kubernetes.", "io.cri-containerd.", "io.containerd.",
                    "annotation.io.kubernetes.")


@dataclass(frozen=True, slots=True)
class PodFacts:
    pod: str | None = None
    namespace: str | None = None
    pod_uid: str | None = None
    container_name: str | None = None
    sandbox: bool = False  # this is the pod's sandbox (pause) container
    sandbox_id: str | None = None  # an app container's sandbox, to read the pod labels from
    image: str | None = None  # the image name kubelet asked for, when annotated

    @property
    def in_pod(self) -> bool:
        return self.pod is not None or self.namespace is not None or self.pod_uid is not None


def pod_facts(labels: Mapping[str, str], annotations: Mapping[str, str]) -> PodFacts:
    """The pod a CRI-created container belongs to (labels first, annotations as fallback)."""

    def first(*values: str | None) -> str | None:
        for value in values:
            if value:
                return value
        return None

    kind = first(labels.get(CRI_KIND), annotations.get(CONTAINER_TYPE),
                 annotations.get(CRIO_CONTAINER_TYPE))
    sandbox = kind == "sandbox"
    sandbox_id = None if sandbox else first(annotations.get(SANDBOX_ID),
                                            annotations.get(CRIO_SANDBOX_ID))
    return PodFacts(
        pod=first(labels.get(POD_NAME), annotations.get(SANDBOX_NAME)),
        namespace=first(labels.get(POD_NAMESPACE), annotations.get(SANDBOX_NAMESPACE)),
        pod_uid=first(labels.get(POD_UID), annotations.get(SANDBOX_UID)),
        container_name=first(labels.get(CONTAINER_NAME), annotations.get(ANN_CONTAINER_NAME)),
        sandbox=sandbox,
        sandbox_id=sandbox_id,
        image=annotations.get(ANN_IMAGE_NAME) or None,
    )


def pod_labels_of(sandbox_labels: Mapping[str, str]) -> dict[str, str]:
    """The pod's own labels, from its sandbox container's labels (bookkeeping labels left out)."""
    return {k: v for k, v in sandbox_labels.items() if not k.startswith(_SYSTEM_PREFIXES)}
