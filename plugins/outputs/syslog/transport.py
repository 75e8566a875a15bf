"""Sockets for syslog: UDP datagrams, TCP and TLS streams, with an honest idea of "written".

A stream write is reported as done once every byte has been handed to the kernel
(``sendall``) and acknowledged by the receiver's TCP stack (the send queue drained); there is
no user-space buffer to flush. What TCP cannot tell is whether the receiver will read
those bytes: after a receiver restart, the old connection is half-closed and the first write
into it still "succeeds" (the peer answers with a reset the sender only sees on the *next*
write). :meth:`StreamConnection.peer_closed` looks for that before each batch with a
non-blocking read: an end-of-file or a reset there means the peer is gone, so the batch goes
over a fresh connection instead of into the void.

What remains (documented in ``docs/outputs/syslog_cef.md``): bytes already in the receiver's
socket buffer when it is killed, or in its in-memory queue when it crashes, are lost without
the sender knowing. Syslog over TCP has no application acknowledgement (RELP has).
"""
from __future__ import annotations

import fcntl
import select
import socket
import ssl
import struct
import termios
import time
from dataclasses import dataclass

WRITE_CHUNK = 1 << 20
"""Bytes per ``sendall``: large enough to cost few syscalls, small enough to bound each write's timeout."""


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    timeout: float

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def tls_context(*, ca_file: str | None, client_cert: str | None, client_key: str | None,
                verify: bool) -> ssl.SSLContext:
    """A client context that verifies the server against ``ca_file`` (else the system store).

    Raises OSError or ssl.SSLError when a file cannot be read; the caller reports it as a
    configuration problem.
    """
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if client_cert:
        context.load_cert_chain(client_cert, client_key)
    return context


class StreamConnection:
    """One TCP (optionally TLS) connection to a syslog receiver."""

    def __init__(self, endpoint: Endpoint, context: ssl.SSLContext | None):
        self.endpoint = endpoint
        self.context = context
        self.sock: socket.socket | None = None

    def connect(self) -> None:
        """Open the connection (and finish the TLS handshake); raises OSError on failure."""
        raw = socket.create_connection((self.endpoint.host, self.endpoint.port), timeout=self.endpoint.timeout)
        try:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            if self.context is not None:
                self.sock = self.context.wrap_socket(raw, server_hostname=self.endpoint.host)
            else:
                self.sock = raw
        except BaseException:
            raw.close()
            raise

    @property
    def connected(self) -> bool:
        return self.sock is not None

    def peer_closed(self) -> bool:
        """True when the receiver has closed or reset the connection (checked without blocking).

        Anything the receiver sent (syslog receivers send nothing; TLS 1.3 session tickets are
        consumed by the TLS layer) is read and discarded.
        """
        sock = self.sock
        if sock is None:
            return True
        try:
            sock.setblocking(False)
            while True:
                if not sock.recv(4096):
                    return True
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return False
        except OSError:
            return True
        finally:
            try:
                sock.settimeout(self.endpoint.timeout)
            except OSError:
                pass

    def closed_within(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for the receiver to close a fresh connection; True if it did.

        Receivers judge a client after accepting it: rsyslog checks a TLS client certificate
        (and ``AllowedSender``) once the handshake is over, then drops the connection. With
        TLS 1.3 the client's handshake is already complete by then, so a batch written at once
        would vanish. Waiting for that verdict before the first write costs a fraction of a
        second per connection, never per batch.
        """
        sock = self.sock
        if sock is None:
            return True
        poller = select.poll()
        poller.register(sock, select.POLLIN | select.POLLERR | select.POLLHUP)
        deadline = time.monotonic() + seconds
        while True:
            remaining = max(0.0, deadline - time.monotonic())
            if poller.poll(remaining * 1000) and self.peer_closed():
                return True
            if remaining <= 0:
                return False

    def write(self, frames: list[bytes]) -> None:
        """Write every frame with few large ``sendall`` calls; raises OSError if any byte was not written."""
        sock = self.sock
        if sock is None:
            raise ConnectionError("not connected")
        chunk: list[bytes] = []
        size = 0
        for frame in frames:
            chunk.append(frame)
            size += len(frame)
            if size >= WRITE_CHUNK:
                sock.sendall(b"".join(chunk))
                chunk = []
                size = 0
        if chunk:
            sock.sendall(b"".join(chunk))
        self.wait_acknowledged()

    def wait_acknowledged(self) -> None:
        """Wait until the receiver's TCP stack has acknowledged every byte written.

        ``sendall`` returns once the bytes are in *our* send queue; a receiver that goes away
        then takes them with it and the sender never learns. Waiting for the queue to drain
        (``SIOCOUTQ``: bytes not yet acknowledged) moves the moment of "delivered" to the
        receiver's side, costing about one round trip per batch. A reset seen meanwhile, or no
        acknowledgement within the timeout, raises, and the batch is sent again.
        """
        sock = self.sock
        if sock is None:
            raise ConnectionError("not connected")
        deadline = time.monotonic() + self.endpoint.timeout
        pause = 0.0005
        buf = bytearray(4)
        while True:
            try:
                fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, buf)
            except OSError:
                return  # not a platform that reports it: sendall is the best we know
            if struct.unpack("i", bytes(buf))[0] == 0:
                if self.peer_closed():
                    raise ConnectionResetError("the receiver closed the connection as the batch arrived")
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(f"the receiver acknowledged none of the last bytes for {self.endpoint.timeout:.0f}s")
            time.sleep(pause)
            pause = min(pause * 2, 0.05)

    def close(self) -> None:
        """Close; a TLS connection sends its ``close_notify`` first (``unwrap``) so the receiver logs no error."""
        sock, self.sock = self.sock, None
        if sock is None:
            return
        try:
            if isinstance(sock, ssl.SSLSocket):
                sock.settimeout(min(self.endpoint.timeout, 2.0))
                sock = sock.unwrap()
        except (OSError, ValueError):
            pass
        finally:
            try:
                sock.close()
            except OSError:
                pass


class DatagramConnection:
    """A connected UDP socket: one datagram per message, errors from ICMP surface on later sends."""

    def __init__(self, endpoint: Endpoint):
        self.endpoint = endpoint
        self.sock: socket.socket | None = None

    def connect(self) -> None:
        infos = socket.getaddrinfo(self.endpoint.host, self.endpoint.port, type=socket.SOCK_DGRAM)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(self.endpoint.timeout)
            sock.connect(address)
        except BaseException:
            sock.close()
            raise
        self.sock = sock

    @property
    def connected(self) -> bool:
        return self.sock is not None

    def peer_closed(self) -> bool:
        return self.sock is None

    def closed_within(self, seconds: float) -> bool:
        return self.sock is None

    def write(self, frames: list[bytes]) -> None:
        sock = self.sock
        if sock is None:
            raise ConnectionError("not connected")
        send = sock.send
        for frame in frames:
            send(frame)

    def close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            sock.close()
