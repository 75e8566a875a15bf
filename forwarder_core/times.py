"""Time parsing and formatting shared by the core and every plugin: one set of helpers.

Cursors and windows count in integers (epoch milliseconds for Incydr and Asana, microseconds for
Agilicus and Pangea, whose APIs cut windows that finely): exact, comparable and JSON-friendly.
"""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MS = timedelta(milliseconds=1)
_US = timedelta(microseconds=1)
_SECOND = timedelta(seconds=1)


def parse_time(value: str | float | int) -> datetime:
    """An RFC 3339 string or epoch seconds, as an aware UTC datetime."""
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, tz=timezone.utc)
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc)


def format_time(dt: datetime) -> str:
    """RFC 3339 UTC with milliseconds and ``Z``: the normalized event's ``timestamp`` format."""
    dt = dt.astimezone(timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


# --------------------------------------------------------------------------- milliseconds


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def to_ms(value: datetime) -> int:
    """An aware datetime as integer epoch milliseconds (truncated, never rounded up)."""
    return (value - EPOCH) // _MS


def parse_ms(text: str) -> int:
    """Epoch milliseconds (truncated, never rounded up) of an RFC 3339 time; naive means UTC.

    Runs once per event in the sources (the event's time) and in the outputs that send it as
    a number (CEF ``rt``, HEC ``time``). ``datetime.fromisoformat`` and one subtraction are C:
    0.28 us an event, where integer arithmetic on the string with a cache per second, in
    Python, took 0.53-0.8 us (timeit and bench/stages.py, 10,000 distinct timestamps). What
    ``fromisoformat`` refuses goes through :func:`parse_time` (spaces, a lower-case ``z``),
    which raises ValueError on what is not a time at all (``24:00``, ``02-30``).
    """
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        dt = parse_time(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return (dt - EPOCH) // _MS


def iso_ms(ms: int) -> str:
    """Epoch milliseconds as ``YYYY-MM-DDTHH:MM:SS.mmmZ``."""
    dt = EPOCH + timedelta(milliseconds=ms)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def ms_datetime(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)


# --------------------------------------------------------------------------- microseconds


def to_us(dt: datetime) -> int:
    """An aware datetime as integer epoch microseconds."""
    return (dt - EPOCH) // _US


def from_us(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def parse_us(text: str) -> int:
    """Epoch microseconds of an RFC 3339 time (``Z`` or offset; a naive time is UTC)."""
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return (dt - EPOCH) // _US


def iso_us(us: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS.ffffffZ``: RFC 3339 at the microsecond windows are cut at."""
    return (EPOCH + timedelta(microseconds=us)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
