"""The container-attribution stage assembled: what the daemon builds, starts and stops.

    attribution = ContainerAttribution.from_host(runtime=connect_runtime(config.containers))
    attribution.start()                    # index the cgroup tree; start the docker thread
    enriched = attribution.enricher.enrich(event)
    attribution.stop()
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from roxd.containers.cgroups import MOUNTINFO, CgroupIndex
from roxd.containers.docker_source import DEFAULT_DOCKER_URL, DockerMetadataSource
from roxd.containers.enricher import Enricher
from roxd.containers.process_table import ProcessTable
from roxd.containers.resolver import ContainerResolver
from roxd.runtime import ContainerRuntime

log = logging.getLogger(__name__)


class ContainerAttribution:
    def __init__(
        self,
        index: CgroupIndex,
        docker: DockerMetadataSource | None,
        *,
        process_capacity: int = 32768,
        others: Sequence[DockerMetadataSource] = (),
    ) -> None:
        self.index = index
        self.docker = docker  # the runtime enforcement and seccomp act through
        # containerd, podman, ...: attribution only (names, images, labels, pods)
        self.others = list(others)
        sources = ([docker] if docker is not None else []) + self.others
        self.resolver = ContainerResolver(index, sources)
        self.processes = ProcessTable(capacity=process_capacity, cgroup_id_of_pid=index.lookup_pid)
        self.enricher = Enricher(self.resolver, self.processes)

    @classmethod
    def from_host(
        cls,
        *,
        runtime: ContainerRuntime | None = None,
        docker_url: str | None = DEFAULT_DOCKER_URL,
        docker_timeout: float = 5.0,
        mountinfo: str = MOUNTINFO,
        others: Sequence[ContainerRuntime] = (),
    ) -> ContainerAttribution:
        """Raises CgroupError when the host has no cgroup2 hierarchy.

        `runtime`: the shared ContainerRuntime (NoRuntime: attribution from cgroup paths only);
        its metadata source never closes it. Without it, the old form: a Docker source with a
        client of its own at `docker_url` (None: no Docker). `others`: more runtimes to
        attribute from (`roxd.runtime.connect_attribution_runtimes`), one source each; a
        runtime named like the main one is left out (one source per runtime name)."""
        index = CgroupIndex.from_host(mountinfo)
        docker: DockerMetadataSource | None
        if runtime is not None:
            docker = DockerMetadataSource(runtime) if runtime.configured else None
        else:
            docker = (
                DockerMetadataSource(base_url=docker_url, timeout=docker_timeout)
                if docker_url else None
            )
        main = docker.runtime if docker is not None else None
        extra = [DockerMetadataSource(rt, owns_runtime=True)
                 for rt in others if rt.configured and rt.name != main]
        return cls(index, docker, others=extra)

    def runtime_for(self, name: str) -> ContainerRuntime | None:
        """The runtime whose containers' cgroup paths say `name` ("containerd", "podman"),
        for enforcement that must ask the container's own runtime; None when not configured."""
        for source in ([self.docker] if self.docker is not None else []) + self.others:
            if source.runtime == name:
                return source.client_runtime
        return None

    def start(self) -> None:
        """Index the cgroup tree, attribute the containers already there, start the docker
        thread (which scans the running containers and follows the event stream)."""
        self.index.refresh()
        found = self.resolver.prime()
        log.info("container cgroups at start: %d", found, extra={"container_cgroups": found})
        if self.docker is not None:
            self.docker.start()
        for source in self.others:
            source.start()

    def stop(self) -> None:
        if self.docker is not None:
            self.docker.stop()
        for source in self.others:
            source.stop()
