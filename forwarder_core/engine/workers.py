"""Worker processes that prepare and encode pages while the main process pages, delivers and commits.

``workers: N`` gives the sources a pool of N processes (:mod:`forwarder_core.engine.workerpool`);
``workers: auto`` gives them one on demand: a poll's pages go there only once it is a backlog
(:data:`BACKLOG`), and the pool stops when idle (``workers_idle_stop``). Each
source's pages are submitted in order, a few ahead of the one being delivered
(:meth:`Offload.ahead`), and taken back in the same order (:meth:`Offload.take`), so pages are
still delivered and committed one at a time, strictly in order, and a cursor never moves before
its page was delivered.

A page whose worker fails (the process died, the pool broke, the task raised) is prepared
again in the main process with the same :class:`~forwarder_core.engine.prepare.Preparer`, so nothing
is skipped and the result is the one the in-process path gives; a broken pool is replaced for
the pages after it. A source (or an output) whose plugin class says ``process_safe = False``,
or that was registered in-process rather than through an entry point (a worker could not build
it), has its pages prepared (its batches encoded) in the main process.

Imported only where ``workers`` is above 0, so ``--version`` and one-CPU hosts never load the
multiprocessing machinery.
"""
from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import CancelledError, Future
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Any, Protocol

from forwarder_core.config.loader import Config
from forwarder_core.engine.pagework import PageTask, PageWork
from forwarder_core.engine.prepare import Prepared, Preparer
from forwarder_core.engine.workerpool import Ticket, WorkerPool
from forwarder_core.plugin.base import Output
from forwarder_core.plugin.manager import IN_PROCESS, PluginSet
from forwarder_core.plugin.results import Page
from forwarder_core.secrets import redact

if TYPE_CHECKING:
    from forwarder_core.metrics import Metrics

log = logging.getLogger("siem_forwarder.workers")

SMALL_PAGE = 100
"""Pages with fewer events are prepared in the main process: sending them to a worker and the
result back costs about what preparing them does."""
BACKLOG = 20_000
"""``workers: auto``: a poll's pages go to the workers (starting them if they are not running) only
once the pages before them in the same poll held this many events. A caught-up source reads what
a vendor logged during one interval, a few hundred to a few thousand events, and never gets
here; a poll that reads on past this many is a backlog, paging faster than one process prepares.
Starting the pool costs about a second of CPU (the forkserver, a worker loading the plugins and
the resource tracker: ``bench/run.py`` prints each), what the main process spends preparing some
25,000 events, so a shorter backlog is cheaper prepared where it is."""
_WAIT_STEP = 1.0


class Offload:
    """One source's pages in the pool: submitted in order, a few ahead, taken back in order.

    While the main process waits for a page's worker it prepares, itself, the next page of the
    source that no worker has started on, and keeps the result for that page's turn: on a host
    with few CPUs the main process would otherwise sit idle for most of each page.
    """

    def __init__(self, pool: WorkerPool, source: str, encode_for: list[str], events_back: bool,
                 stop: threading.Event, metrics: Metrics, preparer: Preparer, backlog: int = 0):
        self.pool = pool
        self.backlog = backlog
        """How many events a poll reads in the main process before its pages go to the pool."""
        self.source = source
        self.encode_for = encode_for
        self.events_back = events_back
        self.stop = stop
        self.metrics = metrics
        self.preparer = preparer
        self._lock = threading.Lock()
        self._pending: dict[int, tuple[Page, Ticket]] = {}
        """Pages submitted and not yet taken, in page order."""
        self._here: dict[int, Prepared] = {}
        """Pages the main process prepared while it waited for an earlier one."""

    def ahead(self, pages: Iterator[Page]) -> Iterator[Page]:
        """``pages``, each submitted to the pool up to ``pool.size`` pages before it is yielded."""
        with self._lock:
            left = list(self._pending)  # what an earlier, interrupted poll left behind
            self._here.clear()
        self._forget(left)
        queue: deque[Page] = deque()
        read = 0
        try:
            for page in pages:
                submitted = self._submit(page) if read >= self.backlog else _keep_here(page)
                read += len(page.events)
                queue.append(page)
                while queue and (len(queue) > self.pool.size or not submitted):
                    yield queue.popleft()  # a small page is not worth reading ahead for
            while queue:
                yield queue.popleft()
        finally:
            self._forget([id(p) for p in queue])
            close = getattr(pages, "close", None)
            if close is not None:
                close()

    def _submit(self, page: Page) -> bool:
        if len(page.events) < SMALL_PAGE:
            page.body = None
            return False
        task = PageTask.of(self.source, page, self.encode_for, self.events_back)
        page.body = None  # the task holds the bytes until a worker has them; the page keeps its events
        ticket = self.pool.submit(task)
        if ticket is None:
            return False
        with self._lock:
            self._pending[id(page)] = (page, ticket)
        return True

    def _forget(self, keys: list[int]) -> None:
        for key in keys:
            with self._lock:
                entry = self._pending.pop(key, None)
                self._here.pop(key, None)
            if entry is not None and not self.pool.steal(entry[1]) and entry[1].future is not None:
                entry[1].future.cancel()

    def take(self, page: Page) -> PageWork | Prepared | None:
        """The page prepared: by its worker (:class:`PageWork`), or here while an earlier page was
        in a worker (:class:`~forwarder_core.engine.prepare.Prepared`); None: prepare it in-process now
        (a small page, no worker free, a worker that failed, or stopping)."""
        with self._lock:
            here = self._here.pop(id(page), None)
            entry = self._pending.pop(id(page), None)
        if here is not None or entry is None:
            return here
        ticket = entry[1]
        if self.pool.steal(ticket):
            return None
        future = ticket.future
        assert future is not None
        while not future.done():
            if self._prepare_one_ahead():
                continue
            try:
                future.result(timeout=_WAIT_STEP)
            except TimeoutError:
                if self.stop.is_set():
                    future.cancel()
                    return None
            except BaseException:  # read again below, where each outcome is handled
                pass
        return self._outcome(future, ticket, page)

    def _prepare_one_ahead(self) -> bool:
        with self._lock:
            later = list(self._pending.items())
        for key, (page, ticket) in later:
            if self.pool.steal(ticket):
                prepared = self.preparer.prepare(page.events, page.ids)
                with self._lock:
                    if self._pending.pop(key, None) is not None:
                        self._here[key] = prepared
                return True
        return False

    def _outcome(self, future: Future[PageWork], ticket: Ticket, page: Page) -> PageWork | None:
        try:
            work = future.result()
        except CancelledError:
            return None
        except BrokenProcessPool:
            log.warning("source %s: the worker preparing a page of %d event(s) died; the page is prepared "
                        "again in the main process", self.source, len(page.events))
            self.metrics.inc("worker_failures_total", source=self.source)
            self.pool.broken(ticket.generation)
            return None
        except Exception as exc:
            log.warning("source %s: a worker failed to prepare a page of %d event(s) (%s); the page is "
                        "prepared again in the main process", self.source, len(page.events),
                        redact(f"{type(exc).__name__}: {exc}")[:300])
            self.metrics.inc("worker_failures_total", source=self.source)
            return None
        for name, labels, value in work.counters:
            self.metrics.inc(name, value, **labels)
        return work


def _keep_here(page: Page) -> bool:
    page.body = None  # only a worker decodes the bytes again
    return False


def encodes_in_worker(runner: Any, plugins: PluginSet) -> bool:
    """Whether a worker may encode this output's batches: an in-memory-buffered output runner
    whose plugin implements ``encode_batch``, may be rebuilt in a worker and came from an entry point."""
    output = runner.output
    return (getattr(runner, "accepts_encoded", False) and type(output).encode_batch is not Output.encode_batch
            and _buildable(plugins.outputs, output.config.type))


def _buildable(registry: Any, type_name: str) -> bool:
    registered = registry.get(type_name) if registry is not None else None
    return (registered is not None and registered.distribution != IN_PROCESS
            and bool(getattr(registered.cls, "process_safe", True)))


def _transforms_buildable(plugins: PluginSet) -> bool:
    """A worker runs the transform hooks of the entry-point plugins only; one registered
    in-process would be skipped there, so then every page is prepared in-process."""
    loaded = {p.name for p in plugins.loaded if not p.error}
    impls = plugins.pm.hook.forwarder_transform_events.get_hookimpls()
    return all(impl.plugin_name in loaded for impl in impls)


class SourceRunnerLike(Protocol):
    """What :func:`attach` needs of a source's runner (:class:`~forwarder_core.engine.pipeline.SourceRunner`)."""

    name: str
    source: Any
    routes: list[Any]
    preparer: Preparer
    offload: Offload | None


def attach(config: Config, plugins: PluginSet, runners: Sequence[SourceRunnerLike], stop: threading.Event,
           metrics: Metrics) -> WorkerPool | None:
    """Give each source that can use them the pool's workers; None when none can."""
    size = config.workers
    if size <= 0 or not runners or not _transforms_buildable(plugins):
        return None
    plans: list[tuple[SourceRunnerLike, list[str], bool]] = []
    outputs: set[str] = set()
    for runner in runners:
        if not _buildable(plugins.sources, runner.source.config.type):
            log.info("source %s: its plugin prepares pages in the main process (process_safe = False, or "
                     "not installed through an entry point)", runner.name)
            continue
        encode_for = [o.name for o in runner.routes if encodes_in_worker(o, plugins)]
        plans.append((runner, encode_for, len(encode_for) < len(runner.routes)))
        outputs.update(encode_for)
    if not plans:
        return None
    on_demand = config.workers_idle_stop
    pool = WorkerPool(size, (os.getpid(), config.document, {r.name for r, _, _ in plans}, outputs,
                             config.plugin_paths, config.state_dir, str(config.settings.get("log_level", "info"))),
                      idle_stop=on_demand)
    for runner, encode_for, events_back in plans:
        runner.offload = Offload(pool, runner.name, encode_for, events_back, stop, metrics, runner.preparer,
                                 backlog=BACKLOG if on_demand is not None else 0)
    return pool

