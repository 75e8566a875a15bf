"""A vendor whose data is hostile: poison events, and pages that make no progress.

:class:`HostileVendor` serves ``GET /v1/events?cursor=C`` as ``{"data": [...], "next": C2}`` (``next``
null at the end), and, for the built-in ``asana`` source, Asana's
``GET /api/1.0/workspaces/{gid}/audit_log_events`` with ``next_page.offset``. Its bodies are
assembled from raw JSON text, so what goes on the wire is exactly what a vendor could send:
``1e400`` (which :mod:`json` reads as infinity), ``2**70`` spelled out, ``"\\ud800"`` (a lone
surrogate, valid JSON text), NUL and control characters as ``\\u0000`` escapes, nesting close to
the decoder's depth limit.

Modes (``mode=``):

``events``
    The events of ``events`` (raw JSON texts), ``page_size`` a page, then an empty page with
    ``next: null``.
``repeat_cursor``
    The first page of ``events`` with the same ``next`` cursor, forever.
``identical_page``
    The first page of ``events`` forever, under a new ``next`` cursor each time.
``shift``
    Offset paging over a newest-first list (``shift_total`` - 2 events at first) that grows by
    one event at its head on the second and third request, so those pages start with the last
    event of the one before (the classic "pages shift while read"); ``served`` lists what the
    pages held.

Asana's endpoint answers in modes ``repeat_cursor`` and ``identical_page`` the same way, with
Asana events (:func:`asana_event`).

:class:`FollowNext` is the simplest source that reads it (the ``hostile_follow`` type): a
third-party source with no code of its own against loops, which is the point.
"""
from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

from forwarder_core import hookimpl
from forwarder_core.plugin_api import ForwarderError, Page, Source, SourceError
from tests.fakes.base import FakeServer, Request, Response

TIME = "2026-11-02T10:00:00.000Z"
DECODER_DEPTH = 900
"""Nesting that :func:`json.loads` still decodes (its limit is about the recursion limit, 1000)."""

POISON: dict[str, str] = {
    "surrogate": '"\\ud800"',
    "low_surrogate_then_high": '"\\udfff x \\ud800"',
    "surrogate_key": '{"\\udc80": 1}',
    "nul_and_controls": '"a\\u0000b\\u0001\\u001b[31m\\u007f\\u0085\\u2028\\u2029|=\\\\ \\n\\r\\t"',
    "huge_exponent": "1e400",
    "huge_negative_exponent": "-1e400",
    "tiny": "1e-400",
    "big_int": str(2**70),
    "big_negative_int": str(-(2**70)),
    "float_precision": "0.10000000000000000555111512312578270211815834045410156250001",
    "deep_list": "[" * DECODER_DEPTH + "]" * DECODER_DEPTH,
    "deep_object": '{"d":' * DECODER_DEPTH + "null" + "}" * DECODER_DEPTH,
    "bidi_and_bom": '"\\u202eevil\\ufeff\\ufffe\\uffff"',
}
"""A hostile JSON value per name, as the vendor's raw text."""


def event_text(n: int, value: str, *, name: str = "poison") -> str:
    """One event of the ``hostile_follow`` source holding ``value`` (raw JSON text) in ``payload``."""
    return f'{{"id":"{name}-{n}","time":"{TIME}","action":"{name}","payload":{value}}}'


def good_text(n: int) -> str:
    return event_text(n, f'"fine {n}"', name="good")


def asana_event(n: int) -> str:
    """An Asana event (the shape the built-in source's schema wants) with gid ``n``."""
    return json.dumps({"gid": str(1_204_000_000_000_000 + n), "created_at": "2026-11-02T10:00:00.000Z",
                       "event_type": "user_login_succeeded", "event_category": "logins",
                       "actor": {"actor_type": "user", "gid": "1100000000000000", "name": "Greg", "email": "g@example.com"},
                       "resource": {"resource_type": "user", "gid": "1100000000000000", "name": "Greg"},
                       "details": {}, "context": {"context_type": "web", "client_ip_address": "10.0.0.1"}})


class HostileVendor(FakeServer):
    """See the module docstring. ``data_requests`` counts the data requests answered."""

    def __init__(self, mode: str = "events", events: list[str] | None = None, *, page_size: int = 2,
                 shift_total: int = 12, host: str = "127.0.0.1", port: int = 0):
        super().__init__(host, port)
        self.mode = mode
        self.texts = list(events or [])
        self.page_size = page_size
        self.shift_total = shift_total
        self.data_requests = 0
        self.served: list[str] = []
        """The ids mode ``shift`` put on its pages, in order (a shifted event twice)."""
        self._lock = threading.Lock()
        self.route("GET", r"/v1/events", self._events)
        self.route("GET", r"/api/1\.0/workspaces/([^/]+)/audit_log_events", self._asana)

    def give_up(self) -> None:
        """Serve the end of the data from now on (an empty page, ``next`` null): a test's way out
        of a loop its forwarder did not stop, over connections kept alive that ``stop`` would not end."""
        self.mode, self.texts = "events", []

    def _count(self) -> int:
        with self._lock:
            self.data_requests += 1
            return self.data_requests

    def _events(self, req: Request) -> Response:
        n = self._count()
        cursor = req.arg("cursor") or "0"
        first = int(cursor) if cursor.isdigit() else 0
        size = self.page_size
        if self.mode == "events":
            page = self.texts[first:first + size]
            nxt = json.dumps(str(first + len(page))) if page else "null"
        elif self.mode == "repeat_cursor":
            page, nxt = self.texts[:size], '"same-cursor"'
        elif self.mode == "identical_page":
            page, nxt = self.texts[:size], json.dumps(f"c{n}")
        elif self.mode == "shift":
            grown = min(self.shift_total, self.shift_total - 3 + n)  # one more at the head per request, twice
            newest_first = [good_text(i) for i in range(grown - 1, -1, -1)]
            page = newest_first[first:first + size]
            self.served.extend(json.loads(text)["id"] for text in page)
            nxt = json.dumps(str(first + len(page))) if page else "null"
        else:
            raise ValueError(self.mode)
        body = '{"data":[' + ",".join(page) + '],"next":' + nxt + "}"
        return Response(body=body.encode("utf-8"))

    def _asana(self, req: Request) -> Response:
        n = self._count()
        page = [asana_event(i) for i in range(self.page_size)]
        offset = "same-offset" if self.mode == "repeat_cursor" else f"offset-{n}"
        if self.mode == "events":  # given up: Asana's end of data
            return Response(body=b'{"data":[],"next_page":null}')
        if self.mode not in ("repeat_cursor", "identical_page"):
            raise ValueError(self.mode)
        body = ('{"data":[' + ",".join(page) + '],"next_page":{"offset":"' + offset + '","path":"/x?offset='
                + offset + '","uri":"https://app.asana.com/api/1.0/x?offset=' + offset + '"}}')
        return Response(body=body.encode("utf-8"))


class FollowNext(Source):
    """``hostile_follow``: ``GET {base_url}/v1/events?cursor=C`` until ``next`` is null; the cursor is ``next``.

    No loop detection of its own: the core's is what keeps a looping vendor from holding the poll.
    """

    type_name = "hostile_follow"
    vendor = "Hostile"
    product = "Hostile Data"
    options_schema = {"type": "object", "required": ["base_url"],
                      "properties": {"base_url": {"type": "string"}, "timeout": {"type": "number", "default": 10}}}

    def __init__(self, config: Any, context: Any):
        super().__init__(config, context)
        self.http = context.http(self.options)

    def poll(self, cursor: Any) -> Iterator[Page]:
        at = cursor
        while not self.context.stop.is_set():
            try:
                answer = self.http.get_json("/v1/events", params={"cursor": at} if at else None)
            except ForwarderError as exc:
                raise SourceError(f"{self.name}: {exc}") from None
            data, nxt = list(answer.get("data") or []), answer.get("next")
            if nxt is None:  # the end: an empty page without a next cursor
                return
            yield Page(data, nxt)
            at = nxt

    def normalize(self, raw: dict[str, Any]) -> dict[str, Any]:
        return self.make_event(raw, id=str(raw["id"]), timestamp=raw["time"], action=raw.get("action"))


class HostilePlugin:
    """Registers :class:`FollowNext`; pass an instance as ``plugins=[HostilePlugin()]`` to ``run_once``."""

    @hookimpl
    def forwarder_register_sources(self, registry: Any) -> None:
        if FollowNext.type_name not in registry:
            registry.add(FollowNext)
