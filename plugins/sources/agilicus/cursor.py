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
    than :data:`~siem_forwarder_plugins.sources.windows.MAX_SEEN` hashes: past that the oldest
    groups go and ``floor`` rises, which shortens the late-event window instead of risking a
    duplicate.
``reported``
    Instants already reported as holding more records than one request can return, so a
    re-read does not raise the same alarm on every poll.

Why not the :class:`~siem_forwarder_plugins.sources.windows.WindowCursor` of Incydr and Asana:
Agilicus answers a window whole in one request (there is no page token to resume inside it),
so this cursor holds no ``window``; its times are microseconds, where the API cuts; and it
remembers the over-full instants. The seen-set, its bound and its fallback are the shared ones,
and the JSON keeps the form earlier versions wrote, so committed cursors load unchanged.

Times are integers (epoch microseconds) in memory; ``end`` and ``floor`` are RFC 3339 in the
JSON form so ``siem-forwarder state show`` reads well.
"""
from __future__ import annotations

from typing import Any

from forwarder_core.plugin_api import iso_us, parse_us
from siem_forwarder_plugins.sources.windows import KEY_CHARS, SeenSet

HASH_CHARS = KEY_CHARS
VERSION = 1


class WindowCursor:
    """Mutable while a poll runs; :meth:`dump` takes the JSON snapshot a Page carries.

    ``seen`` is the windowed sources' one :class:`~siem_forwarder_plugins.sources.windows.SeenSet`
    (hash -> time, with occurrence counts); only its JSON form here groups the hashes by time.
    """

    __slots__ = ("end", "floor", "seen", "reported")

    def __init__(self, end: int, floor: int, seen: SeenSet | None = None, reported: set[int] | None = None):
        self.end = end
        self.floor = min(floor, end)
        self.seen = seen if seen is not None else SeenSet()
        self.reported: set[int] = reported or set()

    @classmethod
    def begin(cls, start_us: int) -> "WindowCursor":
        return cls(start_us, start_us)

    @classmethod
    def load(cls, value: Any) -> "WindowCursor":
        """Read a committed cursor; ValueError says what is wrong with it."""
        if not isinstance(value, dict) or value.get("v") != VERSION:
            raise ValueError(f"not an Agilicus window cursor (version {VERSION}): {str(value)[:80]!r}")
        groups = value.get("seen", {})
        if not isinstance(groups, dict) or not all(
                isinstance(hashes, list) and all(isinstance(h, str) for h in hashes) for hashes in groups.values()):
            raise ValueError("Agilicus window cursor is damaged (seen must map times to lists of hashes)")
        try:
            end = parse_us(value["end"])
            floor = parse_us(value["floor"])
            seen = SeenSet()
            for t, hashes in groups.items():
                for h in hashes:
                    seen.add(h, int(t), seen.delivered(h) + 1)
            reported = {int(t) for t in value.get("reported", [])}
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"Agilicus window cursor is damaged ({type(exc).__name__}: {exc})") from None
        return cls(end, floor, seen, reported)

    def dump(self) -> dict[str, Any]:
        groups: dict[str, list[str]] = {}
        counts = self.seen.counts
        for h, t in self.seen.items():
            groups.setdefault(str(t), []).extend([h] * counts.get(h, 1))
        return {
            "v": VERSION,
            "end": iso_us(self.end),
            "floor": iso_us(self.floor),
            "seen": groups,
            "reported": sorted(self.reported),
        }

    # ------------------------------------------------------------------ reading

    def reread_from(self, lookback_us: int) -> int:
        """Where a poll starts: ``lookback`` before ``end``, but never below what ``seen`` covers."""
        return max(self.floor, self.end - lookback_us)

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
            self.seen.forget_before(floor)
            if self.reported:
                self.reported = {t for t in self.reported if t >= floor}

    def cap(self, max_seen: int) -> int:
        """Keep at most ``max_seen`` hashes (the oldest instants go whole); return how many went.

        ``floor`` rises past what went, so a later re-read starts there and cannot deliver a
        record whose hash was dropped.
        """
        before = len(self.seen)
        complete_from = self.seen.bound(max_seen)
        if complete_from is None:
            return 0
        self.floor = min(self.end, max(self.floor, complete_from))
        return before - len(self.seen)
