"""The optional HTTP listener: ``/metrics`` for Prometheus and ``/health`` for probes.

Off unless the config asks for it, and bound to loopback by default: the metrics name sources
and outputs, which is more than an unauthenticated remote caller should learn. It runs the
stdlib ``http.server`` in daemon threads, so a slow scrape never blocks the polling loop and the
listener never keeps the process alive on shutdown.

``/health`` answers 200 ``ok`` when the callable passed in returns no problems, otherwise 503
with one problem per line (``source asana-main: no successful poll for 900 s``), which is what
a load balancer or ``curl -f`` in a monitoring script needs.
"""
from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from forwarder_core.metrics import Metrics

__all__ = ["HealthServer", "METRICS_CONTENT_TYPE"]

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

log = logging.getLogger(__name__)

HealthFn = Callable[[], list[str]]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], metrics: Metrics, health_fn: HealthFn):
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.metrics = metrics
        self.health_fn = health_fn
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "siem-forwarder"
    sys_version = ""
    timeout = 10  # a client that connects and never sends must not hold a thread forever

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._metrics()
        elif path == "/health":
            self._health()
        else:
            self._send(404, "not found: try /metrics or /health\n")

    def _metrics(self) -> None:
        try:
            body = self.server.metrics.render()
        except Exception:
            log.exception("rendering /metrics failed")
            self._send(500, "metrics unavailable\n")
            return
        self._send(200, body, METRICS_CONTENT_TYPE)

    def _health(self) -> None:
        try:
            problems = list(self.server.health_fn())
        except Exception as exc:
            log.exception("health check failed")
            problems = [f"health check failed: {type(exc).__name__}"]
        if problems:
            self._send(503, "".join(" ".join(str(p).splitlines()) + "\n" for p in problems))
        else:
            self._send(200, "ok\n")

    def _send(self, code: int, body: str, content_type: str = "text/plain; charset=utf-8") -> None:
        data = body.encode("utf-8")
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (stdlib signature)
        # Every scrape on stderr would flood the journal; keep request lines at debug level.
        log.debug("%s %s", self.address_string(), format % args)


class HealthServer:
    """Serves ``/metrics`` and ``/health`` from a daemon thread until :meth:`stop`.

    ``port=0`` picks a free port; read the chosen one from :attr:`port` after :meth:`start`.
    """

    def __init__(self, metrics: Metrics, health_fn: HealthFn, host: str = "127.0.0.1",
                 port: int = 9464):
        self.metrics = metrics
        self.health_fn = health_fn
        self.host = host
        self._requested_port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            return self._requested_port
        return int(self._server.server_address[1])

    def start(self) -> HealthServer:
        """Bind and start serving. A bind failure (port in use) raises ``OSError`` here."""
        if self._server is not None:
            return self
        self._server = _Server((self.host, self._requested_port), self.metrics, self.health_fn)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
            name="siem-forwarder-http", daemon=True,
        )
        self._thread.start()
        log.info("metrics and health listener on %s:%d", self.host, self.port)
        return self

    def stop(self) -> None:
        """Stop serving and close the socket; safe to call twice."""
        server, thread = self._server, self._thread
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> HealthServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
