"""A hostile Asana: the local Asana fake, whose answers turn hostile on demand at the transport level.

:class:`HostileAsana` serves the Asana audit log as :class:`~tests.fakes.asana.AsanaFake` does,
until :meth:`HostileAsana.hostile` picks a mode; from then on every request that carries an
``offset`` (the second and later pages of a poll, and a poll resumed from a saved offset; or
every request, with ``every=True``) gets, instead of its page:

``slowloris``  the status line and headers, then one byte of the page every ``trickle`` seconds
``huge``       a 200 MB page (``huge_bytes``), chunked, streamed from one 1 MiB block: never built
``bomb``       a 1 MiB gzip body that inflates to 1 GiB (``bomb_bytes``) of JSON whitespace
``html``       a proxy's HTML page with status 200
``redirect``   a 302 to the same page on another host name (``localhost`` for ``127.0.0.1``);
               what reaches it is recorded in :attr:`HostileAsana.elsewhere`
``truncated``  a ``Content-Length`` of the whole page, half the page, then the connection closed
``storm``      ``status`` (503 by default, or 429) with ``Retry-After: 0``, for ever

``hostile(None)`` makes it an honest Asana again. Run it as a process (for ``bench/hostile.py``)
with ``python -m tests.fakes.hostile_http --mode MODE --ready-file FILE``.
"""
from __future__ import annotations

import argparse
import socket
import threading
import zlib
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.fakes.asana import PREFIX, AsanaFake
from tests.fakes.base import HTML_ERROR, Request, Response, json_response, serve_forever_cli

MODES = ("slowloris", "huge", "bomb", "html", "redirect", "truncated", "storm")
MIB = 1024 * 1024
ELSEWHERE = "/elsewhere"


def gzip_bomb(inflated: int) -> bytes:
    """A valid gzip body of about ``inflated / 1000`` bytes: ``{"data":[`` + spaces + ``]}``.

    One MiB of spaces is deflated once, ending on a full flush (so the block depends on nothing
    before it), and that block repeated: a 1 GiB bomb is built in well under a second.
    """
    head, tail = b'{"data":[', b'],"next_page":null}'
    block = b" " * MIB
    blocks = max(1, (inflated - len(head) - len(tail)) // MIB)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    first = deflate.compress(head) + deflate.flush(zlib.Z_FULL_FLUSH)
    repeated = deflate.compress(block) + deflate.flush(zlib.Z_FULL_FLUSH)
    last = deflate.compress(tail) + deflate.flush(zlib.Z_FINISH)
    crc = zlib.crc32(head)
    for _ in range(blocks):
        crc = zlib.crc32(block, crc)
    crc = zlib.crc32(tail, crc)
    size = len(head) + blocks * MIB + len(tail)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    trailer = crc.to_bytes(4, "little") + (size & 0xFFFFFFFF).to_bytes(4, "little")
    return header + first + repeated * blocks + last + trailer


class HostileAsana(AsanaFake):
    """See the module docstring."""

    name = "hostile-asana"

    def __init__(self, *, huge_bytes: int = 200 * MIB, bomb_bytes: int = 1024 * MIB, trickle: float = 2.0,
                 **kwargs: Any):
        super().__init__(**kwargs)
        self.mode: str | None = None
        self.every = False
        self.status = 503
        self.huge_bytes = huge_bytes
        self.bomb_bytes = bomb_bytes
        self.trickle = trickle
        self.hostile_answers = 0
        self.answering = threading.Event()
        """Set when the first hostile answer starts: a test awaits it before it signals the forwarder."""
        self.elsewhere: list[Request] = []
        self._bomb_body: bytes | None = None
        self._stopping = threading.Event()
        self.route("GET", ELSEWHERE + PREFIX + r"/workspaces/([^/]+)/audit_log_events", self._elsewhere)

    def hostile(self, mode: str | None, *, every: bool = False, status: int = 503) -> HostileAsana:
        """Answer every later request with an ``offset`` (or every one) in ``mode``; None: honest again."""
        if mode is not None and mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; one of {', '.join(MODES)}")
        if mode == "bomb" and self._bomb_body is None:
            self._bomb_body = gzip_bomb(self.bomb_bytes)
        self.mode, self.every, self.status = mode, every, status
        return self

    def stop(self) -> None:
        self._stopping.set()
        super().stop()

    # ------------------------------------------------------------------ dispatch

    def _dispatch(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        query = parse_qs(parts.query, keep_blank_values=True)
        mode = self.mode
        if mode is None or not parts.path.startswith(PREFIX) or not (self.every or "offset" in query):
            super()._dispatch(h)
            return
        with self._lock:
            self.hostile_answers += 1
            self.requests.append(Request(h.command, parts.path, query, dict(h.headers.items()), b""))
        self.answering.set()
        try:
            getattr(self, "_" + mode)(h, parts)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass  # the client gave up on us: that is the point
        h.close_connection = True

    def _page(self, h: BaseHTTPRequestHandler) -> bytes:
        """The honest answer to this request, as bytes."""
        parts = urlsplit(h.path)
        req = Request("GET", parts.path, parse_qs(parts.query, keep_blank_values=True), dict(h.headers.items()), b"")
        return self._audit_log_events(req).encoded()

    def _head(self, h: BaseHTTPRequestHandler, status: int, headers: dict[str, str]) -> None:
        h.send_response(status)
        for key, value in headers.items():
            h.send_header(key, value)
        h.end_headers()
        h.wfile.flush()

    def _slowloris(self, h: BaseHTTPRequestHandler, parts: Any) -> None:
        body = self._page(h)
        self._head(h, 200, {"Content-Type": "application/json", "Content-Length": str(len(body))})
        for i in range(len(body)):
            if self._stopping.wait(self.trickle):
                return
            h.wfile.write(body[i:i + 1])
            h.wfile.flush()

    def _huge(self, h: BaseHTTPRequestHandler, parts: Any) -> None:
        event = b'{"gid":"1","created_at":"2026-01-01T00:00:00.000Z","event_type":"user_login_succeeded"},'
        block = event * (MIB // len(event))
        self._head(h, 200, {"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
        sent = 0

        def chunk(data: bytes) -> None:
            h.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

        chunk(b'{"data":[')
        while sent + len(block) < self.huge_bytes and not self._stopping.is_set():
            chunk(block)
            sent += len(block)
        chunk(event[:-1] + b'],"next_page":null}')
        h.wfile.write(b"0\r\n\r\n")
        h.wfile.flush()

    def _bomb(self, h: BaseHTTPRequestHandler, parts: Any) -> None:
        body = self._bomb_body or b""
        self._head(h, 200, {"Content-Type": "application/json", "Content-Encoding": "gzip",
                            "Content-Length": str(len(body))})
        for at in range(0, len(body), 64 * 1024):
            h.wfile.write(body[at:at + 64 * 1024])
        h.wfile.flush()

    def _truncated(self, h: BaseHTTPRequestHandler, parts: Any) -> None:
        body = self._page(h)
        self._head(h, 200, {"Content-Type": "application/json", "Content-Length": str(len(body))})
        h.wfile.write(body[: len(body) // 2])
        h.wfile.flush()
        h.connection.shutdown(socket.SHUT_RDWR)

    def _html(self, h: BaseHTTPRequestHandler, parts: Any) -> None:
        self._write(h, Response(status=200, body=HTML_ERROR, content_type="text/html"))

    def _storm(self, h: BaseHTTPRequestHandler, parts: Any) -> None:
        self._write(h, json_response({"errors": [{"message": "Server Error"}]}, self.status, {"Retry-After": "0"}))

    def _redirect(self, h: BaseHTTPRequestHandler, parts: Any) -> None:
        target = f"http://localhost:{self.port}{ELSEWHERE}{parts.path}?{parts.query}"
        self._write(h, Response(status=302, body=b"", headers={"Location": target}))

    def _elsewhere(self, req: Request) -> Response:
        with self._lock:
            self.elsewhere.append(req)
        return self._audit_log_events(Request(req.method, req.path[len(ELSEWHERE):], req.query, req.headers, b""))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the hostile Asana fake until killed.")
    parser.add_argument("--mode", choices=MODES, required=True)
    parser.add_argument("--every", action="store_true", help="every request, not only those with an offset")
    parser.add_argument("--events", type=int, default=150)
    parser.add_argument("--trickle", type=float, default=2.0)
    parser.add_argument("--token", default="2/1204/1207:fake-service-account")
    parser.add_argument("--ready-file")
    parser.add_argument("--answering-file", help="created when the first hostile answer starts")
    args = parser.parse_args(argv)
    fake = HostileAsana(events=args.events, span=3600, token=args.token, trickle=args.trickle)
    fake.hostile(args.mode, every=args.every)
    if args.answering_file:
        marker = args.answering_file

        def mark() -> None:
            fake.answering.wait()
            with open(marker, "w"):
                pass

        threading.Thread(target=mark, daemon=True).start()
    serve_forever_cli(fake, args.ready_file)


if __name__ == "__main__":
    main()
