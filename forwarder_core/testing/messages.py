"""What a :class:`~forwarder_core.testing.fakehttp.FakeServer` handler takes and returns."""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Request:
    """A request as the fake got it. ``body`` is inflated when the client sent ``Content-Encoding:
    gzip`` (the header stays in ``headers``, so a handler can check the client compressed);
    ``raw_body`` is always the bytes as they came off the wire."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    raw_body: bytes = b""

    def json(self) -> Any:
        return json.loads(self.body or b"null")

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default


@dataclass
class Response:
    status: int = 200
    body: bytes | str | Any = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"

    def encoded(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode("utf-8")
        return json.dumps(self.body, separators=(",", ":")).encode("utf-8")


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(status=status, body=body, headers=dict(headers or {}))


class HandlerCrashed(AssertionError):
    """Raised by :meth:`FakeServer.stop` when a route's handler raised; the first such exception is its cause."""


Handler = Callable[[Request], Response]
