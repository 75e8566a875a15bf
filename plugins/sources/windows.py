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

**Occurrences.** A vendor without event ids can serve two events equal in every byte; they are
two occurrences and each is delivered. ``seen`` counts them: a key delivered ``n`` times is kept
as ``[time, n]`` (``time`` alone when ``n`` is 1, the form earlier versions wrote, so their
cursors load unchanged). :meth:`EdgeDedup.occurrence` numbers the copies met in a window: the
first keeps the digest as its id, the n-th becomes ``<digest>-<n>``; a re-read that meets no more
copies than ``seen`` counts delivers none, and a further copy that arrives late is delivered once.
Identical copies share their timestamp, so they always fall into the same window.

The window being read is kept in the cursor too (``window``), with whatever the source needs
to resume inside it (a page number, an offset token), so every page's cursor is safe to
resume from. Times are integer milliseconds since the epoch: exact, and JSON-friendly.

**One seen-set.** :class:`SeenSet` (its bound :data:`MAX_SEEN`, its fallback of dropping the
oldest instants whole and raising ``floor``, its occurrence counts) is the only one: Incydr and
Asana keep it in :class:`WindowCursor`; the Agilicus and Pangea cursors keep it too, around a
position of their own, because their APIs move differently. Agilicus answers a window whole in
one request, so a window is never resumed part-way (its cursor holds no ``window``), it cuts
windows at the microsecond, and it remembers the instants that hold more records than the API
returns. Pangea's position is the newest ``received_at`` read, inside search result sets that
expire, and its ids are the vendor's hashes. Their cursor JSON keeps the forms earlier versions
wrote, so committed cursors load unchanged.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from forwarder_core.plugin_api import (
    ComponentConfig,
    Context,
    Page,
    Source,
    SourceError,
    iso_ms,
    ms_datetime,
    now_ms,
    to_ms,
)

MAX_SEEN = 20_000
"""The most event ids a cursor keeps for de-duplication at window edges, for every windowed source:
about 700 KB of cursor JSON, enough for 300 s of lookback at 60 events/s. Past it the late-event
window shrinks; nothing is ever delivered twice for want of room."""
KEY_CHARS = 16
"""Hex digits of a content digest kept in ``seen``: 64 bits, so a false match among the events of
one lookback (thousands) has odds far below one in a billion."""

CURSOR_VERSION = 1


class SeenSet(dict[str, int]):
    """key -> time of each event delivered near a window edge, with how many occurrences of it.

    ``counts`` holds the keys delivered more than once (identical events); a key it lacks was
    delivered once. Bounded by :meth:`bound`, which drops the oldest instants whole, so the set
    stays complete from the time it returns (the cursor's new ``floor``) onward.
    """

    def __init__(self, times: dict[str, int] | None = None, counts: dict[str, int] | None = None):
        super().__init__(times or {})
        self.counts: dict[str, int] = dict(counts or {})

    def delivered(self, key: str) -> int:
        """How many occurrences of ``key`` were delivered (0: none this set remembers)."""
        if key not in self:
            return 0
        return self.counts.get(key, 1)

    def add(self, key: str, t: int, n: int = 1) -> None:
        """``n`` occurrences of ``key``, at ``t``, are delivered."""
        self[key] = max(t, self.get(key, t))
        if n > 1 and n > self.counts.get(key, 0):
            self.counts[key] = n

    def forget_before(self, t: int) -> None:
        if any(v < t for v in self.values()):
            for key in [k for k, v in self.items() if v < t]:
                del self[key]
                self.counts.pop(key, None)

    def bound(self, limit: int = MAX_SEEN) -> int | None:
        """Keep at most ``limit`` keys; return the time from which the set is still complete, or
        None when nothing had to go."""
        if len(self) <= limit:
            return None
        cutoff = sorted(self.values(), reverse=True)[limit]
        self.forget_before(cutoff + 1)
        return cutoff + 1

    def to_json(self) -> dict[str, int | list[int]]:
        """``key: time``, or ``key: [time, n]`` for a key delivered ``n`` > 1 times."""
        counts = self.counts
        if not counts:
            return dict(self)
        return {k: [t, counts[k]] if k in counts else t for k, t in self.items()}

    @classmethod
    def from_json(cls, value: Any) -> "SeenSet":
        """Read :meth:`to_json`'s form (a bare time, as earlier versions wrote, means one occurrence)."""
        seen = cls()
        for key, item in (value or {}).items():
            if isinstance(item, list):
                seen.add(str(key), int(item[0]), int(item[1]))
            else:
                seen[str(key)] = int(item)
        return seen


@dataclass
class WindowCursor:
    """The JSON cursor of a windowed source; see the module docstring."""

    watermark: int
    floor: int
    seen: SeenSet = field(default_factory=SeenSet)
    """The events delivered in the overlap the next poll re-reads."""
    window: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.seen, SeenSet):
            self.seen = SeenSet(self.seen)

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
            floor=int(cursor["floor"] if "floor" in cursor else cursor["watermark"]),
            seen=SeenSet.from_json(cursor.get("seen")),
            window=dict(window) if window else None,
        )

    def dump(self) -> dict[str, Any]:
        """A JSON-ready snapshot (copied, so later changes do not reach a page already yielded)."""
        return {
            "v": CURSOR_VERSION,
            "watermark": self.watermark,
            "watermark_time": iso_ms(self.watermark),
            "floor": self.floor,
            "seen": self.seen.to_json(),
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
        self.seen.forget_before(end - lookback)
        complete_from = self.seen.bound()
        if complete_from is not None:
            self.floor = max(self.floor, complete_from)
        self.watermark = max(self.watermark, end)
        self.window = None


class WindowTally:
    """The occurrences met in one window, across the passes that read it.

    ``met`` counts each key in the current pass (a re-read after shifted pages starts a new one);
    ``most`` is the most occurrences of a key any pass met, which is how many were delivered.
    A source keeps one per open window, for as long as the window is being read.
    """

    __slots__ = ("met", "most")

    def __init__(self) -> None:
        self.met: dict[str, int] = {}
        self.most: dict[str, int] = {}

    def new_pass(self) -> None:
        self.met = {}


class EdgeDedup:
    """Decides, event by event, whether a window's event is new; records what must be kept.

    Two ways in, by what the source's ids are:

    * :meth:`admit` for vendor ids: an event is a duplicate when its id is in the cursor's
      ``seen`` (delivered by an earlier window) or, with ``window_ids``, was already met in this
      window (deep pages of a live result set can shift and show one event twice).
    * :meth:`occurrence` for content digests (events without an id): identical events are
      occurrences, numbered within the window through a :class:`WindowTally`, and the cursor
      counts how many of each were delivered.

    Ids of events that will still be inside the next poll's overlap go into ``seen``.
    ``already`` counts the events recognised as delivered before (for the source's ledger).
    """

    def __init__(self, cursor: WindowCursor, window_end: int, lookback: int, *, window_ids: set[str] | None = None,
                 tally: WindowTally | None = None):
        self.cursor = cursor
        self.seen = cursor.seen
        self.keep_from = window_end - lookback
        self.window_ids = window_ids
        self.tally = tally if tally is not None else WindowTally()
        self.met = 0  # events met in this window for the first time (duplicates or not)
        self.already = 0

    def take_already(self) -> int:
        """The events recognised as delivered before since the last call (for a page's ledger)."""
        n, self.already = self.already, 0
        return n

    def admit(self, key: str, t: int) -> bool:
        """True when the event is new (deliver it); False for a duplicate."""
        ids = self.window_ids
        if ids is not None:
            if key in ids:
                self.already += 1
                return False
            ids.add(key)
            self.met += 1
        if key in self.seen:
            self.already += 1
            return False
        if t >= self.keep_from:
            self.seen[key] = t
        return True

    def occurrence(self, digest: str, t: int) -> str | None:
        """The occurrence id of an event whose id is the content ``digest``, or None if delivered before.

        The n-th identical event met in this pass of the window is occurrence n: ``digest`` for
        the first, ``<digest>-<n>`` after. It is new when neither an earlier pass of this window
        nor the cursor (an earlier poll) delivered n of them.
        """
        # Runs once per event of a source without ids: one attribute walk per table, and for the
        # common case (a key met once, new to the cursor) no SeenSet method call: Incydr's admit
        # step went from 2.73 to 2.57 us an event (bench/stages.py, median of 3).
        key = digest[:KEY_CHARS]
        met, most = self.tally.met, self.tally.most
        n = met.get(key, 0) + 1
        met[key] = n
        if n <= most.get(key, 0):
            self.already += 1
            return None
        most[key] = n
        self.met += 1
        seen = self.cursor.seen
        if key in seen:
            if n <= seen.delivered(key):
                self.already += 1
                return None
            seen.add(key, t, n)
        elif t >= self.keep_from:
            if n == 1:
                seen[key] = t  # SeenSet.add of a new key delivered once
            else:
                seen.add(key, t, n)
        return digest if n == 1 else f"{digest}-{n}"


class WindowedSource(Source):
    """A source that reads closed windows through a :class:`WindowCursor`.

    The window settings come from the options :func:`~forwarder_core.plugin.option_schemas.source_options_schema`
    adds: ``page_size``, and ``settle_delay`` and ``lookback`` (seconds) held here as
    :attr:`settle` and :attr:`lookback` in milliseconds. Subclasses implement
    :meth:`open_window` (the cursor's ``window`` dict for a new span, with ``start`` and
    ``end``) and ``read_window(state)`` (yield the window's pages; set ``state.window`` to
    None once the window is complete).
    """

    def __init__(self, config: ComponentConfig, context: Context):
        super().__init__(config, context)
        self.page_size = int(self.options["page_size"])
        self.settle = int(float(self.options["settle_delay"]) * 1000)
        self.lookback = int(float(self.options["lookback"]) * 1000)

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
            yield from self.read_window(state)
            if state.window is not None:  # stopped part-way
                return

    def cursor_time(self, cursor: Any) -> datetime | None:
        """The watermark: every window before it is read."""
        if isinstance(cursor, dict) and isinstance(cursor.get("watermark"), int):
            return ms_datetime(cursor["watermark"])
        return None

    def open_window(self, start: int, end: int) -> dict[str, Any]:
        raise NotImplementedError

    def read_window(self, state: WindowCursor) -> Iterator[Page]:
        raise NotImplementedError
