"""The sensor's settings from roxd's config: one function, used by roxd.main (which starts the
eBPF compile before the daemon is imported) and by the daemon (which takes that compile only
when its own settings are the same)."""

from __future__ import annotations

from pathlib import Path

from roxd.config import Config
from roxd.sensor.program import SensorConfig


def sensor_config(config: Config) -> SensorConfig:
    return SensorConfig(
        cache_dir=Path(config.daemon.cache_dir),
        ringbuf_pages=config.sensor.ringbuf_pages,
        max_args=config.sensor.max_args,
        ring_batch_ms=config.sensor.ring_batch_ms,
        ring_linger_ms=config.sensor.ring_linger_ms,
        inbound=config.netmap.enabled and config.netmap.inbound,
        module_syscalls_raw=config.sensor.module_syscalls_raw,
        **({"bpf_dir": Path(config.sensor.bpf_dir)} if config.sensor.bpf_dir else {}),
    )
