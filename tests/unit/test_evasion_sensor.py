"""The sensor's evasion additions without a kernel: UDP datagram records (via=sendmsg), the
io_uring setup's arguments, optional tracepoints outside syscalls:, the cgroup2 root."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from roxd.errors import SensorError
from roxd.model import ConnectEvent, SyscallEvent
from roxd.sensor import records
from roxd.sensor.decoders import decode_syscall_args
from roxd.sensor.loader import optional_tracepoints
from roxd.sensor.udp_send import cgroup2_root

pytestmark = pytest.mark.unit


def _connect_record(via: int, family: int, addr16: bytes, port: int,
                    folded: int = 0) -> bytes:
    rec = records.ConnectRecord()
    rec.h.type = records.REC_CONNECT
    rec.h.pid = rec.h.tid = 42
    rec.h.cgroup_id = 7
    rec.family = family
    rec.dport = port
    rec.daddr[:] = list(addr16)
    rec.sock_type = int(socket.SOCK_DGRAM)
    rec.via = via
    rec.folded = folded
    rec.key.pid = 42
    return bytes(rec)


MAPPED_LOOPBACK = bytes(10) + b"\xff\xff" + bytes([127, 0, 0, 1])


def test_a_datagram_record_is_a_udp_connect_event_via_sendmsg_without_a_fold_key() -> None:
    decoded = records.decode(_connect_record(records.VIA_SENDMSG, socket.AF_INET,
                                             MAPPED_LOOPBACK, 3333, folded=4999), 0)
    ev = decoded.event
    assert isinstance(ev, ConnectEvent)
    assert (ev.via, ev.protocol, ev.family, ev.daddr, ev.dport) == (
        "sendmsg", "udp", "ipv4", "127.0.0.1", 3333)
    assert ev.folded == 4999 and ev.errno == 0
    assert decoded.fold_key is None  # the kernel aggregates these; never marked quiet


def test_a_connect_record_keeps_its_fold_key_and_says_connect() -> None:
    decoded = records.decode(_connect_record(records.VIA_CONNECT, socket.AF_INET6,
                                             socket.inet_pton(socket.AF_INET6, "::1"), 53), 0)
    assert decoded.event.via == "connect"
    assert decoded.event.family == "ipv6" and decoded.event.daddr == "::1"
    assert decoded.fold_key is not None


def test_io_uring_setup_arguments_are_named() -> None:
    args = decode_syscall_args("io_uring_setup", (0x2 | 0x1000, 4, 8, 0), ("", "", ""), 3)
    assert args == {"sq_entries": 4, "cq_entries": 8,
                    "flags": "IORING_SETUP_SQPOLL|IORING_SETUP_SINGLE_ISSUER"}
    assert "io_uring_setup" in records.SYSCALL_IDS
    assert isinstance(SyscallEvent(1, 1, 0, 7, "x", "io_uring_setup", 0, args).args, dict)


def test_io_uring_submissions_name_their_opcode_and_count() -> None:
    args = decode_syscall_args("io_uring_submit", (16, 0, 41, 1), ("", "", ""), 0)
    assert args == {"opcode": "IORING_OP_CONNECT", "requests": 42, "sq_thread": True,
                    "flags": "IORING_OP_CONNECT"}
    assert decode_syscall_args("io_uring_submit", (250, 0, 0, 0), ("", "", ""), 0)[
        "opcode"] == "IORING_OP_250"


def test_optional_tracepoints_outside_syscalls_use_category_and_event(tmp_path: Path) -> None:
    (tmp_path / "events/io_uring/io_uring_create").mkdir(parents=True)
    (tmp_path / "events/syscalls/sys_enter_fchmodat2").mkdir(parents=True)
    source = ("#ifdef HAVE_TP_io_uring__io_uring_create\n#endif\n"
              "#ifdef HAVE_TP_sys_enter_fchmodat2\n#endif\n"
              "#ifdef HAVE_TP_sys_enter_init_module\n#endif\n")
    assert optional_tracepoints(source, tmp_path) == [
        "-DHAVE_TP_io_uring__io_uring_create", "-DHAVE_TP_sys_enter_fchmodat2"]


def test_cgroup2_root_is_found_on_hybrid_hosts_and_its_absence_is_named(tmp_path: Path) -> None:
    mi = tmp_path / "mountinfo"
    mi.write_text(
        "30 25 0:26 / /sys/fs/cgroup rw,relatime shared:9 - tmpfs tmpfs rw\n"
        "31 30 0:27 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n"
        "40 30 0:35 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n")
    assert cgroup2_root(str(mi)) == Path("/sys/fs/cgroup/unified")
    mi.write_text("31 30 0:27 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n")
    with pytest.raises(SensorError, match="no cgroup2 filesystem"):
        cgroup2_root(str(mi))


VIA_RULE = """
[[rule]]
id = "objectives.test-udp-send-to-dns"
name = "UDP datagram sent to port 53 without connect"
description = "Test rule: the via field tells a datagram from a connect."
phase = "objectives"
severity = "notice"
mitre = ["T1071.004"]
event = "connect"
actions = ["alert"]
[rule.when]
dport = 53
via = "sendmsg"
"""


def test_rules_can_tell_a_datagram_from_a_connect_by_via(tmp_path: Path) -> None:
    from roxd.model import EnrichedEvent, Process
    from roxd.rules import load_rule_set

    (tmp_path / "via.toml").write_text(VIA_RULE)
    rule_set = load_rule_set([tmp_path])

    def event(via: str) -> EnrichedEvent:
        ev = ConnectEvent(1, 9, 9, 0, 7, "dig", "ipv4", "10.0.0.2", 53, 0, protocol="udp",
                          via=via)
        process = Process(pid=9, ppid=1, uid=0, exe="/usr/bin/dig", comm="dig", args=("dig",),
                          cgroup_id=7)
        return EnrichedEvent(ev, None, process)

    assert [m.rule.id for m in rule_set.match(event("sendmsg"))] == [
        "objectives.test-udp-send-to-dns"]
    assert rule_set.match(event("connect")) == []
    assert event("sendmsg").to_dict()["connect"]["via"] == "sendmsg"
