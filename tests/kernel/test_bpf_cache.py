"""The compiled-object cache (roxd/sensor/bpf_cache.py, cached_bpf.py; issue 22): a second
start on the same cache dir loads bcc's bytecode from the cache instead of compiling, and
nothing differs: an exec alert, a file alert, a connect event and an in-kernel kill all still
happen, and each program the cache loads is the very program bcc loads itself (the kernel's
tag of its instructions). A damaged cache is set aside with one log line and the object is
compiled as before."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from roxd.api.client import ApiClient
from roxd.sensor import bpf_cache, bpf_sys
from roxd.sensor.loader import BPF_CACHE_ENV
from tests.conftest import RoxdProcess, start_roxd

pytestmark = pytest.mark.kernel

RULES = """
[[rule]]
id = "test.cache-exec"
name = "Cache test exec"
description = "Test rule: a command line with the cache test's marker."
phase = "foothold"
severity = "warning"
mitre = ["T1059"]
event = "exec"
actions = ["alert"]
[rule.when]
cmdline = { contains = ["roxd-cache-exec"] }
[rule.scope]
host = false

[[rule]]
id = "test.cache-file"
name = "Cache test file read"
description = "Test rule: the cache test's marker file is read."
phase = "objectives"
severity = "warning"
mitre = ["T1005"]
event = "file"
actions = ["alert"]
[rule.when]
path = ["/etc/roxd-cache-file"]
access = "read"

[[rule]]
id = "test.cache-kill"
name = "Cache test kill"
description = "Test rule: the cache test's marker binary is killed in the kernel."
phase = "objectives"
severity = "critical"
mitre = ["T1496"]
event = "exec"
actions = ["alert", "kill"]
[rule.when]
exe = "/tmp/roxd-cache-kill"
[rule.scope]
host = false
image = ["roxd-test/busybox:latest"]
"""

# exec (the marker command line), file (the marker read), connect (port 9 on the
# container's own loopback: refused, still a connect), kill (the marker binary)
WORKLOAD = ("echo x > /etc/roxd-cache-file; cat /etc/roxd-cache-file; "
            "sh -c 'true roxd-cache-exec'; nc -w 1 127.0.0.1 9 </dev/null; "
            "cp /bin/busybox /tmp/roxd-cache-kill; /tmp/roxd-cache-kill true; echo rc=$?")


@pytest.fixture(scope="module", autouse=True)
def own_cache_dirs() -> Iterator[None]:
    """This module's tests use cache dirs of their own (the first start must compile): the
    test session's shared one (ROXD_BPF_CACHE_DIR, tests/conftest.py) is set aside here."""
    saved = os.environ.pop(BPF_CACHE_ENV, None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ[BPF_CACHE_ENV] = saved


@pytest.fixture(scope="module")
def cache_setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, Path]:
    """The daemon tests' cache dir, the config naming it, the rules."""
    cache = tmp_path_factory.mktemp("bpf-cache")
    rules = tmp_path_factory.mktemp("cache-rules")
    (rules / "cache.toml").write_text(RULES)
    config = f'[daemon]\nstats_interval_s = 1.0\ncache_dir = "{cache}"\n'
    return cache, config, rules


def _start(tmp_path_factory: pytest.TempPathFactory, setup: tuple[Path, str, Path],
           name: str) -> RoxdProcess:
    _cache, config, rules = setup
    rp = start_roxd(tmp_path_factory.mktemp(name), config=config, rules=[rules])
    rp.wait_ready(timeout=120)
    return rp


def _startup(rp: RoxdProcess) -> dict[str, Any]:
    sock = str(rp.stderr_path.parent / "roxd.sock")
    return ApiClient(sock).get("/v1/status")["startup"]


def _cached_files(cache: Path) -> list[Path]:
    return sorted((cache / bpf_cache.CACHE_SUBDIR).glob("*.json"))


def _alert(rule_id: str, container: Any) -> Any:
    return lambda o: (o.get("type") == "alert" and o["rule"]["id"] == rule_id
                      and (o.get("container") or {}).get("id") == container.id)


def test_first_start_compiles_and_writes_the_cache(
        tmp_path_factory: pytest.TempPathFactory, cache_setup: tuple[Path, str, Path],
        docker_engine: Any) -> None:
    cache = cache_setup[0]
    rp = _start(tmp_path_factory, cache_setup, "roxd-cache-1")
    try:
        startup = _startup(rp)
        assert startup["bpf_object"]["origin"] == "compiled", startup
        assert "no cached object" in startup["bpf_object"]["note"]
        names = {s["name"] for s in startup["stages"]}
        assert {"bpf cache load", "bpf compile", "bpf cache write", "bpf load"} <= names
        assert "(eBPF compiled)" in rp.stderr()
    finally:
        assert rp.stop() == 0
    files = _cached_files(cache)
    assert len(files) == 1
    doc = json.loads(files[0].read_text())
    assert len(doc["functions"]) >= 90 and doc["tables"]
    # every program that checks roxd's own pid had it replaced by the sentinel
    assert sum(len(f["tgid_refs"]) for f in doc["functions"]) > 0


def test_second_start_loads_from_the_cache_and_still_detects(
        tmp_path_factory: pytest.TempPathFactory, cache_setup: tuple[Path, str, Path],
        run_container: Any) -> None:
    cache = cache_setup[0]
    before = _cached_files(cache)
    assert before, "the first test writes the cache"
    rp = _start(tmp_path_factory, cache_setup, "roxd-cache-2")
    try:
        startup = _startup(rp)
        assert startup["bpf_object"] == {"origin": "cache", "note": ""}, startup
        names = {s["name"] for s in startup["stages"]}
        assert "bpf compile" not in names and "bpf cache write" not in names
        assert {"bpf cache load", "bpf maps", "bpf load"} <= names
        assert "(eBPF cache)" in rp.stderr()
        assert "loaded from the compiled-object cache" in rp.stderr()

        c = run_container(WORKLOAD)
        assert c.wait(timeout=60)["StatusCode"] == 0
        logs = c.logs().decode()
        assert "rc=137" in logs, logs  # the marker binary died by SIGKILL before it ran
        rp.wait_for(_alert("test.cache-exec", c), timeout=20, message="exec alert")
        file_alert = rp.wait_for(_alert("test.cache-file", c), timeout=20,
                                 message="file alert")
        assert file_alert["event"]["file"]["path"] == "/etc/roxd-cache-file"
        kill_alert = rp.wait_for(_alert("test.cache-kill", c), timeout=20,
                                 message="kill alert")
        kill = next(x for x in kill_alert["actions"] if x["action"] == "kill")
        assert kill["outcome"] == "done" and kill["in_kernel"] is True
        rp.wait_for(lambda o: o.get("type") == "connect" and o["connect"]["dport"] == 9
                    and (o.get("container") or {}).get("id") == c.id, timeout=20,
                    message="connect event")
        # roxd's own pid was written where the sentinel was: its own bpf() calls (map
        # reads every second) are not reported as syscall events
        assert not rp.matching(lambda o: o.get("type") == "syscall"
                               and (o.get("process") or {}).get("pid") == rp.proc.pid)
    finally:
        assert rp.stop() == 0
    assert _cached_files(cache) == before  # used, not rewritten


def test_a_damaged_cache_is_set_aside_and_compiled(
        tmp_path_factory: pytest.TempPathFactory, cache_setup: tuple[Path, str, Path],
        docker_engine: Any) -> None:
    cache = cache_setup[0]
    (path,) = _cached_files(cache)
    text = path.read_text()
    at = text.index('"insns":"') + len('"insns":"') + 40
    path.write_text(text[:at] + ("A" if text[at] != "A" else "B") + text[at + 1:])
    rp = _start(tmp_path_factory, cache_setup, "roxd-cache-3")
    try:
        startup = _startup(rp)
        assert startup["bpf_object"]["origin"] == "compiled", startup
        assert "set aside" in startup["bpf_object"]["note"]
        assert "checksum mismatch" in startup["bpf_object"]["note"]
        warnings = [ln for ln in rp.stderr().splitlines() if "eBPF object cache:" in ln]
        assert len(warnings) == 1, warnings  # one clear line, not a traceback
        assert _startup(rp)["ready_s"] is not None
    finally:
        assert rp.stop() == 0
    (rewritten,) = _cached_files(cache)
    key = rewritten.stem
    assert bpf_cache.load(cache, key) is not None  # a good object again


@pytest.fixture(scope="module")
def sensor_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache dir for the two in-process tests: the second uses the first's object."""
    return tmp_path_factory.mktemp("sensor-cache")


def test_cached_programs_are_the_programs_bcc_loads(sensor_cache: Path) -> None:
    """The kernel's tag of each program (a hash of its instructions, map descriptors left
    out) is the same whether bcc compiled and loaded it with this process's pid compiled
    in, or the cache loaded it with this pid written in; and so is the program's name."""
    import ctypes as ct

    from bcc.libbcc import lib

    from roxd.sensor.loader import load_bcc, load_cached, optional_tracepoints
    from roxd.sensor.program import SensorConfig, sensor_cflags

    config = SensorConfig(cache_dir=sensor_cache, inbound=False)
    flags = sensor_cflags(config)
    assert f"-DROXD_TGID={os.getpid()}" in flags

    def tags(bpf: Any) -> dict[bytes, tuple[int, str]]:
        out = {}
        for name, fn in bpf.funcs.items():
            tag = ct.c_ulonglong()
            assert lib.bpf_prog_get_tag(fn.fd, ct.byref(tag)) == 0
            out[name] = (tag.value, bpf_sys.program_name_of(fn.fd))
        return out

    cached = load_cached(config.bpf_dir, "roxd.bpf.c", cache_dir=sensor_cache, what="test",
                         cflags=flags, source_flags=optional_tracepoints, attach=False)
    try:
        from_cache = tags(cached.bpf)
    finally:
        cached.bpf.cleanup()
    assert cached.origin == "compiled"  # a cache of this module's own: the first start
    native = load_bcc(config.bpf_dir, "roxd.bpf.c", cache_dir=sensor_cache, what="test",
                      cflags=flags, source_flags=optional_tracepoints, attach=False)
    try:
        from_bcc = tags(native.bpf)
    finally:
        native.bpf.cleanup()
    assert len(from_bcc) >= 90
    assert from_cache == from_bcc


def test_a_start_from_the_cache_pages_the_compiler_out(
        sensor_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A start that loads from the cache compiles nothing, but importing bcc mapped libLLVM
    and libclang and relocating them left tens of MB resident: it pages them out as a start
    that compiled does (measured: idle RSS 143 MB without, about 100 MB with)."""
    from roxd.sensor import loader
    from roxd.sensor.program import SensorConfig, sensor_cflags

    released: list[str] = []
    real = loader.release_compiler_memory
    monkeypatch.setattr(loader, "release_compiler_memory",
                        lambda: (released.append("x"), real())[1])
    config = SensorConfig(cache_dir=sensor_cache, inbound=False)
    for _ in range(2):  # the first fills this module's cache if no test did yet
        released.clear()
        loaded = loader.load_cached(config.bpf_dir, "roxd.bpf.c", cache_dir=sensor_cache,
                                    what="test", cflags=sensor_cflags(config),
                                    source_flags=loader.optional_tracepoints, attach=False)
        loaded.bpf.cleanup()
    assert loaded.origin == "cache"
    assert released == ["x"]


def test_a_cached_object_the_kernel_refuses_falls_back_to_the_compile(
        sensor_cache: Path) -> None:
    """Readable, checksum right, but a program the verifier refuses: the start compiles as
    before (load_bcc) and says why. In process, on the Sensor, with the object the test
    above cached (the same inputs)."""
    from roxd.sensor.program import Sensor, SensorConfig

    tmp_path = sensor_cache
    config = SensorConfig(cache_dir=tmp_path, inbound=False)
    first = Sensor(config, lambda _d: None)
    first.start()
    try:
        assert first.bpf_origin == "cache"
    finally:
        first.close()
    (path,) = _cached_files(tmp_path)
    obj = bpf_cache.load(tmp_path, path.stem)
    assert obj is not None
    exit_ins = bytes([0x95, 0, 0, 0, 0, 0, 0, 0])  # `exit` with r0 never set: refused
    broken = tuple(f if not f.name.startswith("tracepoint__") else
                   bpf_cache.FunctionRecord(f.name, exit_ins, (), (), f.btf_func_id)
                   for f in obj.functions)
    bpf_cache.save(tmp_path, bpf_cache.CompiledObject(obj.key, obj.license, obj.kern_version,
                                                      obj.btf, obj.tables, broken))
    second = Sensor(config, lambda _d: None)
    second.start()
    try:
        assert second.bpf_origin == "compiled"
        assert "loading the cached object failed" in second.bpf_cache_note
        assert len(second.attached) == len(first.attached)
    finally:
        second.close()
    assert not _cached_files(tmp_path)  # set aside: the next start compiles and rewrites


def test_inputs_found_uncacheable_go_straight_to_the_compile(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once a fresh compile's object was refused for a key, later starts with that key call
    the plain compile (load_bcc) at once instead of compiling twice. Both compiles are
    replaced here: what is checked is which path load_cached takes."""
    from roxd.sensor import loader
    from roxd.sensor.program import SensorConfig, sensor_cflags

    config = SensorConfig(cache_dir=tmp_path, inbound=False)
    for_cache: list[int] = []

    class Compiled(Exception):
        pass

    def plain_compile(*_a: Any, **_k: Any) -> Any:
        raise Compiled

    def compile_for_cache(*_a: Any) -> tuple[None, str]:
        for_cache.append(1)
        return None, "the compiled object cannot be cached: test"

    monkeypatch.setattr(loader, "load_bcc", plain_compile)
    monkeypatch.setattr(loader, "_compile_for_cache", compile_for_cache)

    def start() -> None:
        with pytest.raises(Compiled):
            loader.load_cached(config.bpf_dir, "roxd.bpf.c", cache_dir=tmp_path, what="t",
                               cflags=sensor_cflags(config),
                               source_flags=loader.optional_tracepoints, attach=False)

    start()
    assert for_cache == [1]
    (mark,) = (tmp_path / bpf_cache.CACHE_SUBDIR).glob("*.refused")
    assert "cannot be cached: test" in mark.read_text()
    start()
    assert for_cache == [1]  # the second start did not compile for the cache again
