"""Operator actions: kill a process by pidfd, quarantine a container, lift a quarantine.

These do not run on the event loop: pidfd kill touches no daemon state, and Quarantine is
thread-safe (its own lock) but slow (nft inside the container's namespace), which the loop
must never wait for.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from roxd.api.containers import ContainerDirectory
from roxd.api.http import Request
from roxd.api.port import DaemonPort, QuarantineControl
from roxd.enforce.kill import kill_pid, start_ticks
from roxd.enforce.protect import ProtectedProcesses
from roxd.errors import ApiError

log = logging.getLogger(__name__)


def _comm(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().rstrip("\n")
    except OSError:
        return None


class ActionEndpoints:
    def __init__(self, daemon: DaemonPort, directory: ContainerDirectory) -> None:
        self.daemon = daemon
        self.directory = directory

    def kill(self, req: Request, _params: dict[str, Any], body: dict[str, Any]) -> Any:
        pid = body["pid"]
        if pid == 1:
            raise ApiError(422, "refusing to kill pid 1 (the host's init)")
        if pid == os.getpid():
            raise ApiError(422, "refusing to kill roxd itself: stop it with SIGTERM")
        comm = _comm(pid)
        ticks = start_ticks(pid)  # the process the operator named: never a later holder
        if comm is None or ticks is None:
            raise ApiError(404, f"no process {pid}")
        outcome = kill_pid(pid, expect_start_ticks=ticks, protect=self._protected())
        log.warning("API: kill pid %d (%s) for %s: %s", pid, comm, req.peer.describe(),
                    outcome.reason)
        if not outcome.killed:
            status = 404 if "exited" in outcome.reason else 422
            raise ApiError(status, outcome.reason)
        return {"pid": pid, "killed": True, "reason": outcome.reason, "comm": comm}

    def _protected(self) -> ProtectedProcesses:
        """The daemon's protected processes (built-in plus [enforce]), as its policy says."""
        policy = self.daemon.policy()
        comms, exes = policy.get("protected_comms"), policy.get("protected_exes")
        if not isinstance(comms, list | tuple):
            return ProtectedProcesses()
        return ProtectedProcesses(comms=tuple(map(str, comms)),
                                  exes=tuple(map(str, exes)) if isinstance(exes, list | tuple)
                                  else ())

    def _quarantine(self) -> QuarantineControl:
        q = self.daemon.quarantine()
        if q is None:
            raise ApiError(501, "network quarantine is not available on this host (no "
                                "container runtime or no nftables: see roxd's start-up log)")
        return q

    def isolate(self, req: Request, params: dict[str, Any], body: dict[str, Any] | None) -> Any:
        from roxd.enforce.quarantine import QuarantineError

        q = self._quarantine()
        c = self.directory.resolve(params["ref"])
        reason = (body or {}).get("reason") or f"roxctl isolate by {req.peer.describe()}"
        try:
            record = q.isolate(c.id, c.name, reason)
        except QuarantineError as exc:
            raise ApiError(422, str(exc)) from None
        # one table serves a whole network namespace: the others in it are quarantined too
        return {"container": self.directory.describe(c), "quarantined": True,
                "quarantined_with": list(record.shared_with)}

    def release(self, req: Request, params: dict[str, Any], _body: Any) -> Any:
        from roxd.enforce.quarantine import QuarantineError

        q = self._quarantine()
        c = self.directory.resolve(params["ref"])
        try:
            released = q.release(c.id)
        except QuarantineError as exc:
            raise ApiError(422, str(exc)) from None
        if not released:
            raise ApiError(409, f"container {c.name or c.id[:12]} is not quarantined")
        log.warning("API: released %s for %s", c.name or c.id[:12], req.peer.describe())
        return {"container": self.directory.describe(c), "quarantined": False}
