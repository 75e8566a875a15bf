"""The CEF formatter and syslog_cef's ``encode`` give exactly the bytes they gave before they were
made faster (:mod:`tests.outputs.syslog.cef_reference`), for any event: hostile and odd values
(CEF specials, control characters, lone surrogates, values of the wrong type, values past the
dictionary's lengths), events that cannot be formatted (the same rejection, word for word), every
syslog format and framing, and size caps that cut. Batches repeat values, so every cache the
formatter keeps is hit as well as missed."""
from __future__ import annotations

import logging
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from forwarder_core import __version__
from forwarder_core.metrics import Metrics
from forwarder_core.plugin_api import ComponentConfig, Context, apply_defaults
from siem_forwarder_plugins.outputs.syslog import cef
from siem_forwarder_plugins.outputs.syslog.output import FACILITIES, SyslogCEF
from tests.outputs.builtin import source_block
from tests.outputs.syslog import cef_reference as ref

HOSTILE = st.sampled_from(list("|=\\\n\r \t\x00\x1b\x7f\x85\u2028\u00a0é日😀\ud800\udfff") +
                          [" k=", "\\n", "\\=", "CEF:0|", "user", "USER", "fail", "10.0.0.1", " 10.0.0.1 ", "::1",
                           "010.1.1.1", "256.1.1.1", "@"])
TEXT = st.lists(st.one_of(HOSTILE, st.characters(), st.text(max_size=6)), max_size=12).map("".join)
LONG = st.builds(lambda c, n: c * n, st.sampled_from(["a", "=", "\\", "é", "\n", "|"]),
                 st.sampled_from([40, 41, 63, 64, 65, 128, 255, 256, 512, 513, 1023, 1024, 4001]))
POOL = st.sampled_from(["alice@example.com", "USER", "API_CLIENT", "audit_log::logged_in/1", "success", "failure",
                        "Mozilla/5.0 (X11) Gecko/20100101", "a=b", "x\\y", "203.0.113.9", ""])
SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-5, 2**70), st.floats(allow_nan=True), TEXT, LONG, POOL)
ODD = st.one_of(SCALAR, st.lists(SCALAR, max_size=3), st.dictionaries(TEXT, SCALAR, max_size=2))
GOOD_VALUE = st.one_of(TEXT, POOL, POOL, LONG)
GOOD_TIME = st.one_of(
    st.datetimes(min_value=datetime(1970, 1, 2)).map(lambda d: d.strftime("%Y-%m-%dT%H:%M:%S.%fZ")),
    st.datetimes(min_value=datetime(1970, 1, 2)).map(lambda d: d.isoformat()),
    st.sampled_from(["2026-11-22T10:10:13.123Z", "2026-11-22T10:10:13Z", "2026-11-22T10:10:13.1234567Z",
                     "2026-11-22 10:10:13+02:00", "2026-11-22t10:10:13z", "2026-11-22T10:10:13.123456789+00:00"]))
BAD_TIME = st.one_of(st.sampled_from(["2026-13-01T00:00:00Z", "not a time", "", "2026-11-22"]), ODD)


def rarely(draw: st.DrawFn, common: st.SearchStrategy[Any], rare: st.SearchStrategy[Any], odds: int = 12) -> Any:
    """A value of ``common``, or one time in ``odds`` one of ``rare`` (values that break an event)."""
    return draw(rare if draw(st.integers(0, 2 * odds)) == odds else common)  # not an end: those come often


def block(keys: tuple[str, ...], draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 60)) == 30:
        return draw(ODD)  # not a dict at all
    return {k: rarely(draw, GOOD_VALUE, ODD, 6) for k in keys if draw(st.booleans())}


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    source = source_block(draw(st.sampled_from(["asana", "incydr", "pangea", "agilicus_audits", "other"])),
                          vendor=draw(st.one_of(POOL, TEXT)), product=draw(st.one_of(POOL, TEXT)))
    if draw(st.integers(0, 5)) == 0:
        source = {k: v for k, v in source.items() if draw(st.integers(0, 10)) != 5}
        for key in ("cef_name", "severity", "type"):
            if draw(st.booleans()):
                source[key] = draw(st.one_of(st.integers(-1, 11), GOOD_VALUE, ODD))
    ev: dict[str, Any] = {"id": rarely(draw, st.one_of(TEXT, LONG, POOL, st.text(min_size=41, max_size=60)), ODD),
                          "timestamp": rarely(draw, GOOD_TIME, BAD_TIME), "source": source, "raw": {}}
    for key, value in (("action", GOOD_VALUE), ("name", GOOD_VALUE), ("message", GOOD_VALUE),
                       ("outcome", st.one_of(st.sampled_from(["success", "failure", "unknown"]), GOOD_VALUE)),
                       ("severity", st.one_of(st.integers(-2, 12), GOOD_VALUE)),
                       ("category", st.lists(st.one_of(POOL, TEXT), max_size=3))):
        if draw(st.booleans()):
            ev[key] = rarely(draw, value, ODD)
    for key, keys in (("actor", ("id", "name", "email", "type", "ip", "user_agent")),
                      ("target", ("id", "type", "name", "email")), ("organization", ("id", "name")),
                      ("integrity", ("hash", "membership", "signature", "consistency", "other"))):
        if draw(st.booleans()):
            ev[key] = block(keys, draw)
    if draw(st.integers(0, 6)) == 0:
        ev["target"] = [block(("id", "type", "name", "email"), draw) for _ in range(draw(st.integers(0, 3)))]
    for key in [k for k in ev if draw(st.integers(0, 160)) == 80]:
        del ev[key]  # even the required ones
    return ev


def outcome(fn: Any, *args: Any) -> tuple[str, Any]:
    try:
        return "ok", fn(*args)
    except Exception as exc:
        return type(exc).__name__, str(exc)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events())
@example({"id": "e", "timestamp": "2026-11-22T10:10:13.123Z", "source": source_block("incydr"), "raw": {},
          "action": "a=b|c\\", "actor": {"id": 5, "name": ["x"], "ip": "10.0.0.1", "type": "USER"},
          "target": {"type": "user", "id": "\ud800"}, "integrity": {"hash": "fail"}, "message": "x" * 2000})
def test_format_parts_is_what_it_was(ev: dict[str, Any]) -> None:
    assert outcome(cef.format_parts, ev, __version__) == outcome(ref.format_parts, ev, __version__)
    assert outcome(cef.format_parts, ev, "1.0|x\\") == outcome(ref.format_parts, ev, "1.0|x\\")


def output(**options: Any) -> SyslogCEF:
    opts = apply_defaults(SyslogCEF.options_schema, {"host": "127.0.0.1", "port": 9, "hostname": "h.example", **options})
    return SyslogCEF(ComponentConfig(name="cef", type="syslog_cef", options=opts),
                     Context(name="cef", state_dir="/tmp", logger=logging.getLogger("test.cef_exact"), metrics=Metrics()))


def reference_of(out: SyslogCEF, fmt: str, facility: int) -> Any:
    header = ref.SyslogHeader(fmt, facility, out.header.hostname, out.header.app_name)
    return SimpleNamespace(header=header, max_bytes=out.max_bytes, octet_counting=out.octet_counting,
                           protocol=out.protocol)


CONFIGS = [
    {"protocol": "tcp", "framing": "octet-counting", "format": "rfc5424"},
    {"protocol": "tcp", "framing": "newline", "format": "rfc3164", "facility": 3},
    {"protocol": "udp", "format": "rfc5424"},
    {"protocol": "udp", "format": "none", "max_message_bytes": 480},
    {"protocol": "tls", "framing": "octet-counting", "format": "none", "max_message_bytes": 600, "facility": "auth"},
    {"protocol": "tcp", "framing": "newline", "format": "rfc5424", "max_message_bytes": 900, "app_name": "a[b]"},
]


@pytest.mark.parametrize("options", CONFIGS, ids=lambda o: "-".join(map(str, o.values())))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.lists(events(), max_size=8))
def test_encode_is_what_it_was(options: dict[str, Any], batch: list[dict[str, Any]]) -> None:
    out = output(**options)
    facility = options.get("facility", "local4")
    expected = ref.encode(reference_of(out, options["format"], FACILITIES.get(facility, facility)), batch)
    assert out.encode(batch) == expected
    assert out.encode(batch + batch) == ref.encode(reference_of(out, options["format"], FACILITIES.get(facility, facility)),
                                                   batch + batch)
