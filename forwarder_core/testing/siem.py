"""Small SIEM fakes for plugin tests: a Splunk HEC, an Elasticsearch ``_bulk`` and a TCP syslog receiver.

With them a plugin author shows the built-in outputs rendering their events in a few lines::

    from forwarder_core.testing import SplunkHecFake

    def test_hec_renders_my_events(forwarder_once):
        with SplunkHecFake() as hec:
            run = forwarder_once(source={"type": "mysource", "options": {...}}, output=hec.output())
        assert run.ok and hec.events[0]["sourcetype"] == "mysource:audit"

Each fake speaks enough of its protocol for the built-in output to deliver to it and no more:
the HEC fake checks the token (401 code 2 missing, 403 code 4 unknown) and that the body is
concatenated JSON objects each with an ``event``; the Elasticsearch fake answers ``GET /`` and
``_bulk`` (``create``/``index``; a second ``create`` of one ``_id`` is an item 409); the
syslog receiver takes RFC 6587 octet-counting or newline framing over TCP and fails the test
(:meth:`SyslogReceiver.stop` raises) when a frame does not follow the framing it was given.
``output()`` on each returns the output's config block for ``forwarder_once``.
"""
from __future__ import annotations

import json
import re
import socketserver
import threading
from typing import Any

from forwarder_core.testing.fakehttp import FakeServer, Request, Response, json_response

HEC_TOKEN = "11111111-2222-3333-4444-555555555555"
_WS = re.compile(r"[ \t\n\r]*")


def parse_hec_body(text: str) -> tuple[list[Any], int | None]:
    """The JSON values concatenated in a HEC body, and the number of the first that does not parse (or None)."""
    decoder = json.JSONDecoder()
    values: list[Any] = []
    pos, end = _WS.match(text, 0).end(), len(text)  # type: ignore[union-attr]
    while pos < end:
        try:
            obj, pos = decoder.raw_decode(text, pos)
        except ValueError:
            return values, len(values)
        values.append(obj)
        pos = _WS.match(text, pos).end()  # type: ignore[union-attr]
    return values, None


def _hec(code: int, text: str, status: int, **extra: Any) -> Response:
    return json_response({"text": text, "code": code, **extra}, status)


class SplunkHecFake(FakeServer):
    """A Splunk HTTP Event Collector: indexed envelopes (``{"time", "event", "fields", ...}``) in :attr:`events`."""

    name = "splunk-hec"

    def __init__(self, token: str = HEC_TOKEN, host: str = "127.0.0.1", port: int = 0):
        super().__init__(host, port)
        self.token = token
        self.events: list[dict[str, Any]] = []
        self.route("POST", r"/services/collector(/event(/1\.0)?)?", self._event)
        self.route("GET", r"/services/collector/health(/1\.0)?", lambda req: _hec(17, "HEC is healthy", 200))

    def output(self, **options: Any) -> dict[str, Any]:
        """The ``splunk_hec`` output block pointing here (``options`` are added to its options)."""
        return {"type": "splunk_hec", "options": {"url": self.url, "token": self.token, **options}}

    def _event(self, req: Request) -> Response:
        header = req.headers.get("Authorization")
        if not header:
            return _hec(2, "Token is required", 401)
        if header != f"Splunk {self.token}":
            return _hec(4, "Invalid token", 403)
        values, bad = parse_hec_body(req.body.decode("utf-8", "replace"))
        for number, obj in enumerate(values):
            if not isinstance(obj, dict) or obj.get("event") in (None, ""):
                bad = number if bad is None else min(bad, number)
                break
        with self._lock:
            self.events.extend(values[:bad])
        if bad is not None:
            return _hec(6, "Invalid data format", 400, **{"invalid-event-number": bad})
        return _hec(0, "Success", 200)


class ElasticBulkFake(FakeServer):
    """An Elasticsearch 8 ``_bulk`` endpoint: documents by index and ``_id`` in :attr:`documents`."""

    name = "elasticsearch"

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        super().__init__(host, port)
        self.documents: dict[str, dict[str, Any]] = {}
        self.route("GET", r"/", lambda req: self._answer({"name": "fake", "cluster_name": "fake",
                                                         "version": {"number": "8.15.3"},
                                                         "tagline": "You Know, for Search"}))
        self.route("POST", r"(/(?P<target>[^/_][^/]*))?/_bulk", self._bulk)

    def output(self, **options: Any) -> dict[str, Any]:
        """The ``elastic_bulk`` output block pointing here (``options`` are added to its options)."""
        return {"type": "elastic_bulk", "options": {"url": self.url, "api_key": "fake-key", **options}}

    def all_documents(self) -> list[dict[str, Any]]:
        """Every stored document's source, across indices, in the order written."""
        with self._lock:
            return [doc for index in self.documents.values() for doc in index.values()]

    @staticmethod
    def _answer(body: Any, status: int = 200) -> Response:
        return Response(status=status, body=body, headers={"X-Elastic-Product": "Elasticsearch"})

    def _bulk(self, req: Request) -> Response:
        match = re.match(r"/(?P<target>[^/_][^/]*)/_bulk", req.path)
        default_index = match.group("target") if match else None
        lines = [line for line in req.body.split(b"\n") if line.strip()]
        if len(lines) % 2:
            return self._answer({"error": {"type": "illegal_argument_exception",
                                           "reason": "The bulk request must be terminated by a newline"},
                                 "status": 400}, 400)
        items: list[dict[str, Any]] = []
        for action_line, source_line in zip(lines[::2], lines[1::2]):
            (op, meta), = json.loads(action_line).items()
            index = meta.get("_index") or default_index or "_missing"
            doc_id = str(meta.get("_id") or f"auto-{len(items)}")
            with self._lock:
                stored = self.documents.setdefault(index, {})
                if op == "create" and doc_id in stored:
                    items.append({op: {"_index": index, "_id": doc_id, "status": 409, "error": {
                        "type": "version_conflict_engine_exception",
                        "reason": f"[{doc_id}]: version conflict, document already exists"}}})
                    continue
                stored[doc_id] = json.loads(source_line)
            items.append({op: {"_index": index, "_id": doc_id, "status": 201, "result": "created"}})
        errors = any(item[next(iter(item))]["status"] >= 300 for item in items)
        return self._answer({"took": 1, "errors": errors, "items": items})


class SyslogReceiver:
    """A TCP syslog receiver: the messages (text, framing removed) in :attr:`messages`.

    ``framing`` is ``octet-counting`` (``<length> <message>``, RFC 6587 §3.4.1) or ``newline``.
    A frame that breaks the framing is recorded and :meth:`stop` raises it, so the test fails.
    """

    def __init__(self, framing: str = "octet-counting", host: str = "127.0.0.1", port: int = 0):
        if framing not in ("octet-counting", "newline"):
            raise ValueError(f"framing must be octet-counting or newline, not {framing!r}")
        self.framing = framing
        self.messages: list[str] = []
        self.errors: list[str] = []
        self._cond = threading.Condition()
        receiver = self

        class _Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                receiver._read(self.rfile)

        self._server = socketserver.ThreadingTCPServer((host, port), _Handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def output(self, **options: Any) -> dict[str, Any]:
        """The ``syslog_cef`` output block (TCP, this framing) pointing here."""
        host = str(self._server.server_address[0])
        return {"type": "syslog_cef", "options": {"host": host, "port": self.port, "protocol": "tcp",
                                                  "framing": self.framing, **options}}

    def wait_for(self, count: int, timeout: float = 10.0) -> bool:
        """Block until ``count`` messages arrived; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self.messages) >= count or bool(self.errors), timeout)

    def _read(self, rfile: Any) -> None:
        while True:
            if self.framing == "newline":
                line = rfile.readline()
                if not line:
                    return
                message: bytes | None = line.rstrip(b"\n")
            else:
                message = self._octet_frame(rfile)
                if message is None:
                    return
            with self._cond:
                self.messages.append(message.decode("utf-8", "replace"))  # type: ignore[union-attr]
                self._cond.notify_all()

    def _octet_frame(self, rfile: Any) -> bytes | None:
        digits = b""
        while True:
            char = rfile.read(1)
            if not char:
                if digits:
                    self._error(f"connection closed inside a frame length {digits!r}")
                return None
            if char == b" ":
                break
            if not char.isdigit() or len(digits) > 9:
                self._error(f"not octet-counting framing: {digits + char!r} is not a frame length")
                return None
            digits += char
        if not digits:
            self._error("not octet-counting framing: a frame starts with a space")
            return None
        body: bytes = rfile.read(int(digits))
        if len(body) != int(digits):
            self._error(f"frame of {int(digits)} bytes cut at {len(body)}")
            return None
        return body

    def _error(self, text: str) -> None:
        with self._cond:
            self.errors.append(text)
            self._cond.notify_all()

    def start(self) -> SyslogReceiver:
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="syslog-receiver", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening; raise AssertionError when a frame broke the framing."""
        self._server.shutdown()
        self._server.server_close()
        if self.errors:
            raise AssertionError(f"syslog receiver ({self.framing}): {self.errors[0]}")

    def __enter__(self) -> SyslogReceiver:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
