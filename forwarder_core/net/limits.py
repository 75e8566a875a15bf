"""How much of a response the client reads, and for how long: ``max_response_bytes`` and the deadline.

A body is read as a stream, a chunk at a time, and counted twice: the bytes that came on the
wire, and the bytes once inflated. It is refused as soon as either passes the limit, and before
a byte is read when its ``Content-Length`` already does, so neither a 200 MB page nor a 1 MB
gzip body that inflates to 1 GiB is ever held (they took the process to 2.4 and 2.9 GB). The
client inflates ``gzip`` and ``deflate`` itself, with zlib's ``max_length``, so one chunk of a
bomb yields at most the room left under the limit; it asks for no other encoding, and refuses
one it did not ask for rather than hand it to a decoder it cannot bound.
"""
from __future__ import annotations

import zlib
from typing import TYPE_CHECKING, Any

import requests
from urllib3.exceptions import ProtocolError, ReadTimeoutError, SSLError

if TYPE_CHECKING:
    from requests import Response

    from forwarder_core.net.inflight import InFlight

DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024
"""The contract's default ``max_response_bytes``: 64 MiB, after decompression."""
DEADLINE_FACTOR = 5
"""A request's total deadline is ``request_deadline``, else this many times ``timeout``."""
ACCEPT_ENCODING = "gzip, deflate"
"""The encodings the client asks for: the ones it can inflate within a bound."""
CHUNK = 64 * 1024
"""Bytes read from the socket at a time."""


class TooLarge(Exception):
    """A body passed the limit: ``args`` are (what passed it, the bytes counted when it did)."""


def _decoder(encoding: str) -> Any:
    if encoding == "gzip" or encoding == "x-gzip":
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return _Deflate()
    return None


class _Deflate:
    """``deflate`` as servers send it: zlib-wrapped as the RFC says, or raw (as some do)."""

    def __init__(self) -> None:
        self._d = zlib.decompressobj()
        self._first = True

    def decompress(self, data: bytes, max_length: int) -> bytes:
        if self._first:
            self._first = False
            try:
                return self._d.decompress(data, max_length)
            except zlib.error:
                self._d = zlib.decompressobj(-zlib.MAX_WBITS)
        return self._d.decompress(data, max_length)

    @property
    def unconsumed_tail(self) -> bytes:
        return self._d.unconsumed_tail

    @property
    def eof(self) -> bool:
        return self._d.eof

    @property
    def unused_data(self) -> bytes:
        return self._d.unused_data


def read_body(response: Response, flight: InFlight | None, limit: int) -> bytes:
    """Read ``response``'s body within ``limit`` bytes (wire and inflated) and ``flight``'s deadline.

    Raises :class:`TooLarge`, :class:`~forwarder_core.net.inflight.Aborted`, or what the
    connection raises; the caller closes the response then.
    """
    length = response.headers.get("Content-Length", "")
    if length.strip().isdigit() and int(length) > limit:
        raise TooLarge("Content-Length", int(length))
    encoding = response.headers.get("Content-Encoding", "").strip().lower()
    decoder = _decoder(encoding)
    if decoder is None and encoding not in ("", "identity"):
        raise UnsupportedEncoding(encoding)
    parts: list[bytes] = []
    wire = size = 0
    for chunk in response.raw.stream(CHUNK, decode_content=False):
        if flight is not None:
            flight.check()
        wire += len(chunk)
        if wire > limit:
            raise TooLarge("wire", wire)
        if decoder is None:
            parts.append(chunk)
            size = wire
            continue
        data = chunk
        while data:
            out = decoder.decompress(data, limit - size + 1)
            size += len(out)
            if size > limit:
                raise TooLarge("inflated", size)
            parts.append(out)
            data = decoder.unconsumed_tail
            if not data and decoder.eof and decoder.unused_data.strip(b"\0"):
                data, decoder = decoder.unused_data, _decoder(encoding)  # a further gzip member
    if flight is not None:
        flight.check()
    return b"".join(parts)


class UnsupportedEncoding(Exception):
    """The server sent a Content-Encoding the client did not ask for (``args[0]``)."""


def consume(response: Response, flight: InFlight | None, limit: int) -> None:
    """Read the body (see :func:`read_body`) and leave it where ``requests`` keeps it, so
    ``.content``, ``.text`` and ``.json()`` work as for any response; closes it on failure."""
    try:
        content = read_body(response, flight, limit)
    except BaseException as exc:
        response.close()
        # As requests' own body reading wraps urllib3's errors, so callers catch one family.
        if isinstance(exc, ProtocolError):
            raise requests.exceptions.ChunkedEncodingError(exc) from None
        if isinstance(exc, ReadTimeoutError):
            raise requests.exceptions.ReadTimeout(exc) from None
        if isinstance(exc, SSLError):
            raise requests.exceptions.SSLError(exc) from None
        raise
    response._content = content  # requests' own cache of the body
    response._content_consumed = True  # type: ignore[attr-defined]


__all__ = ["ACCEPT_ENCODING", "DEADLINE_FACTOR", "DEFAULT_MAX_RESPONSE_BYTES", "TooLarge", "UnsupportedEncoding",
           "consume", "read_body"]
