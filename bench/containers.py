"""The containers of a run: idle ones (present for every agent), workers that run the
workloads through `docker exec`. Created and started through the SDK, never pulled; all
labelled roxd-bench=<run id> and removed at the end."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.cleanup import Cleanup

IMAGE = "roxd-test/busybox:latest"
LABEL = "roxd-bench"
OWNER_LABEL = "roxd-bench-owner"  # "<pid>:<start time>" of the benchmark that made it
REPO = Path(__file__).resolve().parents[1]


def ensure_engine_and_image() -> None:
    """Docker engine answering and the offline test image present (scripts of the repo)."""
    if subprocess.run([REPO / "scripts/dockerd.sh", "status"]).returncode != 0:
        subprocess.run([REPO / "scripts/dockerd.sh", "start"], check=True)
    subprocess.run([REPO / "scripts/test-images.sh"], check=True)


def owner() -> str:
    """This process as "<pid>:<start time in ticks>" (a reused pid has another start time)."""
    return f"{os.getpid()}:{_start_time(os.getpid())}"


def _start_time(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def run_alive(owner_label: str) -> bool:
    pid, _, started = owner_label.partition(":")
    return pid.isdigit() and bool(started) and _start_time(int(pid)) == started


@dataclass
class Containers:
    bin_dir: Path
    out_dir: Path
    cleanup: Cleanup
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    client: Any = None
    made: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        import docker

        self.client = docker.DockerClient(base_url="unix:///var/run/docker.sock", timeout=120)
        # leftovers of an earlier run that was killed hard; never those of a run still going
        # (two benchmarks on one host, e.g. two worktrees: each keeps its own containers)
        for c in self.client.containers.list(all=True, filters={"label": LABEL}):
            if run_alive(c.labels.get(OWNER_LABEL, "")):
                continue
            with contextlib.suppress(Exception):
                c.remove(force=True)
        self.cleanup.push("bench containers", self.remove_all)

    def start(self, role: str, network_mode: str | None = None) -> Any:
        name = f"roxd-bench-{self.run_id}-{role}"
        kwargs: dict[str, Any] = {}
        if network_mode:
            kwargs["network_mode"] = network_mode
        container = self.client.containers.create(
            IMAGE, ["/bin/sh", "-c", "trap 'exit 0' TERM; while true; do sleep 3600 & wait; done"],
            name=name, labels={LABEL: self.run_id, "roxd-bench-role": role,
                               OWNER_LABEL: owner()},
            volumes={str(self.bin_dir): {"bind": "/bench", "mode": "ro"},
                     str(self.out_dir): {"bind": "/bench-out", "mode": "rw"}},
            **kwargs)
        self.made.append(container)
        container.start()
        return container

    def remove_all(self) -> None:
        for c in self.made:
            with contextlib.suppress(Exception):
                c.remove(force=True)
        self.made.clear()
        with contextlib.suppress(Exception):
            self.client.close()


def run_json(container: Any, argv: list[str], timeout_hint: str = "") -> dict[str, Any]:
    """docker exec argv in container; the program prints one JSON object."""
    code, output = container.exec_run(argv)
    text = output.decode(errors="replace").strip()
    if code != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {code} in {container.name}: {text[-500:]}"
                           f"{timeout_hint}")
    last = text.splitlines()[-1] if text else ""
    try:
        return json.loads(last)
    except json.JSONDecodeError as exc:
        raise RuntimeError(f"{' '.join(argv)}: no JSON in output: {text[-500:]}") from exc


def cgroup_id(container: Any) -> int | None:
    """The container's cgroup v2 id (inode of its cgroup directory), for bpftrace filters."""
    container.reload()
    pid = container.attrs["State"]["Pid"]
    try:
        rel = next(line.split(":", 2)[2] for line in
                   Path(f"/proc/{pid}/cgroup").read_text().splitlines()
                   if line.startswith("0::"))
    except (OSError, StopIteration):
        return None
    for root in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
        path = Path(root + rel)
        if path.is_dir():
            return path.stat().st_ino
    return None
