"""What went wrong with an answer, in words an operator can act on: no JSON, no answer, too big, too slow.

Every message names the request (its URL redacted) and, where a bound refused the answer, the
bound and the option that sets it.
"""
from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from typing import Any

import requests

from forwarder_core.errors import HttpError, ResponseError, TransportError
from forwarder_core.jsoncodec import decode
from forwarder_core.net.bodies import BODY_SNIPPET, snippet
from forwarder_core.net.inflight import InFlight
from forwarder_core.net.limits import ACCEPT_ENCODING, TooLarge, UnsupportedEncoding
from forwarder_core.secrets import redact


class DeadlineExceeded(TransportError):
    """A request did not complete within its total deadline (``request_deadline``): a server
    that trickles bytes. Not retried: the poll fails and the source tries again on its interval."""


class ResponseTooLarge(HttpError):
    """A response body passed ``max_response_bytes`` (on the wire or once inflated). It is refused
    before it is held in memory, and not retried: the same request would bring the same body."""


def decode_json(response: requests.Response) -> Any:
    """Decode a JSON body, or raise :class:`ResponseError` naming what came instead."""
    ctype = response.headers.get("Content-Type", "")
    where = f"{response.request.method} {redact(response.url)}" if response.request is not None else redact(response.url)
    body = response.content
    if not body.strip():
        raise ResponseError(f"{where}: empty body where JSON was expected (status {response.status_code})")
    try:
        return decode(body)
    except RecursionError:  # hostile or broken nesting: the decoder's depth limit, not a crash
        raise ResponseError(f"{where}: JSON nested too deeply to decode ({len(body)} bytes)") from None
    except ValueError as exc:
        text = body[:BODY_SNIPPET].decode("utf-8", "replace")
        if "html" in ctype.lower() or text.lstrip().lower().startswith(("<!doctype", "<html")):
            kind = f"an HTML page ({ctype or 'no content type'})"
        else:
            kind = (f"invalid or truncated JSON ({exc.msg} at byte {exc.pos} of {len(body)})"
                    if isinstance(exc, json.JSONDecodeError) else "invalid JSON")
        raise ResponseError(f"{where}: expected JSON, got {kind}: {snippet(text)}") from None


def describe_transport_error(exc: requests.RequestException) -> str:
    """Why no answer came, in a few words (never the URL's credentials: redacted)."""
    if isinstance(exc, requests.exceptions.InvalidHeader):
        # requests quotes the whole header value, credential included, in its message
        return "a request header is not valid (a control character, or a leading or trailing space, in a credential?)"
    if isinstance(exc, requests.exceptions.SSLError):
        return f"TLS error: {redact(str(exc.args[0]) if exc.args else str(exc))}"
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "connection timed out"
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return "timed out waiting for the response"
    if isinstance(exc, requests.exceptions.ConnectionError):
        text = str(exc)
        if "Connection refused" in text:
            return "connection refused"
        if "Name or service not known" in text or "Temporary failure in name resolution" in text:
            return "host name not found"
        if "RemoteDisconnected" in text or "Connection aborted" in text or "reset" in text.lower():
            return "connection closed by the server before a complete response"
        return f"connection failed: {redact(text)[:200]}"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "response truncated (connection broken mid-body)"
    return f"{type(exc).__name__}: {redact(str(exc))[:200]}"


def too_large(where: str, passed: str, count: int, limit: int) -> str:
    """The message of a body refused by ``max_response_bytes``."""
    if passed == "Content-Length":
        what = f"its Content-Length of {count:,} bytes is over max_response_bytes ({limit:,} bytes)"
    elif passed == "inflated":
        what = f"its body passed max_response_bytes ({limit:,} bytes) once decompressed"
    else:
        what = f"its body passed max_response_bytes ({limit:,} bytes)"
    return (f"{where}: response refused: {what}; the rest was not read. Raise the option "
            f"max_response_bytes, or lower page_size, if the vendor's pages are legitimately this large")


def too_slow(where: str, seconds: float) -> str:
    """The message of a request cut off at its total deadline."""
    return (f"{where}: no complete response within the request deadline of {seconds:g}s "
            f"(option request_deadline, default 5 x timeout); the server sends too slowly, cut off")


def cut_off(where: str, component: str, flight: InFlight, exc: Exception, refused: Callable[[str], None]) -> str:
    """Why an attempt failed, as a reason to retry it for; or raise the error that ends the request.

    Cut off (stopped, past its deadline), too large, or not inflatable: the request ends
    (``refused(reason)`` counts the first two). No answer at all: the reason, for the retry loop.
    """
    if flight.why == "stopped":
        raise TransportError(f"{component}: stopped during {where}") from None
    if flight.why == "deadline":
        refused("deadline")
        raise DeadlineExceeded(too_slow(where, flight.seconds)) from None
    if isinstance(exc, TooLarge):
        refused("too_large")
        raise ResponseTooLarge(too_large(where, exc.args[0], exc.args[1], flight.limit)) from None
    if isinstance(exc, UnsupportedEncoding):
        raise ResponseError(f"{where}: the server sent Content-Encoding {exc.args[0]!r}, which was not "
                            f"asked for ({ACCEPT_ENCODING})") from None
    if isinstance(exc, zlib.error):
        raise ResponseError(f"{where}: the compressed body could not be inflated ({exc})") from None
    if isinstance(exc, requests.RequestException):
        return describe_transport_error(exc)
    raise exc


__all__ = ["DeadlineExceeded", "ResponseTooLarge", "cut_off", "decode_json", "describe_transport_error", "too_large", "too_slow"]
