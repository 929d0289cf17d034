"""What a benign workload can do: build images, run containers, exec into them, wait.

Every container, image and build the harness makes is named `rbx-...`/`roxd-bench/...` and is
removed by `cleanup()`. Docker is driven through its CLI, as an operator or a CI job drives
it: `docker exec` without -t is exactly the non-interactive exec session a Kubernetes exec
probe or an operator's one-off command is.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from bench.benign.image import BASE_IMAGE


class WorkloadFailed(RuntimeError):
    """The workload did not do its job (a build failed, a check never passed): a workload
    that did not run cannot count as quiet."""


def docker(*args: str, timeout: float = 120.0, check: bool = True,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise WorkloadFailed(f"docker {' '.join(args[:3])}...: exit {proc.returncode}: "
                             f"{(proc.stderr or proc.stdout).strip()[-400:]}")
    return proc


@dataclass
class Ctx:
    """One workload's handle on Docker; remembers every container id it caused."""

    workload: str
    container_ids: set[str] = field(default_factory=set)
    images: list[str] = field(default_factory=list)
    containers: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def name(self, suffix: str = "") -> str:
        return f"rbx-{self.workload}{'-' + suffix if suffix else ''}-{uuid.uuid4().hex[:6]}"

    def build(self, dockerfile: str, files: dict[str, str | bytes] | None = None,
              tag: str | None = None) -> str:
        """`docker build` (classic builder, no network) of a context made of `files`; the
        containers its RUN steps ran in are this workload's too."""
        tag = tag or f"roxd-bench/{self.workload}:latest"
        with tempfile.TemporaryDirectory(prefix="rbx-ctx-") as tmp:
            ctx = Path(tmp)
            (ctx / "Dockerfile").write_text(dockerfile.replace("@BASE@", BASE_IMAGE))
            for rel, content in (files or {}).items():
                p = ctx / rel
                p.parent.mkdir(parents=True, exist_ok=True)
                if isinstance(content, bytes):
                    p.write_bytes(content)
                else:
                    p.write_text(content)
                if rel.endswith(".sh") or rel.startswith("bin/"):
                    p.chmod(0o755)
            since = _docker_now()
            docker("build", "--network", "none", "--rm", "--force-rm", "--no-cache", "-q",
                   "-t", tag, str(ctx), timeout=300, env={"DOCKER_BUILDKIT": "0"})
            until = f"{float(_docker_now()) + 0.5:.3f}"
        self.images.append(tag)
        self.container_ids |= _build_containers(tag, since, until)
        return tag

    def run(self, image: str, *cmd: str, opts: tuple[str, ...] = (), suffix: str = "") -> str:
        """`docker run -d` with no network but loopback; returns the container's name."""
        name = self.name(suffix)
        out = docker("run", "-d", "--network", "none", "--name", name, *opts, image, *cmd)
        self.container_ids.add(out.stdout.strip())
        self.containers.append(name)
        return name

    def run_to_end(self, image: str, *cmd: str, opts: tuple[str, ...] = (),
                   timeout: float = 120.0) -> str:
        """Run a job container to its end; raises unless it exits 0. Returns its logs."""
        name = self.run(image, *cmd, opts=opts, suffix="job")
        code = self.wait_exit(name, timeout)
        logs = docker("logs", name, check=False)
        if code != 0:
            raise WorkloadFailed(f"{name} exited {code}: {(logs.stdout + logs.stderr)[-600:]}")
        return logs.stdout

    def exec(self, container: str, *argv: str, user: str | None = None,
             timeout: float = 60.0) -> str:
        """A non-interactive `docker exec` (no -t, no -i), as kubelet's exec probes and an
        operator's scripted commands run. Raises unless it exits 0."""
        opts = ("-u", user) if user else ()
        out = docker("exec", *opts, container, *argv, timeout=timeout, check=False)
        if out.returncode != 0:
            raise WorkloadFailed(f"docker exec {container} {' '.join(argv)}: exit "
                                 f"{out.returncode}: {(out.stderr or out.stdout)[-400:]}")
        return out.stdout

    def wait_exit(self, container: str, timeout: float) -> int:
        out = docker("wait", container, timeout=timeout)
        return int(out.stdout.strip() or -1)

    def wait_until(self, what: str, check, timeout: float = 30.0,
                   interval: float = 0.3) -> None:
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            try:
                last = check()
                if last:
                    return
            except WorkloadFailed as exc:
                last = exc
            time.sleep(interval)
        raise WorkloadFailed(f"{what} not reached within {timeout:.0f}s (last: {last})")

    def health(self, container: str) -> dict:
        out = docker("inspect", "-f", "{{json .State.Health}}", container)
        return json.loads(out.stdout) or {}

    def wait_health_checks(self, container: str, count: int, timeout: float = 40.0) -> None:
        """Until the runtime ran `count` health checks, the last one passing (Docker keeps
        only the last five results: distinct start times are collected while polling)."""
        seen: set[str] = set()

        def done() -> bool:
            h = self.health(container)
            seen.update(str(e.get("Start")) for e in h.get("Log") or [])
            return h.get("Status") == "healthy" and len(seen) >= count
        self.wait_until(f"{count} passing health checks of {container}", done, timeout)
        self.notes.append(f"{len(seen)} health checks ran")

    def cleanup(self) -> None:
        for name in self.containers:
            docker("rm", "-f", name, check=False)
        for tag in self.images:
            docker("rmi", "-f", tag, check=False)


def _docker_now() -> str:
    return f"{time.time():.3f}"  # docker events takes fractional seconds


def _build_containers(tag: str, since: str, until: str) -> set[str]:
    """Containers the classic builder created for `tag`'s RUN steps: each was created from
    one of the image's intermediate layers (its history), between since and until."""
    hist = docker("history", "-q", "--no-trunc", tag, check=False).stdout.split()
    layers = {h.removeprefix("sha256:") for h in hist if h and h != "<missing>"}
    out = docker("events", "--since", since, "--until", until, "--filter",
                 "type=container", "--filter", "event=create", "--format",
                 '{{.Actor.ID}} {{index .Actor.Attributes "image"}}', check=False, timeout=30)
    ids = set()
    for line in out.stdout.splitlines():
        cid, _, image = line.partition(" ")
        image = image.removeprefix("sha256:")
        # a RUN step's container is created from the previous step's image *id*; a container
        # of another workload run by name from the same base in the same window is not one
        if image in layers:
            ids.add(cid)
    return ids


def host_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise WorkloadFailed(f"{name} not installed on the host")
    return path
