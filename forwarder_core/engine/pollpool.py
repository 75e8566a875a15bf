"""Polling many sources from a bounded pool of slots, for ``once`` and ``run`` alike.

A host forwarding for many tenants runs hundreds of sources. A thread per source (and one more
fetching its next page) held 2,910 threads and 589 MB for 2,000 Asana sources in one ``once``
(``bench/run.py --only many``); a pool of ``max_concurrent_polls`` slots holds two threads a
slot (the slot's and its :class:`~forwarder_core.engine.fetch.Fetcher`'s) whatever the number of
sources: 33 threads and 96 MB for the same run with the default 16.

A source due for a poll waits in a FIFO queue for a free slot. It keeps the slot until it has
caught up or, while other sources are waiting, until it has shipped :data:`SLICE_PAGES` pages or
run :data:`SLICE_SECONDS`; then it goes to the back of the queue with its poll suspended (its
last page committed, none fetched ahead), so a source with a 90-day backlog does not starve the
others and a lone backfill never pays for the hand-over.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from forwarder_core.engine.fetch import Fetcher
from forwarder_core.engine.pipeline import SourceRunner
from forwarder_core.engine.polls import Poll, Progress, SourceResult
from forwarder_core.storage.ledger import LedgerError

log = logging.getLogger("siem_forwarder.pool")

SLICE_PAGES = 20
"""Pages a poll may ship while others wait before it goes to the back of the queue."""
SLICE_SECONDS = 5.0
"""Seconds a poll may hold its slot while others wait (checked after each page)."""
_IDLE_WAKE = 1.0
"""A signal handler can only set the stop event, not notify a condition: idle slots look this often."""

Done = Callable[[SourceRunner, SourceResult], None]


class PollPool:
    """``size`` slots running the polls of the sources submitted to it; see the module docstring.

    ``on_done(runner, result)`` is called in the slot's thread when a source's poll has ended
    (caught up, failed or stopped), before the slot takes other work. ``running`` maps the name
    of each source holding a slot to the monotonic time of its last progress, for the watchdog.
    """

    def __init__(self, size: int, stop: threading.Event, *, on_done: Done, progress: Progress | None = None,
                 give_up_after: float | None = None, admit: Callable[[SourceRunner], bool] | None = None):
        self.size = size
        self.stop = stop
        self.on_done = on_done
        self.progress = progress
        self.give_up_after = give_up_after
        self.admit = admit
        """Asked before a new poll starts; False drops it (a fleet's source held by another instance)."""
        self.running: dict[str, float] = {}
        self.in_flight: dict[str, SourceResult] = {}
        """The result so far of each poll holding a slot (what ``once`` reports of one it abandons)."""
        self.error: LedgerError | None = None
        self._cond = threading.Condition()
        self._ready: deque[tuple[SourceRunner, Poll | None]] = deque()
        self._timed: list[tuple[float, int, SourceRunner]] = []
        self._order = itertools.count()
        self._busy = 0
        self._closing = False
        self._threads: list[threading.Thread] = []

    def submit(self, runner: SourceRunner, delay: float = 0.0) -> None:
        """Poll ``runner``'s source once a slot is free, ``delay`` seconds from now at the earliest."""
        with self._cond:
            if delay > 0:
                heapq.heappush(self._timed, (time.monotonic() + delay, next(self._order), runner))
            else:
                self._ready.append((runner, None))
            self._cond.notify()

    def start(self) -> None:
        for slot in range(self.size):
            t = threading.Thread(target=self._work, args=(slot,), name=f"poll-{slot}", daemon=True)
            t.start()
            self._threads.append(t)

    def holds(self, name: str) -> bool:
        """Whether ``name``'s poll is running or suspended between slices (not at rest between polls)."""
        with self._cond:
            return name in self.running or any(r.name == name and p is not None for r, p in self._ready)

    def wait_idle(self, grace: float | None = None) -> bool:
        """Return when no poll is running or due (``once``: every source has caught up), or, once
        the stop event is set, when the polls running have stopped: True then. With ``grace``,
        return False instead when polls still run ``grace`` seconds after the stop event was seen
        (a plugin blocked where the stop cannot reach it): the caller abandons them."""
        stopped_at: float | None = None
        with self._cond:
            while self._busy or ((self._ready or self._timed) and not self.stop.is_set()):
                wait = _IDLE_WAKE
                if grace is not None and self.stop.is_set():
                    stopped_at = stopped_at if stopped_at is not None else time.monotonic()
                    wait = min(wait, stopped_at + grace - time.monotonic())
                    if wait <= 0:
                        return False
                self._cond.wait(wait)
        return True

    def close(self, timeout: float | None = None) -> bool:
        """Let every slot finish the page in hand and end; end the polls still queued.

        True if every slot ended within ``timeout``. A slot still running after it was abandoned
        (its page uncommitted, so the cursor did not move).
        """
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in self._threads:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        with self._cond:
            queued = [(runner, poll) for runner, poll in self._ready if poll is not None]
            self._ready.clear()
            self._timed.clear()
        for runner, poll in queued:
            runner.end_poll(poll, self.progress)
            self.on_done(runner, poll.result)
        return not any(t.is_alive() for t in self._threads)

    # ------------------------------------------------------------------ slots

    def _work(self, slot: int) -> None:
        fetcher = Fetcher(f"fetch-{slot}")
        try:
            while (work := self._take()) is not None:
                self._run(*work, fetcher)
        finally:
            fetcher.close()

    def _take(self) -> tuple[SourceRunner, Poll | None] | None:
        with self._cond:
            while not (self._closing or self.stop.is_set()):
                now = time.monotonic()
                while self._timed and self._timed[0][0] <= now:
                    self._ready.append((heapq.heappop(self._timed)[2], None))
                if self._ready:
                    runner, poll = self._ready.popleft()
                    if poll is None and self.admit is not None and not self.admit(runner):
                        continue  # a fleet's source this instance no longer holds
                    self._busy += 1
                    return runner, poll
                self._cond.wait(min(self._timed[0][0] - now, _IDLE_WAKE) if self._timed else _IDLE_WAKE)
            return None

    def _waiting(self) -> bool:
        return bool(self._ready) or bool(self._timed and self._timed[0][0] <= time.monotonic())

    def _beat(self, result: SourceResult) -> None:
        self.running[result.name] = time.monotonic()
        if self.progress is not None:
            self.progress(result)

    def _run(self, runner: SourceRunner, poll: Poll | None, fetcher: Fetcher) -> None:
        self.running[runner.name] = time.monotonic()
        ended = True
        try:
            if poll is None:
                poll = runner.open_poll()
            self.in_flight[runner.name] = poll.result
            ended = runner.run_slice(poll, fetcher, give_up_after=self.give_up_after, progress=self._beat,
                                     max_pages=SLICE_PAGES, max_seconds=SLICE_SECONDS, others_waiting=self._waiting)
            if ended:
                self.on_done(runner, poll.result)
        except Exception as exc:
            # A bug, not a vendor's or an output's failure (those end the poll with an error): the
            # source is reported failed and, under ``run``, polled again on its interval.
            if isinstance(exc, LedgerError):
                self.error = exc
            log.error("source %s: the poll broke: %s", runner.name, exc, exc_info=True)
            self.on_done(runner, SourceResult(runner.name, error=f"poll broke: {type(exc).__name__}"))
            ended = True
        finally:
            with self._cond:
                self.running.pop(runner.name, None)
                self.in_flight.pop(runner.name, None)
                self._busy -= 1
                if not ended and poll is not None:
                    self._ready.append((runner, poll))
                self._cond.notify_all()
