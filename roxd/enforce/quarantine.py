"""Network quarantine: a dedicated nftables table inside a container's network namespace.

The table (`inet roxd_quarantine`) has input and output base chains with policy drop that
accept only loopback and the configured allowlist, and count what they drop. It lives in the
container's own namespace, so the host's ruleset and the runtime's chains are never touched;
deleting the table is the whole release. State is persisted in the state dir and reconciled
at start and every `reconcile_interval_s`: quarantined containers stay quarantined across roxd
restarts, containers that disappeared are forgotten.

The namespace is found from the container's processes (its cgroup's init process,
roxd.enforce.cgroups), whatever the runtime; the runtime's API is only a fallback. Containers
that share the namespace (a Kubernetes pod's containers and its sandbox, docker
`--network container:X`) cannot be told apart by a table in it: they are quarantined together,
each gets a record, and the result names them.

Tampering: a container with CAP_NET_ADMIN can delete or change the table from inside. The
periodic check compares the table's content (chains, hooks, policies, every rule, counters
aside) with the same batch applied in a scratch namespace of roxd's own, re-applies it when
they differ and reports the tampering (roxd.enforce.tamper turns it into an alert).

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

from roxd.enforce.cgroups import ContainerCgroups
from roxd.enforce.netns import (
    NetnsError,
    netns_inode,
    run_in_netns,
    run_in_scratch_netns,
    shares_host_netns,
)
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
    # Other containers in the same network namespace, quarantined with this one (ids)
    shared_with: tuple[str, ...] = ()


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
        # iif/oif: the loopback device by index (resolved when the rule loads), not by name:
        # a container with NET_ADMIN could rename its eth0 to "lo" and pass an iifname match
        ("input", "input", "iif", "saddr"),
        ("output", "output", "oif", "daddr"),
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




def _list_table() -> list[dict[str, Any]] | None:
    """The table's objects as nftables lists them, None when there is no such table."""
    rc, out, _err = _nft().cmd(f"list table {FAMILY} {TABLE}")
    if rc != 0:
        return None
    return [item for item in json.loads(out).get("nftables", []) if "metainfo" not in item]


def canonical(listing: list[dict[str, Any]]) -> list[Any]:
    """A table listing without what changes on its own: handles and counter values."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: (None if k == "counter" else strip(v)) for k, v in sorted(value.items())
                    if k != "handle"}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return [strip(item) for item in listing]


def describe_difference(expected: list[Any], found: list[Any] | None) -> str:
    """What a tampered table looks like, in a few words, for the alert."""
    if found is None:
        return "the quarantine table was deleted"
    want_chains = {c["chain"]["name"]: c["chain"] for c in expected if "chain" in c}
    have_chains = {c["chain"]["name"]: c["chain"] for c in found if "chain" in c}
    problems = []
    for name, chain in want_chains.items():
        have = have_chains.get(name)
        if have is None:
            problems.append(f"chain {name} deleted")
        elif have.get("policy") != chain.get("policy"):
            problems.append(f"chain {name} policy {have.get('policy')}")
        elif have != chain:
            problems.append(f"chain {name} changed")
    problems += [f"chain {n} added" for n in have_chains if n not in want_chains]
    want_rules = [r for r in expected if "rule" in r]
    have_rules = [r for r in found if "rule" in r]
    if want_rules != have_rules:
        problems.append(f"rules changed ({len(have_rules)} rules, {len(want_rules)} expected)")
    return "; ".join(problems) or "the table's content changed"


@dataclass(frozen=True)
class Tampering:
    """A quarantine table found changed (or gone) in a namespace whose container did not
    change, and re-applied."""

    record: QuarantineRecord
    found: str  # what was wrong ("the quarantine table was deleted", "chain input policy accept")
    pid: int  # the container's process whose namespace was checked
    reapplied: bool
    error: str | None = None  # why the re-apply failed, when it did


PidOf = Callable[[str], "int | None"]


@dataclass
class Quarantine:
    """Quarantine bookkeeping for one host. Thread-safe (API and event loop both call it).

    `pid_of` / `exists`: the runtime's answers (init pid, does it still know the container);
    `cgroups`: the container's processes from the cgroup hierarchy, asked first, so a
    container of any runtime (or one the configured runtime does not know) is found.
    `on_tamper`: told of every tampered table the periodic check re-applied."""

    state_dir: Path
    pid_of: PidOf  # container id -> pid of its init process, None when not running
    exists: Callable[[str], bool]  # container id -> does the runtime still know it
    allow: tuple[str, ...] = ()
    cgroups: ContainerCgroups | None = None
    on_tamper: Callable[[Tampering], None] | None = None
    _records: dict[str, QuarantineRecord] = field(default_factory=dict)
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _expected: dict[tuple[str, ...], list[Any]] = field(default_factory=dict)

    @classmethod
    def for_runtime(cls, state_dir: Path, runtime: ContainerRuntime,
                    allow: tuple[str, ...] = (),
                    cgroups: ContainerCgroups | None = None) -> Quarantine:
        """Quarantine whose namespaces come from the cgroup hierarchy first, then from the
        shared runtime (which may be NoRuntime: the cgroups alone then)."""
        exists = runtime.exists
        if not runtime.configured and cgroups is not None:
            # no runtime to ask: a container without a cgroup is gone (on Kubernetes a
            # restarted container is a new one; its pod's sandbox keeps the namespace and
            # its own record)
            def exists(_container_id: str) -> bool:
                return False
        return cls(state_dir, pid_of=runtime.pid_of, exists=exists, allow=allow,
                   cgroups=cgroups)

    def __post_init__(self) -> None:
        for a in self.allow:  # fail at start, not at the first quarantine
            ipaddress.ip_network(a, strict=False)
        self._records = self._load()

    @property
    def state_file(self) -> Path:
        return self.state_dir / "quarantine.json"

    # ------------------------------------------------------------------ lookups

    def _pid(self, container_id: str) -> int | None:
        """A process in the container's network namespace: its cgroup's init, else the
        runtime's init pid."""
        if self.cgroups is not None:
            pid = self.cgroups.init_pid(container_id)
            if pid:
                return pid
        try:
            return self.pid_of(container_id)
        except Exception as exc:  # a runtime down must not stop a cgroup-found quarantine
            log.debug("runtime pid lookup of %s failed: %s", container_id[:12], exc)
            return None

    def _exists(self, container_id: str) -> bool:
        """A container with a cgroup exists whatever the runtime says; without one, the
        runtime decides (a stopped Docker container keeps its record; NoRuntime cannot tell
        and keeps it too)."""
        if self.cgroups is not None and self.cgroups.exists(container_id):
            return True
        return self.exists(container_id)

    def _sharing(self, container_id: str, inode: int) -> tuple[str, ...]:
        if self.cgroups is None:
            return ()
        return tuple(c for c in self.cgroups.sharing_netns(inode) if c != container_id)

    # ------------------------------------------------------------------ operations

    def isolate(self, container_id: str, name: str | None, reason: str) -> QuarantineRecord:
        """Quarantine the container's network namespace. Containers sharing it are recorded
        as quarantined with it (`record.shared_with`)."""
        with self._lock:
            pid = self._pid(container_id)
            if not pid:
                raise QuarantineError(f"container {name or container_id[:12]} is not running")
            if shares_host_netns(pid):
                raise QuarantineError(
                    f"container {name or container_id[:12]} shares the host's network "
                    "namespace: an nftables table there would cut off the host itself")
            try:
                inode = netns_inode(pid)
                run_in_netns(pid, lambda: _apply_batch(table_commands(self.allow)))
            except (NetnsError, FileNotFoundError, ProcessLookupError) as exc:
                raise QuarantineError(f"network namespace of container "
                                      f"{name or container_id[:12]}: {exc}") from exc
            shared = self._sharing(container_id, inode)
            now = time.time()
            record = QuarantineRecord(container_id, name, now, reason, inode, self.allow,
                                      shared)
            self._records[container_id] = record
            label = name or container_id[:12]
            for other in shared:
                if other in self._records:
                    continue
                group = tuple(c for c in (container_id, *shared) if c != other)
                self._records[other] = QuarantineRecord(
                    other, None, now, f"shares the network namespace of {label}: {reason}",
                    inode, self.allow, group)
            self._save()
            log.warning("quarantined container %s (%s): %s%s", label, container_id[:12], reason,
                        f"; with {len(shared)} sharing its network namespace: "
                        f"{', '.join(c[:12] for c in shared)}" if shared else "")
            return record

    def release(self, container_id: str) -> bool:
        """Delete the table; True when the container was quarantined. Every container that
        shares its network namespace is released with it (one table serves them all)."""
        with self._lock:
            record = self._records.get(container_id)
            if record is None:
                return False
            group = [cid for cid, r in self._records.items()
                     if cid == container_id or (r.netns_inode == record.netns_inode
                                               and record.netns_inode)]
            pid = next((p for p in map(self._pid, group) if p), None)
            if pid:
                try:
                    run_in_netns(pid, _delete_table)
                except (NetnsError, FileNotFoundError, ProcessLookupError) as exc:
                    raise QuarantineError(str(exc)) from exc
            for cid in group:
                self._records.pop(cid, None)
            self._save()
            others = [c[:12] for c in group if c != container_id]
            log.warning("released container %s from quarantine%s",
                        record.name or container_id[:12],
                        f" with {', '.join(others)} (same network namespace)" if others else "")
            return True

    def release_all(self) -> list[str]:
        """Delete every recorded quarantine table and empty the state. For package removal,
        while the daemon is stopped. Returns what it did, a line per namespace."""
        done: list[str] = []
        with self._lock:
            seen: set[int] = set()
            for cid in list(self._records):
                pid = self._pid(cid)
                if not pid:
                    continue  # not running: its namespace, and the table with it, is gone
                try:
                    inode = netns_inode(pid)
                    if inode in seen:
                        continue
                    seen.add(inode)
                    run_in_netns(pid, _delete_table)
                    done.append(f"released {cid[:12]}")
                except (OSError, QuarantineError) as exc:
                    done.append(f"could not release {cid[:12]}: {exc}")
            self._records.clear()
            self._save()
        return done

    def is_quarantined(self, container_id: str) -> bool:
        with self._lock:
            return container_id in self._records

    def records(self) -> list[QuarantineRecord]:
        with self._lock:
            return sorted(self._records.values(), key=lambda r: r.since)

    def counters(self, container_id: str) -> DropCounters | None:
        pid = self._pid(container_id)
        if not pid or not self.is_quarantined(container_id):
            return None
        return run_in_netns(pid, _read_counters)

    def expected_table(self, allow: tuple[str, ...]) -> list[Any]:
        """The canonical listing of a correct table: the batch applied in a scratch namespace
        of roxd's own (so nftables' own normal form, whatever its version), cached."""
        cached = self._expected.get(allow)
        if cached is None:
            def build() -> list[Any]:
                _apply_batch(table_commands(allow))
                return canonical(_list_table() or [])

            cached = self._expected[allow] = run_in_scratch_netns(build)
        return cached

    def check_table(self, pid: int, allow: tuple[str, ...]) -> str | None:
        """None when the table in pid's namespace is exactly roxd's; else what is wrong."""
        expected = self.expected_table(allow)
        listing = run_in_netns(pid, _list_table)
        found = canonical(listing) if listing is not None else None
        if found == expected:
            return None
        return describe_difference(expected, found)

    def reconcile(self) -> list[str]:
        """At start and periodically: forget containers that no longer exist, re-apply tables
        lost to a container restart (new namespace), and verify every table's content: one
        deleted or changed from inside is re-applied and reported to `on_tamper`. Returns
        what it did."""
        done: list[str] = []
        tampered: list[Tampering] = []
        with self._lock:
            checked: dict[int, bool] = {}  # namespace inode -> table verified or re-applied
            for cid, record in list(self._records.items()):
                if not self._exists(cid):
                    del self._records[cid]
                    done.append(f"forgot {record.name or cid[:12]}: container is gone")
                    continue
                pid = self._pid(cid)
                if not pid:
                    continue  # stopped: re-applied when it runs again
                label = record.name or cid[:12]
                try:
                    inode = netns_inode(pid)
                except OSError:
                    continue  # exited meanwhile: next round
                if inode in checked:
                    if inode != record.netns_inode:
                        self._records[cid] = _moved(record, inode)
                    continue
                checked[inode] = True
                batch = table_commands(record.allow)
                try:
                    if inode != record.netns_inode:
                        # a new namespace (the container restarted): not tampering
                        run_in_netns(pid, lambda batch=batch: _apply_batch(batch))
                        self._records[cid] = _moved(record, inode)
                        done.append(f"re-applied quarantine to {label}")
                        continue
                    problem = self.check_table(pid, record.allow)
                except (OSError, QuarantineError) as exc:
                    # this container exited mid-check, or nftables refused: the others are
                    # still checked, and the next round tries this one again
                    done.append(f"could not check {label}: {exc}")
                    continue
                if problem is None:
                    continue
                error = None
                try:
                    run_in_netns(pid, lambda batch=batch: _apply_batch(batch))
                except (OSError, QuarantineError) as exc:
                    error = str(exc)
                tampered.append(Tampering(record, problem, pid, error is None, error))
                done.append(f"quarantine of {label} tampered with ({problem}): "
                            + ("re-applied" if error is None else f"re-apply failed: {error}"))
            self._save()
        for line in done:
            log.warning("quarantine reconcile: %s", line)
        if self.on_tamper is not None:
            for t in tampered:
                try:
                    self.on_tamper(t)
                except Exception:  # the alert path must not stop the check
                    log.exception("quarantine tamper report failed")
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
                    tuple(item.get("allow", ())), tuple(item.get("shared_with", ())))
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


def _moved(record: QuarantineRecord, inode: int) -> QuarantineRecord:
    return QuarantineRecord(record.container_id, record.name, record.since, record.reason,
                            inode, record.allow, record.shared_with)
