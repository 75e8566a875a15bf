"""The orjson fast paths of canonical_json_bytes/content_id and compact_json give exactly the
bytes the stdlib ``json`` gives, for any JSON-like value (or fail the same way); a lone surrogate,
which UTF-8 cannot hold, is written as its JSON escape and never fails an encode."""
from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forwarder_core import jsoncodec
from forwarder_core.plugin_api import canonical_json, canonical_json_bytes, compact_json, content_id

# Any code point, lone surrogates and control characters included.
ANY_TEXT = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=12)
SCALARS = (st.none() | st.booleans() | ANY_TEXT | st.integers(min_value=-(2**70), max_value=2**70)
           | st.integers(min_value=-(2**63), max_value=2**64 - 1)
           | st.floats(allow_nan=True, allow_infinity=True))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(ANY_TEXT, inner, max_size=5),
                      max_leaves=30)
NO_FLOATS = st.recursive(st.none() | st.booleans() | ANY_TEXT | st.integers(min_value=-(2**63), max_value=2**64 - 1),
                         lambda inner: st.lists(inner, max_size=5) | st.dictionaries(ANY_TEXT, inner, max_size=5),
                         max_leaves=30)


def outcome(fn: Any, value: Any) -> tuple[str, Any]:
    try:
        return "ok", fn(value)
    except (TypeError, ValueError) as exc:  # UnicodeEncodeError is a ValueError
        return "error", type(exc).__name__


def stdlib_canonical(value: Any) -> bytes:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.encode("utf-8", "backslashreplace")  # a lone surrogate as \ud800, its JSON escape


def stdlib_compact(value: Any, allow_nan: bool = True) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=allow_nan).encode(
        "utf-8", "backslashreplace")


@settings(max_examples=300, deadline=None)
@given(VALUES)
def test_canonical_bytes_match_the_stdlib(value: Any) -> None:
    assert outcome(canonical_json_bytes, value) == outcome(stdlib_canonical, value)


@settings(max_examples=300, deadline=None)
@given(VALUES)
def test_compact_json_matches_the_stdlib(value: Any) -> None:
    assert outcome(compact_json, value) == outcome(stdlib_compact, value)
    strict = outcome(lambda v: compact_json(v, allow_nan=False), value)
    assert strict == outcome(lambda v: stdlib_compact(v, allow_nan=False), value)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(ANY_TEXT, NO_FLOATS, max_size=8))
def test_content_id_is_the_sha256_of_the_stdlib_canonical_json(raw: dict[str, Any]) -> None:
    want = outcome(lambda v: hashlib.sha256(stdlib_canonical(v)).hexdigest(), raw)
    assert outcome(content_id, raw) == want


def test_a_vendor_event_takes_the_fast_path_and_keeps_its_id() -> None:
    pytest.importorskip("orjson")
    raw = {"type$": "audit_log::logged_in/1", "actorId": "1004", "actorName": "zoë@example.com", "success": True,
           "nested": {"b": [1, None, "\u2028\x7f"], "a": {}}, "timestamp": "2024-05-01T10:00:00.123Z"}
    assert jsoncodec._orjson_exact(raw)
    assert canonical_json_bytes(raw) == canonical_json(raw).encode("utf-8")
    assert content_id(raw) == hashlib.sha256(stdlib_canonical(raw)).hexdigest()
    assert not jsoncodec._orjson_exact({"a": [1.5]})  # floats go to the stdlib, which spells them its way
    assert compact_json({"a": 1e-05}) == b'{"a":1e-05}'


def test_a_lone_surrogate_has_a_stable_content_id_and_reads_back() -> None:
    """A vendor may send ``"\\ud800"``: its id is the digest of the escaped form, the same every
    time, distinct from the id of the same event holding U+FFFD; an output's JSON reads back
    exactly, or as U+FFFD where strict UTF-8 is asked for."""
    raw = {"name": "\ud800", "actorId": "1", "\udc80key": ["\udfff\ud800", "é"]}
    assert canonical_json_bytes(raw) == b'{"actorId":"1","name":"\\ud800","\\udc80key":["\\udfff\\ud800","\xc3\xa9"]}'
    assert content_id(raw) == content_id(json.loads(json.dumps(raw))) == hashlib.sha256(canonical_json_bytes(raw)).hexdigest()
    assert content_id(raw) != content_id({**raw, "name": "\ufffd"})
    assert json.loads(compact_json(raw)) == raw
    assert compact_json(raw, surrogates=jsoncodec.REPLACE).decode("utf-8") == json.dumps(
        {"name": "\ufffd", "actorId": "1", "\ufffdkey": ["\ufffd\ufffd", "é"]}, ensure_ascii=False, separators=(",", ":"))


def test_nesting_too_deep_to_encode_is_a_value_error() -> None:
    deep: Any = None
    for _ in range(5000):
        deep = [deep]
    for encode in (compact_json, canonical_json_bytes, content_id):
        with pytest.raises(ValueError, match="nested too deeply"):
            encode(deep)
