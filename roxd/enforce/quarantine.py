"""Network quarantine: a dedicated nftables table inside a container's network namespace.

The table (`inet roxd_quarantine`) has input and output base chains with policy drop that
accept only loopback and the configured allowlist, and count what they drop. It lives in the
container's own namespace, so the host's ruleset and Docker's chains are never touched;
deleting the table is the whole release. State is persisted in the state dir and reconciled
at start: quarantined containers stay quarantined across roxd restarts, and containers that
disappeared are forgotten.

libnftables' JSON API (Debian python3-nftables) builds the table: no shell, no strings of nft
syntax.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from roxd.enforce.netns import NetnsError, netns_inode, run_in_netns, shares_host_netns
from roxd.runtime import ContainerRuntime

log = logging.getLogger(__name__)

TABLE = "roxd_quarantine"
FAMILY = "inet"


class QuarantineError(Exception):
    """A quarantine or release could not be done; the message says why."""


@dataclass(frozen=True)
class QuarantineRecord:
    container_id: str
    name: str | None
    since: float  # epoch seconds
    reason: str
    netns_inode: int
    allow: tuple[str, ...] = ()


@dataclass(frozen=True)
class DropCounters:
    input_packets: int
    output_packets: int


def table_commands(allow: Sequence[str] = ()) -> dict[str, Any]:
    """The nftables JSON batch that (re)creates the quarantine table atomically."""
    networks = [ipaddress.ip_network(a, strict=False) for a in allow]
    base = {"family": FAMILY, "table": TABLE}
    cmds: list[dict[str, Any]] = [
        # add + delete + add: idempotent replacement of a table that may already exist
        {"add": {"table": {"family": FAMILY, "name": TABLE}}},
        {"delete": {"table": {"family": FAMILY, "name": TABLE}}},
        {"add": {"table": {"family": FAMILY, "name": TABLE}}},
    ]
    for chain, hook, iface_key, addr_field in (
        ("input", "input", "iifname", "saddr"),
        ("output", "output", "oifname", "daddr"),
    ):
        cmds.append({"add": {"chain": {**base, "name": chain, "type": "filter", "hook": hook,
                                       "prio": -300, "policy": "drop"}}})
        cmds.append({"add": {"rule": {**base, "chain": chain, "expr": [
            {"match": {"op": "==", "left": {"meta": {"key": iface_key}}, "right": "lo"}},
            {"accept": None},
        ]}}})
        for net in networks:
            proto = "ip" if net.version == 4 else "ip6"
            cmds.append({"add": {"rule": {**base, "chain": chain, "expr": [
                {"match": {"op": "==",
                           "left": {"payload": {"protocol": proto, "field": addr_field}},
                           "right": {"prefix": {"addr": str(net.network_address),
                                                "len": net.prefixlen}}}},
                {"accept": None},
            ]}}})
        # everything else: counted, then dropped
        cmds.append({"add": {"rule": {**base, "chain": chain, "comment": "roxd quarantine drop",
                                      "expr": [{"counter": None}, {"drop": None}]}}})
    return {"nftables": cmds}


def _nft() -> Any:
    import nftables  # Debian python3-nftables

    nft = nftables.Nftables()
    nft.set_json_output(True)
    nft.set_handle_output(False)
    return nft


def _apply_batch(batch: dict[str, Any]) -> None:
    rc, _out, err = _nft().json_cmd(batch)
    if rc != 0:
        raise QuarantineError(f"nftables refused the quarantine table: {err.strip()}")


def _delete_table() -> bool:
    rc, _out, err = _nft().cmd(f"delete table {FAMILY} {TABLE}")
    if rc != 0 and "No such file" not in err:
        raise QuarantineError(f"nftables could not delete the table: {err.strip()}")
    return rc == 0


def _read_counters() -> DropCounters | None:
    rc, out, _err = _nft().cmd(f"list table {FAMILY} {TABLE}")
    if rc != 0:
        return None
    counts = {"input": 0, "output": 0}
    for item in json.loads(out).get("nftables", []):
        rule = item.get("rule")
        if not rule:
            continue
        for expr in rule.get("expr", []):
            counter = expr.get("counter") if isinstance(expr, dict) else None
            if counter:
                counts[rule["chain"]] += int(counter.get("packets", 0))
    return DropCounters(counts["input"], counts["output"])


PidOf = Callable[[str], "int | None"]


@dataclass
class Quarantine:
    """Quarantine bookkeeping for one host. Thread-safe (API and event loop both call it)."""

    state_dir: Path
    pid_of: PidOf  # container id -> pid of its init process, None when not running
    exists: Callable[[str], bool]  # container id -> does the runtime still know it
    allow: tuple[str, ...] = ()
    _records: dict[str, QuarantineRecord] = field(default_factory=dict)
    _lock: threading.RLock = field(default_factory=threading.RLock)

    @classmethod
    def for_runtime(cls, state_dir: Path, runtime: ContainerRuntime,
                    allow: tuple[str, ...] = ()) -> Quarantine:
        """Quarantine whose init pids and existence checks come from the shared runtime."""
        return cls(state_dir, pid_of=runtime.pid_of, exists=runtime.exists, allow=allow)

    def __post_init__(self) -> None:
        for a in self.allow:  # fail at start, not at the first quarantine
            ipaddress.ip_network(a, strict=False)
        self._records = self._load()

    @property
    def state_file(self) -> Path:
        return self.state_dir / "quarantine.json"

    # ------------------------------------------------------------------ operations

    def isolate(self, container_id: str, name: str | None, reason: str) -> QuarantineRecord:
        with self._lock:
            pid = self.pid_of(container_id)
            if not pid:
                raise QuarantineError(f"container {name or container_id[:12]} is not running")
            if shares_host_netns(pid):
                raise QuarantineError(
                    f"container {name or container_id[:12]} shares the host's network "
                    "namespace: an nftables table there would cut off the host itself")
            try:
                run_in_netns(pid, lambda: _apply_batch(table_commands(self.allow)))
            except NetnsError as exc:
                raise QuarantineError(str(exc)) from exc
            record = QuarantineRecord(container_id, name, time.time(), reason,
                                      netns_inode(pid), self.allow)
            self._records[container_id] = record
            self._save()
            log.warning("quarantined container %s (%s): %s", name or container_id[:12],
                        container_id[:12], reason)
            return record

    def release(self, container_id: str) -> bool:
        """Delete the table; True when the container was quarantined."""
        with self._lock:
            record = self._records.pop(container_id, None)
            if record is None:
                return False
            pid = self.pid_of(container_id)
            if pid:
                try:
                    run_in_netns(pid, _delete_table)
                except NetnsError as exc:
                    self._records[container_id] = record
                    raise QuarantineError(str(exc)) from exc
            self._save()
            log.warning("released container %s from quarantine", record.name or container_id[:12])
            return True

    def is_quarantined(self, container_id: str) -> bool:
        with self._lock:
            return container_id in self._records

    def records(self) -> list[QuarantineRecord]:
        with self._lock:
            return sorted(self._records.values(), key=lambda r: r.since)

    def counters(self, container_id: str) -> DropCounters | None:
        pid = self.pid_of(container_id)
        if not pid or not self.is_quarantined(container_id):
            return None
        return run_in_netns(pid, _read_counters)

    def reconcile(self) -> list[str]:
        """At start and periodically: re-apply tables lost to a container restart (new
        namespace), forget containers that no longer exist. Returns what it did."""
        done: list[str] = []
        with self._lock:
            for cid, record in list(self._records.items()):
                if not self.exists(cid):
                    del self._records[cid]
                    done.append(f"forgot {record.name or cid[:12]}: container is gone")
                    continue
                pid = self.pid_of(cid)
                if not pid:
                    continue  # stopped: re-applied when it runs again
                present = run_in_netns(pid, _read_counters) is not None
                if not present or netns_inode(pid) != record.netns_inode:
                    batch = table_commands(record.allow)
                    run_in_netns(pid, lambda batch=batch: _apply_batch(batch))
                    self._records[cid] = QuarantineRecord(
                        cid, record.name, record.since, record.reason, netns_inode(pid),
                        record.allow)
                    done.append(f"re-applied quarantine to {record.name or cid[:12]}")
            self._save()
        for line in done:
            log.warning("quarantine reconcile: %s", line)
        return done

    # ------------------------------------------------------------------ persistence

    def _load(self) -> dict[str, QuarantineRecord]:
        try:
            raw = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.error("quarantine state %s unreadable (%s); starting empty", self.state_file, exc)
            return {}
        out: dict[str, QuarantineRecord] = {}
        for item in raw.get("quarantined", []):
            try:
                out[item["container_id"]] = QuarantineRecord(
                    item["container_id"], item.get("name"), float(item["since"]),
                    item.get("reason", ""), int(item.get("netns_inode", 0)),
                    tuple(item.get("allow", ())))
            except (KeyError, TypeError, ValueError) as exc:
                log.error("skipping malformed quarantine record %r: %s", item, exc)
        return out

    def _save(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        payload = {"quarantined": [asdict(r) for r in self._records.values()]}
        fd, tmp = tempfile.mkstemp(dir=self.state_dir, prefix=".quarantine.")
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.state_file)
