"""What a plugin hands back to the core: a source's :class:`Page`, an output's :class:`SendResult`.

Re-exported by :mod:`forwarder_core.plugin.base`, where plugins import them from; so is
:class:`PageBody`, the bytes a page came from.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from forwarder_core.jsoncodec import decode


@dataclass
class Page:
    """A page of raw events and the cursor that is safe to commit once they are all delivered.

    ``events`` may be empty (a page that only moves the cursor, e.g. a time window with nothing
    in it). ``cursor`` must be JSON-serializable; only the source that made it reads it.
    ``newest`` is the time of the newest event of the page, if known (for lag metrics).

    ``ids``, when given, runs parallel to ``events``: the id each event gets, worked out in
    :meth:`Source.poll` (the occurrence ids of :class:`~siem_forwarder_plugins.sources.windows.EdgeDedup`,
    say), so the hash is computed once and travels with its event. The core hands it to
    :meth:`Source.make_event` (``id`` left out) and puts it in the event.

    ``already_delivered`` and ``held_back`` count, for the source's ledger, the events the vendor
    served that are *not* in ``events``: recognised as delivered by an earlier page (a re-read of
    the lookback), or kept for a later poll.
    """

    events: list[Any]
    cursor: Any
    newest: datetime | None = None
    ids: list[str | None] | None = None
    already_delivered: int = 0
    held_back: int = 0
    body: PageBody | None = None
    """The response body the events were decoded from, where the source has it: with worker
    processes the page then crosses to a worker as those bytes, decoded there, not as the
    decoded events pickled (:class:`PageBody`)."""


@dataclass
class PageBody:
    """The JSON bytes a page's events were decoded from, and where each event is in them.

    A worker process decodes ``data`` with :func:`forwarder_core.jsoncodec.decode` (what the
    core's HTTP client decodes responses with), walks ``path`` to the list of items, and takes
    ``picks``: for each item of ``Page.events``, its index in that list, or -1 for an item that
    did not come from this body (a copy held back from an earlier page), which crosses as it is.
    Give it only when the events are the decoded items themselves, unchanged, in their order
    of ``picks``. A body without one pick per event is ignored (the events cross pickled); one
    whose picks are not in the decoded list fails the worker's task, and the main process
    prepares the page itself.
    """

    data: bytes
    path: tuple[str | int, ...]
    picks: list[int]

    def items(self, extras: list[Any]) -> list[Any]:
        """The page's events rebuilt from ``data``: the picked items, ``extras`` in the places of -1."""
        found: Any = decode(self.data)
        for step in self.path:
            found = found[step]
        if not isinstance(found, list):
            raise TypeError(f"the page body holds a {type(found).__name__} at {list(self.path)}, not a list")
        extra = iter(extras)
        return [found[i] if i >= 0 else next(extra) for i in self.picks]


@dataclass
class SendResult:
    """The verdict of :meth:`Output.send` on a batch, by index into the list it was given.

    Every index not named in ``retry`` or ``rejected`` counts as accepted. ``rejected`` maps an
    index to the reason the SIEM refused it for good; the core writes it to the dead-letter file.
    ``retry`` lists indexes to send again later (busy, 429, per-item 5xx).
    """

    retry: list[int] = field(default_factory=list)
    rejected: dict[int, str] = field(default_factory=dict)
    retry_after: float | None = None

    @classmethod
    def all_accepted(cls) -> "SendResult":
        return cls()


def send_result_problem(result: Any, size: int) -> str | None:
    """What is wrong with an output's answer for a batch of ``size`` events, or None when it is usable.

    The answer must be a :class:`SendResult` whose indexes are ints in ``range(size)``, none named
    twice (within ``retry``, or in both ``retry`` and ``rejected``), and whose ``retry_after`` is
    None or a number of seconds, at least 0. Anything else cannot say which event was accepted:
    the core takes none of the batch as accepted and sends it again.
    """
    if not isinstance(result, SendResult):
        return f"returned a {type(result).__name__}, not a SendResult"
    retry, rejected = result.retry, result.rejected
    if not isinstance(retry, (list, tuple)):
        return f"returned SendResult.retry as a {type(retry).__name__}, not a list of indexes"
    if not isinstance(rejected, dict):
        return f"returned SendResult.rejected as a {type(rejected).__name__}, not a dict of index to reason"
    for what, indexes in (("retry", list(retry)), ("rejected", list(rejected))):
        bad = [i for i in indexes if type(i) is not int or not 0 <= i < size]
        if bad:
            return f"named {what} index {bad[0]!r}, not one of 0..{size - 1} (the batch has {size} event(s))"
    if len(set(retry)) != len(retry):
        return "named an index twice in SendResult.retry"
    both = set(retry) & set(rejected)
    if both:
        return f"named index {min(both)} both to retry and rejected"
    wait = result.retry_after
    if wait is not None and (isinstance(wait, bool) or not isinstance(wait, (int, float)) or not 0 <= wait < float("inf")):
        return f"returned SendResult.retry_after {wait!r}, not None or a number of seconds"
    return None
