"""The page task of a worker process: a page's raw events in (or the bytes they were decoded from,
``Page.body``), its encoded batches and counts out.

A worker builds its own plugin manager from the installed entry points (and ``plugin_paths``),
and its own source and output instances from the same config document the main process
validated, then does the per-event CPU work of a page: raw and event schema checks, normalize,
the plugins' transforms, and each routed output's :meth:`~forwarder_core.plugin.base.Output.encode_batch`.
What it hands back is :class:`PageWork`: bytes per output and small metadata, never connections.
The main process keeps paging, delivery, the ledger and the commit (:mod:`forwarder_core.engine.workers`).

This module imports no multiprocessing machinery, so the pipeline can name :class:`PageWork`
without slowing ``--version``.
"""
from __future__ import annotations

import gc
import logging
import os
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from forwarder_core.config.components import Leniency, check_components, plugin_view
from forwarder_core.config.problems import Problems
from forwarder_core.config.yamlsource import Located
from forwarder_core.engine.prepare import Preparer, Rejected
from forwarder_core.metrics import Metrics
from forwarder_core.plugin.encoded import Encoded, EncodedEvents
from forwarder_core.plugin.manager import load_plugins
from forwarder_core.plugin.registry import instantiate
from forwarder_core.plugin.results import Page, PageBody

log = logging.getLogger("siem_forwarder.workers")
PARENT_CHECK = 0.5
"""Seconds between a worker's checks that its main process is still there."""


@dataclass
class PageTask:
    """What crosses into a worker for one page."""

    source: str
    items: list[Any]
    """The page's items; empty when they cross as ``body``."""
    ids: list[str | None] | None
    encode_for: list[str]
    """The routed outputs whose ``encode_batch`` runs in the worker."""
    events_back: bool
    """Whether the normalized events must cross back (a routed output that encodes in ``send``)."""
    body: PageBody | None = None
    """The bytes the page's items were decoded from (``Page.body``), decoded in the worker."""
    extras: list[Any] | None = None
    """The items that did not come from ``body`` (its ``picks`` of -1), in their order."""

    @classmethod
    def of(cls, source: str, page: Page, encode_for: list[str], events_back: bool) -> PageTask:
        """The task of ``page``: its body's bytes where it has a usable one, else its items."""
        body, events = page.body, page.events
        if body is None or len(body.picks) != len(events):
            return cls(source, events, page.ids, encode_for, events_back)
        extras = [item for item, pick in zip(events, body.picks) if pick < 0]
        return cls(source, [], page.ids, encode_for, events_back, body, extras)

    def page_items(self) -> list[Any]:
        """The page's items: as they crossed, or rebuilt from the body (one per pick, by :meth:`of`)."""
        return self.items if self.body is None else self.body.items(self.extras or [])


@dataclass
class PageWork:
    """A page prepared in a worker: what the pipeline needs to deliver, count and commit it."""

    origins: list[int]
    """The page index each prepared event came from (dead letters take their raw event from there)."""
    ids: list[str | None]
    """Each prepared event's id, for dead-letter records."""
    newest: str | None
    """The newest prepared event's ``timestamp``."""
    rejected: list[Rejected] = field(default_factory=list)
    filtered: int = 0
    encoded: dict[str, Encoded] = field(default_factory=dict)
    events: list[dict[str, Any]] | None = None
    counters: list[tuple[str, dict[str, str], float]] = field(default_factory=list)
    """The counters plugins incremented in the worker, added to the main process's metrics."""

    @property
    def count(self) -> int:
        return len(self.origins)


class _Raws(Sequence[Any]):
    """The raw events of the prepared events, read from the page the main process holds, only
    when a dead-letter record asks for one."""

    def __init__(self, items: Sequence[Any], origins: Sequence[int], raw_of: Any):
        self._items, self._origins, self._raw_of = items, origins, raw_of

    def __len__(self) -> int:
        return len(self._origins)

    def __getitem__(self, i: Any) -> Any:
        item = self._items[self._origins[i]]
        return item if self._raw_of is None else self._raw_of(item)


class PreparedPage:
    """A prepared page as the routed outputs receive it: the normalized events (in-process), or
    a worker's :class:`PageWork` with the page it came from."""

    def __init__(self, events: list[dict[str, Any]] | None, work: PageWork | None = None,
                 items: Sequence[Any] = (), raw_of: Any = None):
        self.events = events
        self.work = work
        self._raws: Sequence[Any] = _Raws(items, work.origins, raw_of) if work is not None else ()

    def __len__(self) -> int:
        return self.work.count if self.work is not None else len(self.events or ())

    def for_output(self, name: str) -> list[dict[str, Any]] | EncodedEvents:
        """What to deliver to output ``name``: its batch encoded in the worker, else the events."""
        work = self.work
        if work is not None and name in work.encoded:
            return EncodedEvents(work.encoded[name], work.ids, self._raws)
        if self.events is None:
            raise RuntimeError(f"output {name}: the page's events did not come back from the worker")
        return self.events

    def newest(self) -> str | None:
        """The newest event's ``timestamp``."""
        if self.work is not None:
            return self.work.newest
        return max((e["timestamp"] for e in self.events or ()), default=None)


# --------------------------------------------------------------------------- inside a worker

_worker: _Worker | None = None


class _Worker:
    """The plugins, sources and outputs of one worker process, built once, at its start."""

    def __init__(self, document: dict[str, Any], sources: set[str], outputs: set[str], plugin_paths: list[str],
                 state_dir: str):

        plugins = load_plugins(plugin_paths)
        nowhere = Located("(config)", document, None)
        problems = Problems(lambda path: (nowhere, path))
        self.metrics = Metrics()
        stop = threading.Event()
        hooks = plugins.hooks
        transform = hooks.forwarder_transform_events if hooks.implemented("forwarder_transform_events") else None
        self.preparers: dict[str, Preparer] = {}
        self.outputs: dict[str, Any] = {}
        for comp in check_components(document, "sources", plugins.sources, problems, set(), Leniency()):
            if comp is not None and comp.name in sources:
                source = instantiate(plugins.sources, comp, state_dir, self.metrics, stop)
                self.preparers[comp.name] = Preparer(source, transform)
        for comp in check_components(document, "outputs", plugins.outputs, problems, set(), Leniency()):
            if comp is not None and comp.name in outputs:
                self.outputs[comp.name] = instantiate(plugins.outputs, comp, state_dir, self.metrics, stop)
        hooks.forwarder_configure(config=plugin_view(document, plugins))

    def run(self, task: PageTask) -> PageWork:
        prepared = self.preparers[task.source].prepare(task.page_items(), task.ids)
        events = prepared.events
        work = PageWork(prepared.origins, [e.get("id") for e in events],
                        max((e["timestamp"] for e in events), default=None),
                        prepared.rejected, prepared.filtered)
        for name in task.encode_for:
            encoded = self.outputs[name].encode_batch(events)
            if encoded is None:
                raise TypeError(f"output {name}: encode_batch returned None")
            work.encoded[name] = encoded
        if task.events_back:
            work.events = events
        work.counters = self._counters()
        return work

    def _counters(self) -> list[tuple[str, dict[str, str], float]]:
        counters = [(n, labels, v) for n, labels, v in self.metrics.items() if n.endswith("_total") and v]
        for name, labels, value in counters:
            self.metrics.inc(name, -value, **labels)
        return counters


def _started(pid: int) -> str | None:
    """When process ``pid`` started (``/proc/<pid>/stat`` field 22), None if it is gone; with the
    pid, this names one process even after the pid is reused."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _exit_with(main: int) -> None:
    """A worker whose main process was killed (SIGKILL, OOM) must not outlive it: every worker
    holds the pool's queues open, so none would see the end of its input, and the forkserver
    waits for its workers."""
    started = _started(main)
    while started is not None and _started(main) == started:
        time.sleep(PARENT_CHECK)
    os._exit(0)


def start_worker(main: int, document: dict[str, Any], sources: set[str], outputs: set[str], plugin_paths: list[str],
                 state_dir: str, log_level: str) -> None:
    """The pool's initializer. A worker leaves the signals to the main process: SIGTERM or
    SIGINT sent to the whole service (systemd does) must not kill a page the main process is
    still draining; the main process stops the pool when it is done."""
    global _worker
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    threading.Thread(target=_exit_with, args=(main,), name="main-watch", daemon=True).start()
    from forwarder_core.logs import setup_logging

    setup_logging(log_level)
    _worker = _Worker(document, sources, outputs, plugin_paths, state_dir)
    gc.collect()  # as the main process does (interpreter.tune_interpreter): the plugins and schemas
    gc.freeze()   # loaded now stay out of the collections a page of events sets off


def run_task(task: PageTask) -> PageWork:
    """The function a worker runs for each page."""
    if _worker is None:
        raise RuntimeError("worker process not started")
    return _worker.run(task)
