"""A small threaded HTTP server for faking a vendor's API or a SIEM in tests.

The project's own vendor and SIEM fakes build on it, and plugin authors get it through the
``forwarder_fake_api`` pytest fixture (:mod:`forwarder_core.testing`), so a third-party plugin
is tested against the same failures on the wire as a built-in one.

A fake subclasses :class:`FakeServer` (or programs an instance) with :meth:`FakeServer.route`
and :meth:`FakeServer.pages`, and gets for free: a loopback port, a request log, and faults on
demand (:meth:`FakeServer.fault`) that hit the next matching requests: ``429`` with
``Retry-After`` or any headers, ``500``/``503``, an HTML error page, a truncated JSON body, a
dropped connection, a slow answer. Faults are what a real API or a proxy in front of it does,
so the code under test sees the real failure on the wire.

Routing: :meth:`FakeServer.route` takes a method and a regular expression matched against the
whole path (``re.match``, anchored at both ends; the query string is not part of it). Routes
are tried in the order they were added and the first match answers; to replace a route, call
:meth:`FakeServer.route` with ``replace=True`` and the same method and pattern (the new handler
takes the old one's place). A path no route matches is answered 404.

A handler that raises is a bug in the test, not a server error: the fake answers 500 with the
:data:`~forwarder_core.net.waits.NO_RETRY_HEADER` header (so the HTTP client gives up at once
instead of retrying for half a minute), records the exception in :attr:`FakeServer.handler_errors`
and raises it again from :meth:`FakeServer.stop` (and so at the end of a ``with`` block or the
``forwarder_fake_api`` fixture), failing the test with the handler's own traceback.
"""
from __future__ import annotations

import gzip
import json
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from forwarder_core.net.waits import NO_RETRY_HEADER
from forwarder_core.testing.messages import Handler, HandlerCrashed, Request, Response, json_response

__all__ = ["HTML_ERROR", "FakeServer", "Fault", "Handler", "HandlerCrashed", "Request", "Response", "json_response"]


@dataclass
class Fault:
    kind: str  # "status", "html", "truncate", "drop", "slow"
    path: str | None = None  # regex on the path; None = any
    count: int = 1
    status: int = 500
    retry_after: str | None = None
    body: Any = None
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


HTML_ERROR = (
    "<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head>"
    "<body><h1>502 Bad Gateway</h1><hr><center>nginx</center></body></html>"
)

class FakeServer:
    """Base of the fakes. Subclasses call :meth:`route` in ``__init__`` and may override ``setup``."""

    name = "fake"
    ssl_context: "ssl.SSLContext | None" = None
    """Set (a server-side context with the certificate loaded) before start() to serve HTTPS."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self.handler_errors: list[BaseException] = []
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self.requests: list[Request] = []
        self.log_requests = True
        self._host = host
        self._port = port
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ config

    def route(self, method: str, pattern: str, handler: Handler, *, replace: bool = False) -> None:
        """Answer ``method`` requests whose whole path matches ``pattern`` (a regex) with ``handler``.

        The first route added that matches answers; with ``replace=True`` the handler takes the
        place of an earlier route with the same method and pattern (same position, so the same
        precedence), so a test can change what a fake's route does.
        """
        entry = (method.upper(), re.compile("^" + pattern + "$"), handler)
        with self._lock:
            same = [n for n, r in enumerate(self._routes) if (r[0], r[1].pattern) == (entry[0], entry[1].pattern)] if replace else []
            if same:
                self._routes[same[0]] = entry
                self._routes = [r for n, r in enumerate(self._routes) if n not in same[1:]]
            else:
                self._routes.append(entry)

    def pages(self, method: str, path: str, items: list[Any], *, page_size: int = 100, items_key: str | None = None,
              cursor_param: str = "after", limit_param: str = "limit", next_key: str = "next") -> None:
        """Serve ``items`` at ``path`` a page at a time, as most audit APIs paginate.

        A request's ``limit_param`` (else ``page_size``) sets the page's length and its
        ``cursor_param`` where it starts. Each answer carries a ``Link: <url>; rel="next"``
        header while more remain, and its body is the page as a JSON array, or, with
        ``items_key``, ``{items_key: [...], next_key: <cursor or null>}``. ``items`` is read at
        each request, so a test can append to it between polls.
        """

        def handler(req: Request) -> Response:
            start = int(req.arg(cursor_param) or 0)
            size = int(req.arg(limit_param) or page_size)
            chunk = items[start:start + size]
            more = start + len(chunk) < len(items)
            headers: dict[str, str] = {}
            if more:
                query = {k: v[0] for k, v in req.query.items() if k != cursor_param}
                query[cursor_param] = str(start + len(chunk))
                headers["Link"] = f'<{self.url}{req.path}?{urlencode(query)}>; rel="next"'
            body: Any = chunk if items_key is None else {items_key: chunk,
                                                         next_key: str(start + len(chunk)) if more else None}
            return json_response(body, headers=headers)

        self.route(method, path, handler)

    def fault(self, kind: str, *, path: str | None = None, count: int = 1, status: int = 500,
              retry_after: str | None = None, body: Any = None, delay: float = 0.0,
              headers: dict[str, str] | None = None) -> None:
        """Make the next ``count`` requests matching ``path`` (a regex; None = any) fail in the given way.

        ``kind`` is ``status`` (answer ``status`` with ``body``, ``Retry-After`` and ``headers``),
        ``html`` (a proxy's HTML error page), ``html200`` (the same with status 200),
        ``truncate`` (a JSON body cut in half), ``drop`` (close the connection unanswered) or
        ``slow`` (wait ``delay`` seconds, then answer normally).
        """
        with self._lock:
            self._faults.append(Fault(kind, path, count, status, retry_after, body, delay, dict(headers or {})))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _take_fault(self, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.path is None or re.search(fault.path, path):
                    fault.count -= 1
                    if fault.count <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def calls(self, path_regex: str = "", method: str | None = None) -> list[Request]:
        with self._lock:
            return [r for r in self.requests
                    if re.search(path_regex, r.path) and (method is None or r.method == method)]

    # ------------------------------------------------------------------ lifecycle

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl_context is not None else 'http'}://{self._host}:{self.port}"

    def start(self) -> "FakeServer":
        fake = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go in two writes; Nagle + delayed ACK would add 40 ms each

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _handle(self) -> None:
                fake._dispatch(self)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

        self._httpd = ThreadingHTTPServer((self._host, self._port), _Handler)
        self._httpd.daemon_threads = True
        if self.ssl_context is not None:
            self._httpd.socket = self.ssl_context.wrap_socket(self._httpd.socket, server_side=True)
        # A short poll interval: stop() waits for it, and tests stop a fake every few hundred ms.
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"{self.name}-http", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; raise :class:`HandlerCrashed` if a handler raised while serving."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        self.check()

    def check(self) -> None:
        """Raise :class:`HandlerCrashed` (once) if a handler raised since the last check."""
        with self._lock:
            errors, self.handler_errors = self.handler_errors, []
        if errors:
            raise HandlerCrashed(f"{self.name}: a route handler raised {errors[0]!r}"
                                 + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else "")) from errors[0]

    def __enter__(self) -> "FakeServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ------------------------------------------------------------------ dispatch

    def _dispatch(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        length = int(h.headers.get("Content-Length") or 0)
        raw = body = h.rfile.read(length) if length else b""
        if h.headers.get("Content-Encoding", "").lower() == "gzip" and body:
            body = gzip.decompress(body)
        req = Request(h.command, parts.path, parse_qs(parts.query, keep_blank_values=True),
                      {k: v for k, v in h.headers.items()}, body, raw)
        if self.log_requests:
            with self._lock:
                self.requests.append(req)
        fault = self._take_fault(parts.path)
        if fault is not None and self._apply_fault(h, fault):
            return
        with self._lock:
            routes = list(self._routes)
        for method, pattern, handler in routes:
            if method == h.command and pattern.match(parts.path):
                try:
                    resp = handler(req)
                except Exception as exc:  # a bug in a fake must fail the test, not be retried as a 500
                    with self._lock:
                        self.handler_errors.append(exc)
                    resp = json_response({"error": f"fake crashed: {exc!r}"}, status=500,
                                         headers={NO_RETRY_HEADER: "handler crashed"})
                self._write(h, resp)
                return
        self._write(h, json_response({"errors": [{"message": f"no route for {h.command} {parts.path}"}]}, 404))

    def _apply_fault(self, h: BaseHTTPRequestHandler, fault: Fault) -> bool:
        if fault.kind == "slow":
            time.sleep(fault.delay)
            return False
        if fault.kind == "drop":
            try:
                h.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            h.close_connection = True
            return True
        if fault.kind == "html":
            self._write(h, Response(status=fault.status if fault.status != 500 else 502, body=HTML_ERROR,
                                    content_type="text/html"))
            return True
        if fault.kind == "html200":
            self._write(h, Response(status=200, body=HTML_ERROR, content_type="text/html"))
            return True
        if fault.kind == "truncate":
            payload = json.dumps(fault.body if fault.body is not None else {"data": [{"x": 1}] * 50}).encode()
            cut = payload[: max(1, len(payload) // 2)]
            h.send_response(200)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(cut)))
            h.end_headers()
            h.wfile.write(cut)
            return True
        if fault.kind == "status":
            headers = dict(fault.headers)
            if fault.retry_after is not None:
                headers["Retry-After"] = fault.retry_after
            body = fault.body if fault.body is not None else {"errors": [{"message": f"fault {fault.status}"}]}
            self._write(h, json_response(body, fault.status, headers))
            return True
        raise ValueError(f"unknown fault kind {fault.kind!r}")

    @staticmethod
    def _write(h: BaseHTTPRequestHandler, resp: Response) -> None:
        payload = resp.encoded()
        try:
            if any(k.lower() == "date" for k in resp.headers):
                h.send_response_only(resp.status)  # the handler's own Date would make two
            else:
                h.send_response(resp.status)
            h.send_header("Content-Type", resp.content_type)
            for key, value in resp.headers.items():
                h.send_header(key, value)
            h.send_header("Content-Length", str(len(payload)))
            h.end_headers()
            if h.command != "HEAD":
                h.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass
