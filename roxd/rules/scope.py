"""Which processes a rule applies to: host processes, and containers by image, name, labels,
runtime, Kubernetes namespace, pod name and pod labels. A scope reads only the Container, so
the in-kernel fast path can evaluate it once per container instead of once per event."""

from __future__ import annotations

import re
from dataclasses import dataclass

from roxd.model import Container
from roxd.rules.images import ImagePattern, glob_regex


@dataclass(frozen=True, slots=True)
class LabelTest:
    key: str
    present: bool  # false: the label must be absent
    value: re.Pattern[str] | None  # glob on the value; None: any value

    def holds(self, labels) -> bool:
        value = labels.get(self.key)
        if value is None:
            return not self.present
        return self.present and (self.value is None or bool(self.value.match(value)))


@dataclass(frozen=True, slots=True)
class ContainerScope:
    host: bool = True
    containers: bool = True
    images: tuple[ImagePattern, ...] | None = None  # None: any image
    names: re.Pattern[str] | None = None
    runtimes: frozenset[str] | None = None
    labels: tuple[LabelTest, ...] = ()
    namespaces: re.Pattern[str] | None = None  # Kubernetes namespace glob(s)
    pods: re.Pattern[str] | None = None  # pod name glob(s)
    pod_labels: tuple[LabelTest, ...] = ()

    @classmethod
    def build(
        cls,
        host: bool,
        containers: bool,
        images: list[str] | None,
        names: list[str] | None,
        runtimes: list[str] | None,
        labels: list[tuple[str, str | bool]],
        namespaces: list[str] | None = None,
        pods: list[str] | None = None,
        pod_labels: list[tuple[str, str | bool]] | None = None,
    ) -> ContainerScope:
        def tests_of(pairs) -> tuple[LabelTest, ...]:
            tests = []
            for key, wanted in pairs:
                if isinstance(wanted, bool):
                    tests.append(LabelTest(key, wanted, None))
                else:
                    tests.append(LabelTest(key, True, glob_regex([wanted])))
            return tuple(tests)

        return cls(
            host=host,
            containers=containers,
            images=tuple(ImagePattern.compile(p) for p in images) if images is not None else None,
            names=glob_regex([n.lstrip("/") for n in names]) if names is not None else None,
            runtimes=frozenset(runtimes) if runtimes is not None else None,
            labels=tests_of(labels),
            namespaces=glob_regex(namespaces) if namespaces is not None else None,
            pods=glob_regex(pods) if pods is not None else None,
            pod_labels=tests_of(pod_labels or ()),
        )

    @property
    def container_filters(self) -> bool:
        """Does anything but the host/containers switches narrow which containers match?"""
        images_filter = self.images is not None and not any(p.any_image for p in self.images)
        return bool(
            images_filter or self.names is not None or self.runtimes is not None or self.labels
            or self.namespaces is not None or self.pods is not None or self.pod_labels
        )

    def matches_container(self, container: Container | None) -> bool:
        """Does the rule apply to processes of this container (None: the host)?"""
        if container is None:
            return self.host
        if not self.containers:
            return False
        if self.images is not None and not any(p.matches(container.image) for p in self.images):
            return False
        if self.names is not None:
            name = (container.name or "").lstrip("/")
            if not self.names.match(name):
                return False
        if self.runtimes is not None and container.runtime not in self.runtimes:
            return False
        # a container outside any pod has no namespace: a namespace or pod filter excludes it
        if self.namespaces is not None and not self.namespaces.match(container.namespace or ""):
            return False
        if self.pods is not None and not self.pods.match(container.pod or ""):
            return False
        if not all(test.holds(container.pod_labels) for test in self.pod_labels):
            return False
        return all(test.holds(container.labels) for test in self.labels)

    def describe(self) -> str:
        parts = []
        if not self.host:
            parts.append("containers only")
        if not self.containers:
            parts.append("host only")
        if self.images is not None:
            parts.append("image " + "|".join(p.text for p in self.images))
        if self.runtimes is not None:
            parts.append("runtime " + "|".join(sorted(self.runtimes)))
        if self.names is not None:
            parts.append("name filter")
        if self.labels:
            parts.append("labels " + ",".join(t.key for t in self.labels))
        if self.namespaces is not None:
            parts.append("namespace filter")
        if self.pods is not None:
            parts.append("pod filter")
        if self.pod_labels:
            parts.append("pod labels " + ",".join(t.key for t in self.pod_labels))
        return "; ".join(parts) or "host and all containers"
