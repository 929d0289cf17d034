"""DockerMetadataSource against a fake runtime (the ContainerRuntime port): scan, events,
reconnect, one warning when down."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from roxd.containers.docker_source import DockerMetadataSource, _reason, metadata_from_inspect
from roxd.runtime import ContainerMetadata, RuntimeEvent, RuntimeUnavailableError
from tests.conftest import wait_until

pytestmark = pytest.mark.unit

ID = "3c79270d70136d5d3f9916700ee58f8f50872c19d77f622a21dcbb64778ff218"
ID2 = "9f2d1c5e8a7b6c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d"


def inspect_doc(cid: str, name: str, image: str = "roxd-test/busybox:latest") -> dict[str, Any]:
    return {
        "Id": cid,
        "Name": f"/{name}",
        "Image": "sha256:19021ce95b2e",
        "Config": {"Image": image, "Labels": {"team": "a"}},
        "State": {"Running": True, "Pid": 1234},
    }


def test_metadata_from_inspect() -> None:
    m = metadata_from_inspect(inspect_doc(ID, "web"))
    assert (m.id, m.name, m.image, m.image_id, dict(m.labels), m.pid) == (
        ID, "web", "roxd-test/busybox:latest", "sha256:19021ce95b2e", {"team": "a"}, 1234)
    stopped = metadata_from_inspect({"Id": ID, "Config": {"Labels": None}, "State": {"Pid": 0}})
    assert (stopped.name, stopped.image, dict(stopped.labels)) == (None, None, {})
    assert stopped.pid is None


def test_reason_digs_out_the_os_error() -> None:
    inner = FileNotFoundError(2, "No such file or directory")
    outer = RuntimeError("Connection aborted.", inner)
    assert _reason(outer) == "No such file or directory"
    assert _reason(ValueError("bad\nsecond line")) == "bad"


class FakeStream:
    def __init__(self) -> None:
        self.q: queue.Queue[RuntimeEvent | None] = queue.Queue()

    def __iter__(self) -> Iterator[RuntimeEvent]:
        while True:
            item = self.q.get()
            if item is None:
                return
            yield item

    def close(self) -> None:
        self.q.put(None)


class FakeRuntime:
    """The part of ContainerRuntime the source uses."""

    name = "docker"
    url = "unix:///fake/docker.sock"

    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine

    def running_ids(self) -> list[str]:
        return list(self.engine.running)

    def inspect(self, cid: str) -> ContainerMetadata | None:
        self.engine.answering.wait()  # cleared: a hung engine (SIGSTOPped dockerd)
        if cid not in self.engine.running:
            return None
        return metadata_from_inspect(self.engine.running[cid])

    def events(self, since: int | None = None, actions: Any = ()) -> FakeStream:
        s = FakeStream()
        self.engine.streams.append(s)
        return s


class FakeEngine:
    def __init__(self) -> None:
        self.running: dict[str, dict[str, Any]] = {}
        self.streams: list[FakeStream] = []
        self.down = False
        self.connects = 0
        self.answering = threading.Event()
        self.answering.set()

    def connect(self) -> Any:
        self.connects += 1
        if self.down:
            raise RuntimeUnavailableError("docker not reachable") from ConnectionError(
                FileNotFoundError(2, "No such file or directory"))
        return FakeRuntime(self)

    def emit(self, action: str, cid: str) -> None:
        self.streams[-1].q.put(RuntimeEvent(action, cid))


def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> bool:
    return bool(wait_until(cond, timeout, interval=0.01))


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> FakeEngine:
    e = FakeEngine()
    monkeypatch.setattr(DockerMetadataSource, "_connect", lambda self: e.connect())
    return e


def test_scan_events_and_listener(engine: FakeEngine) -> None:
    engine.running[ID] = inspect_doc(ID, "before")
    src = DockerMetadataSource(backoff_initial=0.01)
    changed: list[str] = []
    src.add_listener(changed.append)
    src.start()
    try:
        assert src.wait_connected(5)
        assert src.get(ID).name == "before"  # type: ignore[union-attr]
        engine.running[ID2] = inspect_doc(ID2, "after")
        engine.emit("start", ID2)
        assert wait_for(lambda: ID2 in changed)
        assert src.get(ID2).name == "after"  # type: ignore[union-attr]
        engine.running[ID2] = inspect_doc(ID2, "renamed")
        engine.emit("rename", ID2)
        assert wait_for(lambda: src.get(ID2).name == "renamed")  # type: ignore[union-attr]
        del engine.running[ID2]
        engine.emit("destroy", ID2)
        assert wait_for(lambda: ID2 not in {m.id for m in src.containers()})
    finally:
        src.stop()
    assert not src.connected


def test_get_asks_the_engine_once_for_an_unseen_id(engine: FakeEngine) -> None:
    src = DockerMetadataSource(backoff_initial=0.01)
    src.start()
    try:
        assert src.wait_connected(5)
        engine.running[ID] = inspect_doc(ID, "raced-its-start-event")
        assert src.get(ID).name == "raced-its-start-event"  # type: ignore[union-attr]
        assert src.get(ID2) is None
        engine.running[ID2] = inspect_doc(ID2, "x")
        assert src.get(ID2) is None  # a recent miss is not asked again
    finally:
        src.stop()


def returns(call: Callable[[], Any]) -> list[Any]:
    """Run `call` on a thread; [its result] once it returned, [] while it is still held
    (the engine below hangs until the test releases it: a held caller never returns)."""
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(call()), daemon=True)
    t.start()
    t.join(10)
    return out


def test_a_hung_engine_never_holds_a_get_on_a_miss(engine: FakeEngine) -> None:
    ID3 = "1" * 64
    src = DockerMetadataSource(backoff_initial=0.01, miss_wait=0.05)
    changed: list[str] = []
    src.add_listener(changed.append)
    src.start()
    try:
        assert src.wait_connected(5)
        engine.running[ID] = inspect_doc(ID, "first")
        engine.running[ID2] = inspect_doc(ID2, "second")
        engine.answering.clear()  # the engine hangs: every inspect blocks until released
        # the event loop's resolve of a new container: answered (None: by cgroup only) while
        # the inspect is still held by the engine
        assert returns(lambda: src.get(ID)) == [None]
        assert returns(lambda: src.get(ID2)) == [None]
        assert returns(lambda: src.get(ID)) == [None]  # still pending: not asked twice
        assert src.miss_stats["gave_up"] == 1  # the first waited miss_wait, then gave up
        assert src.miss_stats["not_waited"] == 2  # the engine is known slow: no wait at all
        assert changed == []
        engine.answering.set()
        # the answers, late: announced like runtime events, so the resolver re-attributes
        assert wait_for(lambda: ID in changed and ID2 in changed)
        assert src.get(ID).name == "first"  # type: ignore[union-attr]
        assert src.get(ID2).name == "second"  # type: ignore[union-attr]
        # the engine answers quickly again: a miss is answered inline, nobody is told twice
        engine.running[ID3] = inspect_doc(ID3, "third")
        assert src.get(ID3).name == "third"  # type: ignore[union-attr]
        assert ID3 not in changed
    finally:
        engine.answering.set()
        src.stop()


def test_reconnects_with_one_warning(engine: FakeEngine, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="roxd.containers.docker_source")
    engine.down = True
    src = DockerMetadataSource(backoff_initial=0.01, backoff_max=0.02)
    src.start()
    try:
        assert wait_for(lambda: engine.connects >= 5)
        assert not src.connected
        assert src.get(ID) is None
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert "falls back to the cgroup path only" in warnings[0].getMessage()
        assert "No such file or directory" in warnings[0].getMessage()
        assert not any(r.exc_info for r in caplog.records)
        # The engine comes back: the thread connects and scans.
        engine.running[ID] = inspect_doc(ID, "web")
        engine.down = False
        assert src.wait_connected(5)
        assert src.get(ID).name == "web"  # type: ignore[union-attr]
        # dockerd restarts: the stream ends, the thread reconnects and rescans.
        streams = len(engine.streams)
        engine.running[ID] = inspect_doc(ID, "web-after-restart")
        engine.streams[-1].close()
        assert wait_for(lambda: len(engine.streams) > streams and src.connected)
        assert wait_for(lambda: src.get(ID).name == "web-after-restart")  # type: ignore[union-attr]
    finally:
        src.stop()


def test_stop_is_prompt_while_following_events(engine: FakeEngine) -> None:
    src = DockerMetadataSource()
    src.start()
    assert src.wait_connected(5)
    t0 = time.monotonic()
    src.stop()
    assert time.monotonic() - t0 < 2
    assert not any(t.name == "roxd-docker-events" for t in threading.enumerate())


def test_an_inspect_that_raises_on_a_miss_is_a_miss_not_a_stuck_id(
        engine: FakeEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    """A runtime raising something unexpected from the worker: the id is not left pending
    (a stuck id would never be asked again, and enough of them would stop every inspect)."""
    src = DockerMetadataSource(backoff_initial=0.01, miss_wait=1.0, miss_ttl=0.0)
    src.start()
    try:
        assert src.wait_connected(5)
        calls: list[str] = []

        def broken(self: FakeRuntime, cid: str) -> ContainerMetadata | None:
            calls.append(cid)
            raise OSError("the engine's socket went away mid-answer")

        monkeypatch.setattr(FakeRuntime, "inspect", broken)
        assert src.get(ID) is None
        assert src.get(ID) is None  # asked again (miss_ttl 0): it was not stuck pending
        assert calls == [ID, ID] and src._pending == {}
    finally:
        src.stop()


def test_a_quick_refusal_never_clears_known_slow(
        engine: FakeEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hung engine behind a Unix socket first takes connections into its accept queue (each
    inspect then runs into the timeout), then refuses at once (the queue is full: EAGAIN).
    A refusal is no answer: it must not clear "known slow", or the next new container's
    event would wait `miss_wait` again on the loop behind an inspect that hangs."""
    from roxd.runtime import RuntimeControlError

    ID3 = "1" * 64
    src = DockerMetadataSource(backoff_initial=0.01, miss_wait=0.05)
    src.start()
    try:
        assert src.wait_connected(5)

        def hung_then_refusing(self: FakeRuntime, cid: str) -> ContainerMetadata | None:
            if cid == ID2:  # the accept queue is full: refused at once
                raise RuntimeUnavailableError("docker not reachable: Resource temporarily "
                                              "unavailable")
            self.engine.answering.wait()  # taken into the queue, never answered
            raise RuntimeControlError("docker inspect: Read timed out")

        monkeypatch.setattr(FakeRuntime, "inspect", hung_then_refusing)
        engine.answering.clear()
        assert returns(lambda: src.get(ID)) == [None]
        assert src.miss_stats["gave_up"] == 1  # waited miss_wait once: now known slow
        time.sleep(0.1)  # the hung inspect outlives miss_wait (its timeout)
        engine.answering.set()
        assert wait_for(lambda: not src._pending)
        assert returns(lambda: src.get(ID2)) == [None]  # known slow: not waited
        assert wait_for(lambda: not src._pending and src.miss_stats["inspects"] == 2)
        engine.answering.clear()  # hangs again
        assert returns(lambda: src.get(ID3)) == [None]
        # the quick refusal left "known slow" set: the new id was not waited for either
        assert src.miss_stats["not_waited"] == 2
        assert src.miss_stats["gave_up"] == 1
    finally:
        engine.answering.set()
        src.stop()
