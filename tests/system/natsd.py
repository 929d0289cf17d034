"""A real nats-server with JetStream on a free loopback port, its store in a temp dir, and a
small reader for what the stream holds. Imported by the NATS tests (fixture `nats_server`).

The server is started with -a 127.0.0.1 (never another interface), stopped with SIGTERM (a
graceful shutdown, as systemd would) and started again on the same port and store, so a test
can take it away for a while. Teardown stops it even when the test failed.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_until
from tests.system.conftest import _apt_install, _listening, _stop, free_port

NATS_SERVER = "nats-server"

# The [[alerts.nats]] table a test's roxd config carries ({url}: the server's): short
# heartbeat, backoff and timeouts, so a test does not wait for the production defaults.
NATS_TABLE = """
[[alerts.nats]]
servers = ["{url}"]
heartbeat_s = 1.0
backoff_max_s = 0.5
connect_timeout_s = 2.0
ack_timeout_s = 2.0
"""


@dataclass(frozen=True)
class StoredMsg:
    seq: int
    subject: str
    msg_id: str
    record: dict[str, Any]


@dataclass
class NatsServer:
    workdir: Path
    port: int
    conf: Path | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None
        cmd = [NATS_SERVER, "-a", "127.0.0.1", "-p", str(self.port), "-js",
               "-sd", str(self.workdir / "store")]
        if self.conf is not None:
            cmd += ["-c", str(self.conf)]
        log = (self.workdir / "nats-server.log").open("ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_until(lambda: self.proc is not None and (self.proc.poll() is not None
                                                      or _listening(self.port)),
                   20, message="nats-server listening")
        if self.proc.poll() is not None:
            raise AssertionError("nats-server exited:\n" + self.log())

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)
            wait_until(lambda: not _listening(self.port), 10, message="nats-server gone")

    def log(self) -> str:
        return (self.workdir / "nats-server.log").read_text(errors="replace")

    def messages(self, stream: str = "ROXD_ALERTS", url: str = "",
                 **connect: Any) -> list[StoredMsg]:
        """Every message the stream holds, in stream order."""
        return asyncio.run(self._messages(stream, url or self.url, connect))

    async def _messages(self, stream: str, url: str,
                        connect: dict[str, Any]) -> list[StoredMsg]:
        import nats
        from nats.js.errors import NotFoundError

        nc = await nats.connect(servers=[url], allow_reconnect=False, **connect)
        try:
            jsm = nc.jsm()
            try:
                info = await jsm.stream_info(stream)
            except NotFoundError:
                return []
            out = []
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                if info.state.messages == 0:
                    break
                m = await jsm.get_msg(stream, seq)
                out.append(StoredMsg(seq=m.seq, subject=m.subject,
                                     msg_id=(m.headers or {}).get("Nats-Msg-Id", ""),
                                     record=json.loads(m.data)))
            return out
        finally:
            await nc.close()

    def publish(self, subject: str, payload: bytes, msg_id: str,
                stream: str = "ROXD_ALERTS") -> None:
        """Store one message as a publisher would (to fake a lost acknowledgement)."""
        async def go() -> None:
            import nats
            nc = await nats.connect(servers=[self.url], allow_reconnect=False)
            try:
                await nc.jetstream().publish(subject, payload, stream=stream,
                                             headers={"Nats-Msg-Id": msg_id})
            finally:
                await nc.close()
        asyncio.run(go())


def start_nats_server(workdir: Path, conf_text: str = "") -> NatsServer:
    if shutil.which(NATS_SERVER) is None:
        _apt_install("nats-server")
    workdir.mkdir(parents=True, exist_ok=True)
    conf = None
    if conf_text:
        conf = workdir / "nats.conf"
        conf.write_text(conf_text)
    server = NatsServer(workdir, free_port(), conf)
    server.start()
    return server


@contextmanager
def running_nats_server(workdir: Path, conf_text: str = "") -> Iterator[NatsServer]:
    """A started nats-server (start_nats_server), stopped on the way out even when the body
    failed; after the block the server is gone, so `server.url` then points at nothing."""
    server = start_nats_server(workdir, conf_text)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """nats-server -js on 127.0.0.1:<free port>, store under tmp; stopped at teardown."""
    with running_nats_server(tmp_path / "nats") as server:
        yield server
