"""The control API of a real roxd on the real kernel: every operation through a raw HTTP
client and through roxctl, read-only access for a non-root group member, event handling that
keeps up while the API is hammered, and schemathesis finding no 5xx."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from roxd.api import schemas
from roxd.baselines.workload import workload_key
from roxd.model import Container
from tests.conftest import RoxdProcess, start_roxd, wait_until

pytestmark = pytest.mark.kernel


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 30.0) -> None:
        super().__init__("roxd", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def call(sock: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    conn = UnixConnection(sock)
    try:
        payload = None if body is None else json.dumps(body)
        conn.request(method, path, body=payload,
                     headers={"Content-Type": "application/json"} if payload else {})
        resp = conn.getresponse()
        data = resp.read()
        ctype = resp.getheader("Content-Type", "")
        if ctype.startswith("application/json"):
            return resp.status, json.loads(data)
        return resp.status, data.decode()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def api_roxd(docker_engine: Any) -> Iterator[tuple[RoxdProcess, str]]:
    # a socket directory that uid 65534 can traverse (pytest's tmp dirs are 0700)
    workdir = Path(tempfile.mkdtemp(prefix="roxd-api-"))
    workdir.chmod(0o755)
    sock = str(workdir / "roxd.sock")
    rp = start_roxd(workdir)
    try:
        rp.wait_ready()
        yield rp, sock
    finally:
        rp.stop()
        subprocess.run(["rm", "-rf", str(workdir)], check=False)


def roxctl(sock: str, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "roxd.ctl", "--socket", sock, *args],
                          capture_output=True, text=True, timeout=60, cwd="/", **kwargs)


def container_pid(rp: RoxdProcess, name: str, args: list[str]) -> int:
    line = rp.wait_for(lambda o: o.get("type") == "exec" and (o.get("container") or {})
                       .get("name") == name and o["process"]["args"] == args,
                       message=f"exec {args} in {name}")
    return int(line["process"]["pid"])


def _exec_quietly(container: Any) -> None:
    with contextlib.suppress(Exception):  # the test may be over and the container gone
        # with a terminal: an interactive shell is a foothold alert for the alert stream
        container.exec_run(["/bin/sh", "-c", "/bin/true x"], tty=True)


# ---------------------------------------------------------------------------- every operation


def test_every_operation_through_a_raw_http_client(api_roxd: Any, run_container: Any) -> None:
    rp, sock = api_roxd
    name = f"roxd-api-{uuid.uuid4().hex[:6]}"
    container = run_container("sleep 300 & sleep 301 & wait", name=name)
    victim = container_pid(rp, name, ["sleep", "300"])
    # a shell docker-exec'd into the container with a terminal: a foothold alert (its
    # entrypoint is not one; nor is a non-interactive exec session)
    container.exec_run(["sh", "-c", "echo foothold"], tty=True)
    wait_until(lambda: call(sock, "GET", "/v1/alerts?container=" + name)[1]["items"], 15,
               message="an alert of the container (shell in container)")
    alert = call(sock, "GET", "/v1/alerts?container=" + name)[1]["items"][0]
    rule_id = alert["rule"]["id"]
    incident = call(sock, "GET", "/v1/incidents?container=" + name)[1]["items"][0]
    stream_q = "max_items=1&max_seconds=20"
    # (operation id, method, path, body, expected status)
    cases = [
        ("getStatus", "GET", "/v1/status", None, 200),
        ("getHealth", "GET", "/v1/health", None, 200),
        ("getOpenApi", "GET", "/v1/openapi.json", None, 200),
        ("getMetrics", "GET", "/v1/metrics", None, 200),
        ("listContainers", "GET", "/v1/containers", None, 200),
        ("getContainer", "GET", f"/v1/containers/{container.id[:10]}", None, 200),
        ("listAlerts", "GET", f"/v1/alerts?rule={rule_id}&since=1h&limit=5", None, 200),
        ("getAlert", "GET", f"/v1/alerts/{alert['id']}", None, 200),
        ("listRules", "GET", "/v1/rules?phase=foothold", None, 200),
        ("getRule", "GET", f"/v1/rules/{rule_id}", None, 200),
        ("topRules", "GET", "/v1/rules/top?since=1h&limit=5", None, 200),
        ("validateRules", "POST", "/v1/rules/validate", {"content": "[[rule]]\n"}, 200),
        ("reloadRules", "POST", "/v1/rules/reload", None, 200),
        ("disableRules", "POST", "/v1/rules/disable", {"ids": [rule_id]}, 200),
        ("enableRules", "POST", "/v1/rules/enable", {"ids": [rule_id]}, 200),
        ("isolateContainer", "POST", f"/v1/containers/{name}/isolate", {"reason": "t"}, 200),
        ("releaseContainer", "POST", f"/v1/containers/{name}/release", None, 200),
        ("killProcess", "POST", "/v1/actions/kill", {"pid": victim}, 200),
        ("streamEvents", "GET", f"/v1/events/stream?type=exec&{stream_q}", None, 200),
        ("streamAlerts", "GET", f"/v1/alerts/stream?{stream_q}", None, 200),
        ("listIncidents", "GET", f"/v1/incidents?container={name}&state=open", None, 200),
        ("getIncident", "GET", f"/v1/incidents/{incident['id']}", None, 200),
        ("getContainerRisk", "GET", f"/v1/containers/{name}/risk", None, 200),
        ("listWorkloadRisk", "GET", "/v1/risk/workloads", None, 200),
        ("getWorkloadRisk", "GET", "/v1/risk/workload?workload=image:nothing/here", None, 404),
        ("listFlows", "GET", f"/v1/netmap?container={name}&since=1h&limit=10", None, 200),
        # this daemon runs no dashboard: the socket says how to turn it on
        ("createDashboardLogin", "POST", "/v1/dashboard/login", None, 501),
    ]
    seen = set()
    for op_id, method, path, body, expected in cases:
        if op_id in ("streamEvents", "streamAlerts"):
            # something must happen for the stream to deliver its one item
            threading.Timer(1.0, _exec_quietly, (container,)).start()
        status, answer = call(sock, method, path, body)
        assert status == expected, (op_id, answer)
        seen.add(op_id)
        if op_id == "getStatus":
            assert answer["programs"]["count"] >= 10
            assert answer["rules"]["effective_actions"][rule_id]
            assert answer["drops"]["total"] == 0
        if op_id == "topRules":
            assert rule_id in [r["rule"] for r in answer["rules"]], answer
        if op_id == "getContainer":
            assert answer["name"] == name and answer["alerts"] >= 1
        if op_id == "isolateContainer":
            assert answer["container"]["mode"] == "quarantined"
        if op_id == "disableRules":
            assert call(sock, "GET", f"/v1/rules/{rule_id}")[1]["enabled"] is False
        if op_id == "killProcess":
            assert answer["killed"]
            wait_until(lambda: not Path(f"/proc/{victim}").exists(), 10,
                       message="the killed process to go")
        if op_id in ("streamEvents", "streamAlerts"):
            assert json.loads(answer.splitlines()[0])["type"] in ("exec", "alert")
    # seccomp: reads of the real container; changes only for a container that does not exist
    # (applying a profile recreates the container), so 4xx, or 501 where seccomp is absent
    for op in schemas.operations():
        if not op.operation_id.lower().startswith(("getseccomp", "seccomp")):
            continue
        if op.method == "GET":
            query = f"?target={name}" if op.params else ""
            status, answer = call(sock, "GET", op.path + query)
            assert status in (200, 422, 501), (op.operation_id, answer)
        else:
            status, answer = call(sock, "POST", op.path, {"target": "zz-no-such-container"})
            assert status in (404, 422, 501), (op.operation_id, answer)
        if status >= 400:
            assert answer["error"], answer
        seen.add(op.operation_id)
    # process baselines: the container's workload exists since its first exec
    workload = workload_key(Container(id=container.id, runtime="docker", name=name,
                                      image="roxd-test/busybox:latest"))
    baseline_cases = [
        ("listBaselines", "GET", "/v1/baselines", None, 200),
        ("getBaseline", "GET", f"/v1/baselines/show?workload={workload}", None, 200),
        ("setBaselineMode", "POST", "/v1/baselines/mode",
         {"workload": workload, "mode": "monitor"}, 200),
        ("lockBaselines", "POST", "/v1/baselines/lock", {"workload": workload}, 200),
        ("acceptBaselineProcess", "POST", "/v1/baselines/accept",
         {"workload": workload, "path": "/bin/true"}, 200),
        ("unlockBaseline", "POST", "/v1/baselines/unlock", {"workload": workload}, 200),
        ("breakglassBaseline", "POST", "/v1/baselines/breakglass",
         {"workload": workload, "duration_s": 60, "reason": "api test"}, 200),
        ("exportBaselines", "GET", f"/v1/baselines/export?workload={workload}", None, 200),
        ("importBaselines", "POST", "/v1/baselines/import", {"baselines": [{"x": 1}]}, 422),
    ]
    baseline_cases += [  # posture and inventory: reads of the real engine
        ("getPosture", "GET", "/v1/posture", None, 200),
        ("listInventoryContainers", "GET", "/v1/inventory/containers", None, 200),
        ("listInventoryImages", "GET", "/v1/inventory/images", None, 200),
    ]
    for op_id, method, path, body, expected in baseline_cases:
        status, answer = call(sock, method, path, body)
        assert status == expected, (op_id, answer)
        seen.add(op_id)
    status, answer = call(sock, "GET", "/v1/baselines/show?workload=image:no/such", None)
    assert status == 404 and "no baseline for workload" in answer["error"]
    status, answer = call(sock, "POST", "/v1/baselines/mode",
                          {"workload": workload, "mode": "enforcing"})
    assert status == 400, answer  # not in the document's enum: refused before the engine
    status, answer = call(sock, "POST", "/v1/baselines/breakglass",
                          {"workload": workload, "duration_s": 60 * 86400})
    assert status == 400, answer  # over the document's maximum (a week)
    status, answer = call(sock, "POST", "/v1/baselines/breakglass", {"workload": workload})
    assert status == 422 and "duration_s" in answer["error"], answer
    assert seen == {op.operation_id for op in schemas.operations()}
    assert "roxd_kernel_events_total" in call(sock, "GET", "/v1/metrics")[1]


def test_every_command_through_roxctl(api_roxd: Any, run_container: Any,
                                      tmp_path: Path) -> None:
    rp, sock = api_roxd
    name = f"roxd-ctl-{uuid.uuid4().hex[:6]}"
    container = run_container("sleep 300 & wait", name=name)
    victim = container_pid(rp, name, ["sleep", "300"])
    container.exec_run(["sh", "-c", "echo foothold"], tty=True)  # raises the foothold alert

    def ok(*args: str) -> str:
        result = roxctl(sock, *args)
        assert result.returncode == 0, (args, result.stderr)
        return result.stdout

    assert "programs" in ok("status")
    status = json.loads(ok("--json", "status"))
    assert status["rules"]["count"] > 0
    # the policy stage told the kernel a rule set (reloads by other tests count) and a container
    assert status["policy"]["generation"] >= 1 and status["policy"]["container_syncs"] >= 1
    assert status["policy"]["unknown_verdicts"] == 0
    assert name in ok("containers")
    assert json.loads(ok("--json", "containers", name))["name"] == name
    wait_until(lambda: json.loads(ok("--json", "alerts", "list", "--container", name)), 15,
               message="an alert of the container")
    alerts = json.loads(ok("--json", "alerts", "list", "--container", name))
    first = alerts[0]
    for key in ("id", "time", "rule", "container", "process", "event", "actions"):
        assert key in first
    assert set(first["rule"]) >= {"id", "name", "phase", "severity", "mitre"}
    assert set(first["container"]) >= {"id", "name", "image"}
    assert set(first["process"]) >= {"pid", "ppid", "uid", "exe", "args", "ancestors"}
    assert set(first["actions"][0]) >= {"action", "outcome", "reason"}
    assert first["id"] in ok("alerts", "show", first["id"])
    assert first["rule"]["id"] in ok("alerts", "list", "--since", "1h")
    rule_id = first["rule"]["id"]
    assert rule_id in ok("rules", "list")
    assert rule_id in ok("rules", "show", rule_id)
    assert rule_id in ok("rules", "top", "--since", "1h")
    good = tmp_path / "good.toml"
    good.write_text("")
    bad = tmp_path / "bad.toml"
    bad.write_text("[[rule]]\nid = 'x'\n")
    assert "ok:" in ok("rules", "validate", str(good))
    invalid = roxctl(sock, "rules", "validate", str(bad))
    assert invalid.returncode == 1 and "bad.toml" in invalid.stdout
    assert "reloaded" in ok("rules", "reload")
    assert rule_id in ok("rules", "disable", rule_id)
    assert rule_id in ok("rules", "enable", rule_id)
    assert "isolated" in ok("isolate", name)
    assert "quarantined" in ok("containers")
    assert "released" in ok("release", name)
    again = roxctl(sock, "release", name)
    assert again.returncode == 1 and "not quarantined" in again.stderr
    assert "killed" in ok("kill", str(victim))
    assert ok("version").count("0.") >= 2
    events = roxctl(sock, "--json", "events", "--type", "exec", "--count", "1",
                    "--seconds", "20", "--container", name)
    assert events.returncode == 0
    follow = roxctl(sock, "--json", "alerts", "follow", "--seconds", "1")
    assert follow.returncode == 0
    seccomp = roxctl(sock, "seccomp", "status")
    assert seccomp.returncode == 0 or "HTTP 501" in seccomp.stderr
    ambiguous = roxctl(sock, "isolate", "zz-no-such-container")
    assert ambiguous.returncode == 4 and "no container" in ambiguous.stderr  # not found


# ---------------------------------------------------------------------------- permissions


def test_a_group_member_can_read_but_not_change(api_roxd: Any) -> None:
    _rp, sock = api_roxd
    gid = os.stat(sock).st_gid  # the socket's group: roxd, or root on a dev machine
    as_reader = {"user": 65534, "group": 65534, "extra_groups": [gid]}
    status = roxctl(sock, "--json", "status", **as_reader)
    assert status.returncode == 0, status.stderr
    reload = roxctl(sock, "rules", "reload", **as_reader)
    assert reload.returncode == 5 and "HTTP 403" in reload.stderr  # permission denied
    assert "may only read" in reload.stderr
    kill = roxctl(sock, "kill", str(os.getpid()), **as_reader)
    assert kill.returncode == 5 and "HTTP 403" in kill.stderr
    stranger = roxctl(sock, "status", user=65534, group=65534, extra_groups=[])
    assert stranger.returncode == 5 and "permission denied" in stranger.stderr
    assert "API denied POST /v1/rules/reload to uid=65534" in _rp.stderr()


# ---------------------------------------------------------------------------- load


def test_events_keep_up_while_the_api_is_hammered(api_roxd: Any, run_container: Any) -> None:
    rp, sock = api_roxd
    name = f"roxd-hammer-{uuid.uuid4().hex[:6]}"
    execs = 300
    done = threading.Event()
    answers: dict[int, int] = {}
    lock = threading.Lock()
    streamed: list[dict[str, Any]] = []

    def hammer(paths: list[str]) -> None:
        i = 0
        while not done.is_set():
            status, _ = call(sock, "GET", paths[i % len(paths)])
            i += 1
            with lock:
                answers[status] = answers.get(status, 0) + 1

    def stream() -> None:
        with contextlib.suppress(OSError):
            conn = UnixConnection(sock, timeout=60)
            conn.request("GET", f"/v1/events/stream?type=exec&container={name}"
                                f"&max_seconds=120")
            resp = conn.getresponse()
            for line in resp:
                if line.strip():
                    event = json.loads(line)
                    if event["process"]["args"][:1] == ["/bin/true"]:
                        streamed.append(event)
                    if len(streamed) == execs:
                        break
            conn.close()

    reader = threading.Thread(target=stream)
    reader.start()
    wait_until(lambda: call(sock, "GET", "/v1/status")[1]["events"]["subscribers"] >= 1, 10,
               message="the event stream to subscribe")
    workers = [threading.Thread(target=hammer, args=(paths,)) for paths in (
        ["/v1/status", "/v1/containers"], ["/v1/rules", "/v1/metrics"],
        ["/v1/alerts?limit=50", "/v1/health"], ["/v1/status", "/v1/alerts?since=5m"])]
    for w in workers:
        w.start()
    try:
        wait_until(lambda: sum(answers.values()) >= 20, 30, message="the hammer to start")
        run_container(f"i=0; while [ $i -lt {execs} ]; do /bin/true hammer-$i; "
                      f"i=$((i+1)); done; sleep 300", name=name)

        def arrived() -> int:
            return len(rp.matching(lambda o: o.get("type") == "exec" and (
                o.get("container") or {}).get("name") == name and
                o["process"]["args"][:1] == ["/bin/true"]))

        wait_until(lambda: arrived() >= execs, 120, message=f"{execs} execs in roxd's output")
        reader.join(60)
    finally:
        done.set()
        for w in workers:
            w.join(30)
    assert arrived() == execs
    assert len(streamed) == execs
    # Drops are host-wide (other test sessions run exec/connect storms on this machine), so
    # the assertion is on what this burst could lose: nothing in its container's cgroups.
    status = call(sock, "GET", "/v1/status")[1]
    cgroups = {str(e["process"]["cgroup_id"]) for e in streamed}
    assert not {cg: n for cg, n in status["drops"]["by_cgroup"].items() if cg in cgroups}
    assert set(answers) == {200} and answers[200] >= 20


# ---------------------------------------------------------------------------- schemathesis


def _fuzz_document() -> dict[str, Any]:
    """The shipped document, narrowed so fuzzing can never hit a real process or container:
    pids above the kernel's PID_MAX_LIMIT, container references that cannot exist."""
    doc = json.loads(json.dumps(schemas.document()))
    doc["components"]["schemas"]["KillRequest"]["properties"]["pid"]["minimum"] = 4_194_305
    never = {"type": "string", "pattern": "^zz-no-such-[a-z]{1,8}$"}
    doc["components"]["schemas"]["SeccompRequest"]["properties"]["target"] = never
    for item in doc["paths"].values():
        for op in item.values():
            for param in op.get("parameters", []):
                if param["name"] in ("ref", "target"):
                    param["schema"] = never
    return doc


def test_schemathesis_finds_no_server_errors(api_roxd: Any) -> None:
    schemathesis = pytest.importorskip("schemathesis")
    import requests
    import urllib3
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import not_a_server_error

    _rp, sock = api_roxd

    class _Conn(urllib3.connection.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(30)
            self.sock.connect(sock)

    class _Pool(urllib3.connectionpool.HTTPConnectionPool):
        ConnectionCls = _Conn

    class _Adapter(requests.adapters.HTTPAdapter):
        def get_connection(self, url: str, proxies: Any = None) -> Any:
            return _Pool("roxd")

    session = requests.Session()
    session.mount("http://roxd", _Adapter())
    schema = schemathesis.from_dict(_fuzz_document(), base_url="http://roxd")
    failures: list[str] = []
    calls: list[int] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.definition.raw["operationId"] in ("streamEvents", "streamAlerts"):
            continue  # endless by design: covered with max_items above

        @settings(max_examples=15, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def fuzz(case: Any) -> None:
            response = case.call(session=session)
            calls.append(response.status_code)
            if response.status_code >= 500 and response.status_code != 501:
                failures.append(f"{case.method} {case.formatted_path} -> "
                                f"{response.status_code} {response.text[:200]}")
            elif response.status_code != 501:
                case.validate_response(response, checks=(not_a_server_error,))

        fuzz()
    assert not failures, failures
    assert len(calls) >= 100 and any(c < 300 for c in calls) and any(c >= 400 for c in calls)
