"""Each CIS check's decision on recorded data: inspect documents and `docker info` recorded
from the real engine of this project's test host (tests/unit/data/posture/, made from the
offline busybox image), dockerd argv and daemon.json, file modes and owners, audit rules."""

from __future__ import annotations

import copy
import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from roxd.inventory import container_record
from roxd.posture import CHECKS, Result, run_checks
from roxd.posture.facts import (
    AUDIT_FILES,
    AUDIT_UNREADABLE,
    BENCH_FILES,
    NOT_GIVEN_LISTENERS,
    AuditRules,
    ContainerFacts,
    DaemonOptions,
    FileFact,
    ListeningSource,
    PostureFacts,
    with_listening,
)
from roxd.posture.formats import docker_bench_document
from roxd.posture.model import CONCERNS
from roxd.posture.service import PostureService

pytestmark = pytest.mark.unit
DATA = Path(__file__).parent / "data" / "posture"


def recorded(name: str) -> dict[str, Any]:
    return json.loads((DATA / f"{name}.json").read_text())


def container(name: str, processes: tuple[str, ...] | None = ("sh", "sleep"),
              **changes: Any) -> ContainerFacts:
    doc = recorded(name)
    inspect = copy.deepcopy(doc["inspect"])
    for path, value in changes.items():  # "HostConfig__Privileged": True
        node = inspect
        keys = path.split("__")
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value
    return ContainerFacts(inspect, tuple(doc["execs"]), processes)


INFO = json.loads((DATA / "info.json").read_text())
ROOT_FILE = dict(exists=True, uid=0, gid=0, user="root", group="root")


def facts(*containers: ContainerFacts, info: dict[str, Any] | None = INFO,
          argv: tuple[str, ...] | None = ("dockerd", "--host=unix:///var/run/docker.sock"),
          config: dict[str, Any] | None = None, files: dict[str, FileFact] | None = None,
          audit: AuditRules | None = None, units: dict[str, str] | None = None
          ) -> PostureFacts:
    return PostureFacts(
        info=info, engine_error="" if info is not None else "docker not reachable: refused",
        daemon=DaemonOptions(argv, config or {}, "/etc/docker/daemon.json", config is not None,
                             binary="/usr/sbin/dockerd" if argv else ""),
        files={**{p: FileFact(p, False) for p in BENCH_FILES}, **(files or {})},
        audit=audit or AuditRules(None, "", "auditd is not installed"),
        docker_group=(), mountpoints=frozenset({"/", "/var/lib/docker"}),
        containers=tuple(containers), unit_files=units or {})


def result(f: PostureFacts, cis_id: str) -> tuple[Result, str, tuple[str, ...]]:
    check = next(c for c in CHECKS if c.id == cis_id)
    o = check.decide(f)
    return o.result, o.reason, o.items


# ---------------------------------------------------------------------------- the set


def test_the_check_set() -> None:
    ids = [c.id for c in CHECKS]
    assert len(ids) >= 60 and len(set(ids)) == len(ids)
    assert {c.section for c in CHECKS} == {"1", "2", "3", "5"}
    for c in CHECKS:
        assert c.title and c.remediation and c.concerns in CONCERNS, c.id


def test_nothing_passes_by_absence() -> None:
    """No engine, no dockerd, no files, no audit rules: no check may PASS."""
    empty = facts(info=None, argv=None)
    passed = [f.check.id for f in run_checks(empty).findings if f.outcome.result is Result.PASS]
    assert passed == []
    for f in run_checks(empty).findings:
        assert f.outcome.reason, f.check.id


# ---------------------------------------------------------------------------- section 5


@pytest.mark.parametrize(("name", "warns", "passes"), [
    ("plain", {"5.11", "5.12", "5.13", "5.26", "5.27", "5.29"},
     {"5.4", "5.5", "5.6", "5.8", "5.10", "5.14", "5.15", "5.16", "5.17", "5.20", "5.21",
      "5.22", "5.23", "5.25", "5.31", "5.32", "5.7"}),
    ("privileged", {"5.5"}, {"5.32", "5.10"}),
    ("socket", {"5.32"}, {"5.5", "5.6", "5.14"}),
    ("published", {"5.14"}, {"5.5", "5.8", "5.32"}),
    ("hardened", set(), {"5.4", "5.11", "5.12", "5.13", "5.14", "5.15", "5.26", "5.27",
                         "5.29", "5.8"}),
    ("risky", {"5.4", "5.6", "5.10", "5.15", "5.16", "5.17", "5.22"}, {"5.5", "5.32"}),
])
def test_container_checks_on_recorded_inspect_data(name: str, warns: set[str],
                                                   passes: set[str]) -> None:
    f = facts(container(name))
    for cis_id in warns:
        r, reason, items = result(f, cis_id)
        assert r is Result.WARN, (cis_id, reason)
        assert items == (f"posture-rec-{name}",)
    for cis_id in passes:
        assert result(f, cis_id)[0] is Result.PASS, (cis_id, result(f, cis_id))


def test_container_check_details() -> None:
    f = facts(container("risky"), container("published"), container("plain"))
    r, reason, items = result(f, "5.4")
    assert "NET_ADMIN,SYS_ADMIN" in reason and items == ("posture-rec-risky",)
    assert "/etc (ro)" in result(f, "5.6")[1]
    assert "*:8080" in result(f, "5.14")[1] or "0.0.0.0:8080" in result(f, "5.14")[1]
    # 5.9 is decided from observed listeners: given none, INFO saying why
    r9, reason9, _ = result(f, "5.9")
    assert r9 is Result.INFO and "not observed" in reason9
    assert result(f, "5.18")[0] is Result.INFO and "/dev/null" in result(f, "5.18")[1]
    # a published privileged port
    low = container("published", NetworkSettings__Ports={"80/tcp": [{"HostIp": "0.0.0.0",
                                                                     "HostPort": "80"}]})
    assert result(facts(low), "5.8")[0] is Result.WARN
    # shared mount propagation
    shared = container("socket")
    shared.inspect["Mounts"][0]["Propagation"] = "rshared"
    assert result(facts(shared), "5.20")[0] is Result.WARN
    # the daemon-wide no-new-privileges default answers 5.26 for every container
    assert result(facts(container("plain"), argv=("dockerd", "--no-new-privileges")),
                  "5.26")[0] is Result.PASS


def test_sshd_from_the_processes_roxd_sees() -> None:
    assert result(facts(container("plain", ("sh", "sshd"))), "5.7")[0] is Result.WARN
    assert result(facts(container("plain", ("sh", "sleep"))), "5.7")[0] is Result.PASS
    r, reason, _ = result(facts(container("plain", None)), "5.7")
    assert r is Result.NOTE and "could not be read" in reason


def test_exec_sessions_from_the_engines_records() -> None:
    execs = container("execs")
    r, reason, items = result(facts(execs), "5.24")
    assert r is Result.INFO and "exec as root `sleep 30`" in reason
    assert result(facts(execs), "5.23")[0] is Result.PASS
    doc = copy.deepcopy(execs.execs[1])
    doc["ProcessConfig"]["privileged"] = True  # this host cannot run one (no CAP_SYS_RESOURCE)
    priv = ContainerFacts(execs.inspect, (doc,), execs.processes)
    assert result(facts(priv), "5.23")[0] is Result.WARN


def test_no_containers_and_no_engine() -> None:
    assert result(facts(), "5.5")[0] is Result.INFO
    r, reason, _ = result(facts(info=None), "5.5")
    assert r is Result.NOTE and "refused" in reason
    assert result(facts(), "5.1")[0] is Result.PASS
    assert result(facts(info={**INFO, "Swarm": {"LocalNodeState": "active"}}), "5.1")[0] \
        is Result.WARN
    # AppArmor / SELinux only where the engine has them
    assert result(facts(container("plain")), "5.2")[0] is Result.INFO
    armored = {**INFO, "SecurityOptions": ["name=apparmor", "name=seccomp,profile=default"]}
    assert result(facts(container("plain"), info=armored), "5.2")[0] is Result.WARN


# ---------------------------------------------------------------------------- section 2


def test_daemon_options_from_argv_and_daemon_json() -> None:
    default = facts()
    for cis_id in ("2.2", "2.14", "2.16"):
        assert result(default, cis_id)[0] is Result.WARN, cis_id
    for cis_id in ("2.3", "2.4", "2.10", "2.11"):
        assert result(default, cis_id)[0] is Result.PASS, cis_id
    assert result(default, "2.7")[0] is Result.INFO  # Unix socket only
    hardened = facts(argv=("dockerd", "--icc=false", "--userland-proxy=false",
                           "--no-new-privileges"), config={"log-level": "debug"})
    for cis_id in ("2.2", "2.14", "2.16"):
        assert result(hardened, cis_id)[0] is Result.PASS, cis_id
    r, reason, _ = result(hardened, "2.3")
    assert r is Result.WARN and "debug" in reason
    assert result(facts(config={"icc": False}), "2.2")[0] is Result.PASS
    assert result(facts(config={"iptables": False}), "2.4")[0] is Result.WARN
    tcp = facts(argv=("dockerd", "-H", "tcp://0.0.0.0:2376"))
    r, reason, items = result(tcp, "2.7")
    assert r is Result.WARN and items == ("tcp://0.0.0.0:2376",)
    tls = facts(argv=("dockerd", "-H", "tcp://0.0.0.0:2376", "--tlsverify"),
                config={"tlscacert": "/c/ca.pem", "tlscert": "/c/s.pem", "tlskey": "/c/k.pem"})
    assert result(tls, "2.7")[0] is Result.PASS
    broken = PostureFacts(**{**facts().__dict__, "daemon": DaemonOptions(
        None, {}, "/etc/docker/daemon.json", True, "not valid JSON: Expecting value")})
    assert result(broken, "2.2")[0] is Result.NOTE


def test_engine_info_checks() -> None:
    f = facts()
    assert result(f, "2.9")[0] is Result.WARN
    assert result(f, "2.12")[0] is Result.WARN
    r, reason, _ = result(f, "2.13")
    assert r is Result.WARN and "json-file" in reason
    assert result(f, "2.15")[0] is Result.WARN
    assert result(f, "2.5")[0] is Result.PASS
    assert result(f, "2.6")[0] is Result.PASS
    assert result(f, "2.18")[0] is Result.PASS
    better = {**INFO, "LiveRestoreEnabled": True, "LoggingDriver": "journald",
              "SecurityOptions": [*INFO["SecurityOptions"], "name=userns"],
              "Plugins": {**INFO["Plugins"], "Authorization": ["opa"]}}
    for cis_id in ("2.9", "2.12", "2.13", "2.15"):
        assert result(facts(info=better), cis_id)[0] is Result.PASS, cis_id
    insecure = copy.deepcopy(INFO)
    insecure["RegistryConfig"]["InsecureRegistryCIDRs"].append("10.0.0.0/8")
    r, _reason, items = result(facts(info=insecure), "2.5")
    assert r is Result.WARN and items == ("10.0.0.0/8",)


# ---------------------------------------------------------------------------- section 3


def test_file_owner_and_mode() -> None:
    def with_file(path: str, **kw: Any) -> PostureFacts:
        return facts(files={path: FileFact(path, **{**ROOT_FILE, **kw})})

    assert result(with_file("/etc/docker", mode=0o755, is_dir=True), "3.5")[0] is Result.PASS
    assert result(with_file("/etc/docker", mode=0o755, is_dir=True), "3.6")[0] is Result.PASS
    r, reason, _ = result(with_file("/etc/docker", mode=0o777, is_dir=True), "3.6")
    assert r is Result.WARN and "0777" in reason
    assert result(with_file("/etc/docker", uid=1000, user="bob"), "3.5")[0] is Result.WARN
    sock = "/var/run/docker.sock"
    assert result(with_file(sock, mode=0o660, gid=998, group="docker"), "3.15")[0] \
        is Result.PASS
    assert result(with_file(sock, mode=0o666, gid=998, group="docker"), "3.16")[0] \
        is Result.WARN
    assert result(with_file(sock, mode=0o660, gid=1000, group="users"), "3.15")[0] \
        is Result.WARN
    r, reason, _ = result(facts(), "3.17")  # no daemon.json on the host: never a PASS
    assert r is Result.NOTE and "not on this host" in reason
    assert result(with_file("/etc/docker/daemon.json", mode=0o600), "3.18")[0] is Result.PASS
    unit = "/lib/systemd/system/docker.service"
    f = facts(files={unit: FileFact(unit, **ROOT_FILE, mode=0o664)},
              units={"docker.service": unit})
    assert result(f, "3.1")[0] is Result.PASS and result(f, "3.2")[0] is Result.WARN
    assert result(facts(), "3.1")[0] is Result.NOTE
    # TLS files only when configured
    assert result(facts(), "3.13")[0] is Result.NOTE
    key = "/c/k.pem"
    tls = facts(config={"tlskey": key}, files={key: FileFact(key, **ROOT_FILE, mode=0o644)})
    assert result(tls, "3.13")[0] is Result.PASS and result(tls, "3.14")[0] is Result.WARN


# ---------------------------------------------------------------------------- section 1


def test_audit_rules() -> None:
    etc = {"/etc/docker": FileFact("/etc/docker", **ROOT_FILE, mode=0o755, is_dir=True)}
    # no audit system at all: certainly not audited (as docker-bench-security says)
    r, reason, _ = result(facts(files=etc), "1.1.6")
    assert r is Result.WARN and "auditd is not installed" in reason
    assert result(facts(), "1.1.6")[0] is Result.NOTE  # /etc/docker not on the host
    # rules written in files but auditctl absent: loaded or not cannot be read
    written = AuditRules(("-w /etc/docker -k docker",), "rule files", kind=AUDIT_FILES)
    r, reason, _ = result(facts(files=etc, audit=written), "1.1.6")
    assert r is Result.NOTE and "whether it is loaded cannot be read" in reason
    other = AuditRules(("-w /var/lib/docker -k docker",), "rule files", kind=AUDIT_FILES)
    assert result(facts(files=etc, audit=other), "1.1.6")[0] is Result.WARN
    broken = AuditRules(None, "auditctl -l", "auditctl -l exited 1: denied",
                        kind=AUDIT_UNREADABLE)
    r, reason, _ = result(facts(files=etc, audit=broken), "1.1.6")
    assert r is Result.NOTE and "denied" in reason
    assert result(facts(), "1.1.3")[0] is Result.WARN  # dockerd runs, nothing audits it
    assert result(facts(argv=None), "1.1.3")[0] is Result.NOTE
    rules = AuditRules(("-w /etc/docker -p rwxa -k docker",), "auditctl -l")
    assert result(facts(files=etc, audit=rules), "1.1.6")[0] is Result.PASS
    assert result(facts(files=etc, audit=AuditRules((), "auditctl -l")), "1.1.6")[0] \
        is Result.WARN
    r, reason, _ = result(facts(audit=rules), "1.1.10")  # /etc/default/docker absent
    assert r is Result.NOTE and "not on this host" in reason
    dockerd = AuditRules(("-w /usr/sbin/dockerd -k docker",), "auditctl -l")
    assert result(facts(audit=dockerd), "1.1.3")[0] is Result.PASS


def test_host_checks() -> None:
    assert result(facts(), "1.1.1")[0] is Result.PASS
    other = {**INFO, "DockerRootDir": "/srv/docker"}
    assert result(facts(info=other), "1.1.1")[0] is Result.WARN
    assert result(facts(), "1.1.2")[0] is Result.INFO
    assert result(facts(), "1.2.2")[0] is Result.INFO


# ---------------------------------------------------------------------------- output


def test_docker_bench_document_shape() -> None:
    report = run_checks(facts(container("plain"), container("socket")))
    doc = docker_bench_document(report)
    assert set(doc) >= {"dockerbenchsecurity", "start", "tests", "checks", "score", "end"}
    assert [t["id"] for t in doc["tests"]] == ["1", "2", "3", "5"]
    assert doc["checks"] == len(CHECKS) == sum(len(t["results"]) for t in doc["tests"])
    assert doc["score"] == report.score()
    for test in doc["tests"]:
        assert isinstance(test["desc"], str)
        for r in test["results"]:
            assert r["result"] in ("PASS", "WARN", "INFO", "NOTE")
            assert r["desc"].endswith(("(Automated)", "(Manual)"))
            assert ("remediation" in r) == (r["result"] != "PASS")
    r532 = next(r for t in doc["tests"] for r in t["results"] if r["id"] == "5.32")
    assert r532["result"] == "WARN" and r532["items"] == ["posture-rec-socket"]
    json.dumps(doc)  # serializable as is


def test_a_failing_check_is_a_note_not_a_crash() -> None:
    good = CHECKS[0]
    CHECKS[0] = type(good)(**{**good.__dict__, "decide": lambda f: 1 / 0})
    try:
        finding = run_checks(facts()).findings[0]
    finally:
        CHECKS[0] = good
    assert finding.outcome.result is Result.NOTE and "ZeroDivisionError" in finding.outcome.reason


# ---------------------------------------------------------------------------- the service


def test_service_logs_pass_to_warn_and_rescans_on_change(caplog: pytest.LogCaptureFixture
                                                         ) -> None:
    state = {"containers": (container("plain"),)}
    service = PostureService(engine=None, interval_s=3600,  # type: ignore[arg-type]
                             gather_facts=lambda _e: facts(*state["containers"]))
    first = service.report()
    assert service.report() is first  # the last scan, not a new one
    assert first.results()["5.32"] == "PASS"
    state["containers"] = (container("plain"), container("socket"))
    with caplog.at_level(logging.WARNING, logger="roxd.posture.service"):
        second = service.report(refresh=True)
    assert second.results()["5.32"] == "WARN" and service.regressions >= 1
    assert any("5.32" in r.getMessage() and "PASS to WARN" in r.getMessage()
               for r in caplog.records)
    service.start()
    try:
        before = service.scans
        service.containers_changed()
        deadline = time.monotonic() + 10
        while service.scans <= before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert service.scans > before
    finally:
        service.close()


# ---------------------------------------------------------------------------- inventory


def test_inventory_records_from_inspect_data() -> None:
    sock = container_record(recorded("socket")["inspect"])
    assert [m.writable_host_path for m in sock.mounts] == [True]
    assert "docker-socket" in sock.warnings and "writable-host-mount" in sock.warnings
    pub = container_record(recorded("published")["inspect"])
    assert {(p.container_port, p.protocol, p.host_port) for p in pub.ports} == {(80, "tcp", 8080)}
    risky = container_record(recorded("risky")["inspect"])
    assert risky.host_namespaces == {"network": True, "pid": True, "ipc": True, "uts": False,
                                     "userns": False}
    assert risky.cap_add == ["NET_ADMIN", "SYS_ADMIN"] and risky.seccomp == "unconfined"
    assert [m.writable_host_path for m in risky.mounts] == [False]  # /etc read-only
    hard = container_record(recorded("hardened")["inspect"])
    assert hard.user == "1000" and hard.cap_drop == ["ALL"] and hard.no_new_privileges
    assert hard.readonly_rootfs and hard.ports[0].host_ip == "127.0.0.1"
    priv = container_record(recorded("privileged")["inspect"])
    assert priv.privileged and priv.state == "created" and priv.started_at is None
    plain = container_record(recorded("plain")["inspect"])
    assert plain.command == ["/bin/sh", "-c", "sleep 60"] and plain.runtime == "runc"
    assert plain.labels == {"roxd-test": "record"} and plain.started_at


def test_docs_describe_every_check() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "posture.md").read_text()
    for c in CHECKS:
        assert f"| {c.id} | {c.title} |" in doc, c.id


# ---------------------------------------------------------------------------- 5.9 observed


def listener(port: int, address: str = "0.0.0.0", protocol: str = "tcp",
             process: str | None = "nc") -> dict[str, Any]:
    return {"protocol": protocol, "address": address, "port": port, "pid": 7,
            "process": process, "since": "2026-11-29T22:00:00Z", "source": "kernel"}


def observed(*cs: ContainerFacts, table: dict[str, list[dict[str, Any]]]) -> PostureFacts:
    source = ListeningSource(lambda cid: table.get(cid, []), "kernel: as they happen")
    return with_listening(facts(*cs), source)


def test_5_9_warns_on_a_listener_neither_published_nor_declared() -> None:
    pub, plain = container("published"), container("plain")
    pub_id, plain_id = pub.inspect["Id"], plain.inspect["Id"]
    # published declares 80/tcp (EXPOSE) and publishes it; plain declares nothing
    f = observed(pub, plain, table={
        pub_id: [listener(80, "::"), listener(8081, process="httpd"),
                 listener(9000, "127.0.0.1"), listener(9001, "::1")],
        plain_id: [listener(53, protocol="udp", process=None), listener(80, protocol="udp")]})
    r, reason, items = result(f, "5.9")
    assert r is Result.WARN and set(items) == {"posture-rec-published", "posture-rec-plain"}
    assert "posture-rec-published: tcp/8081 on 0.0.0.0 (httpd)" in reason
    assert "udp/53 on 0.0.0.0" in reason and "udp/80" in reason  # 80/tcp is not 80/udp
    assert "tcp/80 " not in reason and "9000" not in reason and "9001" not in reason
    assert "observed" in reason and "kernel: as they happen" in reason


def test_5_9_passes_on_declared_published_and_loopback_listeners() -> None:
    pub, plain = container("published"), container("plain")
    expose = container("plain", Config__ExposedPorts={"8080/tcp": {}})
    expose.inspect["Id"] = "e" * 64
    f = observed(pub, plain, expose, table={
        pub.inspect["Id"]: [listener(80, "::")],
        plain.inspect["Id"]: [listener(6060, "127.0.0.1")],
        expose.inspect["Id"]: [listener(8080)]})
    r, reason, items = result(f, "5.9")
    assert r is Result.PASS and items == () and "observed" in reason, reason


def test_5_9_is_info_with_the_reason_when_listeners_are_not_observed() -> None:
    plain = container("plain")
    assert result(facts(plain), "5.9")[:2] == (Result.INFO, f"not decided: {NOT_GIVEN_LISTENERS}")
    off = with_listening(facts(plain), ListeningSource(
        None, "listening sockets are not observed: inbound tracing is off ([netmap] "
              "inbound = false)"))
    r, reason, _ = result(off, "5.9")
    assert r is Result.INFO and "[netmap] inbound = false" in reason
    # a table that fails for every container: not decided, never a PASS
    def broken(cid: str) -> list[dict[str, Any]]:
        raise RuntimeError("table gone")
    f = with_listening(facts(plain), ListeningSource(broken, "kernel"))
    assert result(f, "5.9")[0] is Result.INFO
    # the scan hands its facts through the source the daemon set
    service = PostureService(engine=None, gather_facts=lambda _e: facts(plain))  # type: ignore[arg-type]
    service.listening = ListeningSource(lambda cid: [listener(4444)], "kernel")
    found = {x.check.id: x.outcome for x in service.scan().findings}
    assert found["5.9"].result is Result.WARN and "tcp/4444" in found["5.9"].reason
