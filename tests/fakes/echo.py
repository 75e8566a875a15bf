"""A vendor or SIEM that refuses every request and echoes the credentials back in every encoding.

Servers do this: an error body that quotes the token it refused, JSON-escaped by a PHP or Go
encoder (``2\\/1204``, ``\\u002f``), URL-encoded from a query string, HTML-escaped in an error
page, or the ``Authorization`` header and its Base64 in a debug dump. :func:`echo_forms` lists
the forms; :class:`EchoServer` answers every method and path with ``status`` and a body (and a
header) holding each form of each credential the request carried.
"""
from __future__ import annotations

import base64
import binascii
import html
import json
import urllib.parse

from forwarder_core.testing.fakehttp import FakeServer, Request, Response


def echo_forms(value: str) -> list[str]:
    """``value`` as given, JSON-escaped (``\\/``, every character as ``\\uXXXX``, Go's HTML-safe
    escapes), URL-encoded (``quote`` and ``quote_plus``), HTML-escaped and Base64-encoded."""
    escaped = json.dumps(value)[1:-1]
    return [
        value,
        escaped.replace("/", "\\/"),
        "".join(f"\\u{ord(c):04x}" for c in value),
        escaped.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e"),
        urllib.parse.quote(value, safe=""),
        urllib.parse.quote_plus(value),
        html.escape(value),
        base64.b64encode(value.encode()).decode(),
    ]


def credentials_of(req: Request) -> list[str]:
    """Every credential a request carries: each credential header's value, the part after its
    scheme word, and for Basic the decoded ``user:password`` and the password."""
    found: list[str] = []
    for name, value in req.headers.items():
        if name.lower() not in ("authorization", "x-api-key", "cookie"):
            continue
        found.append(value)
        scheme, _, credential = value.partition(" ")
        if credential:
            found.append(credential)
        if scheme.lower() == "basic":
            try:
                pair = base64.b64decode(credential).decode()
            except (binascii.Error, UnicodeDecodeError):
                continue
            found += [pair, pair.partition(":")[2]]
    for values in req.query.values():
        found += values
    return found


class EchoServer(FakeServer):
    """Answers everything with ``status`` and an echo of the request's credentials in every form."""

    name = "echo"

    def __init__(self, status: int = 401, extra: list[str] = ()) -> None:  # type: ignore[assignment]
        super().__init__()
        self.status = status
        self.extra = list(extra)  # secrets a vendor knows without being sent them (its own client secret)
        for method in ("GET", "POST", "PUT", "HEAD", "DELETE"):
            self.route(method, ".*", self._echo)

    def _echo(self, req: Request) -> Response:
        sent = credentials_of(req)
        # Every form is valid inside a JSON string as it stands (the canaries hold no quote or
        # backslash), so the body is valid JSON whose bytes carry the escapes as written.
        echoed = " ".join(form for value in sent + self.extra for form in echo_forms(value) if '"' not in form)
        body = ('{"status":"Unauthorized","summary":"invalid credentials: ' + echoed + '","result":null,'
                '"error":{"type":"security_exception","reason":"' + echoed + '"},"text":"' + echoed + '","code":4}')
        headers = {"WWW-Authenticate": f'Bearer error="invalid_token", token="{sent[0] if sent else ""}"',
                   "X-Echo": " ".join(sent)}
        return Response(status=self.status, body=body, headers=headers, content_type="application/json")
