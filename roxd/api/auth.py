"""Who is on the other end of the socket (SO_PEERCRED) and what they may do.

Read (GET): root, members of the socket's group (`api.read_group`, `roxd`), or admins.
Change (POST, ...): root, or members of `api.admin_group` when one is configured.
Supplementary groups come from /proc/<pid>/status of the peer, read at accept time.
"""

from __future__ import annotations

import grp
import logging
import socket
import struct
from dataclasses import dataclass

log = logging.getLogger(__name__)

_UCRED = struct.Struct("3i")


@dataclass(frozen=True)
class PeerCred:
    pid: int
    uid: int
    gid: int
    groups: frozenset[int] = frozenset()

    def in_group(self, gid: int | None) -> bool:
        return gid is not None and (self.gid == gid or gid in self.groups)

    def describe(self) -> str:
        return f"uid={self.uid} gid={self.gid} pid={self.pid}"


def peer_cred(sock: socket.socket) -> PeerCred:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    return PeerCred(pid, uid, gid, _groups_of(pid))


def _groups_of(pid: int) -> frozenset[int]:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Groups:"):
                    return frozenset(int(g) for g in line.split()[1:])
    except (OSError, ValueError):
        pass
    return frozenset()


def group_id(name: str) -> int | None:
    if not name:
        return None
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


@dataclass(frozen=True)
class Authorizer:
    read_gid: int | None  # the socket's group; None: root only
    admin_gid: int | None  # None: root only

    def may_read(self, peer: PeerCred) -> bool:
        return peer.uid == 0 or peer.in_group(self.read_gid) or peer.in_group(self.admin_gid)

    def may_change(self, peer: PeerCred) -> bool:
        return peer.uid == 0 or peer.in_group(self.admin_gid)

    def denial(self, peer: PeerCred, access: str) -> str | None:
        """None when allowed, else the reason for a 403."""
        if access == "admin":
            if self.may_change(peer):
                return None
            who = "root" + (" or members of the admin group" if self.admin_gid is not None
                            else "")
            return f"changing roxd's state needs {who}; {peer.describe()} may only read"
        if self.may_read(peer):
            return None
        return (f"reading roxd's state needs root or membership of the socket's group; "
                f"{peer.describe()} is neither")
