"""The cursor of sources that read an audit log in closed time windows.

Vendors index events late and some promise no order, so a source cannot simply remember "the
newest event I saw". Instead it reads **closed windows** ``[start, end)`` whose end stays
``settle_delay`` behind now, and when a window is complete the **watermark** moves to its end.
Each poll starts its first window ``lookback`` before the watermark, to pick up events that
were indexed after their window was read; the ids of events already delivered in that overlap
are kept in the cursor (``seen``) so that re-reading delivers nothing twice.

``seen`` is bounded (:data:`MAX_SEEN`). When more events than that fall inside the lookback,
the oldest are dropped and ``floor`` rises past them: the next re-read starts at ``floor``, so
the overlap shrinks rather than the cursor growing without end or re-sending events.

The window being read is kept in the cursor too (``window``), with whatever the source needs
to resume inside it (a page number, an offset token), so every page's cursor is safe to
resume from. Times are integer milliseconds since the epoch: exact, and JSON-friendly.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from forwarder_core.errors import SourceError
from forwarder_core.plugin_api import Page, Source
from forwarder_core.times import iso_ms, ms_datetime, now_ms, parse_ms, to_ms

MAX_SEEN = 20_000
"""The most event ids a cursor keeps for de-duplication at window edges."""

CURSOR_VERSION = 1


@dataclass
class WindowCursor:
    """The JSON cursor of a windowed source; see the module docstring."""

    watermark: int
    floor: int
    seen: dict[str, int] = field(default_factory=dict)
    window: dict[str, Any] | None = None

    @classmethod
    def load(cls, cursor: Any, start_ms: int) -> "WindowCursor":
        """Read a committed cursor, or start at ``start_ms`` when there is none."""
        if not cursor:
            return cls(watermark=start_ms, floor=start_ms)
        if not isinstance(cursor, dict) or cursor.get("v") != CURSOR_VERSION:
            raise ValueError(f"unrecognised cursor (expected a version {CURSOR_VERSION} window cursor): {str(cursor)[:200]}")
        window = cursor.get("window")
        return cls(
            watermark=int(cursor["watermark"]),
            floor=int(cursor.get("floor", cursor["watermark"])),
            seen={str(k): int(v) for k, v in (cursor.get("seen") or {}).items()},
            window=dict(window) if window else None,
        )

    def dump(self) -> dict[str, Any]:
        """A JSON-ready snapshot (copied, so later changes do not reach a page already yielded)."""
        return {
            "v": CURSOR_VERSION,
            "watermark": self.watermark,
            "watermark_time": iso_ms(self.watermark),
            "floor": self.floor,
            "seen": dict(self.seen),
            "window": dict(self.window) if self.window is not None else None,
        }

    def next_window(self, end: int, lookback: int, *, after: int | None = None) -> tuple[int, int] | None:
        """The next window ``[start, end)`` to read, or None when there is nothing new to read.

        The first window of a poll (``after`` None) starts ``lookback`` before the watermark, but
        never before ``floor``, below which ``seen`` cannot de-duplicate. Later windows of the
        same poll start where the previous one ended (``after``), which may be short of the
        watermark when a crowded overlap was read in narrower windows.
        """
        if after is not None:
            return (after, end) if end > after else None
        if end <= self.watermark:
            return None
        return max(self.watermark - lookback, self.floor), end

    def finish_window(self, end: int, lookback: int) -> None:
        """The window up to ``end`` is read: move the watermark and forget ids out of reach."""
        keep_from = end - lookback
        seen = {k: t for k, t in self.seen.items() if t >= keep_from}
        if len(seen) > MAX_SEEN:
            cutoff = sorted(seen.values(), reverse=True)[MAX_SEEN]
            seen = {k: t for k, t in seen.items() if t > cutoff}
            self.floor = max(self.floor, cutoff + 1)
        self.seen = seen
        self.watermark = max(self.watermark, end)
        self.window = None


class EdgeDedup:
    """Decides, event by event, whether a window's event is new; records what must be kept.

    An event is a duplicate when its id is in the cursor's ``seen`` (delivered by an earlier
    window) or, with ``track_window``, was already met in this window (deep pages of a live
    result set can shift and show one event twice). Ids of events that will still be inside
    the next poll's overlap go into ``seen``.
    """

    def __init__(self, cursor: WindowCursor, window_end: int, lookback: int, *, window_ids: set[str] | None = None):
        self.seen = cursor.seen
        self.keep_from = window_end - lookback
        self.window_ids = window_ids
        self.met = 0  # distinct events met in this window for the first time (duplicates or not)

    def admit(self, key: str, t: int) -> bool:
        """True when the event is new (deliver it); False for a duplicate."""
        ids = self.window_ids
        if ids is not None:
            if key in ids:
                return False
            ids.add(key)
            self.met += 1
        if key in self.seen:
            return False
        if t >= self.keep_from:
            self.seen[key] = t
        return True


class WindowedSource(Source):
    """A source that reads closed windows through a :class:`WindowCursor`.

    Subclasses set ``settle`` and ``lookback`` (milliseconds) and implement
    :meth:`open_window` (the cursor's ``window`` dict for a new span, with ``start`` and
    ``end``) and ``_read_window(state)`` (yield the window's pages; set ``state.window`` to
    None once the window is complete).
    """

    settle: int
    lookback: int

    def poll(self, cursor: Any | None) -> Iterator[Page]:
        start = self.config.start_time or datetime.now(timezone.utc) - timedelta(hours=24)
        try:
            state = WindowCursor.load(cursor, to_ms(start))
        except (KeyError, TypeError, ValueError) as exc:
            raise SourceError(f"{self.name}: {exc}; reset it with 'siem-forwarder state reset {self.name}'") from None
        end = now_ms() - self.settle
        after: int | None = None  # where the last window of this poll ended
        while not self.context.stop.is_set():
            if state.window is None:
                span = state.next_window(end, self.lookback, after=after)
                if span is None:
                    return
                state.window = self.open_window(*span)
            after = state.window["end"]
            yield from self._read_window(state)
            if state.window is not None:  # stopped part-way
                return

    def open_window(self, start: int, end: int) -> dict[str, Any]:
        raise NotImplementedError

    def _read_window(self, state: WindowCursor) -> Iterator[Page]:
        raise NotImplementedError
