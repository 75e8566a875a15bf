"""The JSON the core writes and hashes: canonical JSON for content ids, compact JSON for outputs.

Both are done by orjson where its bytes are exactly those of :mod:`json` (checked per value by
:func:`_orjson_exact`), so ids and outputs never depend on whether orjson is installed.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

try:
    import orjson as _orjson
except ImportError:  # pragma: no cover - orjson is a dependency; the stdlib gives the same bytes, slower
    _orjson = None  # type: ignore[assignment]



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
    """:func:`canonical_json` as UTF-8 bytes, built by orjson where its output is the same."""
    if _orjson is not None and _orjson_exact(value):
        try:
            return _orjson.dumps(value, option=_orjson.OPT_SORT_KEYS)
        except TypeError:
            pass
    return canonical_json(value).encode("utf-8")


def canonical_json(value: Any) -> str:
    """Keys sorted, separators ``,`` and ``:``, non-ASCII kept: the text event ids are hashed over."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def content_id(raw: Any) -> str:
    """SHA-256 hex of the canonical JSON (UTF-8) of a raw event: the id of events that have none."""
    return hashlib.sha256(canonical_json_bytes(raw)).hexdigest()


_compact_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_strict_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def compact_json(value: Any, *, allow_nan: bool = True) -> bytes:
    """``json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=allow_nan)`` as
    UTF-8 bytes, done by orjson where its output is byte-identical: one encode per event per
    output, at C speed. With ``allow_nan=False`` NaN and infinities raise ValueError, as there."""
    if _orjson is not None and _orjson_exact(value):
        try:
            return _orjson.dumps(value)
        except TypeError:
            pass
    return (_compact_encode if allow_nan else _strict_encode)(value).encode("utf-8")
