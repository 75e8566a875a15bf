"""The Pangea source's cursor: how far the log has been read, and which events near that edge.

Pangea has no resumable stream, only searches by ``received_at``. Each poll searches from
``through - lookback`` (re-reading recent time for events that were indexed late) to
``now - settle_delay``, so the events at and just before the edge come back and must be
dropped: the cursor keeps a short hash (16 hex digits of SHA-256) and the ``received_at`` of
every event in the re-read span.

The set is the windowed sources' one :class:`~siem_forwarder_plugins.sources.windows.SeenSet`,
bounded by its :data:`~siem_forwarder_plugins.sources.windows.MAX_SEEN`: under heavy volume the
oldest times are dropped whole and ``floor`` moves past them, so the next search starts after
them. The re-read span then shrinks to what the set covers, and nothing is ever delivered twice
for want of room.

Why not the :class:`~siem_forwarder_plugins.sources.windows.WindowCursor` of Incydr and Asana:
Pangea's position is the newest ``received_at`` read, found inside search result sets that
expire (a window cannot be resumed by a page number or an offset kept in a cursor), and its
event ids are the vendor's own hashes, not content digests. The JSON keeps the form earlier
versions wrote, so committed cursors load unchanged.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from forwarder_core.plugin_api import iso_us, parse_time, to_us
from siem_forwarder_plugins.sources.windows import KEY_CHARS, MAX_SEEN, SeenSet

__all__ = ["KEY_LEN", "MAX_SEEN", "Cursor"]
KEY_LEN = KEY_CHARS


class Cursor:
    """Mutable read position; :meth:`dump` gives the JSON value a Page carries."""

    __slots__ = ("through", "floor", "seen")

    def __init__(self, through: int, floor: int | None = None, seen: dict[str, int] | None = None):
        self.through = through  # epoch µs: everything received before it has been read
        self.floor = floor  # epoch µs: the seen set is complete only from here on
        self.seen = seen if isinstance(seen, SeenSet) else SeenSet(seen)

    @classmethod
    def load(cls, value: Any, default_start: datetime) -> "Cursor":
        """Read a stored cursor; None (the first poll) starts at ``default_start``.

        Raises ValueError on a cursor this source did not write.
        """
        if value is None:
            start = to_us(default_start)
            return cls(start, floor=start)  # the first poll starts at start_time, not before
        if not isinstance(value, dict) or value.get("v") != 1 or not isinstance(value.get("through"), str):
            raise ValueError("not a Pangea cursor (expected {'v': 1, 'through': ..., 'seen': {...}})")
        seen = value.get("seen") or {}
        if not isinstance(seen, dict) or not all(isinstance(k, str) and isinstance(v, int) for k, v in seen.items()):
            raise ValueError("Pangea cursor 'seen' is not a map of hash to time")
        floor = value.get("floor")
        return cls(to_us(parse_time(value["through"])),
                   to_us(parse_time(floor)) if isinstance(floor, str) else None, SeenSet(seen))

    def dump(self) -> dict[str, Any]:
        out: dict[str, Any] = {"v": 1, "through": iso_us(self.through), "seen": dict(self.seen)}
        if self.floor is not None:
            out["floor"] = iso_us(self.floor)
        return out

    def start(self, lookback_us: int) -> int:
        """Where a search from this cursor starts (inclusive), in epoch µs."""
        start = self.through - lookback_us
        return max(start, self.floor) if self.floor is not None else start

    def is_seen(self, key: str) -> bool:
        return key[:KEY_LEN] in self.seen

    def add(self, key: str, received_us: int) -> None:
        self.seen.add(key[:KEY_LEN], received_us)
        if received_us > self.through:
            self.through = received_us

    def prune(self, lookback_us: int) -> None:
        """Forget events before the next search's start; keep at most :data:`MAX_SEEN`."""
        cutoff = self.through - lookback_us
        if self.floor is not None and self.floor <= cutoff:
            self.floor = None
        self.seen.forget_before(cutoff)
        complete_from = self.seen.bound(MAX_SEEN)
        if complete_from is not None:
            self.floor = complete_from
