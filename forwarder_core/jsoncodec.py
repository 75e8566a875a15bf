"""The JSON the core writes and hashes: canonical JSON for content ids, compact JSON for outputs.

Both are done by orjson where its bytes are exactly those of :mod:`json` (checked per value by
:func:`_orjson_exact`), so ids and outputs never depend on whether orjson is installed.

A vendor can send any text JSON allows, and JSON allows a lone surrogate (``"\\ud800"``), which
:mod:`json` decodes into a str that has no UTF-8 form. Nothing here fails on one: where bytes
are written, a lone surrogate becomes the JSON escape ``\\ud800`` (:data:`ESCAPE`: the receiver
reads the same string back; content ids are hashed over this form, so they are stable) or
U+FFFD (:data:`REPLACE`, for text meant for readers that want strict UTF-8). Nesting too deep
for the encoder is a ValueError, as NaN is where it is refused, so a caller's one ``except
(ValueError, TypeError)`` covers every value it cannot write.
"""
from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Literal

try:
    import orjson as _orjson
except ImportError:  # pragma: no cover - orjson is a dependency; the stdlib gives the same bytes, slower
    _orjson = None  # type: ignore[assignment]

ESCAPE: Literal["escape"] = "escape"
"""A lone surrogate written as its JSON escape, ``\\ud800``: the string reads back unchanged."""
REPLACE: Literal["replace"] = "replace"
"""A lone surrogate written as U+FFFD: strict UTF-8 for readers that refuse the escape (I-JSON)."""
Surrogates = Literal["escape", "replace"]
_SURROGATE = re.compile("[\ud800-\udfff]")


def utf8(text: str, surrogates: Surrogates = ESCAPE) -> bytes:
    """``text`` (JSON text) as UTF-8; its lone surrogates, which only a JSON string can hold, escaped
    (``\\ud800``) or replaced by U+FFFD. Never raises."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        if surrogates == REPLACE:
            return _SURROGATE.sub("\ufffd", text).encode("utf-8")
        return text.encode("utf-8", "backslashreplace")  # exactly the JSON escape: \ud800


def escape_surrogates(text: str) -> str:
    """JSON text with each lone surrogate written as its escape, so it can be stored as UTF-8 (SQLite)."""
    if _SURROGATE.search(text) is None:
        return text
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _too_deep(exc: RecursionError) -> ValueError:
    return ValueError("nested too deeply to encode as JSON")


def _orjson_exact(value: Any, depth: int = 0) -> bool:
    """True when orjson writes ``value`` byte for byte as :mod:`json` does (compact, non-ASCII kept).

    That holds for trees of dicts, lists, strings, ints, bools and None. Floats are spelled
    differently (``0.00001`` against ``1e-05``) and NaN is written as ``null``, so a tree holding
    any other type goes to :mod:`json`. What orjson refuses (ints over 64 bits, keys that are not
    strings, lone surrogates, nesting deeper than orjson's limit) raises TypeError, and the caller
    falls back to :mod:`json` too.
    """
    if depth > 200:
        return False
    kind = type(value)
    if kind is dict:
        items: Any = value.values()
    elif kind is list:
        items = value
    else:
        return kind is str or kind is int or kind is bool or value is None
    for item in items:
        kind = type(item)
        if kind is str or kind is int or kind is bool or item is None:
            continue
        if (kind is dict or kind is list) and _orjson_exact(item, depth + 1):
            continue
        return False
    return True


def decode(data: bytes) -> Any:
    """A JSON body decoded: what the HTTP client gives the sources, and what a worker process
    rebuilds a page's events with from its bytes (:class:`~forwarder_core.plugin.results.PageBody`).

    :mod:`json`, not orjson: orjson turns an integer beyond 64 bits into a float and refuses NaN
    and lone surrogates, which :mod:`json` keeps, and which change an event's content id. Object
    creation is most of the cost either way (orjson 1.5 against 1.95 us an event of an Incydr
    page, bench/stages.py).
    """
    return json.loads(data)


def canonical_json_bytes(value: Any) -> bytes:
    """:func:`canonical_json` as UTF-8 bytes, built by orjson where its output is the same; a lone
    surrogate as its escape ``\\ud800`` (UTF-8 has no form for it). ValueError for NaN,
    infinities and nesting too deep, TypeError for what JSON has no form for."""
    if _orjson is not None and _orjson_exact(value):
        try:
            return _orjson.dumps(value, option=_orjson.OPT_SORT_KEYS)
        except TypeError:
            pass
    return utf8(canonical_json(value))


def canonical_json(value: Any) -> str:
    """Keys sorted, separators ``,`` and ``:``, non-ASCII kept: the text event ids are hashed over."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except RecursionError as exc:
        raise _too_deep(exc) from None


def content_id(raw: Any) -> str:
    """SHA-256 hex of the canonical JSON (UTF-8) of a raw event: the id of events that have none."""
    return hashlib.sha256(canonical_json_bytes(raw)).hexdigest()


_compact_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_strict_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def compact_json(value: Any, *, allow_nan: bool = True, surrogates: Surrogates = ESCAPE) -> bytes:
    """``json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=allow_nan)`` as
    UTF-8 bytes, done by orjson where its output is byte-identical: one encode per event per
    output, at C speed. With ``allow_nan=False`` NaN and infinities raise ValueError, as there;
    so does nesting too deep. Lone surrogates are escaped or replaced (:func:`utf8`)."""
    if _orjson is not None and _orjson_exact(value):
        try:
            return _orjson.dumps(value)
        except TypeError:
            pass
    try:
        text = (_compact_encode if allow_nan else _strict_encode)(value)
    except RecursionError as exc:
        raise _too_deep(exc) from None
    return utf8(text, surrogates)
