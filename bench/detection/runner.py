"""Run one Atomic Red Team test in its own fresh container and take the alerts roxd raised for it.

The container's entrypoint is a small bash wrapper (vpid 1): it checks the test's prerequisites
(running a get_prereq_command only when it fetches nothing), prints ATOMIC_START with the
wall-clock time, runs the test's command as ART's executor would (`sh -c` / `bash -c`), prints
ATOMIC_END with the exit code and time, and sleeps so that the cleanup_command can run in the
same container afterwards (`docker exec`). The test's alerts are the container's alerts whose
event lies between ATOMIC_START and the start of the cleanup: alerts for the prerequisite
steps, the wrapper's own sleep and the cleanup's exec are not the test's.
"""

from __future__ import annotations

import contextlib
import io
import re
import tarfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.detection.atomics import ATOMICS_IN_CONTAINER, AtomicTest, fill
from bench.detection.roxd import Roxd
from bench.detection.tactics import phases_of, tactics_of

IMAGE = "roxd-test/atomic:latest"
LABEL = "roxd-detection-bench"

WRAPPER = r"""
exec </dev/null
cd /root
i=0
while [ "$i" -lt "${ATOMIC_NDEPS:-0}" ]; do
    pre="ATOMIC_PRE_$i"; get="ATOMIC_GET_$i"; dl="ATOMIC_DL_$i"; desc="ATOMIC_DESC_$i"
    if ! "$ATOMIC_DEPEXEC" -c "${!pre}" >/dev/null 2>&1; then
        if [ "${!dl}" = 1 ]; then
            echo "ATOMIC_SKIP prerequisite needs a download: ${!desc}"; exec sleep 600
        fi
        "$ATOMIC_DEPEXEC" -c "${!get}" >/dev/null 2>&1
        if ! "$ATOMIC_DEPEXEC" -c "${!pre}" >/dev/null 2>&1; then
            echo "ATOMIC_SKIP prerequisite not met offline: ${!desc}"; exec sleep 600
        fi
    fi
    i=$((i + 1))
done
echo "ATOMIC_START $EPOCHREALTIME"
"$ATOMIC_EXEC" -c "$ATOMIC_CMD"
rc=$?
echo "ATOMIC_END $rc $EPOCHREALTIME"
exec sleep 600
"""

_MISSING_ART_FILE = re.compile(
    r"(?<![\w/])" + re.escape(ATOMICS_IN_CONTAINER)
    + r"/([^\s:'\"]+)['\"]?: No such file or directory")
_NOT_FOUND = re.compile(r"(?:^|\s|:)([\w.+\-/]+): (?:command )?not found")


@dataclass
class Result:
    key: str
    technique: str
    number: int
    name: str
    guid: str
    executor: str
    tactic: str
    tactics: list[str]
    phases: list[str]
    status: str = "skipped"  # executed | skipped
    skip_reason: str = ""
    rc: int | None = None
    timed_out: bool = False
    seconds: float = 0.0
    missing_tools: list[str] = field(default_factory=list)
    alerts: list[dict[str, str]] = field(default_factory=list)
    any_alert: bool = False
    in_phase: bool = False
    miss_reason: str = ""
    output_tail: str = ""
    # where the test's alerts are taken from once the run is over (roxd may lag under load)
    container_id: str = ""
    window_ns: tuple[int, int] = (0, 0)
    drained: bool = False  # roxd had handled the kernel's events before the cleanup ran

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def new_result(test: AtomicTest) -> Result:
    tactics = list(tactics_of(test.technique))
    return Result(key=test.key, technique=test.technique, number=test.number, name=test.name,
                  guid=test.guid, executor=test.executor, tactic=tactics[0], tactics=tactics,
                  phases=list(phases_of(test.technique)))


def environment(test: AtomicTest) -> dict[str, str]:
    dep_exec = test.dependency_executor if test.dependency_executor in ("sh", "bash") \
        else test.executor
    env = {"ATOMIC_EXEC": f"/bin/{test.executor}",
           "ATOMIC_CMD": fill(test.command, test.arguments),
           "ATOMIC_NDEPS": str(len(test.dependencies)), "ATOMIC_DEPEXEC": f"/bin/{dep_exec}",
           "HOME": "/root", "USER": "root"}
    for i, d in enumerate(test.dependencies):
        env[f"ATOMIC_PRE_{i}"] = fill(d.prereq_command, test.arguments) or "true"
        env[f"ATOMIC_GET_{i}"] = fill(d.get_prereq_command, test.arguments) or "true"
        env[f"ATOMIC_DL_{i}"] = "1" if d.needs_download else "0"
        env[f"ATOMIC_DESC_{i}"] = d.description.replace("\n", " ")[:160]
    return env


# some tests name ART's install path literally instead of PathToAtomicsFolder
LITERAL_ATOMICS = "/tmp/AtomicRedTeam/atomics"


def env_text(test: AtomicTest) -> str:
    return "\n".join(environment(test).values())


def _atomics_tar(atomics: Path, technique: str, where: str = ATOMICS_IN_CONTAINER) -> bytes:
    """The technique's folder (src/, bin/) as a tar to unpack at / (<where>/T...)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        src = atomics / technique
        tar.add(str(src), arcname=f"{where.strip('/')}/{technique}")
    return buf.getvalue()


def _parse_time(text: str) -> int:
    sec, _, frac = text.partition(".")
    return int(sec) * 1_000_000_000 + int((frac + "000000000")[:9])


@dataclass
class Runner:
    client: Any
    roxd: Roxd
    atomics: Path
    run_id: str
    timeout_s: float = 20.0
    grace_s: float = 0.5
    image: str = IMAGE

    def run(self, test: AtomicTest) -> Result:
        res = new_result(test)
        began = time.monotonic()
        container = None
        try:
            container = self.client.containers.create(
                self.image, ["/bin/bash", "-c", WRAPPER], environment=environment(test),
                name=f"atomic-{self.run_id}-{test.key.lower().replace('.', '-')}-"
                     f"{uuid.uuid4().hex[:4]}",
                labels={LABEL: self.run_id, "atomic-test": test.key}, network_mode="none",
                hostname="atomic", working_dir="/root", pids_limit=512, mem_limit="512m",
                nano_cpus=1_000_000_000)
            if test.uses_atomics_folder() and (self.atomics / test.technique).is_dir():
                container.put_archive("/", _atomics_tar(self.atomics, test.technique))
            if LITERAL_ATOMICS in env_text(test) and (self.atomics / test.technique).is_dir():
                container.put_archive("/", _atomics_tar(self.atomics, test.technique,
                                                        LITERAL_ATOMICS))
            container.start()
            self._follow(container, test, res)
        except Exception as exc:  # a harness failure is a skip with its reason, never a pass
            res.status = "skipped"
            res.skip_reason = f"harness error: {type(exc).__name__}: {exc}"[:300]
        finally:
            if container is not None:
                with contextlib.suppress(Exception):
                    container.remove(force=True)
            res.seconds = round(time.monotonic() - began, 2)
        return res

    def _follow(self, container: Any, test: AtomicTest, res: Result) -> None:
        deadline = time.monotonic() + self.timeout_s
        start_ns = end_ns = 0
        out = ""
        while True:
            out = container.logs(stdout=True, stderr=False).decode(errors="replace")
            if m := re.search(r"^ATOMIC_SKIP (.*)$", out, re.M):
                res.status, res.skip_reason = "skipped", m.group(1).strip()
                return
            if m := re.search(r"^ATOMIC_START (\S+)$", out, re.M):
                start_ns = _parse_time(m.group(1))
            if m := re.search(r"^ATOMIC_END (\d+) (\S+)$", out, re.M):
                res.rc = int(m.group(1))
                end_ns = _parse_time(m.group(2))
                break
            container.reload()
            if container.status not in ("created", "running"):
                res.status, res.skip_reason = "skipped", f"container {container.status} early"
                res.output_tail = out[-400:]
                return
            if time.monotonic() > deadline:
                res.timed_out = True
                break
            time.sleep(0.1)
        time.sleep(self.grace_s)  # let background work of the test go on a little
        cleanup_ns = time.time_ns()
        err = container.logs(stdout=False, stderr=True).decode(errors="replace")
        res.output_tail = (out + err)[-400:]
        res.missing_tools = sorted({m.group(1).rsplit("/", 1)[-1]
                                    for m in _NOT_FOUND.finditer(err)})[:10]
        if start_ns == 0:
            res.status, res.skip_reason = "skipped", "prerequisites did not finish in time"
            return
        lacking = sorted(set(_MISSING_ART_FILE.findall(err)))
        if res.rc == 127 and res.missing_tools:
            res.status = "skipped"
            res.skip_reason = "tool missing in the image: " + ", ".join(res.missing_tools)
        elif lacking:
            # the test's own payload is not in the checkout (binaries and images that ART
            # keeps out of the repository): nothing of the technique ran
            res.status = "skipped"
            res.skip_reason = "needs files the atomics checkout lacks: " + ", ".join(lacking)[:200]
        else:
            res.status = "executed"
        res.container_id, res.window_ns = container.id, (start_ns, cleanup_ns)
        # roxd judges an exec when it handles it, not when it happens: let it catch up before
        # the cleanup deletes what the test dropped and the container is removed
        res.drained = self.roxd.wait_drained()
        if test.cleanup.strip():
            with contextlib.suppress(Exception):
                container.exec_run(["timeout", "10", f"/bin/{test.executor}", "-c",
                                    fill(test.cleanup, test.arguments)], stdin=False)
        _ = end_ns


def attribute(res: Result, roxd: Roxd) -> None:
    """The test's alerts: its container's, for events between ATOMIC_START and the cleanup."""
    if not res.container_id:
        return
    seen: set[str] = set()
    for a in roxd.alerts_of(res.container_id, *res.window_ns):
        rid = a["rule"]["id"]
        if rid in seen:
            continue
        seen.add(rid)
        res.alerts.append({"rule": rid, "phase": a["rule"].get("phase", ""),
                           "severity": a["rule"].get("severity", "")})
    res.any_alert = bool(res.alerts)
    res.in_phase = any(a["phase"] in res.phases for a in res.alerts)
