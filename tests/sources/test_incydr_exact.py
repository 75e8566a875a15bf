"""Incydr's normalize (with the core's make_event and normalize_as) gives exactly the event it gave
before it was made faster (:mod:`tests.sources.incydr_reference`): the same keys in the same
order, the same values of the same types, fresh copies where they were copies, and the same
error, word for word, for a raw event it cannot normalize (the quarantine records the reason)."""
from __future__ import annotations

import logging
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from forwarder_core.metrics import Metrics
from forwarder_core.plugin_api import ComponentConfig, Context, apply_defaults
from siem_forwarder_plugins.sources.incydr import IncydrSource
from tests.sources import incydr_reference as ref

TEXT = st.one_of(st.text(max_size=12), st.sampled_from(["a@b.example", "null", "", " 10.0.0.1 , 10.0.0.2", "10.0.0.1",
                                                         "USER", "py42 1.29.1", "x@", "@"]))
ODD = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.lists(st.integers(), max_size=2),
                st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
VALUE = st.one_of(TEXT, TEXT, TEXT, ODD)
TYPES = st.sampled_from(["audit_log::logged_in/1", "audit_log::login_failed/1", "audit_log::user_role_added/1",
                         "audit_log::federation_metadata_updated/1", "audit_log::case_created/1", "x", ""])
STAMPS = st.sampled_from(["2022-10-03T13:14:46.962Z", "2023-06-16T21:49:21.072416Z", "2022-10-03 13:14:46+02:00",
                          "2022-10-03T13:14:46+00:00", "2022-10-03T13:14:46z"])
BAD_STAMPS = st.one_of(st.sampled_from(["2022-10-03Tz", "not a time", "2022-02-30T00:00:00Z"]), VALUE)


def rarely(draw: st.DrawFn, common: st.SearchStrategy[Any], rare: st.SearchStrategy[Any], odds: int = 12) -> Any:
    """A value of ``common``, or one time in ``odds`` one of ``rare`` (values that break an event)."""
    return draw(rare if draw(st.integers(0, 2 * odds)) == odds else common)  # not an end: those come often
FIELDS = ("actorId", "actorName", "actorAgent", "actorIpAddress", "actorType", "userId", "userName", "resourceId",
          "federationId", "success", "caseNumber")


@st.composite
def raws(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 40)) == 20:
        return draw(ODD)  # not an object at all
    raw: dict[str, Any] = {}
    if draw(st.integers(0, 30)) != 15:
        raw["type$"] = rarely(draw, TYPES, VALUE)
    if draw(st.integers(0, 30)) != 15:
        raw["timestamp"] = rarely(draw, STAMPS, BAD_STAMPS)
    for key in FIELDS:
        if draw(st.booleans()):
            raw[key] = rarely(draw, st.booleans() if key == "success" else TEXT, ODD, 4)
    return raw


def source() -> IncydrSource:
    opts = apply_defaults(IncydrSource.options_schema, {"base_url": "http://127.0.0.1:9", "client_id": "a",
                                                        "client_secret": "b"})
    return IncydrSource(ComponentConfig(name="code42", type="incydr", options=opts),
                        Context(name="code42", state_dir="/tmp", logger=logging.getLogger("t"), metrics=Metrics()))


def shape(value: Any) -> Any:
    """A value with every dict's key order and every type spelled out, so == compares those too."""
    if isinstance(value, dict):
        return ("dict", type(value).__name__, [(k, shape(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("list", type(value).__name__, [shape(v) for v in value])
    return (type(value).__name__, repr(value))


def outcome(fn: Any, raw: Any, page_id: str | None) -> Any:
    try:
        event = fn(raw, page_id)
    except Exception as exc:
        return type(exc).__name__, str(exc)
    assert event["raw"] is raw
    return "ok", shape(event)


FAST, SLOW = source(), source()


@settings(max_examples=700, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raws(), st.one_of(st.none(), st.sampled_from(["abc", "abc-2", "d-e-3"])))
@example({"type$": "audit_log::user_deactivated/1", "actorId": "898209175991065670", "actorName": "admin@example.com",
          "actorAgent": "py42 1.29.1", "actorIpAddress": "50.93.255.223, 64.252.71.111",
          "timestamp": "2022-10-03T13:14:46.962Z", "actorType": "USER", "userId": "1004",
          "userName": "leaver@example.com"}, None)
def test_normalize_is_what_it_was(raw: Any, page_id: str | None) -> None:
    got = outcome(FAST.normalize_as, raw, page_id)
    assert got == outcome(lambda r, p: ref.normalize_as(SLOW, r, p), raw, page_id)
    if got[0] == "ok":  # the cached kind's lists are copied, not shared with the events
        one, two = FAST.normalize_as(raw, page_id), FAST.normalize_as(raw, page_id)
        for key in ("category", "type", "actor", "target"):
            assert key not in one or one[key] is not two[key], key
