"""The control API: HTTP/1.1 + JSON on a Unix socket (default /run/roxd/roxd.sock).

    curl --unix-socket /run/roxd/roxd.sock http://roxd/v1/status

The socket is 0660 root:<api.read_group> (root:root with a logged note when that group does
not exist). The server runs on its own threads; see http.py for why, routes.py for the order
of checks, openapi.json for the contract.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
import threading
from pathlib import Path
from typing import Any

from roxd.api.auth import Authorizer, group_id
from roxd.api.endpoints import Endpoints
from roxd.api.http import UnixHttpServer
from roxd.api.port import DaemonPort
from roxd.api.routes import Router
from roxd.api.settings import ApiSettings
from roxd.errors import RoxdError
from roxd.ui.off import DashboardOff, DashboardPart

log = logging.getLogger(__name__)

SOCKET_MODE = 0o660


def prepare_socket_path(path: Path) -> None:
    """Create the directory; remove a stale socket; refuse to replace a live one."""
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise RoxdError(f"API socket path {path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink(missing_ok=True)  # stale: its roxd is gone
        return
    finally:
        probe.close()
    raise RoxdError(f"another roxd answers on {path}: stop it first, or give this one "
                    "--socket PATH")


class ApiServer:
    def __init__(self, daemon: DaemonPort, socket_path: str,
                 settings: ApiSettings | None = None,
                 dashboard: DashboardPart | None = None) -> None:
        self.daemon = daemon
        # the web dashboard's listener (roxd/ui): serves these same endpoints; off by default
        self.dashboard: DashboardPart = dashboard or DashboardOff()
        self.socket_path = socket_path
        self.settings = settings or daemon.facts.api
        self.closing = threading.Event()
        self._server: UnixHttpServer | None = None
        self._threads: list[threading.Thread] = []
        self.endpoints: Endpoints | None = None

    def start(self) -> None:
        problems = self.settings.check()
        if problems:
            raise RoxdError("; ".join(problems))
        path = Path(self.socket_path)
        prepare_socket_path(path)
        group_gid = group_id(self.settings.read_group)
        read_gid = group_gid if group_gid is not None else 0  # the socket's group reads
        admin_gid = group_id(self.settings.admin_group)
        if self.settings.admin_group and admin_gid is None:
            log.warning("api.admin_group %r does not exist: only root may change state",
                        self.settings.admin_group)
        endpoints = Endpoints(self.daemon, self.settings, self.closing, str(path))
        endpoints.dashboard = self.dashboard
        authorizer = Authorizer(read_gid, admin_gid)
        router = Router(endpoints.handlers(), authorizer)
        server = UnixHttpServer(str(path), router, self.settings)
        endpoints.connections = server.stats
        try:
            os.chown(path, 0, read_gid)
            os.chmod(path, SOCKET_MODE)
        except OSError as exc:
            server.server_close()
            raise RoxdError(f"cannot set owner root:{self.settings.read_group} and mode "
                            f"{SOCKET_MODE:o} on the API socket {path}: {exc.strerror} "
                            "(roxd needs CAP_CHOWN and CAP_FOWNER for its socket)") from exc
        if group_gid is None:
            log.info("group %r does not exist: API socket %s is root:root 0660, so only root "
                     "(and group root) can use it (groupadd --system %s to let its members "
                     "read)",
                     self.settings.read_group, path, self.settings.read_group)
        self._server = server
        self.endpoints = endpoints
        endpoints.feed.start()
        self._spawn("roxd-api", lambda: server.serve_forever(poll_interval=0.25))
        self._spawn("roxd-api-sampler", self._sample)
        log.info("control API listening on %s", path)
        try:
            self.dashboard.start(endpoints, authorizer, self.settings)
        except RoxdError:
            self.close()
            raise

    def metrics_text(self) -> str:
        """What GET /v1/metrics answers (for the TCP metrics listener)."""
        assert self.endpoints is not None, "start() first"
        return self.endpoints.get_metrics(None, {}, None).body.decode()  # type: ignore[arg-type]

    def _spawn(self, name: str, target: Any) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _sample(self) -> None:
        assert self.endpoints is not None
        while not self.closing.wait(1.0):
            self.endpoints.status.sample()

    def close(self) -> None:
        self.closing.set()
        self.dashboard.close()
        server = self._server
        if server is None:
            return
        self._server = None
        server.closing.set()
        server.shutdown()
        server.server_close()
        with contextlib.suppress(OSError):
            os.unlink(self.socket_path)
        for thread in self._threads:
            thread.join(2.0)
