"""Which node an exported record comes from: host name, machine id, Kubernetes node name.

    node = NodeIdentity.detect(NodeSettings())     # once, at start
    node.to_dict()  -> {"hostname": "node-1", "machine_id": "4f1c…", "kubernetes_node": "…"}
    node.token      -> "node-1": the node's part of a NATS subject (no dots, spaces, * or >)

Every exporter (the JSON lines file, NATS JetStream) puts `node.to_dict()` on every record, so a
fleet-wide view can tell nodes apart even when two share a host name (the machine id differs).
The Kubernetes node name comes from the configuration, else from $NODE_NAME (what a DaemonSet
sets with the downward API: `valueFrom.fieldRef.fieldPath: spec.nodeName`), else it is empty.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from roxd.alerts.settings import NodeSettings

MACHINE_ID = Path("/etc/machine-id")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    hostname: str
    machine_id: str = ""  # "" when /etc/machine-id is absent or unreadable
    kubernetes_node: str = ""  # "" when not known

    @classmethod
    def detect(cls, settings: NodeSettings | None = None, *,
               env: Mapping[str, str] | None = None,
               machine_id_path: Path = MACHINE_ID) -> NodeIdentity:
        settings = settings or NodeSettings()
        env = os.environ if env is None else env
        try:
            machine_id = machine_id_path.read_text(encoding="ascii", errors="replace").strip()
        except OSError:
            machine_id = ""
        return cls(hostname=settings.hostname or socket.gethostname(),
                   machine_id=machine_id,
                   kubernetes_node=settings.kubernetes_node or env.get("NODE_NAME", "").strip())

    @property
    def name(self) -> str:
        """The name operators know the node by: the Kubernetes node name, else the host name."""
        return self.kubernetes_node or self.hostname

    @property
    def token(self) -> str:
        """`name` as one NATS subject token: every character outside [A-Za-z0-9_-] (dots of a
        fully qualified name included) becomes "_"; never empty."""
        return _UNSAFE.sub("_", self.name) or "unknown"

    def to_dict(self) -> dict[str, str]:
        return {"hostname": self.hostname, "machine_id": self.machine_id,
                "kubernetes_node": self.kubernetes_node}
