"""[baselines] in roxd.toml."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from roxd.baselines.files import tree_problems

MODES = ("learn", "monitor", "enforce")


@dataclass(frozen=True)
class BaselineSettings:
    enabled: bool = True
    # What a workload does once its baseline is locked: "learn" (keep learning, never alert),
    # "monitor" (alert on what is new), "enforce" (kill it in the kernel, and alert).
    default_mode: str = "monitor"
    # Per image: "pattern=mode" (fnmatch on the image reference), first match wins.
    image_modes: tuple[str, ...] = ()
    # Learning lasts this long from the workload's first exec, then the baseline locks.
    window_s: float = 3600.0
    auto_lock: bool = True
    # Execs in a container's first seconds join the baseline and never alert (entrypoints,
    # init scripts of every new replica).
    startup_grace_s: float = 60.0
    # A container label whose value names the workload (overrides the derived key).
    key_label: str = ""
    # Workloads and learned paths kept, at most (the oldest workload is forgotten first).
    max_workloads: int = 4096
    max_processes: int = 512
    # Network baselines: outbound connects learned per workload as (protocol, port, peer);
    # a new one after the lock is an anomaly (alerted; in enforce mode also refused in the
    # kernel by the cgroup connect hook, where it loads). Peers are other
    # workloads by key, the host, loopback, or external prefixes ([netmap] prefixes).
    network: bool = True
    max_peers: int = 512
    # A container of a workload runs an image digest (image id) the baseline has not seen:
    # learning starts again for the workload (a new window, said by a baseline.reopened
    # alert). Off: the locked baseline stays, the new version's new behaviour is anomalous.
    reopen_on_new_digest: bool = False
    # Drift: an exec in a container of a binary its image does not have (written or changed
    # after the container started) is checked and seen by rules as `drift`; needs no
    # learning and works with enabled = false too.
    drift: bool = True
    # File baselines (roxd/baselines/files.py): the directories each workload writes below
    # these trees are learned; a write into a new one after the lock is an anomaly (alerted,
    # never blocked). The kernel watches writes below them (bpf/file.bpf.c); the trees cover
    # every directory the shipped file rules watch for writes.
    files: bool = True
    file_trees: tuple[str, ...] = ("/etc", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64",
                                   "/root", "/home", "/var/spool/cron", "/var/log")
    max_file_dirs: int = 256

    def problems(self) -> list[str]:
        out = []
        out.extend(tree_problems(self.file_trees))
        if self.default_mode not in MODES:
            out.append(f"baselines.default_mode must be one of {', '.join(MODES)}, not "
                       f"{self.default_mode!r}")
        for item in self.image_modes:
            pattern, sep, mode = item.rpartition("=")
            if not sep or not pattern or mode not in MODES:
                out.append(f"baselines.image_modes: {item!r} is not 'image-pattern=mode' with "
                           f"a mode of {', '.join(MODES)}")
        return out

    def mode_for_image(self, image: str | None) -> str:
        for item in self.image_modes:
            pattern, _, mode = item.rpartition("=")
            if image and fnmatch.fnmatchcase(image, pattern):
                return mode
        return self.default_mode
