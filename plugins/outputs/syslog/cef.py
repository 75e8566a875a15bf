"""ArcSight Common Event Format: a formatter that is safe by construction, and a strict parser.

The formatter turns a normalized event (``schemas/event.schema.json``) into one CEF line::

    CEF:0|Vendor|Product|Version|EventClassID|Name|Severity|key=value key=value ...

Safety comes from escaping every value the way the spec says (header: ``\\`` and ``|``;
extension values: ``\\``, ``=``, line feed as ``\\n``, carriage return as ``\\r``) and from
emitting keys only from :data:`EXTENSION_KEYS`. No field value, however hostile, can add a key,
end the message early or start a second one. Characters that CEF cannot carry and that syslog
receivers rewrite (tab and the other control characters, Unicode line separators, unpaired
surrogates) are replaced: tab by a space, the others by U+FFFD. Header fields cannot hold line
breaks at all, so there CR and LF become spaces.

The strict parser that judges it lives in :mod:`forwarder_core.plugin.cef` and is
re-exported here; ``python -m siem_forwarder_plugins.outputs.syslog.cef < sample.log`` checks a sample.

The header's Name is the event's ``name``, else its ``action``, else the ``cef_name`` its source
declares; its Severity the event's ``severity``, else the source's declared one (see
:func:`severity_of`). Both come from the event itself (:func:`forwarder_core.plugin_api.traits_of`):
this module knows no source type.

The formatter is pure and sits on the hot path: per vendor and product the
header prefix is built once, escaping is a fast check and, only for a value that needs it, one
``str.translate``, and time conversion avoids ``datetime`` for well-formed timestamps.
"""
from __future__ import annotations

import ipaddress
import re
import sys
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from forwarder_core import __version__
from forwarder_core.plugin_api import CEF_FORBIDDEN_CODEPOINTS as FORBIDDEN_CODEPOINTS
from forwarder_core.plugin_api import CEFError, parse_cef, parse_ms, strip_syslog_header, targets_of, traits_of
from forwarder_core.plugin_api import cef_check as main

__all__ = ["CEFError", "format_event", "format_line", "format_parts", "main", "parse_cef", "strip_syslog_header", "truncate"]

# --------------------------------------------------------------------------- dictionary

EXTENSION_KEYS: dict[str, int] = {
    "rt": 32,
    "externalId": 40,
    "act": 63,
    "outcome": 63,
    "cat": 1023,
    "suser": 1023,
    "suid": 1023,
    "src": 64,
    "requestClientApplication": 1023,
    "duser": 1023,
    "duid": 1023,
    "deviceExternalId": 255,
    "msg": 1023,
    "cs1": 4000, "cs1Label": 1023,
    "cs2": 4000, "cs2Label": 1023,
    "cs3": 4000, "cs3Label": 1023,
    "cs4": 4000, "cs4Label": 1023,
    "cs5": 4000, "cs5Label": 1023,
    "cs6": 4000, "cs6Label": 1023,
    "flexString1": 1023, "flexString1Label": 128,
    "flexString2": 1023, "flexString2Label": 128,
}
"""The only keys the formatter emits, with the CEF dictionary's maximum length in characters.

Values longer than that are cut (before escaping, so an escape is never split) because
receivers such as ArcSight truncate or reject them anyway.
"""

CUSTOM_LABELS: dict[str, str] = {
    "cs1": "eventId",
    "cs2": "integrity",
    "cs3": "actorEmail",
    "cs4": "actorType",
    "cs5": "targetType",
    "cs6": "targetId",
    "flexString1": "targetName",
    "flexString2": "organization",
}
"""Fixed meaning of each custom field, the same for every source type so SIEM rules can rely on it."""

HEADER_MAX = {"event_class_id": 1023, "name": 512}

CUT_ORDER: tuple[str, ...] = (
    "msg", "requestClientApplication", "flexString1", "flexString2", "cs6", "cs5", "cs4", "cs3",
    "cs2", "cat", "deviceExternalId", "duser", "duid", "src", "suid", "suser",
)
"""Which values a size-capped message gives up first (see :func:`truncate`); the rest are kept whole."""


FAILURE_BUMP = 2
INTEGRITY_FAILURE_SEVERITY = 9
DEFAULT_EVENT_CLASS = "audit"

# --------------------------------------------------------------------------- escaping

_REPLACEMENT = "\ufffd"


def _base_table() -> dict[int, str]:
    table = {c: _REPLACEMENT for c in FORBIDDEN_CODEPOINTS}
    table[ord("\t")] = " "
    return table


_VALUE_TABLE = _base_table()
_VALUE_TABLE.update({ord("\\"): "\\\\", ord("="): "\\=", ord("\n"): "\\n", ord("\r"): "\\r"})

_HEADER_TABLE = _base_table()
_HEADER_TABLE.update({ord("\\"): "\\\\", ord("|"): "\\|", ord("\n"): " ", ord("\r"): " "})


def _escaper(table: dict[int, str], special: str) -> Callable[[str], str]:
    """The escape function of one table: every character of ``table`` replaced, in one ``str.translate``.

    Most values need nothing: a printable string without either ``special`` character is
    returned as it is, since that check costs 80-260 ns on a 26-113 character value where a
    ``translate`` with this table costs 0.7-1.9 us (CPython's ASCII fast path gives up on the
    two-character escapes). A closure, so a call is one frame on the hot path.
    """
    first, second = special[0], special[1]

    def escape(value: str) -> str:
        if value.isprintable() and first not in value and second not in value:
            return value
        return value.translate(table)

    return escape


escape_value = _escaper(_VALUE_TABLE, "\\=")
"""Escape an extension value: ``\\`` ``=`` LF CR per the spec, other unsafe characters replaced."""

escape_header = _escaper(_HEADER_TABLE, "\\|")
"""Escape a header field: ``\\`` and ``|``; line breaks become spaces (the header cannot hold them)."""


# --------------------------------------------------------------------------- formatting


_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_DOTTED_QUAD = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")
"""An IPv4 address in the form ``str(ipaddress.ip_address(...))`` gives back (no leading zeros)."""


@lru_cache(maxsize=4096)
def _ip_or_none(text: str) -> str | None:
    if _DOTTED_QUAD.fullmatch(text):
        return text  # what ipaddress would answer, without building an address object
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        return None


class _SourceHeader:
    """What the CEF header of one source block needs, prepared once: the escaped
    ``CEF:0|Vendor|Product|Version|`` prefix, the declared Name and Severity, and the whole
    headers made so far by (class id, name, severity), bounded: a log has few of them."""

    __slots__ = ("prefix", "cef_name", "severity", "headers")

    def __init__(self, vendor: str, product: str, version: str, cef_name: str, severity: int):
        self.prefix = (f"CEF:0|{escape_header(vendor or 'unknown')}|{escape_header(product or 'unknown')}"
                       f"|{escape_header(version)}|")
        self.cef_name = cef_name
        self.severity = severity
        self.headers: dict[tuple[str, str, int], str] = {}

    def header(self, event_class: str, name: str, severity: int) -> str:
        key = (event_class, name, severity)
        header = self.headers.get(key)
        if header is None:
            header = self.prefix + escape_header(event_class) + "|" + escape_header(name) + "|" + str(severity) + "|"
            if len(self.headers) >= _HEADERS_MAX:
                self.headers.clear()
            self.headers[key] = header
        return header


_HEADERS_MAX = 4096
_SOURCE_HEADERS: dict[tuple[Any, ...], _SourceHeader] = {}
_SOURCE_HEADERS_MAX = 256


def _source_header(source: dict[str, Any], version: str) -> _SourceHeader:
    """The prepared header of an event's ``source`` block, looked up by the block's values (one
    lookup per event instead of two caches and a six-part key), so it holds for events that
    came through the disk buffer with blocks of their own as well as for the shared block."""
    vendor, product = source.get("vendor", ""), source.get("product", "")
    source_type, cef_name, severity = source.get("type", ""), source.get("cef_name"), source.get("severity")
    key = (vendor, product, source_type, cef_name, severity, version)
    prepared = _SOURCE_HEADERS.get(key)
    if prepared is None:
        traits = traits_of({"type": source_type, "product": product, "cef_name": cef_name, "severity": severity})
        prepared = _SourceHeader(vendor, product, version, traits.cef_name, traits.severity)
        if len(_SOURCE_HEADERS) >= _SOURCE_HEADERS_MAX:
            _SOURCE_HEADERS.clear()
        _SOURCE_HEADERS[key] = prepared
    return prepared


def _text(value: Any) -> str:
    return value if type(value) is str else ("" if value is None else str(value))


_LAST_SOURCE: tuple[dict[str, Any], str, _SourceHeader] | None = None
"""The source block :func:`format_parts` saw last (a copy), its version and its prepared header:
a page's events share one block, and comparing it whole is cheaper than building the lookup key."""


def _prepared(source: Any, version: str) -> _SourceHeader:
    global _LAST_SOURCE
    last = _LAST_SOURCE
    if last is not None and last[0] == source and last[1] == version:
        return last[2]
    prepared = _source_header(source, version)
    _LAST_SOURCE = (dict(source), version, prepared)
    return prepared


def severity_of(event: dict[str, Any], default: int) -> int:
    """The event's own ``severity`` (0-10), else its source's ``default``: 9 when any integrity
    check failed, raised by 2 when ``outcome`` is ``failure``."""
    sev = event.get("severity")
    if type(sev) is int and 0 <= sev <= 10:
        return sev
    integrity = event.get("integrity")
    if integrity and "fail" in integrity.values():
        return INTEGRITY_FAILURE_SEVERITY
    base = default
    if event.get("outcome") == "failure":
        base = min(10, base + FAILURE_BUMP)
    return base


def _is_user(target: dict[str, Any]) -> bool:
    return bool(target.get("email")) or "user" in _text(target.get("type")).lower()


_ASCII_UNSAFE = bytes(range(0x20)) + b"\x7f\\="
"""What an ASCII value cannot hold as it is: control characters (escaped or replaced), ``\\``
and ``=`` (escaped)."""


def _needs_escaping(line: str, items: int) -> bool:
    """Whether any value in ``line``, the ``items`` joined, needs escaping. Every item's key
    brings exactly one ``=`` and nothing else to escape, so an ASCII line needs nothing when
    deleting what is unsafe (``=`` included) takes away exactly ``items`` bytes: one pass of a
    table lookup a byte. Other lines: more ``=`` than items, or ``str.isprintable`` (several
    times slower, and the only way for the rest of Unicode)."""
    if line.isascii():
        data = line.encode("ascii")
        return len(data) - len(data.translate(None, _ASCII_UNSAFE)) != items
    return line.count("=") != items or not line.isprintable() or "\\" in line


def _escaped(parts: list[str]) -> list[str]:
    """``parts`` with every value escaped (a key holds no ``=``, so the first one ends it)."""
    return [key + "=" + escape_value(value) for key, _, value in (part.partition("=") for part in parts)]


def format_parts(event: dict[str, Any], version: str = __version__) -> tuple[str, list[str], int]:
    """The CEF header (ending in ``|``), the extension's ``key=value`` items (escaped), and the severity.

    Kept apart so a size-capped transport can shorten values without re-escaping anything
    (:func:`truncate`) and can derive the syslog priority from the severity;
    :func:`format_event` joins them.
    """
    header, parts, severity, _ = format_line(event, version)
    return header, parts, severity


def format_line(event: dict[str, Any], version: str = __version__) -> tuple[str, list[str], int, str]:
    """:func:`format_parts` and the items joined by spaces: the extension as it is sent.

    The hot path of the output. Each item is ``key=`` and its value, cut to the dictionary
    length, put together unescaped; then the joined line is checked once for anything to escape
    (:func:`_needs_escaping`: nearly always nothing), and only then are the values escaped one
    by one. An empty (falsy) value is left out with its label. The cuts are
    :data:`EXTENSION_KEYS`' lengths, written out (``tests/outputs/syslog/test_cef.py`` reads
    every value back against the dictionary, and ``test_cef_exact`` compares every byte with
    the formatter as it was).
    """
    prepared = _prepared(event["source"], version)
    get = event.get
    action = _text(get("action"))
    message = _text(get("message"))
    event_class = action[:1023] if action else DEFAULT_EVENT_CLASS
    name = (_text(get("name")) or action or prepared.cef_name)[:512]
    sev = get("severity")
    severity = sev if type(sev) is int and 0 <= sev <= 10 else severity_of(event, prepared.severity)
    header = prepared.headers.get((event_class, name, severity)) or prepared.header(event_class, name, severity)

    parts = ["rt=" + str(parse_ms(event["timestamp"]))]
    put = parts.append
    event_id = _text(event["id"])
    if event_id:
        put("externalId=" + event_id[:40])
        if len(event_id) > 40:
            put("cs1=" + event_id[:4000])
            put("cs1Label=eventId")
    if action:
        put("act=" + action[:63])
    x = get("outcome")
    if x:
        put("outcome=" + (x if type(x) is str else str(x))[:63])
    x = get("category")
    if x:
        x = ",".join(x)
        if x:
            put("cat=" + x[:1023])

    actor = get("actor")
    if actor:
        aget = actor.get
        actor_id = aget("id")
        x = aget("name") or aget("email") or actor_id
        if x:
            put("suser=" + (x if type(x) is str else str(x))[:1023])
        if actor_id:
            put("suid=" + (actor_id if type(actor_id) is str else str(actor_id))[:1023])
        x = aget("ip")
        if x:
            x = _ip_or_none(x if type(x) is str else str(x))
            if x:
                put("src=" + x[:64])
        x = aget("user_agent")
        if x:
            put("requestClientApplication=" + (x if type(x) is str else str(x))[:1023])
        x = aget("email")
        if x:
            put("cs3=" + (x if type(x) is str else str(x))[:4000])
            put("cs3Label=actorEmail")
        x = aget("type")
        if x:
            put("cs4=" + (x if type(x) is str else str(x))[:4000])
            put("cs4Label=actorType")

    targets = targets_of(event)
    if targets:
        target = targets[0]
        tget = target.get
        x = tget("type")
        if x:
            put("cs5=" + (x if type(x) is str else str(x))[:4000])
            put("cs5Label=targetType")
        if _is_user(target):
            x = tget("name") or tget("email") or tget("id")
            if x:
                put("duser=" + (x if type(x) is str else str(x))[:1023])
            x = tget("id")
            if x:
                put("duid=" + (x if type(x) is str else str(x))[:1023])
        else:
            x = tget("id")
            if x:
                put("cs6=" + (x if type(x) is str else str(x))[:4000])
                put("cs6Label=targetId")
            x = tget("name")
            if x:
                put("flexString1=" + (x if type(x) is str else str(x))[:1023])
                put("flexString1Label=targetName")

    organization = get("organization")
    if organization:
        x = organization.get("id") or organization.get("name")
        if x:
            put("deviceExternalId=" + (x if type(x) is str else str(x))[:255])
        if organization.get("id"):
            x = organization.get("name")
            if x:
                put("flexString2=" + (x if type(x) is str else str(x))[:1023])
                put("flexString2Label=organization")

    integrity = get("integrity")
    if integrity:
        x = " ".join(f"{k}:{integrity[k]}" for k in ("hash", "membership", "signature", "consistency") if k in integrity)
        if x:
            put("cs2=" + x[:4000])
            put("cs2Label=integrity")

    if message:
        put("msg=" + message[:1023])
    line = " ".join(parts)
    if _needs_escaping(line, len(parts)):
        parts = _escaped(parts)
        line = " ".join(parts)
    return header, parts, severity, line


def format_event(event: dict[str, Any], version: str = __version__) -> str:
    """One CEF message (no syslog header, no line ending) for a normalized event."""
    header, _, _, line = format_line(event, version)
    return header + line


def _cut_escaped(value: str, max_bytes: int) -> str:
    """The longest prefix of an escaped value within ``max_bytes`` UTF-8 bytes, never ending mid-escape."""
    cut = value.encode("utf-8")[:max_bytes].decode("utf-8", "ignore")
    trailing = len(cut) - len(cut.rstrip("\\"))
    if trailing % 2:
        cut = cut[:-1]
    return cut


def truncate(header: str, parts: list[str], max_bytes: int) -> str | None:
    """The CEF message cut to ``max_bytes`` UTF-8 bytes, still valid CEF; None if it cannot fit.

    The header and the identifying keys (``rt``, ``externalId``, ``cs1``, ``act``,
    ``outcome``) are never cut. Other values are shortened in :data:`CUT_ORDER` (free text
    first, the actor last); a value cut to nothing is dropped with its label, and ``src`` is
    only ever dropped whole. Cutting happens on escaped text at a character boundary and never
    between a backslash and what it escapes.
    """
    items = list(parts)
    sizes = [len(p.encode("utf-8")) for p in items]
    excess = len(header.encode("utf-8")) + sum(sizes) + max(0, len(items) - 1) - max_bytes
    keys = [p.split("=", 1)[0] for p in items]
    for key in CUT_ORDER:
        if excess <= 0:
            break
        if key not in keys:
            continue
        i = keys.index(key)
        value = items[i][len(key) + 1:]
        keep = sizes[i] - len(key) - 1 - excess
        cut = _cut_escaped(value, keep) if keep > 0 and key != "src" else ""
        if cut:
            items[i] = key + "=" + cut
            new_size = len(items[i].encode("utf-8"))
            excess -= sizes[i] - new_size
            sizes[i] = new_size
            continue
        label = key + "Label"
        for j, k in enumerate(keys):
            if k in (key, label):
                excess -= sizes[j] + 1
                items[j] = ""
                keys[j] = ""
    if excess > 0:
        return None
    return header + " ".join(p for p in items if p)


if __name__ == "__main__":
    sys.exit(main())
