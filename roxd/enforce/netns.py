"""Run a function inside another process's network namespace, on a dedicated thread.

setns(CLONE_NEWNET) changes only the calling thread's network namespace, so a short-lived
thread enters the target namespace, runs the function (netlink sockets it opens belong to that
namespace), and the thread ends. The daemon's own threads never leave the host namespace.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable
from typing import TypeVar

CLONE_NEWNET = 0x40000000
T = TypeVar("T")

_libc = ctypes.CDLL("libc.so.6", use_errno=True)


class NetnsError(OSError):
    pass


def netns_inode(pid: int) -> int:
    return os.stat(f"/proc/{pid}/ns/net").st_ino


def host_netns_inodes() -> set[int]:
    """The host's network namespace: roxd's own, and pid 1's (roxd deployed as a Kubernetes
    pod without hostNetwork has a namespace of its own, but sees the host's init with
    hostPID)."""
    found = set()
    for path in ("/proc/self/ns/net", "/proc/1/ns/net"):
        try:
            found.add(os.stat(path).st_ino)
        except OSError:
            continue
    return found


def shares_host_netns(pid: int) -> bool:
    """True when pid's network namespace is the host's, e.g. --network host, hostNetwork."""
    return netns_inode(pid) in host_netns_inodes()


def run_in_scratch_netns(fn: Callable[[], T], timeout: float = 10.0) -> T:
    """Run fn in a new, empty network namespace of its own thread: gone when fn returns."""
    return _run_on_thread("netns-scratch", lambda: _unshare_net(), fn, timeout)


def _unshare_net() -> None:
    if _libc.unshare(CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise NetnsError(err, f"unshare(CLONE_NEWNET): {os.strerror(err)}")


def _run_on_thread(name: str, enter: Callable[[], None], fn: Callable[[], T],
                   timeout: float) -> T:
    result: dict[str, object] = {}

    def target() -> None:
        try:
            enter()
            result["value"] = fn()
        except BaseException as exc:  # handed to the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise NetnsError(0, f"{name}: did not finish in {timeout}s")
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return result["value"]  # type: ignore[return-value]


def run_in_netns(pid: int, fn: Callable[[], T], timeout: float = 10.0) -> T:
    result: dict[str, object] = {}

    def target() -> None:
        try:
            fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            result["error"] = NetnsError(exc.errno, f"network namespace of pid {pid}: "
                                                    f"{exc.strerror}")
            return
        try:
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                result["error"] = NetnsError(err, f"setns into pid {pid}: {os.strerror(err)}")
                return
        finally:
            os.close(fd)
        try:
            result["value"] = fn()
        except BaseException as exc:  # handed to the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=target, name=f"netns-{pid}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise NetnsError(0, f"netns operation in pid {pid} did not finish in {timeout}s")
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return result["value"]  # type: ignore[return-value]
