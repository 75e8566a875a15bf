"""A poll that goes round in circles: a repeated cursor or an identical page stops it, as a vendor fault.

A vendor that hands back the ``next_page`` cursor it was just given, or the same events again
under a new cursor, would keep a poll paging forever (28,331 requests in 45 s, and ``once`` never
ending, before this guard). Every source's pages pass through :func:`guard`, built-in or
third-party alike, so none needs code of its own against it. Within one poll it remembers the
digests of the last :data:`RECENT` cursors, each with the events that came under it, and of the
events of the page before. A page whose cursor and events both repeat a recent page's, a page
whose events are exactly those of the page before it, or more than :data:`EMPTY_REPEATS` empty
pages in a row under cursors already seen, raise
:class:`~forwarder_core.errors.NoProgressError` *before* the page is shipped. The poll then ends
with that error, as any failed poll does: the pages before it stay delivered and committed, the
cursor stays at the last commit (so nothing is lost and nothing is sent twice),
``polls_without_progress_total`` and ``poll_errors_total`` count it, and the source is
polled again on its interval (``run``) or reported failed (``once``).

An empty page is never "identical" (a page that only moves the cursor, or events the source
recognised as delivered), and one under a cursor already seen is a source reading an edge again,
up to :data:`EMPTY_REPEATS` in a row. Only the page right before counts for "identical": a
source may meet an event again further on that its de-duplication cannot recognise (Incydr's
events that have no canonical JSON, NaN, are quarantined each time they are read), and that
is no loop.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from forwarder_core.errors import NoProgressError
from forwarder_core.jsoncodec import canonical_json_bytes, compact_json, utf8
from forwarder_core.metrics import Metrics
from forwarder_core.plugin.results import Page

RECENT = 64
"""Cursors and pages remembered per poll: memory stays a few kilobytes, whatever the poll's length."""
EMPTY_REPEATS = 100
"""Pages in a row that bring no events under a cursor already seen, tolerated: a source may read
an edge again and find only what it delivered (Pangea does, once, before it moves on), or page
inside a window whose events it all recognises as delivered under the cursor it commits at the
window's end (Incydr does, a page per vendor page). A vendor repeating itself to such a source
is stopped after this many requests instead of never."""
SHOWN = 120
"""Characters of a repeated cursor shown in the error."""


class _Recent:
    """The last :data:`RECENT` digests seen, each with the number of the page it came with."""

    def __init__(self) -> None:
        self._seen: OrderedDict[bytes, int] = OrderedDict()

    def check(self, digest: bytes, page: int) -> int | None:
        """The page that had ``digest`` before, or None (and ``digest`` remembered for ``page``)."""
        earlier = self._seen.get(digest)
        if earlier is not None:
            return earlier
        self._seen[digest] = page
        if len(self._seen) > RECENT:
            self._seen.popitem(last=False)
        return None


def cursor_text(cursor: Any) -> str:
    """A cursor as canonical JSON (its ``repr`` where JSON has no form for it)."""
    try:
        return canonical_json_bytes(cursor).decode("utf-8")
    except (TypeError, ValueError):
        return repr(cursor)


def _events_digest(events: list[Any]) -> bytes | None:
    try:
        data = compact_json(events)
    except (TypeError, ValueError):  # nothing JSON can spell (a plugin's own objects, too deep): not compared
        return None
    return hashlib.sha256(data).digest()


def guard(source: str, pages: Iterator[Page], metrics: Metrics, start: Any = None) -> Iterator[Page]:
    """``pages``, stopped with :class:`NoProgressError` at the first page that repeats a recent
    cursor with the same events, or the events of the page before; see the module docstring.

    ``start`` is the committed cursor the poll began from: a page *with events* under that very
    cursor would deliver them again on every poll, so it stops the poll too (an empty page under
    it is a source saying "nothing new", which is fine).
    """
    cursors = _Recent()
    pairs = _Recent()
    last: tuple[bytes, int] | None = None
    start_digest = hashlib.sha256(utf8(cursor_text(start))).digest() if start is not None else None
    idle = 0
    try:
        for number, page in enumerate(pages, 1):
            shown = cursor_text(page.cursor)
            digest = hashlib.sha256(utf8(shown)).digest()
            seen_cursor = cursors.check(digest, number)
            events = _events_digest(page.events) if page.events else None
            # The same cursor with the same events again is the loop; the same cursor with other
            # events is a source whose cursor only moves at a window's end (Incydr, paging inside one).
            earlier = pairs.check(digest + events, number) if events is not None else None
            if earlier is None and events is not None and digest == start_digest:
                earlier = 0  # events under the cursor this poll started from: every poll would send them again
            idle = idle + 1 if seen_cursor is not None and not page.events else 0
            if earlier is not None or idle > EMPTY_REPEATS:
                _count(metrics, source)
                where = (f"page {earlier} of this poll" if earlier else "the committed cursor this poll started from"
                         ) if earlier is not None else f"page {seen_cursor} of this poll"
                raise NoProgressError(
                    f"{source}: no progress: the source repeated a cursor: page {number} of this poll has the cursor "
                    f"of {where} ({_cut(shown)}){' with events again' if earlier is not None else ', empty again'}, "
                    f"so paging on would never end; a vendor fault (it handed back a cursor it was given). The pages "
                    f"before were delivered; the poll stops here and is tried again later")
            same = events
            earlier = last[1] if same is not None and last is not None and last[0] == same else None
            last = (same, number) if same is not None else None
            if earlier is not None:
                _count(metrics, source)
                raise NoProgressError(
                    f"{source}: no progress: the source served an identical page: page {number} of this poll holds "
                    f"the same {len(page.events)} event(s) as page {earlier} (cursor now {_cut(shown)}); a vendor "
                    f"fault (the same data under a new cursor). The pages before were delivered; the poll stops "
                    f"here and is tried again later")
            yield page
    finally:
        close = getattr(pages, "close", None)
        if close is not None:
            close()


def _count(metrics: Metrics, source: str) -> None:
    metrics.inc("polls_without_progress_total", source=source)


def _cut(text: str) -> str:
    return text if len(text) <= SHOWN else text[:SHOWN] + f"... ({len(text)} characters)"
