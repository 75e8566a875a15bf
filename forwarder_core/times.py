"""Time parsing and formatting shared by the core and every plugin: one set of helpers."""
from __future__ import annotations

from datetime import datetime, timezone

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
