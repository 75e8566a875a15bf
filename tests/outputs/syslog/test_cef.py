"""The CEF formatter and parser: the contract's key mapping, the spec's escaping, and a fuzz proof
that no field value can add a key, cut a message or forge a second one."""
from __future__ import annotations

import ipaddress
import subprocess
import sys
from datetime import datetime, timezone
from io import BytesIO, StringIO
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from forwarder_core import __version__
from forwarder_core.plugin.cef import FORBIDDEN_CODEPOINTS
from forwarder_core.plugin_api import traits_of
from forwarder_core.times import parse_ms
from siem_forwarder_plugins.outputs.syslog import cef
from siem_forwarder_plugins.outputs.syslog.cef import CEFError, format_event, format_parts, parse_cef, truncate
from tests.outputs.builtin import source_block

# --------------------------------------------------------------------------- helpers


def event(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "evt-1",
        "timestamp": "2026-11-22T10:10:13.123Z",
        "source": {"name": "asana-main", "type": "asana", "vendor": "Asana", "product": "Asana"},
        "raw": {},
    }
    base.update(fields)
    return base


def parsed(ev: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    return parse_cef(format_event(ev))


def expected_text(value: str, limit: int | None = None, header: bool = False) -> str:
    """What a value must read as after a round trip: the documented replacements, nothing else."""
    if limit is not None:
        value = value[:limit]
    out = []
    for ch in value:
        code = ord(ch)
        if ch == "\t":
            out.append(" ")
        elif header and ch in "\r\n":
            out.append(" ")
        elif ch in "\r\n":
            out.append(ch)
        elif code < 0x20 or 0x7F <= code < 0xA0 or code in (0x2028, 0x2029) or 0xD800 <= code < 0xE000:
            out.append("\ufffd")
        else:
            out.append(ch)
    return "".join(out)


# --------------------------------------------------------------------------- the contract's mapping


def test_full_event_maps_to_the_contract_keys() -> None:
    header, ext = parsed(event(
        id="1203948576", action="user_login_succeeded", outcome="success", severity=4,
        category=["authentication", "iam"], message="Alice logged in",
        actor={"id": "u-1", "name": "Alice Example", "email": "alice@example.com", "type": "user",
               "ip": "203.0.113.9", "user_agent": "Mozilla/5.0"},
        target={"id": "u-2", "type": "user", "name": "Bob", "email": "bob@example.com"},
        organization={"id": "org-7", "name": "Example Inc"},
    ))
    assert header == ["0", "Asana", "Asana", __version__, "user_login_succeeded", "user_login_succeeded", "4"]
    assert ext == {
        "rt": str(int(datetime(2026, 11, 22, 10, 10, 13, 123000, tzinfo=timezone.utc).timestamp() * 1000)),
        "externalId": "1203948576",
        "act": "user_login_succeeded",
        "outcome": "success",
        "cat": "authentication,iam",
        "suser": "Alice Example", "suid": "u-1", "src": "203.0.113.9",
        "requestClientApplication": "Mozilla/5.0",
        "cs3": "alice@example.com", "cs3Label": "actorEmail",
        "cs4": "user", "cs4Label": "actorType",
        "cs5": "user", "cs5Label": "targetType",
        "duser": "Bob", "duid": "u-2",
        "deviceExternalId": "org-7", "flexString2": "Example Inc", "flexString2Label": "organization",
        "msg": "Alice logged in",
    }


@pytest.mark.parametrize("actor, suser", [
    ({"id": "u-1", "name": "Alice", "email": "a@x.io"}, "Alice"),
    ({"id": "u-1", "email": "a@x.io"}, "a@x.io"),
    ({"id": "u-1"}, "u-1"),
])
def test_suser_is_display_name_else_email_else_id(actor: dict[str, str], suser: str) -> None:
    _, ext = parsed(event(actor=actor))
    assert ext["suser"] == suser
    assert ext["suid"] == "u-1"


def test_long_event_id_goes_whole_into_cs1_labelled_eventId() -> None:
    long_id = "a3f5" * 16  # a SHA-256 hex digest, as Incydr and Agilicus ids are
    _, ext = parsed(event(id=long_id))
    assert ext["externalId"] == long_id[:40]
    assert (ext["cs1"], ext["cs1Label"]) == (long_id, "eventId")
    _, short = parsed(event(id="x" * 40))
    assert short["externalId"] == "x" * 40 and "cs1" not in short


@pytest.mark.parametrize("timestamp, expected", [
    ("2026-11-22T10:10:13Z", datetime(2026, 11, 22, 10, 10, 13, tzinfo=timezone.utc)),
    ("2026-11-22T10:10:13.5Z", datetime(2026, 11, 22, 10, 10, 13, 500000, tzinfo=timezone.utc)),
    ("2026-11-22T10:10:13.123456789Z", datetime(2026, 11, 22, 10, 10, 13, 123000, tzinfo=timezone.utc)),
    ("1970-01-01T00:00:00.001Z", datetime(1970, 1, 1, 0, 0, 0, 1000, tzinfo=timezone.utc)),
    ("2024-02-29T23:59:59.999Z", datetime(2024, 2, 29, 23, 59, 59, 999000, tzinfo=timezone.utc)),
    ("2026-11-22T11:10:13+01:00", datetime(2026, 11, 22, 10, 10, 13, tzinfo=timezone.utc)),
])
def test_rt_is_the_event_time_in_epoch_milliseconds(timestamp: str, expected: datetime) -> None:
    _, ext = parsed(event(timestamp=timestamp))
    assert int(ext["rt"]) == int(expected.timestamp()) * 1000 + expected.microsecond // 1000


@pytest.mark.parametrize("timestamp", ["2026-11-22T25:00:00Z", "2026-11-22T10:61:00Z", "2026-13-01T00:00:00Z",
                                       "2026-11-22T1 :10:13Z", "not a time"])
def test_impossible_times_are_refused_not_wrapped_around(timestamp: str) -> None:
    with pytest.raises(ValueError):
        format_event(event(timestamp=timestamp))


def test_pangea_integrity_and_non_user_targets_use_labelled_custom_fields() -> None:
    header, ext = parsed(event(
        source=source_block("pangea", "p", "Pangea", "Secure Audit Log"),
        integrity={"hash": "pass", "membership": "fail", "signature": "none"},
        target={"id": "doc-9", "type": "document", "name": "Q3 plan"},
    ))
    assert (ext["cs2"], ext["cs2Label"]) == ("hash:pass membership:fail signature:none", "integrity")
    assert (ext["cs5"], ext["cs6"], ext["flexString1"]) == ("document", "doc-9", "Q3 plan")
    assert "duser" not in ext
    assert header[1:3] == ["Pangea", "Secure Audit Log"]
    assert header[4:7] == ["audit", "Pangea audit event", "9"]  # integrity failure


@pytest.mark.parametrize("source_type, fields, severity, name", [
    ("incydr", {}, "5", "Incydr audit event"),
    ("agilicus", {}, "3", "Agilicus audit event"),
    ("agilicus_auth", {"outcome": "failure"}, "5", "Agilicus authentication event"),
    ("pangea", {"integrity": {"hash": "pass", "membership": "pass", "signature": "pass"}}, "3", "Pangea audit event"),
    ("asana", {"severity": 10}, "10", "Asana audit event"),
    ("asana", {"severity": 0}, "0", "Asana audit event"),
    ("newvendor", {}, "3", "Thing event"),
])
def test_severity_and_name_are_the_ones_the_source_declares(source_type: str, fields: dict[str, Any], severity: str,
                                                            name: str) -> None:
    header, _ = parsed(event(source=source_block(source_type, "s", "V", "Thing"), **fields))
    assert header[5:] == [name, severity]


def test_invalid_client_ip_is_left_out_and_ipv6_is_kept() -> None:
    assert "src" not in parsed(event(actor={"id": "1", "ip": "1.2.3.4, 5.6.7.8"}))[1]
    assert parsed(event(actor={"id": "1", "ip": "2001:db8::1"}))[1]["src"] == "2001:db8::1"


def test_values_are_cut_to_the_dictionary_length() -> None:
    header, ext = parsed(event(action="a" * 2000, message="m" * 5000))
    assert ext["act"] == "a" * 63 and ext["msg"] == "m" * 1023
    assert header[4] == "a" * 1023 and header[5] == "a" * 512


def test_the_formatter_follows_the_declared_dictionary_labels_and_header_lengths() -> None:
    """The formatter writes its cuts and labels out for speed; EXTENSION_KEYS, CUSTOM_LABELS and
    HEADER_MAX are what it must follow: every value over-long, each custom field with its label."""
    long = "v" * 5000
    for target in ({"id": long, "type": long, "name": long},  # not a user: cs6 and flexString1
                   {"id": long, "type": "user", "name": long}):  # a user: duser and duid
        header, ext = parsed(event(
            id=long, action=long, name=long, outcome=long, category=[long], message=long,
            actor={"id": long, "name": long, "email": long, "type": long, "user_agent": long},
            target=target, organization={"id": long, "name": long},
            integrity={"hash": "pass", "membership": "pass", "signature": "pass"}))
        assert len(header[4]) == cef.HEADER_MAX["event_class_id"] and len(header[5]) == cef.HEADER_MAX["name"]
        for key, value in ext.items():
            if key.endswith("Label"):
                assert value == cef.CUSTOM_LABELS[key[:-5]], key
            elif key not in ("rt", "cs2") and not (key == "cs5" and target["type"] == "user"):
                assert len(value) == cef.EXTENSION_KEYS[key], key
        labelled = {key[:-5] for key in ext if key.endswith("Label")}
        assert labelled == {k for k in cef.CUSTOM_LABELS if k in ext}


def test_only_dictionary_keys_are_emitted() -> None:
    _, ext = parsed(event(action="x", actor={"id": "1", "name": "n", "email": "e", "type": "t", "ip": "::1",
                                             "user_agent": "u"},
                          target={"id": "1", "type": "t", "name": "n"}, organization={"id": "o", "name": "n"},
                          integrity={"hash": "pass", "membership": "pass", "signature": "pass", "consistency": "none"},
                          labels={"suser": "forged"}, category=["web"], outcome="unknown", message="m"))
    assert set(ext) <= set(cef.EXTENSION_KEYS)


# --------------------------------------------------------------------------- escaping


def test_hostile_values_cannot_add_keys_cut_or_forge_messages() -> None:
    hostile = "x suser=root act=delete\nCEF:0|Evil|Forged|1|x|x|10|src=6.6.6.6\r\\"
    text = format_event(event(message=hostile, action="a|b\\c=d\ne", actor={"id": hostile}))
    assert "\n" not in text and "\r" not in text and expected_text(text, header=True) == text
    header, ext = parse_cef(text)
    assert ext["msg"] == hostile and ext["suid"] == hostile and ext["suser"] == hostile
    assert ext["act"] == "a|b\\c=d\ne"
    assert header[4] == "a|b\\c=d e"
    assert "src" not in ext


def test_spec_escapes_exactly() -> None:
    text = format_event(event(action="p|q\\r", message="a=b\\c\nd\re|f"))
    assert "|p\\|q\\\\r|p\\|q\\\\r|3|" in text
    assert text.endswith("msg=a\\=b\\\\c\\nd\\re|f")


def test_unsafe_characters_are_replaced_not_passed_through() -> None:
    _, ext = parsed(event(message="tab\there nul\x00 esc\x1b del\x7f nel\x85 ls\u2028 lone\ud800 nbsp\u00a0 zwj\u200d"))
    assert ext["msg"] == ("tab here nul\ufffd esc\ufffd del\ufffd nel\ufffd ls\ufffd lone\ufffd "
                          "nbsp\u00a0 zwj\u200d")


def _old_table(specials: dict[int, str]) -> dict[int, str]:
    table = {c: "\ufffd" for c in FORBIDDEN_CODEPOINTS}
    table[ord("\t")] = " "
    table.update(specials)
    return table


_OLD_VALUE_TABLE = _old_table({ord("\\"): "\\\\", ord("="): "\\=", ord("\n"): "\\n", ord("\r"): "\\r"})
_OLD_HEADER_TABLE = _old_table({ord("\\"): "\\\\", ord("|"): "\\|", ord("\n"): " ", ord("\r"): " "})


def old_escape_value(value: str) -> str:
    """The escaping as it was before it became one str.translate, kept to judge the new one."""
    if value.isprintable():
        if "\\" in value or "=" in value:
            return value.replace("\\", "\\\\").replace("=", "\\=")
        return value
    return value.translate(_OLD_VALUE_TABLE)


def old_escape_header(value: str) -> str:
    if value.isprintable():
        if "\\" in value or "|" in value:
            return value.replace("\\", "\\\\").replace("|", "\\|")
        return value
    return value.translate(_OLD_HEADER_TABLE)


ESCAPE_TEXT = st.lists(st.one_of(st.sampled_from(list("|=\\\n\r\t\x00\x7f\x85\u2028\ud800\u00a0\u200d")),
                                 st.characters(blacklist_categories=()), st.text(max_size=8)), max_size=30).map("".join)


@settings(max_examples=1000)
@given(ESCAPE_TEXT)
@example("a=b\\c|d\ne\rf\tg")
def test_escaping_is_byte_for_byte_what_it_was(value: str) -> None:
    assert cef.escape_value(value) == old_escape_value(value)
    assert cef.escape_header(value) == old_escape_header(value)


# --------------------------------------------------------------------------- fuzz: round trip

HOSTILE = st.sampled_from(list("|=\\\n\r \t\x00\x1b\x7f\x85\u2028\u00a0é日😀") + [" k=", "\\n", "\\=", "CEF:0|"])
CHUNK = st.one_of(HOSTILE, st.characters(blacklist_categories=()), st.text(max_size=8))
TEXT = st.lists(CHUNK, max_size=30).map("".join)
NONEMPTY = st.lists(CHUNK, min_size=1, max_size=30).map("".join).filter(bool)
OPTIONAL = st.one_of(st.none(), TEXT)
CATEGORIES = st.lists(st.sampled_from(["api", "authentication", "iam", "web", "file"]), max_size=3)


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    def block(keys: tuple[str, ...]) -> dict[str, str] | None:
        values = {k: draw(OPTIONAL) for k in keys}
        values = {k: v for k, v in values.items() if v is not None}
        return values or None
    ev = event(
        id=draw(st.one_of(NONEMPTY, st.text(min_size=41, max_size=120))),
        timestamp=draw(st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1))).strftime(
            "%Y-%m-%dT%H:%M:%S.%fZ"),
        source={"name": "s", "type": draw(st.sampled_from(["asana", "incydr", "pangea", "x"])),
                "vendor": draw(NONEMPTY), "product": draw(NONEMPTY)},
    )
    for key, value in (("action", draw(OPTIONAL)), ("message", draw(OPTIONAL)),
                       ("outcome", draw(st.sampled_from([None, "success", "failure", "unknown"]))),
                       ("severity", draw(st.one_of(st.none(), st.integers(0, 10)))),
                       ("category", draw(CATEGORIES) or None),
                       ("actor", block(("id", "name", "email", "type", "ip", "user_agent"))),
                       ("target", block(("id", "type", "name", "email"))),
                       ("organization", block(("id", "name")))):
        if value is not None:
            ev[key] = value
    return ev


def expected_extension(ev: dict[str, Any]) -> dict[str, str]:
    """The contract's mapping, written out independently of the formatter."""
    want: dict[str, str] = {}

    def put(key: str, value: Any, label: str | None = None) -> None:
        if value:
            want[key] = expected_text(value, cef.EXTENSION_KEYS[key])
            if label:
                want[key + "Label"] = label

    put("externalId", ev["id"])
    if len(ev["id"]) > 40:
        put("cs1", ev["id"], "eventId")
    put("act", ev.get("action"))
    put("outcome", ev.get("outcome"))
    put("cat", ",".join(ev.get("category", [])))
    actor = ev.get("actor", {})
    put("suser", actor.get("name") or actor.get("email") or actor.get("id"))
    put("suid", actor.get("id"))
    try:
        put("src", str(ipaddress.ip_address(actor.get("ip", "").strip())))
    except ValueError:
        pass
    put("requestClientApplication", actor.get("user_agent"))
    put("cs3", actor.get("email"), "actorEmail")
    put("cs4", actor.get("type"), "actorType")
    target = ev.get("target", {})
    put("cs5", target.get("type"), "targetType")
    if target.get("email") or "user" in target.get("type", "").lower():
        put("duser", target.get("name") or target.get("email") or target.get("id"))
        put("duid", target.get("id"))
    else:
        put("cs6", target.get("id"), "targetId")
        put("flexString1", target.get("name"), "targetName")
    org = ev.get("organization", {})
    put("deviceExternalId", org.get("id") or org.get("name"))
    if org.get("id"):
        put("flexString2", org.get("name"), "organization")
    put("msg", ev.get("message"))
    return want


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events())
@example(event(message="a\\", action="\\|", actor={"id": "=", "name": " x=y"}))
@example(event(message="\\n\\r\\=\\\\", id="x" * 41, actor={"ip": " 10.0.0.1 "}))
@example(event(message="\r\n", action="\n", source={"name": "s", "type": "t", "vendor": "|", "product": "\\"}))
@example(event(message="k=v k2=v2", id=" suser=root"))
def test_any_field_values_make_one_message_that_parses_back(ev: dict[str, Any]) -> None:
    text = format_event(ev)
    assert expected_text(text, header=True) == text, "a raw control character or line break got into the message"
    header, ext = parse_cef(text)
    rt = ext.pop("rt")
    assert int(rt) == parse_ms(ev["timestamp"])
    assert ext == expected_extension(ev)
    vendor, product = ev["source"]["vendor"], ev["source"]["product"]
    assert header[1] == expected_text(vendor, header=True)
    assert header[2] == expected_text(product, header=True)
    assert header[4] == (expected_text(ev["action"], 1023, header=True) if ev.get("action") else "audit")
    assert header[6] == str(cef.severity_of(ev, traits_of(ev["source"]).severity))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events(), st.integers(min_value=200, max_value=1500))
@example(event(message="\\" * 500), 300)
@example(event(message="é\\=" * 300, actor={"id": "1", "ip": "10.0.0.1"}), 260)
def test_truncation_keeps_valid_cef_within_the_limit(ev: dict[str, Any], limit: int) -> None:
    header, parts, _ = format_parts(ev)
    full_ext = parse_cef(header + " ".join(parts))[1]
    cut = truncate(header, parts, limit)
    if cut is None:
        def kept(key: str) -> bool:
            return key not in cef.CUT_ORDER and not (key.endswith("Label") and key[:-5] in cef.CUT_ORDER)
        essential = [p for p in parts if kept(p.split("=", 1)[0])]
        assert len((header + " ".join(essential)).encode()) > limit
        return
    assert len(cut.encode("utf-8")) <= limit
    cut_header, cut_ext = parse_cef(cut)
    assert cut_header == parse_cef(header + "rt=0")[0]
    for key in ("rt", "externalId", "cs1", "act", "outcome"):
        assert cut_ext.get(key) == full_ext.get(key)
    for key, value in cut_ext.items():
        assert full_ext[key].startswith(value), key
        if key == "src":
            assert value == full_ext[key]
        if key.endswith("Label"):
            assert key[:-5] in cut_ext


# --------------------------------------------------------------------------- the strict parser

GOOD = "CEF:0|Vendor|Product|1.0|100|Name|5|"


@pytest.mark.parametrize("text, reason", [
    ("", "CEF:"),
    ("LEEF:1.0|a|b|c|d|", "CEF:"),
    ("CEF:0|Vendor|Product|1.0|100|Name|5", "7"),
    ("CEF:0|Vendor|Product|1.0|100|Name", "7"),
    ("CEF:2|Vendor|Product|1.0|100|Name|5|", "version"),
    ("CEF:0||Product|1.0|100|Name|5|", "vendor"),
    ("CEF:0|Vendor|Product|1.0||Name|5|", "event class"),
    ("CEF:0|Vendor|Product|1.0|100||5|", "name"),
    ("CEF:0|Vendor|Product|1.0|100|Name|11|", "severity"),
    ("CEF:0|Vendor|Product|1.0|100|Name|-1|", "severity"),
    ("CEF:0|Vendor|Product|1.0|100|Name|High-ish|", "severity"),
    ("CEF:0|Ven\\dor|Product|1.0|100|Name|5|", "escape"),
    ("CEF:0|Vendor|Product|1.0|100|Name|5\\|", "7"),
    (GOOD + "a=b=c", "unescaped '='"),
    (GOOD + "a=b c=d=e", "unescaped '='"),
    (GOOD + "=b", "key"),
    (GOOD + "a=b =c", "key"),
    (GOOD + "a-b=c", "before the first key"),
    (GOOD + "a=b c-d=e", "unescaped '='"),
    (GOOD + " a=b", "before the first key"),
    (GOOD + "junk a=b", "before the first key"),
    (GOOD + "no pairs here", "no key=value"),
    (GOOD + "a=b\\", "escape"),
    (GOOD + "a=b\\t", "escape"),
    (GOOD + "a=b\\|c", "escape"),
    (GOOD + "a=b a=c", "duplicate"),
    (GOOD + "a=line\nbreak", "non-printable"),
    (GOOD + "a=car\rriage", "non-printable"),
    (GOOD + "a=tab\there", "non-printable"),
    (GOOD + "a=nul\x00", "non-printable"),
    ("CEF:0|Vendor|Pro\nduct|1.0|100|Name|5|", "non-printable"),
    (GOOD + "a=lone\ud800", "non-printable"),
])
def test_parser_rejects_malformed_messages(text: str, reason: str) -> None:
    with pytest.raises(CEFError, match=reason.replace("|", "\\|").replace("'", ".")):
        parse_cef(text)


@pytest.mark.parametrize("text, header, ext", [
    (GOOD, ["0", "Vendor", "Product", "1.0", "100", "Name", "5"], {}),
    (GOOD + "a=b  c= d=x\\=y\\\\z\\n\\r e=日本 😀|", None,
     {"a": "b ", "c": "", "d": "x=y\\z\n\r", "e": "日本 😀|"}),
    ("CEF:0|V|P||C|N|Unknown|k=v", ["0", "V", "P", "", "C", "N", "Unknown"], {"k": "v"}),
])
def test_parser_accepts_and_unescapes(text: str, header: list[str] | None, ext: dict[str, str] | None) -> None:
    got_header, got_ext = parse_cef(text)
    if header is not None:
        assert got_header == header
    if ext is not None:
        assert got_ext == ext


def test_header_escapes_are_unescaped() -> None:
    header, ext = parse_cef("CEF:0|V\\|x|P\\\\|1|C|N\\|M|7|a=1")
    assert header == ["0", "V|x", "P\\", "1", "C", "N|M", "7"] and ext == {"a": "1"}


# --------------------------------------------------------------------------- the checker CLI


def test_cli_reports_each_line_and_fails_on_any_invalid_one() -> None:
    good = format_event(event(message="fine = ok\n"))
    sample = "\n".join([
        good,
        "<165>1 2026-11-22T10:10:13.123Z host app 1 asana - " + good,
        "<165>Nov 22 10:10:13 host app: " + good,
        "",
        GOOD + "a=b=c",
    ]).encode() + b"\n\xff\xfe\n"
    out = StringIO()
    assert cef.main([], stdin=BytesIO(sample), stdout=out) == 1
    lines = out.getvalue().splitlines()
    assert lines[:3] == ["1: ok", "2: ok", "3: ok"]
    assert lines[3].startswith("5: invalid: unescaped '='")
    assert lines[4].startswith("6: invalid: not UTF-8")
    assert lines[5] == "3 valid, 2 invalid"


def test_cli_runs_as_a_module_and_exits_zero_on_valid_input(tmp_path: Any) -> None:
    sample = tmp_path / "sample.log"
    sample.write_text(format_event(event(message="a|b=c")) + "\n", encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "siem_forwarder_plugins.outputs.syslog.cef", "--json", str(sample)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert '"msg": "a|b=c"' in done.stdout and done.stdout.rstrip().endswith("1 valid, 0 invalid")


def test_cef_check_subcommand_reports_each_line(tmp_path) -> None:
    import subprocess
    import sys

    sample = tmp_path / "sample.cef"
    sample.write_text("<134>1 2026-01-01T00:00:00Z h app - - - CEF:0|V|P|1|login|Login|3|act=login suser=a\\=b\n"
                      "CEF:0|V|P|1|x|y|3|bad=one=two\n")
    result = subprocess.run([sys.executable, "-m", "forwarder_core", "cef-check", str(sample)],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stdout.splitlines()[0] == "1: ok"
    assert result.stdout.splitlines()[1].startswith("2: invalid:")


def test_cef_check_on_a_missing_or_unreadable_file_is_one_line_and_exit_2(tmp_path) -> None:
    import subprocess
    import sys

    for path, reason in ((tmp_path / "nope.log", "No such file or directory"), (tmp_path, "Is a directory")):
        result = subprocess.run([sys.executable, "-m", "forwarder_core", "cef-check", str(path)],
                                capture_output=True, text=True)
        assert result.returncode == 2
        assert result.stderr.splitlines() == [f"python -m forwarder_core cef-check: cannot read {path}: {reason}"]
        assert "Traceback" not in result.stderr and result.stdout == ""


def test_cef_check_help_names_the_command_as_typed() -> None:
    import subprocess
    import sys
    from pathlib import Path

    as_module = subprocess.run([sys.executable, "-m", "forwarder_core", "cef-check", "--help"],
                               capture_output=True, text=True)
    assert as_module.returncode == 0
    assert as_module.stdout.startswith("usage: python -m forwarder_core cef-check ")
    script = Path(sys.executable).parent / "siem-forwarder"
    installed = subprocess.run([str(script), "cef-check", "--help"], capture_output=True, text=True)
    assert installed.stdout.startswith("usage: siem-forwarder cef-check "), installed.stdout
