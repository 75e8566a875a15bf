"""Fetching a source's next page in a thread of its own while the current page ships.

A source's ``poll`` is a generator: asking it for the next page is a call to the vendor. The
pipeline hands that call to a :class:`Fetcher` and ships the page it already has, so the
vendor's latency and the outputs' overlap. One fetcher serves one poll at a time (a pool slot
keeps its fetcher and lends it to whichever source holds the slot), so the threads are bounded
by the pool, not by the number of sources, and a source is never more than one page ahead.
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

from forwarder_core.plugin.results import Page

END: Any = object()
"""What :meth:`Pending.result` returns when the source has no more pages."""


class Pending:
    """A page being fetched: :meth:`result` waits for it (and raises what the source raised)."""

    def __init__(self, pages: Iterator[Page]):
        self._pages = pages
        self._done = threading.Event()
        self._item: Any = None
        self._error: BaseException | None = None

    def run(self) -> None:
        try:
            self._item = next(self._pages)
        except StopIteration:
            self._item = END
        except BaseException as exc:  # handed to the consumer, raised there
            self._error = exc
        self._done.set()

    def result(self) -> Any:
        """The page, or :data:`END`."""
        self._done.wait()
        if self._error is not None:
            raise self._error
        return self._item


class Fetcher:
    """One daemon thread running page fetches in order: a fetch stuck in a vendor's socket must
    not keep the process alive after SIGTERM and ``shutdown_timeout``."""

    def __init__(self, name: str):
        self._tasks: queue.SimpleQueue[Pending | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            task = self._tasks.get()
            if task is None:
                return
            task.run()

    def fetch(self, pages: Iterator[Page]) -> Pending:
        """Start fetching the next page of ``pages``; the caller must not touch ``pages`` until
        the result is in."""
        pending = Pending(pages)
        self._tasks.put(pending)
        return pending

    def close(self) -> None:
        """Let the thread end once the fetch in hand (if any) is done."""
        self._tasks.put(None)
