"""A strict parser for ArcSight Common Event Format lines, and the ``cef`` sample checker.

:func:`parse_cef` rejects every message the CEF grammar does not allow (field count, escapes,
keys, severity, raw control characters), so a test that parses what a real receiver stored
proves the format, and an operator can check a sample:
``python -m siem_forwarder_plugins.outputs.syslog.cef received.log`` (:func:`main`).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import BinaryIO, TextIO

FORBIDDEN_CODEPOINTS: list[int] = (
    [c for c in range(0x20)]
    + list(range(0x7F, 0xA0))
    + [0x2028, 0x2029]
    + list(range(0xD800, 0xE000))
)
"""Code points no CEF message may contain raw: C0/C1 controls, DEL, line/paragraph separators, surrogates."""
_FORBIDDEN_SET = frozenset(chr(c) for c in FORBIDDEN_CODEPOINTS)


class CEFError(ValueError):
    """A message that is not strict CEF; the text says where and why."""


_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_VALUE_ESCAPES = {"\\": "\\", "=": "=", "n": "\n", "r": "\r"}
_SEVERITY_WORDS = frozenset({"Unknown", "Low", "Medium", "High", "Very-High"})


def parse_cef(text: str) -> tuple[list[str], dict[str, str]]:
    """Parse one strict CEF message into its 7 header fields and its extension, un-escaped.

    The header list is ``[version, vendor, product, device_version, event_class_id, name,
    severity]``. Raises :class:`CEFError` for anything the spec does not allow: a missing
    ``CEF:`` prefix, a wrong field count, an unknown or dangling escape, an unescaped ``=`` in a
    value, a key that is empty, not alphanumeric or repeated, a severity outside 0-10 (or the
    spec's words), and any control character, line break or unpaired surrogate.
    """
    if not text.startswith("CEF:"):
        raise CEFError("does not start with 'CEF:'")
    if not text.isprintable():
        for i, ch in enumerate(text):
            if ch in _FORBIDDEN_SET:
                raise CEFError(f"non-printable character U+{ord(ch):04X} at offset {i}")
    header: list[str] = []
    field: list[str] = []
    i = 4
    n = len(text)
    while len(header) < 7:
        if i >= n:
            raise CEFError(f"header has {len(header)} fields, needs 7 (each ending in '|')")
        ch = text[i]
        if ch == "\\":
            nxt = text[i + 1] if i + 1 < n else ""
            if nxt not in ("\\", "|"):
                raise CEFError(f"unknown escape '\\{nxt}' in header field {len(header) + 1} at offset {i}")
            field.append(nxt)
            i += 2
        elif ch == "|":
            header.append("".join(field))
            field = []
            i += 1
        else:
            field.append(ch)
            i += 1
    _check_header(header)
    return header, _parse_extension(text[i:], i)


def _check_header(header: list[str]) -> None:
    if header[0] not in ("0", "1"):
        raise CEFError(f"unsupported CEF version {header[0]!r}")
    for index, label in ((1, "vendor"), (2, "product"), (4, "event class id"), (5, "name")):
        if not header[index]:
            raise CEFError(f"empty {label}")
    severity = header[6]
    if severity not in _SEVERITY_WORDS:
        if not (severity.isascii() and severity.isdigit() and 0 <= int(severity) <= 10):
            raise CEFError(f"severity {severity!r} is not 0-10")


def _parse_extension(ext: str, offset: int) -> dict[str, str]:
    if not ext:
        return {}
    equals: list[int] = []
    i = 0
    n = len(ext)
    while i < n:
        ch = ext[i]
        if ch == "\\":
            nxt = ext[i + 1] if i + 1 < n else ""
            if nxt not in _VALUE_ESCAPES:
                raise CEFError(f"unknown escape '\\{nxt}' in extension at offset {offset + i}")
            i += 2
            continue
        if ch == "=":
            equals.append(i)
        i += 1
    if not equals:
        raise CEFError("extension has no key=value pair")
    starts: list[int] = []
    for index, eq in enumerate(equals):
        start = eq
        while start > 0 and ext[start - 1] in _KEY_CHARS:
            start -= 1
        if start == eq:
            raise CEFError(f"empty or invalid key before '=' at offset {offset + eq} (unescaped '=' in a value?)")
        if index == 0:
            if start != 0:
                raise CEFError(f"text before the first key at offset {offset}")
        elif ext[start - 1] != " " or start - 1 <= equals[index - 1]:
            raise CEFError(f"unescaped '=' in a value at offset {offset + eq}")
        starts.append(start)
    result: dict[str, str] = {}
    for index, eq in enumerate(equals):
        key = ext[starts[index]:eq]
        end = starts[index + 1] - 1 if index + 1 < len(equals) else n
        if key in result:
            raise CEFError(f"duplicate key {key!r}")
        result[key] = _unescape(ext[eq + 1:end])
    return result


def _unescape(raw: str) -> str:
    if "\\" not in raw:
        return raw
    out: list[str] = []
    i = 0
    n = len(raw)
    while i < n:
        ch = raw[i]
        if ch == "\\":
            out.append(_VALUE_ESCAPES[raw[i + 1]])
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def strip_syslog_header(line: str) -> str:
    """The CEF part of a received line: from a leading ``CEF:``, or the first `` CEF:`` after a syslog header."""
    if line.startswith("CEF:"):
        return line
    at = line.find(" CEF:")
    return line[at + 1:] if at >= 0 else line


# --------------------------------------------------------------------------- command line


def check_parser(prog: str) -> argparse.ArgumentParser:
    """The command line of :func:`main` (``siem-forwarder cef-check``); the man page is made from it too."""
    parser = argparse.ArgumentParser(prog=prog, description=main.__doc__)
    parser.add_argument("files", nargs="*", metavar="FILE", help="files to check (default: standard input)")
    parser.add_argument("--json", action="store_true", help="print each parsed message as JSON")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only invalid lines and the summary")
    return parser


def main(argv: Sequence[str] | None = None, stdin: BinaryIO | None = None, stdout: TextIO | None = None,
         prog: str = "python -m siem_forwarder_plugins.outputs.syslog.cef") -> int:
    """Check that each line of the given files (or standard input) is one strict CEF message.

    A syslog header before CEF: is skipped. Prints one line per message (N: ok, or N: invalid:
    reason; with --json the parsed header and extension) and a summary. Exits 0 when every
    non-empty line parsed, 1 otherwise, 2 when a file cannot be read (one line naming it and why).
    """
    args = check_parser(prog).parse_args(argv)
    out = stdout or sys.stdout
    streams: list[tuple[str, BinaryIO]] = []
    if args.files:
        for path in args.files:
            try:
                streams.append((path, open(path, "rb")))  # noqa: SIM115 - closed by the `with` below
            except OSError as exc:
                for _, opened in streams:
                    opened.close()
                print(f"{prog}: cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
                return 2
    else:
        streams.append(("-", stdin or sys.stdin.buffer))
    good = bad = 0
    for label, stream in streams:
        prefix = f"{label}:" if len(streams) > 1 else ""
        with stream if label != "-" else _NoClose(stream):
            for number, raw in enumerate(stream, 1):
                line = raw.rstrip(b"\n")
                if line.endswith(b"\r"):
                    line = line[:-1]
                if not line:
                    continue
                try:
                    header, extension = parse_cef(strip_syslog_header(line.decode("utf-8")))
                except UnicodeDecodeError as exc:
                    bad += 1
                    print(f"{prefix}{number}: invalid: not UTF-8 ({exc.reason} at byte {exc.start})", file=out)
                    continue
                except CEFError as exc:
                    bad += 1
                    print(f"{prefix}{number}: invalid: {exc}", file=out)
                    continue
                good += 1
                if args.json:
                    print(json.dumps({"line": number, "header": header, "extension": extension},
                                     ensure_ascii=False), file=out)
                elif not args.quiet:
                    print(f"{prefix}{number}: ok", file=out)
    print(f"{good} valid, {bad} invalid", file=out)
    return 0 if bad == 0 else 1


class _NoClose:
    def __init__(self, stream: BinaryIO):
        self.stream = stream

    def __enter__(self) -> BinaryIO:
        return self.stream

    def __exit__(self, *exc: object) -> None:
        return None
