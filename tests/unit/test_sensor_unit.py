"""Pure-Python parts of the sensor: header resolution, record decoding, the kill table."""

from __future__ import annotations

import ctypes as ct
import socket
from dataclasses import dataclass
from pathlib import Path

import pytest

from roxd.errors import KernelHeadersError
from roxd.model import ConnectEvent, Container, ExecEvent, ExitEvent, FileWatchSet
from roxd.policy.file_watch import (
    GATE_HEAD_OFF,
    GATE_TAIL_OFF,
    FileWatchEntries,
    file_watch_entries,
    gate_passes,
)
from roxd.policy.kill_tables import (
    RuleSlots,
    build_connect_kill_table,
    build_exec_kill_table,
    split_verdict,
)
from roxd.rules import load_rule_set
from roxd.sensor import records
from roxd.sensor.bitwords import has_bit, merged, words_of, write_words
from roxd.sensor.headers import resolve_headers

pytestmark = pytest.mark.unit


def _debian_pair(src: Path, version: str = "6.1.0-56") -> None:
    common = src / f"linux-headers-{version}-common"
    flavour = src / f"linux-headers-{version}-amd64"
    (common / "include/linux").mkdir(parents=True)
    (common / "include/linux/kconfig.h").write_text("/* kconfig */\n")
    (common / "arch/x86/include/asm").mkdir(parents=True)
    (flavour / "include/generated").mkdir(parents=True)
    (flavour / "include/generated/autoconf.h").write_text("/* autoconf */\n")
    (flavour / "arch/x86/include/generated").mkdir(parents=True)
    (flavour / "Makefile").write_text(f"include {common}/Makefile\n")


def test_headers_prefers_running_kernel_build(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("BCC_KERNEL_SOURCE", raising=False)
    (tmp_path / "modules/6.18.1/build/include").mkdir(parents=True)
    tree = resolve_headers(tmp_path / "cache", release="6.18.1",
                           modules_root=tmp_path / "modules", kheaders=tmp_path / "none",
                           src_root=tmp_path / "src")
    assert tree.kind == "running-kernel"
    assert tree.env == {}


def test_headers_assembles_debian_split_tree(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("BCC_KERNEL_SOURCE", raising=False)
    src = tmp_path / "src"
    _debian_pair(src, "6.1.0-56")
    _debian_pair(src, "6.1.0-9")  # older: must not be chosen
    tree = resolve_headers(tmp_path / "cache", release="6.18.1", arch="x86_64",
                           modules_root=tmp_path / "modules", kheaders=tmp_path / "none",
                           src_root=src)
    assert tree.kind == "installed-tree"
    assert tree.release == "6.1.0-56-amd64"
    merged = Path(tree.env["BCC_KERNEL_SOURCE"])
    assert (merged / "include/linux/kconfig.h").exists()
    assert (merged / "include/generated/autoconf.h").exists()
    assert (merged / "arch/x86/include/asm").is_dir()
    assert (merged / "arch/x86/include/generated").is_dir()
    assert not tree.matches_running_kernel
    # idempotent: a second resolution reuses the same tree
    again = resolve_headers(tmp_path / "cache", release="6.18.1", arch="x86_64",
                            modules_root=tmp_path / "modules", kheaders=tmp_path / "none",
                            src_root=src)
    assert again.env == tree.env


def test_no_headers_names_what_to_install(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("BCC_KERNEL_SOURCE", raising=False)
    with pytest.raises(KernelHeadersError) as err:
        resolve_headers(tmp_path / "cache", release="6.18.1",
                        modules_root=tmp_path / "modules", kheaders=tmp_path / "none",
                        src_root=tmp_path / "src")
    assert "linux-headers-6.18.1" in str(err.value)
    assert "kernel-devel" in str(err.value)


def test_fnv1a_known_vector() -> None:
    # FNV-1a 64 of "a" from the reference test vectors
    assert records.fnv1a(b"a") == 0xAF63DC4C8601EC8C
    assert records.fnv1a(b"") == records.FNV_OFFSET


def _header(rtype: int) -> records.EventHeader:
    h = records.EventHeader()
    h.type, h.pid, h.tid, h.ppid, h.uid, h.gid = rtype, 42, 43, 1, 1000, 1000
    h.cgroup_id, h.ktime_ns, h.comm = 777, 5_000, b"curl"
    return h


def test_decode_exec_variable_length() -> None:
    rec = records.ExecRecord()
    rec.h = _header(records.REC_EXEC)
    rec.filename = b"/usr/bin/curl"
    args = b"curl\0-s\0http://x\0"
    ct.memmove(ct.addressof(rec) + records.ExecRecord.args.offset, args, len(args))
    rec.argc, rec.args_len, rec.args_truncated, rec.args_captured = 3, len(args), 1, 1
    rec.folded = 7
    raw = bytes(rec)[: records.ExecRecord.args.offset + len(args)]
    decoded = records.decode(raw, clock_offset_ns=1_000_000_000)
    ev = decoded.event
    assert isinstance(ev, ExecEvent)
    assert ev.args == ("curl", "-s", "http://x")
    assert ev.args_truncated and ev.folded == 7
    assert ev.time_ns == 1_000_005_000
    assert ev.filename == "/usr/bin/curl" and ev.comm == "curl"
    assert decoded.fold_key == bytes(rec.key)
    assert not ev.args_unreadable
    rec.args_truncated = records.ARGS_CUT | records.ARGS_UNREADABLE
    ev = records.decode(bytes(rec), 0).event
    assert ev.args_truncated and ev.args_unreadable


def test_decode_connect_ipv4_and_ipv6() -> None:
    rec = records.ConnectRecord()
    rec.h = _header(records.REC_CONNECT)
    rec.family, rec.dport, rec.ret = socket.AF_INET, 443, -111
    ct.memmove(rec.daddr, b"\0" * 10 + b"\xff\xff" + socket.inet_aton("10.1.2.3"), 16)
    ev = records.decode(bytes(rec), 0).event
    assert isinstance(ev, ConnectEvent)
    assert (ev.family, ev.daddr, ev.dport, ev.errno, ev.result.value) == (
        "ipv4", "10.1.2.3", 443, 111, "refused")
    rec.family, rec.ret = socket.AF_INET6, -115
    ct.memmove(rec.daddr, socket.inet_pton(socket.AF_INET6, "fd00::1"), 16)
    ev = records.decode(bytes(rec), 0).event
    assert (ev.family, ev.daddr, ev.result.value) == ("ipv6", "fd00::1", "in_progress")


def test_decode_exit_and_bad_records() -> None:
    rec = records.ExitRecord()
    rec.h = _header(records.REC_EXIT)
    rec.exit_code, rec.has_exit_code = 3, 1
    ev = records.decode(bytes(rec), 0).event
    assert isinstance(ev, ExitEvent) and ev.exit_code == 3
    rec.has_exit_code = 0
    assert records.decode(bytes(rec), 0).event.exit_code is None
    with pytest.raises(records.DecodeError):
        records.decode(b"\x01\x00", 0)
    bad = _header(99)
    with pytest.raises(records.DecodeError):
        records.decode(bytes(bad), 0)


@dataclass(frozen=True)
class _Scope:
    host: bool
    images: tuple[str, ...] | None  # None = every container

    def matches_container(self, c: Container | None) -> bool:
        if c is None:
            return self.host
        return self.images is None or c.image in self.images

    def matches_any_container(self) -> bool:
        return self.images is None


@dataclass(frozen=True)
class _Spec:
    rule_id: str
    exe_paths: frozenset[str]
    exe_basenames: frozenset[str]
    scope: _Scope


def test_kill_table_scopes() -> None:
    a = Container(id="a" * 64, runtime="docker", image="web:1")
    b = Container(id="b" * 64, runtime="docker", image="db:1")
    specs = [
        _Spec("r.everywhere", frozenset({"/usr/bin/xmrig"}), frozenset(), _Scope(True, None)),
        _Spec("r.web-only", frozenset(), frozenset({"nc"}), _Scope(False, ("web:1",))),
    ]
    slots = RuleSlots.number(7, [s.rule_id for s in specs])
    table = build_exec_kill_table(specs, [(100, a), (200, b)], slots, host=True)
    xmrig, nc = records.fnv1a(b"/usr/bin/xmrig"), records.fnv1a(b"nc")
    everywhere, web_only = slots.verdict_of("r.everywhere"), slots.verdict_of("r.web-only")
    assert split_verdict(everywhere) == (7, 1) and split_verdict(web_only) == (7, 2)
    assert table.entries[(records.SCOPE_HOST, xmrig)] == everywhere
    assert table.entries[(records.SCOPE_ANY_CONTAINER, xmrig)] == everywhere
    assert table.entries[(100, nc)] == web_only
    assert (200, nc) not in table.entries
    assert (records.SCOPE_HOST, nc) not in table.entries
    # the kernel's lookup order, in Python: the cgroup's own entries, then the scope sentinel
    assert table.lookup(100, True, "/bin/nc") == web_only
    assert table.lookup(200, True, "/bin/nc") == 0
    assert table.lookup(300, False, "/usr/bin/xmrig") == everywhere
    assert table.lookup(300, False, "/opt/xmrig") == 0
    # host kills off (the default): no host entry, the containers' entries unchanged
    off = build_exec_kill_table(specs, [(100, a), (200, b)], slots)
    assert set(off.entries) == set(table.entries) - {(records.SCOPE_HOST, xmrig)}
    assert off.lookup(300, False, "/usr/bin/xmrig") == 0


@dataclass(frozen=True)
class _ConnectSpec:
    rule_id: str
    ports: frozenset[int] | None
    networks: tuple | None
    scope: _Scope


def test_connect_kill_table_keys() -> None:
    import ipaddress
    import struct

    web = Container(id="a" * 64, runtime="docker", image="web:1")
    specs = [
        _ConnectSpec("r.metadata", None, (ipaddress.ip_network("169.254.169.254/32"),),
                     _Scope(False, None)),
        _ConnectSpec("r.docker-api", frozenset({2375}), None, _Scope(False, ("web:1",))),
    ]
    slots = RuleSlots.number(1, [s.rule_id for s in specs])
    table = build_connect_kill_table(specs, [(100, web)], slots)
    scope_any = struct.pack("<Q", records.SCOPE_ANY_CONTAINER)
    mapped = b"\0" * 10 + b"\xff\xff" + bytes([169, 254, 169, 254])
    assert table.any_port == {(64 + 128, scope_any + mapped): slots.verdict_of("r.metadata")}
    # a port rule with no address: the whole IPv6 space (IPv4 is inside it, v4-mapped)
    key = (64 + 16 + 0, struct.pack("<Q", 100) + struct.pack(">H", 2375) + bytes(16))
    assert table.by_port == {key: slots.verdict_of("r.docker-api")}


# ---- file watch gates (bpf/file.bpf.c skips the trie and the basename hash behind them)

def _pack_watch_entries() -> tuple[FileWatchSet, FileWatchEntries]:
    watches = load_rule_set([Path(__file__).parents[2] / "rules"]).file_watch_set()
    return watches, file_watch_entries(watches)


def test_file_gates_pass_everything_the_shipped_pack_watches() -> None:
    watches, entries = _pack_watch_entries()
    assert entries.gates_off == 0 and entries.gate_words
    for path in watches.exact:
        head, tail = gate_passes(entries, path.encode())
        assert head and tail, path
        # relative and oddly spelled forms reach the basename hash
        assert gate_passes(entries, b"../" + path.rpartition("/")[2].encode())[1], path
    for prefix in watches.prefixes:
        assert gate_passes(entries, (prefix + "x/y").encode())[0], prefix
    for name in watches.basenames:
        assert gate_passes(entries, f"/home/u/{name}".encode())[1], name
        assert gate_passes(entries, name.encode())[1], name


def test_file_gates_stop_ordinary_paths_before_any_lookup() -> None:
    _, entries = _pack_watch_entries()
    for path in (b"/usr/lib/x86_64-linux-gnu/libc.so.6", b"/tmp/build/out.o", b"/dev/null",
                 b"/proc/self/status", b"/bench/openloop", b"data.yaml"):
        assert gate_passes(entries, path) == (False, False), path
    # a relative name ending like a watched basename passes the tail gate to the in-kernel
    # hash lookup (no trip to userspace): `*.json` ends like `environ`
    # (privilege_escalation.process-environment-read), a known, bounded cost
    assert gate_passes(entries, b"data.json") == (False, True)


def test_file_gates_switch_off_when_an_entry_is_too_short_to_gate_on() -> None:
    entries = file_watch_entries(FileWatchSet(prefixes={"/e": frozenset({"write"})},
                                              basenames={"x": frozenset({"read"})}))
    assert entries.gates_off == GATE_HEAD_OFF | GATE_TAIL_OFF
    assert gate_passes(entries, b"/anything/at/all") == (True, True)
    full = file_watch_entries(FileWatchSet(prefixes={"/etc/": frozenset({"write"})}))
    assert full.gates_off == 0
    # no basenames at all: the tail gate has no bits and lets nothing through to the hash
    assert gate_passes(full, b"/etc/hosts") == (True, False)


def test_bit_words_match_the_bpf_layout_and_write_only_what_changed() -> None:
    words = words_of([0, 63, 64, 4095])
    assert words == {0: 1 | (1 << 63), 1: 1, 63: 1 << 63}
    assert has_bit(words, 64) and not has_bit(words, 65)
    assert merged({0: 1}, {0: 2, 5: 4}) == {0: 3, 5: 4}

    class Array(dict):  # what bcc's table[ct.c_int(i)] = ct.c_uint64(w) does, recorded
        def __setitem__(self, key: ct.c_int, value: ct.c_uint64) -> None:
            super().__setitem__(key.value, value.value)

    table = Array()
    write_words(table, {0: 3, 2: 8}, {0: 3, 1: 5})
    assert table == {1: 0, 2: 8}  # word 0 unchanged: not written; word 1 cleared
