"""One source's poll as the pipeline and the poll pool see it, and where its cursor stands in time.

:class:`Poll` is a poll in progress (a pool slot runs it a slice at a time), :class:`SourceResult`
what it did; :func:`backlog`, :func:`through` and :func:`watermark` read the source's own view of
its cursor (:meth:`~forwarder_core.plugin.base.Source.cursor_time`) for progress and ``state``,
never trusting it: a plugin's view of its cursor is informative only.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from forwarder_core.engine.fetch import Pending
from forwarder_core.plugin.base import Source
from forwarder_core.plugin.results import Page
from forwarder_core.storage.ledger import Ledger

Progress = Callable[["SourceResult"], None]


@dataclass
class SourceResult:
    name: str
    polled: int = 0
    delivered: int = 0
    """Events the outputs accepted (not those they dead-lettered); with several outputs, the fewest any accepted."""
    quarantined: int = 0
    filtered: int = 0
    pages: int = 0
    error: str | None = None
    done: bool = False
    progress: float | None = None
    """How far through its backlog the source is (0..1), where its cursor tells the time."""
    ledger: Ledger = field(default_factory=Ledger)
    """The committed pages' ledger for this run."""

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class Poll:
    """One source's poll in progress: from its committed cursor until the source has nothing more.

    A pool slot runs it a slice at a time (:meth:`SourceRunner.run_slice`). Between slices its page
    generator stays suspended and no page is fetched ahead (with ``workers``, the pages already
    handed to a worker stay there), so a poll waiting for a slot holds nothing a commit depends
    on: its cursor is where its last commit left it.
    """

    result: SourceResult
    pages: Iterator[Page]
    backlog: tuple[float, float] | None
    pending: Pending | None = None
    """The next page being fetched while the current one ships."""


def backlog(source: Source, cursor: Any) -> tuple[float, float] | None:
    """Where a poll from ``cursor`` starts and what "caught up" means (now), in epoch seconds,
    when the source's cursor tells the time; None otherwise."""
    try:
        start = source.cursor_time(cursor) if cursor is not None else source.config.start_time
    except Exception:
        return None
    now = time.time()
    return (start.timestamp(), now) if start is not None and start.timestamp() < now else None


def through(source: Source, span: tuple[float, float], cursor: Any) -> float | None:
    """How far through ``span`` (from :func:`backlog`) ``cursor`` is, 0..1."""
    try:
        at = source.cursor_time(cursor)
    except Exception:
        return None
    if at is None:
        return None
    start, end = span
    return min(1.0, max(0.0, (at.timestamp() - start) / (end - start)))


def watermark(source: Source, cursor: Any) -> str | None:
    """The cursor's time as ``state`` shows it, if the source can tell."""
    try:
        return iso(source.cursor_time(cursor))
    except Exception:
        return None


def iso(dt: datetime | None) -> str | None:
    if dt is None:
        return None
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
