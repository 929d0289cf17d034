"""Connections to a syslog collector: UDP (RFC 5426), TCP with octet counting (RFC 6587 §3.4.1)
and TLS (RFC 5425, same framing), through the standard library only.

`peer_closed()` is checked before each message on a stream: a collector never writes to us, so
a readable socket means it closed or reset the connection (TLS: after any session
ticket has been read), and the message goes to a fresh
connection instead of into a dead one.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl

from roxd.alerts.settings import SyslogCollector

UDP_MAX = 65_000


class SyslogConnection:
    def __init__(self, collector: SyslogCollector) -> None:
        self.collector = collector
        self._sock: socket.socket | None = None
        self._ssl_context = _ssl_context(collector) if collector.protocol == "tls" else None

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def connect(self) -> None:
        c = self.collector
        self.close()
        if c.protocol == "udp":
            infos = socket.getaddrinfo(c.address, c.port, type=socket.SOCK_DGRAM)
            family, kind, proto, _, addr = infos[0]
            sock = socket.socket(family, kind, proto)
            sock.settimeout(c.connect_timeout_s)
            sock.connect(addr)  # connected UDP: ICMP port unreachable shows up as an error
        else:
            sock = socket.create_connection((c.address, c.port), timeout=c.connect_timeout_s)
            if self._ssl_context is not None:
                try:
                    sock = self._ssl_context.wrap_socket(
                        sock, server_hostname=c.server_name or c.address)
                except (OSError, ssl.SSLError):
                    sock.close()
                    raise
        self._sock = sock

    def peer_closed(self) -> bool:
        if self._sock is None or self.collector.protocol == "udp":
            return False
        raw = self._sock
        try:
            readable, _, _ = select.select([raw], [], [], 0)
        except (OSError, ValueError):
            return True
        if not readable:
            return False
        if isinstance(raw, ssl.SSLSocket):
            # TLS 1.3 servers send session tickets after the handshake: reading processes
            # them (no application data: SSLWantReadError). EOF or close_notify: closed.
            timeout = raw.gettimeout()
            try:
                raw.settimeout(0)
                return raw.recv(1) == b""
            except ssl.SSLWantReadError:
                return False
            except OSError:
                return True
            finally:
                with contextlib.suppress(OSError):
                    raw.settimeout(timeout)
        try:  # plain TCP: peek, never consume
            return raw.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True

    def send(self, msg: bytes) -> None:
        if self._sock is None:
            raise ConnectionError("not connected")
        if self.collector.protocol == "udp":
            self._sock.send(msg[:UDP_MAX])
        else:
            self._sock.sendall(b"%d " % len(msg) + msg)

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None


def _ssl_context(c: SyslogCollector) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=c.ca or None)
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    if c.cert:
        ctx.load_cert_chain(c.cert, c.key or None)
    return ctx
