"""The Agilicus sources' cursor: a time frontier plus the content hashes that make re-reads safe.

The Agilicus API has no cursor and no record id, so the only way forward is time windows. The
cursor records:

``end``
    Every record with a time before it has been delivered (except late arrivals, which the
    ``lookback`` re-read catches).
``floor``
    ``seen`` holds the hash of every delivered record with a time in ``[floor, end)``, so any
    window starting at or after ``floor`` can be re-read without delivering a duplicate.
``seen``
    Content-hash prefixes of delivered records grouped by their time (epoch microseconds); a
    hash listed ``n`` times was delivered ``n`` times (identical records are occurrences, see
    :mod:`siem_forwarder_plugins.sources.windows`), so the lists earlier versions wrote, each hash
    once, load as they are.
    Only the last ``lookback`` seconds before the poll's window end are kept, and never more
    than ``max_seen`` hashes: past that the oldest groups go and ``floor`` rises, which
    shortens the late-event window instead of risking a duplicate.
``reported``
    Instants already reported as holding more records than one request can return, so a
    re-read does not raise the same alarm on every poll.

Times are integers (epoch microseconds) in memory; ``end`` and ``floor`` are RFC 3339 in the
JSON form so ``siem-forwarder state show`` reads well.
"""
from __future__ import annotations

from typing import Any

from forwarder_core.times import iso_us, parse_us

HASH_CHARS = 16
"""Hex digits of the SHA-256 kept per record: 64 bits, so a false match within one lookback
window (thousands of records) has odds far below one in a billion."""
VERSION = 1


class WindowCursor:
    """Mutable while a poll runs; :meth:`dump` takes the JSON snapshot a Page carries."""

    __slots__ = ("end", "floor", "seen", "reported", "size")

    def __init__(self, end: int, floor: int, seen: dict[int, dict[str, int]] | None = None,
                 reported: set[int] | None = None):
        self.end = end
        self.floor = min(floor, end)
        self.seen: dict[int, dict[str, int]] = seen or {}  # time -> hash -> occurrences delivered
        self.reported: set[int] = reported or set()
        self.size = sum(sum(v.values()) for v in self.seen.values())

    @classmethod
    def begin(cls, start_us: int) -> "WindowCursor":
        return cls(start_us, start_us)

    @classmethod
    def load(cls, value: Any) -> "WindowCursor":
        """Read a committed cursor; ValueError says what is wrong with it."""
        if not isinstance(value, dict) or value.get("v") != VERSION:
            raise ValueError(f"not an Agilicus window cursor (version {VERSION}): {str(value)[:80]!r}")
        try:
            end = parse_us(value["end"])
            floor = parse_us(value["floor"])
            seen: dict[int, dict[str, int]] = {}
            for t, hashes in value.get("seen", {}).items():
                bucket = seen[int(t)] = {}
                for h in hashes:
                    bucket[h] = bucket.get(h, 0) + 1
            reported = {int(t) for t in value.get("reported", [])}
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"Agilicus window cursor is damaged ({type(exc).__name__}: {exc})") from None
        if not all(isinstance(hashes, list) for hashes in value.get("seen", {}).values()) or any(
                not isinstance(h, str) for hashes in seen.values() for h in hashes):
            raise ValueError("Agilicus window cursor is damaged (seen must map times to lists of hashes)")
        return cls(end, floor, seen, reported)

    def dump(self) -> dict[str, Any]:
        return {
            "v": VERSION,
            "end": iso_us(self.end),
            "floor": iso_us(self.floor),
            "seen": {str(t): [h for h, n in hashes.items() for _ in range(n)] for t, hashes in self.seen.items()},
            "reported": sorted(self.reported),
        }

    # ------------------------------------------------------------------ reading

    def reread_from(self, lookback_us: int) -> int:
        """Where a poll starts: ``lookback`` before ``end``, but never below what ``seen`` covers."""
        return max(self.floor, self.end - lookback_us)

    def bucket(self, t: int) -> dict[str, int] | None:
        return self.seen.get(t)

    def remember(self, t: int, key: str, n: int = 1) -> None:
        """``n`` occurrences of ``key`` at ``t`` are delivered."""
        bucket = self.seen.get(t)
        if bucket is None:
            bucket = self.seen[t] = {}
        had = bucket.get(key, 0)
        if n > had:
            bucket[key] = n
            self.size += n - had

    # ------------------------------------------------------------------ moving on

    def advance(self, done_to: int, keep_from: int) -> None:
        """The window up to ``done_to`` is delivered; forget what no later re-read needs.

        ``keep_from`` is the poll's window end minus ``lookback``: hashes below it (and below
        ``done_to``, since this poll still reads upward from there) are no longer needed.
        """
        self.end = max(self.end, done_to)
        floor = min(self.end, max(self.floor, min(keep_from, done_to)))
        if floor > self.floor:
            self.floor = floor
            stale = [t for t in self.seen if t < floor]
            for t in stale:
                self.size -= sum(self.seen.pop(t).values())
            if self.reported:
                self.reported = {t for t in self.reported if t >= floor}

    def cap(self, max_seen: int) -> int:
        """Drop the oldest groups until at most ``max_seen`` hashes remain; return how many went.

        ``floor`` rises to the oldest group kept, so a later re-read starts there and cannot
        deliver a record whose hash was dropped.
        """
        if self.size <= max_seen:
            return 0
        dropped = 0
        for t in sorted(self.seen):
            if self.size <= max_seen:
                self.floor = min(self.end, max(self.floor, t))
                break
            n = sum(self.seen.pop(t).values())
            self.size -= n
            dropped += n
        else:
            self.floor = self.end
        return dropped
