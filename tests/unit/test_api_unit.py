"""The control API without a kernel: the document and the router agree, the validator uses
the document's schemas, bad input is a 4xx with a reason, and roxctl's exit codes hold."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from roxd.api import schemas
from roxd.api.auth import Authorizer, PeerCred
from roxd.api.client import ApiClient, ApiFailure, Unreachable
from roxd.api.port import Activity, DaemonFacts, KernelStats, Programs
from roxd.api.server import ApiServer
from roxd.api.settings import ApiSettings
from roxd.incidents.tracker import IncidentQuery
from roxd.model import Container
from roxd.pubsub import Topic
from roxd.rules.active import ActiveRules

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------- a fake port


class FakePort:
    """roxd.api.port.DaemonPort with canned snapshots and real rules (ActiveRules): what the
    API may ask of the daemon, and nothing else."""

    def __init__(self) -> None:
        from roxd.features import probe

        self.facts = DaemonFacts(started_at=time.time(), monitor=False,
                                 config_source="test", features=probe().to_dict(),
                                 api=ApiSettings())
        self.events_topic = Topic("events")
        self.alerts_topic = Topic("alerts")
        self.active = ActiveRules([REPO / "rules"])
        self.active.load()
        self.items = [
            (101, Container("ab12" + "0" * 60, "docker", "web", "nginx:1")),
            (102, Container("ab34" + "0" * 60, "docker", "db", "postgres:16")),
        ]

    @property
    def rule_set(self) -> Any:
        return self.active.current

    def activity(self) -> Activity:
        return Activity(events=5, alerts=0, quiet_marks=0)

    def container_events(self) -> dict[str, int]:
        return {self.items[0][1].id: 4, self.items[1][1].id: 1}

    def stopping(self) -> bool:
        return False

    def programs(self) -> Programs:
        return Programs(("sched:sched_process_exec",), 1.0)

    def kernel_stats(self) -> KernelStats:
        return KernelStats({"exec_seen": 10, "exec_emitted": 9, "exec_folded": 1,
                            "exec_dropped": 0, "exec_killed": 0}, {}, 0, 0)

    def rules(self) -> Any:
        return self.active.current

    def rule_paths(self) -> list[Path]:
        return list(self.active.paths)

    def rule_overrides(self) -> dict[str, bool]:
        return dict(self.active.overrides)

    def containers(self) -> list[tuple[int, Container]]:
        return list(self.items)

    def quarantine(self) -> None:
        return None

    def seccomp(self) -> None:
        return None

    def alert_store(self) -> None:
        return None

    def alert_sink_stats(self) -> dict[str, int]:
        return {}

    def alert_sink_problems(self) -> list[str]:
        return list(getattr(self, "sink_problems", []))
    def rule_counts(self, since_ns: int) -> list[dict[str, Any]]:
        rows = [{"rule": "foothold.shell-in-container", "raised": 7, "emitted": 2, "folded": 5,
                 "throttled": 0, "last_minute_ns": 1_800_000_000 * 10**9}]
        return [r for r in rows if r["last_minute_ns"] >= since_ns]

    def baselines(self) -> None:
        return None

    def policy(self) -> dict[str, object]:
        return {"generation": 1, "hold_unknown": False, "exec_kill_entries": 4,
                "container_cgroups": 2, "unknown_verdicts": 0}

    def posture(self, refresh: bool = False) -> Any:
        return None  # posture disabled: tests/unit/test_posture_api.py fakes a report

    def inventory_containers(self, all_states: bool = False) -> list[Any]:
        return []

    def inventory_images(self) -> list[Any]:
        return []
    def incidents(self) -> Any:
        if not hasattr(self, "_incidents"):  # one recorded attack in "web", one alert in "db"
            from roxd.incidents.tracker import IncidentTracker
            from tests.unit.test_incidents import Clock, attack

            clock = Clock()
            self._incidents = IncidentTracker(clock=clock, timer=False)
            web, db = self.items[0][1], self.items[1][1]
            for a in [*attack(container=web), attack(container=db, pid0=2000)[0]]:
                clock.now = a.time_ns
                self._incidents.emit(a)
        return self._incidents

    def netmap(self) -> Any:
        if not hasattr(self, "_netmap"):  # web connected to db's address, twice
            from tests.unit.test_netmap import connect_of, flow_map

            web, db = self.items[0][1], self.items[1][1]
            self._netmap = flow_map({"172.17.0.3": db})
            for t in (1, 2):
                self._netmap.observe(connect_of(web, "172.17.0.3", 5432, t=t))
        return self._netmap

    def risk(self, container_id: str) -> Any:
        from roxd.incidents.risk import ContainerRisk

        inspect = {self.items[0][1].id: {"HostConfig": {"Privileged": True}, "Mounts": [
            {"Type": "bind", "Source": "/srv", "RW": True}]},
                   self.items[1][1].id: {"Config": {"User": "999"}}}
        return ContainerRisk(self.incidents(), inspect.get).of(container_id)

    def workload_risk(self, key: str | None = None) -> Any:
        from roxd.baselines.workload import workload_key
        from roxd.incidents.risk_workload import workload_risk

        groups: dict[str, list[Any]] = {}
        for _, c in self.items:
            groups.setdefault(workload_key(c), []).append(self.risk(c.id))
        every = sorted((workload_risk(k, rs) for k, rs in groups.items()),
                       key=lambda w: (-w["score"], w["workload"]))
        return every if key is None else next((w for w in every if w["workload"] == key),
                                              None)

    def call_in_loop(self, fn: Any, timeout: float = 30.0) -> Any:
        return fn()

    def reload_rules(self) -> bool:
        self.active.reload()
        return True

    def set_rules_enabled(self, ids: list[str], enabled: bool) -> Any:
        return self.active.set_enabled(ids, enabled)


def test_the_fake_port_has_every_member_of_the_protocol() -> None:
    """The API may use only what DaemonPort declares; the fake and the daemon's port have
    all of it (a renamed member fails here, not at run time in the API)."""
    from roxd.api import port
    from roxd.daemon import DaemonPort

    declared = {n for n in vars(port.DaemonPort) if not n.startswith("_")}
    declared |= set(port.DaemonPort.__annotations__)
    for impl in (FakePort, DaemonPort):
        have = set(dir(impl)) | {"facts", "events_topic", "alerts_topic"}
        assert declared <= have, (impl, declared - have)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Any:
    daemon = FakePort()
    path = tmp_path_factory.mktemp("api") / "roxd.sock"
    server = ApiServer(daemon, str(path), ApiSettings(idle_timeout_s=0.5, max_connections=4,
                                                      max_body_bytes=4096))
    server.start()
    yield daemon, str(path)
    server.close()


def raw(path: str, data: bytes, read: int = 65536) -> bytes:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect(path)
    s.sendall(data)
    out = b""
    while chunk := s.recv(read):
        out += chunk
    s.close()
    return out


# ---------------------------------------------------------------------------- the contract


def test_every_route_is_in_the_document_and_every_operation_has_a_handler(api: Any) -> None:
    from roxd.api.endpoints import Endpoints

    daemon, path = api
    endpoints = Endpoints(daemon, ApiSettings(), threading.Event(), path)
    doc_ops = {op.operation_id for op in schemas.operations()}
    assert set(endpoints.handlers()) == doc_ops
    pairs = {(op.method, op.path) for op in schemas.operations()}
    doc_pairs = {(m.upper(), p) for p, item in schemas.document()["paths"].items()
                 for m in item}
    assert pairs == doc_pairs
    assert all(p.startswith("/v1/") for _m, p in pairs)
    for required in [("GET", "/v1/status"), ("GET", "/v1/openapi.json"),
                     ("POST", "/v1/rules/reload")]:
        assert required in pairs


def test_the_validator_uses_the_documents_schemas() -> None:
    doc = schemas.document()
    for op in schemas.operations():
        spec = doc["paths"][op.path][op.method.lower()]
        if op.body_schema is not None:
            assert op.body_schema is spec["requestBody"]["content"]["application/json"]["schema"]
        assert [p.schema for p in op.params] == [p["schema"] for p in spec.get("parameters", [])]
        # every change needs admin; reads (and validating a posted file, asking for a
        # dashboard login link for one's own role) do not
        assert op.access == ("read" if op.method == "GET" or op.operation_id in (
            "validateRules", "createDashboardLogin") else "admin")


def test_the_served_document_is_the_shipped_file(api: Any) -> None:
    _daemon, path = api
    with ApiClient(path) as c:
        assert c.get("/v1/openapi.json") == json.loads((REPO / "roxd/api/openapi.json")
                                                       .read_text())


@pytest.mark.parametrize(("schema", "value", "message"), [
    ("KillRequest", {"pid": "1"}, "body.pid must be an integer"),
    ("KillRequest", {"pid": True}, "body.pid must be an integer"),
    ("KillRequest", {"pid": 0}, "body.pid must be >= 1"),
    ("KillRequest", {}, "body.pid is required"),
    ("KillRequest", {"pid": 3, "sig": 9}, "unknown field 'sig'"),
    ("KillRequest", [], "body must be an object"),
    ("RuleSelector", {}, "needs at least 1 fields"),
    ("RuleSelector", {"ids": ["a", 3]}, "body.ids[1] must be a string"),
    ("RuleValidateRequest", {"content": "x", "name": "a/b"}, "body.name does not match"),
])
def test_validator_messages(schema: str, value: Any, message: str) -> None:
    errors = schemas.errors({"$ref": f"#/components/schemas/{schema}"}, value)
    assert any(message in e for e in errors), errors


def test_authorizer() -> None:
    auth = Authorizer(read_gid=990, admin_gid=991)
    root = PeerCred(1, 0, 0)
    reader = PeerCred(1, 1000, 1000, frozenset({990}))
    admin = PeerCred(1, 1000, 991)
    stranger = PeerCred(1, 1000, 1000)
    assert auth.denial(root, "admin") is None
    assert auth.denial(reader, "read") is None
    assert "may only read" in (auth.denial(reader, "admin") or "")
    assert auth.denial(admin, "admin") is None
    assert auth.denial(stranger, "read") is not None
    assert Authorizer(None, None).denial(reader, "read") is not None


# ---------------------------------------------------------------------------- the server


def test_status_and_containers(api: Any) -> None:
    _daemon, path = api
    with ApiClient(path) as c:
        status = c.get("/v1/status")
        assert status["kernel"]["exec_seen"] == 10
        assert status["policy"]["generation"] == 1 and status["policy"]["unknown_verdicts"] == 0
        assert status["rules"]["count"] == len(status["rules"]["effective_actions"]) > 0
        assert [x["name"] for x in c.get("/v1/containers")] == ["db", "web"]
        assert c.get("/v1/containers/web")["id"].startswith("ab12")
        assert c.get("/v1/containers/ab34")["name"] == "db"
        with pytest.raises(ApiFailure) as ambiguous:
            c.get("/v1/containers/ab")
        assert ambiguous.value.status == 409
        assert {x["name"] for x in ambiguous.value.body["candidates"]} == {"web", "db"}
        with pytest.raises(ApiFailure) as missing:
            c.get("/v1/containers/nope")
        assert missing.value.status == 404
        assert "roxd_kernel_events_total{family=\"exec\",outcome=\"seen\"} 10" in c.get(
            "/v1/metrics")


@pytest.mark.parametrize(("request_bytes", "status", "reason"), [
    (b"POST /v1/actions/kill HTTP/1.1\r\nContent-Length: 5\r\n\r\n{bad}", 400, "malformed"),
    (b"POST /v1/actions/kill HTTP/1.1\r\nContent-Length: 99999\r\n\r\n", 413, "over the limit"),
    (b"POST /v1/actions/kill HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 411, "chunked"),
    (b"GET /v1/alerts?limit=0 HTTP/1.1\r\n\r\n", 400, "query.limit must be >= 1"),
    (b"GET /v1/alerts?since=yesterday HTTP/1.1\r\n\r\n", 400, "RFC 3339"),
    (b"GET /v1/rules/%ff HTTP/1.1\r\n\r\n", 400, "not UTF-8"),
    (b"PUT /v1/status HTTP/1.1\r\n\r\n", 405, "allowed: GET"),
    (b"GET /nope HTTP/1.1\r\n\r\n", 404, "no such endpoint"),
    (b"GARBAGE\r\n\r\n", 400, ""),
])
def test_bad_requests_are_4xx_with_a_reason(api: Any, request_bytes: bytes, status: int,
                                            reason: str) -> None:
    _daemon, path = api
    answer = raw(path, request_bytes.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1))
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split()[1] == str(status).encode(), answer
    assert json.loads(body)["status"] == status
    assert reason in json.loads(body)["error"]


def test_idle_connections_are_closed_and_the_limit_answers_503(api: Any) -> None:
    _daemon, path = api
    idle = []
    for _ in range(4 + 8):  # the limit plus root's reserved slots
        s = socket.socket(socket.AF_UNIX)
        s.connect(path)
        idle.append(s)
    extra = socket.socket(socket.AF_UNIX)
    extra.settimeout(5)
    extra.connect(path)
    assert b" 503 " in extra.recv(4096)
    for s in idle:  # closed by the server after idle_timeout_s (0.5 s here)
        s.settimeout(10)
        assert s.recv(10) == b""
        s.close()
    deadline = time.monotonic() + 10
    while True:
        try:
            with ApiClient(path) as c:
                assert c.get("/v1/health")["ok"]
            break
        except ApiFailure:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_rules_toggle_and_validate(api: Any) -> None:
    daemon, path = api
    with ApiClient(path) as c:
        result = c.post("/v1/rules/disable", {"tags": ["foothold"]})
        assert result["changed"] and all(
            daemon.rule_set.get(i).phase.value == "foothold" for i in result["changed"])
        assert not daemon.rule_set.get(result["changed"][0]).enabled
        c.post("/v1/rules/enable", {"ids": result["changed"]})
        assert all(r.enabled for r in daemon.rule_set.rules)
        with pytest.raises(ApiFailure) as unknown:
            c.post("/v1/rules/enable", {"tags": ["no-such-tag"]})
        assert unknown.value.status == 404
        bad = c.post("/v1/rules/validate", {"content": "[[rule]]\nid = 3\n", "name": "m.toml"})
        assert not bad["valid"] and bad["errors"][0]["file"] == "m.toml"
        assert c.post("/v1/rules/validate", {"content": ""})["valid"]


def test_streams_deliver_filtered_items(api: Any) -> None:
    daemon, path = api
    got: list[dict[str, Any]] = []

    def read() -> None:
        with ApiClient(path) as c:
            got.extend(c.stream("/v1/events/stream", {"type": "exec", "max_items": 2}))

    reader = threading.Thread(target=read)
    reader.start()
    deadline = time.monotonic() + 10
    while not daemon.events_topic.active:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    for i in range(3):
        daemon.events_topic.publish({"type": "exit", "n": i})
        daemon.events_topic.publish({"type": "exec", "n": i})
    reader.join(10)
    assert [g["n"] for g in got] == [0, 1]
    assert not daemon.events_topic.active


def test_alerts_from_the_topic(api: Any) -> None:
    daemon, path = api
    alert = {"id": "a" * 32, "time": "2026-11-22T16:40:02.118223Z",
             "rule": {"id": "x.y", "name": "n", "phase": "foothold", "severity": "warning",
                      "mitre": []}, "container": None, "process": {"pid": 1}, "event": {},
             "actions": []}
    daemon.alerts_topic.publish(alert)
    with ApiClient(path) as c:
        deadline = time.monotonic() + 10
        while not c.get("/v1/alerts")["items"]:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert c.get(f"/v1/alerts/{'a' * 32}")["rule"]["id"] == "x.y"
        assert c.get("/v1/alerts", {"container": "host", "severity": "warning"})["items"]
        assert not c.get("/v1/alerts", {"severity": "error"})["items"]
        assert not c.get("/v1/alerts", {"until": "2026-11-22T16:40:02Z"})["items"]


def test_seccomp_is_501_with_the_reason_where_the_host_has_none(api: Any) -> None:
    _daemon, path = api
    with ApiClient(path) as c, pytest.raises(ApiFailure) as exc:
        c.get("/v1/seccomp")
    assert exc.value.status == 501 and "not available on this host" in exc.value.reason


# ---------------------------------------------------------------------------- roxctl


def roxctl(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "roxd.ctl", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=60)


def test_roxctl_exit_codes(api: Any, tmp_path: Path) -> None:
    _daemon, path = api
    gone = roxctl("--socket", str(tmp_path / "none.sock"), "status")
    assert gone.returncode == 3 and "roxd is not running (no socket at" in gone.stderr
    assert "systemctl start roxd" in gone.stderr
    assert roxctl("status", env={"ROXD_SOCKET": path}).returncode == 0
    assert roxctl("--socket", path, "no-such-command").returncode == 2
    missing = roxctl("--socket", path, "rules", "show", "no.such.rule")
    assert missing.returncode == 4 and "no rule" in missing.stderr  # not found
    listed = roxctl("--socket", path, "--json", "alerts", "list")
    assert listed.returncode == 0 and isinstance(json.loads(listed.stdout), list)


def test_roxctl_imports_nothing_of_the_engine() -> None:
    code = ("import sys, roxd.ctl; print(sorted(m for m in sys.modules "
            "if m.startswith('roxd')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    # roxctl's own modules (roxd.ctl_*) beside roxd.ctl are fine; nothing of the engine
    assert [m for m in eval(out) if not m.startswith("roxd.ctl_")] == [
        "roxd", "roxd.api", "roxd.api.client", "roxd.ctl", "roxd.text", "roxd.vocabulary"]


def test_completion_script_is_current_and_valid(tmp_path: Path) -> None:
    from roxd.ctl import bash_completion, build_parser

    script = bash_completion(build_parser())
    assert (REPO / "packaging/completion/roxctl.bash").read_text() == script + "\n"
    check = subprocess.run(["bash", "-c", script + "\nCOMP_WORDS=(roxctl rules e); "
                            "COMP_CWORD=2; _roxctl; echo ${COMPREPLY[@]}"],
                           capture_output=True, text=True)
    assert check.returncode == 0 and check.stdout.split() == ["enable"]


def test_unreachable_message_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(Unreachable) as exc:
        ApiClient(str(tmp_path / "x.sock")).get("/v1/status")
    assert "make run" in exc.value.message()


def test_roxctl_shows_hostile_strings_escaped_and_never_crashes(api: Any) -> None:
    """A container controls its exe path, argv and comm: roxctl prints them escaped
    (roxd/text.py), so no ESC sequence reaches the terminal, no newline forges a line, and a
    non-UTF-8 byte is \\xNN instead of a crash."""
    from roxd.model import EnrichedEvent
    from tests.system.alerts_factory import hostile_alert

    daemon, path = api
    alert = hostile_alert()
    daemon.alerts_topic.publish(alert.to_dict())

    def clean(out: str) -> None:
        assert "\x1b" not in out and "\r" not in out and "\x07" not in out
        assert "\u202e" not in out and "\x9b" not in out

    listed = roxctl("--socket", path, "alerts", "list", "--container", "web")
    assert listed.returncode == 0, listed.stderr
    clean(listed.stdout)
    shown = roxctl("--socket", path, "alerts", "show", alert.id)
    assert shown.returncode == 0, shown.stderr
    clean(shown.stdout)
    assert "/tmp/\\xff\\xfe/parent\\x0a" in shown.stdout
    assert "parent\\x1b[H \\xfe" in shown.stdout
    assert "line1\\x0aline2\\x0d<13>1 - forged" in shown.stdout
    assert "\\x1b[2J\\x1b]0;pwned\\x07" in shown.stdout
    assert len(shown.stdout.splitlines()) < 12  # one line per part, no forged lines

    exec_event = EnrichedEvent(event=alert.event.event, container=alert.event.container,
                               process=alert.event.process).to_dict()
    exit_event = {**exec_event, "type": "exit", "exit": {"code": 0}}
    got: list[subprocess.CompletedProcess[str]] = []
    reader = threading.Thread(target=lambda: got.append(
        roxctl("--socket", path, "events", "--count", "2")))
    reader.start()
    deadline = time.monotonic() + 30
    while not daemon.events_topic.active:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    daemon.events_topic.publish(exec_event)
    daemon.events_topic.publish(exit_event)
    reader.join(60)
    [events] = got
    assert events.returncode == 0, events.stderr
    clean(events.stdout)
    assert len(events.stdout.splitlines()) == 2
    assert "/tmp/\\xff\\xfe/sh exit 0" in events.stdout
    assert "\\x1b[2J" in events.stdout


def test_the_api_kill_never_hits_a_protected_process(api: Any) -> None:
    """Issue 23, item 10: `roxctl kill` refuses a protected host process (here a child of
    this test named sshd) with 422 and the reason; an ordinary child is killed. Only this
    test's own children are signalled."""
    from tests.unit.test_enforce_safety import child, died

    _daemon, path = api
    with ApiClient(path) as c:
        with child(rename_to="sshd") as proc:
            with pytest.raises(ApiFailure) as refused:
                c.post("/v1/actions/kill", {"pid": proc.pid})
            assert refused.value.status == 422
            assert "protected process" in str(refused.value.body)
            assert not died(proc, 0.2)
        with child(rename_to="ordinary") as proc:
            assert c.post("/v1/actions/kill", {"pid": proc.pid})["killed"] is True
            assert died(proc)


# ---------------------------------------------------------------------------- incidents


def test_incidents_list_filters_and_one_incident(api: Any) -> None:
    _daemon, path = api
    with ApiClient(path) as c:
        items = c.get("/v1/incidents")["items"]
        assert len(items) == 2
        web = c.get("/v1/incidents", {"container": "web"})["items"]
        assert [i["containers"][0]["name"] for i in web] == ["web"]
        assert [p["phase"] for p in web[0]["phases"]] == [
            "foothold", "privilege_escalation", "persistence", "objectives"]
        assert c.get("/v1/incidents", {"state": "closed"})["items"] == []
        assert len(c.get("/v1/incidents", {"state": "open", "limit": 1})["items"]) == 1
        assert c.get("/v1/incidents", {"since": "2100-01-01T00:00:00Z"})["items"] == []
        one = c.get(f"/v1/incidents/{web[0]['id']}")
        assert one["timeline"] == web[0]["timeline"] and one["process_tree"]
        schemas.check({"$ref": "#/components/schemas/Incident"}, one)
        schemas.check({"$ref": "#/components/schemas/IncidentList"},
                      c.get("/v1/incidents"))


@pytest.mark.parametrize(("query", "status", "reason"), [
    ("/v1/incidents/" + "0" * 32, 404, "no incident"),
    ("/v1/incidents/nothex", 400, "does not match"),
    ("/v1/incidents?state=sleeping", 400, "query.state must be one of open, closed"),
    ("/v1/incidents?since=yesterday", 400, "RFC 3339"),
    ("/v1/incidents?limit=0", 400, "query.limit must be >= 1"),
    ("/v1/incidents?phase=foothold", 400, "unknown query parameter"),
])
def test_incident_bad_input_is_4xx_with_a_reason(api: Any, query: str, status: int,
                                                 reason: str) -> None:
    _daemon, path = api
    with ApiClient(path) as c, pytest.raises(ApiFailure) as exc:
        c.get(query)
    assert exc.value.status == status and reason in exc.value.reason, exc.value


def test_roxctl_incidents_list_and_timeline(api: Any) -> None:
    daemon, path = api
    listed = roxctl("--socket", path, "incidents", "list")
    assert listed.returncode == 0, listed.stderr
    assert "foothold>privilege_escalation>persistence>objectives" in listed.stdout
    web = daemon.incidents().query(IncidentQuery(container="web"))[0]
    shown = roxctl("--socket", path, "incidents", "show", web["id"][:8])
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    sections = [text.index(f"== {p} ") for p in ("foothold", "privilege_escalation",
                                                  "persistence", "objectives")]
    assert sections == sorted(sections)
    assert "privilege_escalation.read-shadow" in text and "process tree" in text
    assert "cat /etc/shadow" in text
    as_json = roxctl("--socket", path, "--json", "incidents", "show", web["id"])
    assert json.loads(as_json.stdout)["id"] == web["id"]
    missing = roxctl("--socket", path, "incidents", "show", "0" * 32)
    assert missing.returncode == 4 and "no incident" in missing.stderr
    unknown = roxctl("--socket", path, "incidents", "show", "ffffffff")
    assert unknown.returncode == 4 and "no incident" in unknown.stderr


def test_containers_carry_their_risk_and_risk_show_lists_the_reasons(api: Any) -> None:
    _daemon, path = api
    with ApiClient(path) as c:
        by_name = {x["name"]: x for x in c.get("/v1/containers")}
        web = c.get("/v1/containers/web/risk")
        assert by_name["web"]["risk"] == web["score"] > by_name["db"]["risk"]
        assert web["score"] == sum(r["points"] for r in web["reasons"])
        schemas.check({"$ref": "#/components/schemas/Risk"}, web)
        with pytest.raises(ApiFailure) as exc:
            c.get("/v1/containers/nosuch/risk")
        assert exc.value.status == 404
    table = roxctl("--socket", path, "containers")
    assert table.returncode == 0 and "RISK" in table.stdout.splitlines()[0]
    assert table.stdout.splitlines()[1].startswith("web")  # most at risk first
    shown = roxctl("--socket", path, "risk", "show", "web")
    assert shown.returncode == 0, shown.stderr
    assert "privileged" in shown.stdout and "host_mount_rw" in shown.stdout
    missing = roxctl("--socket", path, "risk", "show", "nosuch")
    assert missing.returncode == 4


def test_an_api_failure_raised_inside_a_with_block_stays_itself() -> None:
    """A frozen dataclass exception cannot take its __traceback__: raised inside `with
    ApiClient(...)` (or any context manager) it turned into FrozenInstanceError."""
    import contextlib

    @contextlib.contextmanager
    def session() -> Any:
        yield

    with pytest.raises(ApiFailure) as caught, session():
        raise ApiFailure(422, "nothing learned yet")
    assert caught.value.status == 422 and str(caught.value) == "422: nothing learned yet"


def test_containers_in_pods_show_namespace_pod_and_labels(tmp_path: Path) -> None:
    """Issue 18: the API and `roxctl containers` carry pod, namespace and labels where known;
    the unattributed counter reaches status and metrics."""
    daemon = FakePort()
    daemon.items.append((99, Container(
        id="cd" * 32, runtime="containerd", name="nginx", image="nginx:1.25",
        labels={"io.kubernetes.container.name": "nginx"}, pod="web-7d9f", namespace="shop",
        pod_uid="0d5f2b4e-7c1a-4f8e-9b3d-2a6c8e1f4b7d", pod_labels={"app": "web"},
        runtime_namespace="k8s.io")))
    daemon.activity = lambda: Activity(events=5, alerts=0, quiet_marks=0,  # type: ignore
                                       unattributed=3)
    path = str(tmp_path / "roxd.sock")
    server = ApiServer(daemon, path, ApiSettings(idle_timeout_s=0.5, max_connections=4))
    server.start()
    try:
        with ApiClient(path) as c:
            pod = c.get("/v1/containers/nginx")
            schemas.check({"$ref": "#/components/schemas/Container"}, pod)
            assert (pod["namespace"], pod["pod"], pod["pod_labels"], pod["runtime_namespace"]) \
                == ("shop", "web-7d9f", {"app": "web"}, "k8s.io")
            web = c.get("/v1/containers/web")
            assert web["pod"] is None and web["namespace"] is None
            assert c.get("/v1/status")["containers"]["unattributed_events"] == 3
            assert "roxd_unattributed_events_total 3" in c.get("/v1/metrics")
        table = roxctl("--socket", path, "containers").stdout.splitlines()
        assert table[0].split()[:3] == ["NAMESPACE", "POD", "NAME"]
        rows = [line.split() for line in table[1:]]
        assert ["shop", "web-7d9f", "nginx"] in [r[:3] for r in rows]
        assert ["-", "-", "web"] in [r[:3] for r in rows]  # outside pods
        shown = roxctl("--socket", path, "containers", "nginx").stdout
        assert "namespace  shop" in shown and "pod_labels app=web" in shown
        assert "unattributed events" in roxctl("--socket", path, "status").stdout
    finally:
        server.close()
def test_rules_top_counts_per_rule_since_a_time(api: Any) -> None:
    _daemon, path = api
    with ApiClient(path) as c:
        top = c.get("/v1/rules/top", {"since": "2027-01-15T08:00:00Z", "limit": 5})
        assert top["since"] == "2027-01-15T08:00:00.000000Z"
        assert top["rules"] == [{"rule": "foothold.shell-in-container", "raised": 7,
                                 "emitted": 2, "folded": 5, "throttled": 0,
                                 "last_minute": "2027-01-15T08:00:00.000000Z"}]
        assert c.get("/v1/rules/top", {"since": "2027-01-15T08:01:00Z"})["rules"] == []
        for bad in ({"since": "yesterday"}, {"limit": "0"}):
            try:
                c.get("/v1/rules/top", bad)
            except ApiFailure as exc:
                assert exc.status == 400 and exc.body["error"]
            else:
                raise AssertionError(f"{bad} accepted")
