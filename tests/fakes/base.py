"""The vendor and SIEM fakes' HTTP server (:mod:`forwarder_core.testing.fakehttp`), and running one as a process.

Run a fake in its own process (for the demo and the benchmarks) with :func:`serve_forever_cli`.
"""
from __future__ import annotations

import threading

from forwarder_core.testing.fakehttp import HTML_ERROR, FakeServer, Fault, Handler, Request, Response, json_response

__all__ = ["HTML_ERROR", "Fault", "FakeServer", "Handler", "Request", "Response", "json_response", "serve_forever_cli"]


def serve_forever_cli(fake: FakeServer, ready_file: str | None = None) -> None:
    """Run ``fake`` until killed; write its URL to ``ready_file`` (atomically) once listening."""
    import os
    import signal

    fake.log_requests = False
    fake.start()
    if ready_file:
        tmp = ready_file + ".tmp"
        with open(tmp, "w") as fh:
            fh.write(fake.url)
        os.replace(tmp, ready_file)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    stop.wait()
    fake.stop()
