"""Time parsing and formatting shared by the core and every plugin: one set of helpers."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone


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


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MS = timedelta(milliseconds=1)


def epoch_ms(timestamp: str) -> int:
    """Milliseconds since the epoch (truncated, never rounded up) of an RFC 3339 timestamp.

    Every output that sends the event's time as a number (CEF ``rt``, HEC ``time``) needs it
    once per event. ``datetime.fromisoformat`` and one subtraction are C: 0.28 us an event,
    where integer arithmetic on the string with a cache per second, in Python, took 0.53 us
    (timeit, 10,000 distinct normalized timestamps). Naive times are UTC; what
    ``fromisoformat`` refuses goes through :func:`parse_time` (spaces, a lower-case ``z``),
    which raises ValueError on what is not a time at all (``24:00``, ``02-30``).
    """
    try:
        dt = datetime.fromisoformat(timestamp)
    except ValueError:
        dt = parse_time(timestamp)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return (dt - _EPOCH) // _MS
