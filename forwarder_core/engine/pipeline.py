"""Per source: poll → prepare (:mod:`forwarder_core.engine.prepare`) → route → send to every output → commit.

The cursor of a page is committed only after every output it is routed to accepted (or
dead-lettered) each of its events. The next page is fetched while the current one ships, at
most one page ahead (with ``workers``, a page more per worker, prepared in worker processes
meanwhile: :mod:`forwarder_core.engine.workers`), so memory stays flat on a backfill of millions of events.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from forwarder_core.engine.delivery import OutputRunner
from forwarder_core.engine.fetch import END, Fetcher
from forwarder_core.engine.interpreter import tune_interpreter
from forwarder_core.engine.noprogress import guard
from forwarder_core.engine.pagework import PageWork, PreparedPage
from forwarder_core.engine.polls import Poll, Progress, SourceResult, backlog, iso, through, watermark
from forwarder_core.engine.prepare import Preparer, TransformEvents
from forwarder_core.metrics import Metrics
from forwarder_core.plugin.base import Source
from forwarder_core.plugin.hooks import PluginError
from forwarder_core.plugin.results import Page
from forwarder_core.secrets import redact
from forwarder_core.storage.checkpoint import CheckpointStore
from forwarder_core.storage.ledger import NO_OUTPUT, Ledger, LedgerError, check_balance, count_terms
from forwarder_core.storage.setaside import SetAside
from forwarder_core.times import parse_time

if TYPE_CHECKING:
    from forwarder_core.engine.workers import Offload

class SourceRunner:
    """Drives one source through the pipeline, one poll at a time, in whichever thread runs it."""

    def __init__(self, source: Source, outputs: list[OutputRunner], store: CheckpointStore, quarantine: SetAside,
                 metrics: Metrics, stop: threading.Event, transform: TransformEvents | None = None,
                 page_delivered: Callable[..., list[PluginError]] | None = None, logger: logging.Logger | None = None):
        self.source = source
        self.name = source.name
        self.routes = [o for o in outputs if o.wants(source.name)]
        self.store = store
        self.quarantine = quarantine
        self.metrics = metrics
        self.stop = stop
        self.transform = transform
        self.page_delivered = page_delivered
        self.log = logger or logging.getLogger("siem_forwarder.pipeline")
        self.preparer = Preparer(source, transform)
        self.offload: Offload | None = None
        """Set where worker processes prepare this source's pages (:mod:`forwarder_core.engine.workers`)."""
        self.last_success = 0.0
        self.last_event = 0.0

    def run_until_caught_up(self, give_up_after: float | None = None, progress: Progress | None = None) -> SourceResult:
        """Poll from the committed cursor until the source has nothing more; deliver and commit each page."""
        poll = self.open_poll()
        fetcher = Fetcher(f"fetch-{self.name}")
        try:
            self.run_slice(poll, fetcher, give_up_after=give_up_after, progress=progress)
        finally:
            fetcher.close()
        return poll.result

    def open_poll(self) -> Poll:
        """A poll from the committed cursor; nothing is fetched until :meth:`run_slice`."""
        tune_interpreter()
        checkpoint = self.store.get(self.name)
        cursor = checkpoint.cursor if checkpoint else None
        return Poll(SourceResult(self.name), self._poll(cursor), backlog(self.source, cursor))

    def run_slice(self, poll: Poll, fetcher: Fetcher, *, give_up_after: float | None = None,
                  progress: Progress | None = None, max_pages: int | None = None, max_seconds: float | None = None,
                  others_waiting: Callable[[], bool] | None = None) -> bool:
        """Deliver and commit pages of ``poll`` until it ends; True then, with its outcome recorded.

        When it has shipped ``max_pages`` pages or run ``max_seconds`` and ``others_waiting()``,
        it stops early and returns False instead: its last page committed, none fetched ahead.
        """
        result = poll.result
        started = time.monotonic()
        shipped = 0
        try:
            while True:
                pending, poll.pending = poll.pending or fetcher.fetch(poll.pages), None
                page = pending.result()
                if page is END:
                    result.done = True
                    self.last_success = time.time()
                    self.metrics.set("last_poll_timestamp_seconds", self.last_success, source=self.name)
                    break
                shipped += 1
                spent = ((max_pages is not None and shipped >= max_pages)
                         or (max_seconds is not None and time.monotonic() - started >= max_seconds))
                yielding = spent and others_waiting is not None and others_waiting()
                if not yielding and not self.stop.is_set():
                    poll.pending = fetcher.fetch(poll.pages)  # the next page while this one ships
                if not self._ship(page, result, give_up_after):
                    break
                if progress is not None:
                    if poll.backlog is not None:
                        result.progress = through(self.source, poll.backlog, page.cursor)
                    progress(result)
                if self.stop.is_set():
                    break
                if yielding:
                    return False
        except LedgerError:
            self._close(poll)
            raise
        except Exception as exc:
            result.error = redact(f"poll failed: {exc}") if str(exc) else f"poll failed: {type(exc).__name__}"
            self.metrics.inc("poll_errors_total", source=self.name)
            self.log.error("source %s: %s; the cursor stays where it was", self.name, result.error)
            self.log.debug("source %s: poll traceback", self.name, exc_info=True)
        self.end_poll(poll, progress)
        return True

    def end_poll(self, poll: Poll, progress: Progress | None = None) -> None:
        """Close the poll (a page fetched ahead is dropped: it was never committed) and record how it ended."""
        self._close(poll)
        result = poll.result
        self._record_outcome(result)
        # Alert-ready: "no events for N minutes" is last_event_age_seconds > N*60 (counted from start
        # until the first event of this process arrives).
        self.metrics.set("last_event_age_seconds", time.time() - (self.last_event or self.metrics.started),
                         source=self.name)
        if progress is not None:
            progress(result)

    def _close(self, poll: Poll) -> None:
        pending, poll.pending = poll.pending, None
        try:
            if pending is not None:
                pending.result()  # a generator cannot be closed while it runs
        except BaseException:
            pass
        close = getattr(poll.pages, "close", None)
        if close is not None:
            try:
                close()
            except Exception:
                pass

    def _record_outcome(self, result: SourceResult) -> None:
        """For ``state``: how this poll ended. A store that fails here must not fail the poll."""
        if result.done:
            ok, outcome = True, f"caught up ({result.delivered} delivered)"
        elif result.error is not None:
            ok, outcome = False, result.error
        else:
            ok, outcome = True, f"stopped ({result.delivered} delivered)"
        try:
            self.store.record_poll(self.name, ok, outcome)
        except Exception as exc:
            self.log.warning("source %s: could not record the poll's outcome: %s", self.name, exc)

    # ------------------------------------------------------------------ one page

    def _poll(self, cursor: Any) -> Iterator[Page]:
        """The source's pages, stopped where they repeat a cursor or a page (:mod:`forwarder_core.engine.noprogress`);
        with workers, each handed to one as soon as it is fetched."""
        pages = guard(self.name, self.source.poll(cursor), self.metrics, start=cursor)
        return _without_bodies(pages) if self.offload is None else self.offload.ahead(pages)

    def _prepare(self, page: Page, ledger: Ledger) -> PreparedPage:
        """The page prepared in its worker, or here (no workers, a small page, a worker that failed)."""
        work = self.offload.take(page) if self.offload is not None else None
        if isinstance(work, PageWork):
            prepared = PreparedPage(work.events, work, page.events, self.preparer.raw_of)
            filtered, rejected = work.filtered, work.rejected
        else:
            local = work if work is not None else self.preparer.prepare(page.events, page.ids)
            prepared, filtered, rejected = PreparedPage(local.events), local.filtered, local.rejected
        if filtered:
            ledger.filtered += filtered
            self.metrics.inc("events_filtered_total", filtered, source=self.name)
        if rejected:
            bad = [SetAside.record(self.name, r.reason, r.event_id, r.raw, integrity=r.integrity)
                   for r in rejected]
            self.quarantine.write(self.name, bad)
            ledger.quarantined += len(bad)
            self.metrics.inc("events_quarantined_total", len(bad), source=self.name)
            self.log.warning("source %s: %d event(s) set aside in %s (first: %s)", self.name, len(bad),
                             self.quarantine.path(self.name), redact(bad[0]["reason"])[:300])
        return prepared

    def _ship(self, page: Page, result: SourceResult, give_up_after: float | None) -> bool:
        read = len(page.events) + page.already_delivered + page.held_back
        result.polled += read
        self.metrics.inc("events_polled_total", read, source=self.name)
        ledger = Ledger(read=read, already_delivered=page.already_delivered, held_back=page.held_back)
        prepared = self._prepare(page, ledger)
        count = len(prepared)
        give_up_at = time.monotonic() + give_up_after if give_up_after is not None else None
        if not self.routes:
            ledger.delivered[NO_OUTPUT] = count
        for runner in self.routes:
            tally: dict[str, int] = {}
            if count and not runner.deliver(prepared.for_output(runner.name), self.name, give_up_at, tally=tally):
                why = "stopped" if self.stop.is_set() else f"output {runner.name} kept failing: {runner.reason}"
                if not self.stop.is_set():
                    result.error = why
                self.log.warning("source %s: page of %d event(s) not committed (%s); it will be sent again",
                                 self.name, count, why)
                return False
            ledger.delivered[runner.name] = tally.get("accepted", 0)
            ledger.dead_lettered[runner.name] = tally.get("dead_lettered", 0)
        newest = page.newest
        stamp = prepared.newest() if newest is None and count else None
        if stamp is not None:
            newest = parse_time(stamp)
        check_balance(ledger, self.name, self.metrics, self.log, "page")
        mark = watermark(self.source, page.cursor)
        self.store.commit(self.name, page.cursor, iso(newest), count, mark, ledger)
        result.pages += 1
        # What reached the SIEM, as the ledger says: an event an output dead-lettered was handled,
        # not delivered. With several outputs, the fewest any of them accepted.
        result.delivered += min(ledger.delivered.values(), default=0)
        result.quarantined += ledger.quarantined
        result.filtered += ledger.filtered
        result.ledger.add(ledger)
        count_terms(ledger, self.name, self.metrics)
        self.metrics.inc("pages_committed_total", source=self.name)
        if count:
            self.last_event = time.time()
        if newest is not None:
            self.metrics.set("cursor_lag_seconds", max(0.0, time.time() - newest.timestamp()), source=self.name)
        if mark is not None:
            self.metrics.set("watermark_timestamp_seconds", parse_time(mark).timestamp(), source=self.name)
        if self.page_delivered is not None:
            for failed in self.page_delivered(source_name=self.name, count=count, cursor=page.cursor) or ():
                self.metrics.inc("plugin_errors_total", plugin=failed.plugin, hook=failed.hook)
                self.log.error("source %s: %s, after the page of %d event(s) was delivered and its cursor "
                               "committed; the poll goes on", self.name, failed, count)
        return True


def _without_bodies(pages: Iterator[Page]) -> Iterator[Page]:
    """The pages, each without the bytes it was decoded from (``Page.body``): only a worker process uses them."""
    try:
        for page in pages:
            page.body = None
            yield page
    finally:
        close = getattr(pages, "close", None)
        if close is not None:
            close()
