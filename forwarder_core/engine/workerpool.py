"""The worker processes of one running configuration, and the pages waiting for them.

A :class:`WorkerPool` starts its processes (forkserver: safe in a process that already runs
threads) with the first page it is given. A page goes to a worker only when one is free; until
then it waits here, where the main process may take it back and prepare it itself
(:meth:`WorkerPool.steal`) rather than sit idle. A pool whose worker died is retired and the
next page starts a new one. :mod:`forwarder_core.engine.workers` decides which pages come here.

A pool on demand (``workers: auto``) also stops once no page has come for ``idle_stop`` seconds:
its workers, and the forkserver and resource tracker that multiprocessing keeps beside them, so a
forwarder that has caught up is one process again. The next page starts them anew. A pool is
idle only with no page waiting and none in a worker, so stopping it cancels nothing.
"""
from __future__ import annotations

import gc
import logging
import multiprocessing
import threading
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import (  # here, not when stopping: a command run as root may have become the state directory's owner by then
    forkserver,
    resource_tracker,
)
from typing import Any

from forwarder_core.engine.pagework import PageTask, PageWork, run_task, start_worker

log = logging.getLogger("siem_forwarder.workers")

_HELPERS = threading.Lock()
"""Held while a pool's processes start or stop: the forkserver and resource tracker are one per
process, shared by every pool, so one pool stops them only when no other is starting."""


class Ticket:
    """One page's place in the pool: waiting for a free worker, then sent to one."""

    __slots__ = ("task", "future", "generation")

    def __init__(self, task: PageTask):
        self.task: PageTask | None = task
        """Until the page is sent to a worker (then dropped: a page's bytes are not kept twice)."""
        self.future: Future[PageWork] | None = None
        self.generation = 0
        """Which of the pool's successive sets of processes took the page (see :meth:`WorkerPool.broken`)."""


class WorkerPool:
    """The worker processes of one running configuration; replaced whole on SIGHUP.

    A page goes to a worker only when one is free: until then it waits here, where the main
    process may take it back and prepare it itself (:meth:`steal`) rather than sit idle.
    ``idle_stop``: seconds without a page after which the processes stop (None: they stay).
    """

    def __init__(self, size: int, init_args: tuple[Any, ...], idle_stop: float | None = None):
        self.size = size
        self.idle_stop = idle_stop
        self._init_args = init_args
        self._lock = threading.Lock()
        self._executor: ProcessPoolExecutor | None = None
        self._generation = 0
        self._waiting: deque[Ticket] = deque()
        self._running: set[Future[PageWork]] = set()
        self._last_page = time.monotonic()
        self._wake = threading.Event()
        self._dispatcher: threading.Thread | None = None
        self._closed = False
        self.starts = 0
        """How many times the processes were started (once, without ``idle_stop`` or a broken pool)."""

    def submit(self, task: PageTask) -> Ticket | None:
        """Queue a page; None once the pool is closed (the caller prepares it in-process)."""
        with self._lock:
            if self._closed:
                return None
            ticket = Ticket(task)
            self._waiting.append(ticket)
            self._last_page = time.monotonic()
            self._dispatch_locked()
        return ticket

    def steal(self, ticket: Ticket) -> bool:
        """Take back a page no worker has started on: True, and the caller prepares it."""
        with self._lock:
            if ticket.future is not None:
                return False
            self._waiting.remove(ticket)
            return True

    def _dispatch_locked(self) -> None:
        self._running = {f for f in self._running if not f.done()}
        while self._waiting and len(self._running) < self.size:
            ticket = self._waiting.popleft()
            task, ticket.task = ticket.task, None
            assert task is not None  # a ticket waits here until sent, once
            executor = self._executor_locked()
            future: Future[PageWork]
            try:
                future = executor.submit(run_task, task)
            except (BrokenProcessPool, RuntimeError) as exc:  # broken, or shut down meanwhile
                future = Future()
                future.set_exception(BrokenProcessPool(str(exc)))
            else:
                self._running.add(future)
                future.add_done_callback(self._finished)
            ticket.future, ticket.generation = future, self._generation

    def _executor_locked(self) -> ProcessPoolExecutor:
        if self._executor is None:
            with _HELPERS:  # a pool stopping its helpers finishes first
                context = multiprocessing.get_context("forkserver")
                # Modules loaded in the forkserver are shared by the workers forked from it, which
                # pays with several; with one, the forkserver would only hold a second copy of them.
                context.set_forkserver_preload(["forwarder_core.engine.pagework"] if self.size > 1 else [])
                self._executor = ProcessPoolExecutor(self.size, mp_context=context, initializer=start_worker,
                                                     initargs=self._init_args)
            self._generation += 1
            self.starts += 1
            log.info("%d worker process(es) prepare and encode pages", self.size)
        if self._dispatcher is None:
            self._dispatcher = threading.Thread(target=self._dispatch_forever, name="workers-dispatch", daemon=True)
            self._dispatcher.start()
        return self._executor

    def _finished(self, future: Future[PageWork]) -> None:
        self._last_page = time.monotonic()
        self._wake.set()  # the executor's own thread calls this: the dispatcher submits the next page

    def _dispatch_forever(self) -> None:
        """Submit each page as a worker frees up; with ``idle_stop``, stop the processes once idle
        (and end here: the next page starts a new dispatcher with them)."""
        wait: float | None = None
        while True:
            self._wake.wait(wait)
            self._wake.clear()
            with self._lock:
                if self._closed:
                    return
                self._dispatch_locked()
                wait = self._idle_left_locked()
                if wait == 0.0:
                    executor, self._executor, self._dispatcher = self._executor, None, None
                    _HELPERS.acquire()  # before the pool's lock is let go: no page can start new processes meanwhile
                    break
        idle = self.idle_stop
        try:
            if executor is not None:
                executor.shutdown(wait=True)
            del executor
            stop_helpers()
        finally:
            _HELPERS.release()
        log.info("the worker processes stopped after %.0f s without a page; the next backlog starts them again", idle)

    def _idle_left_locked(self) -> float | None:
        """Seconds until the processes stop for want of pages; 0.0: now; None: not while this holds."""
        if self.idle_stop is None or self._executor is None or self._waiting:
            return None
        self._running = {f for f in self._running if not f.done()}
        if self._running:
            return None
        return max(0.0, self._last_page + self.idle_stop - time.monotonic())

    def broken(self, generation: int) -> None:
        """Retire a broken pool (once, however many pages saw it break); the next page starts a new one."""
        with self._lock:
            executor = self._executor
            if executor is None or generation != self._generation:
                return
            self._executor = None
        log.warning("a worker process died; starting new worker processes for the pages after it")
        executor.shutdown(wait=False, cancel_futures=True)
        self._wake.set()

    def close(self) -> None:
        """Stop the workers once the pages in flight were taken back (or abandoned); a pool on demand
        also stops the forkserver and resource tracker."""
        with self._lock:
            self._closed = True
            executor, self._executor = self._executor, None
        self._wake.set()
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
        if self.idle_stop is not None:
            del executor
            with _HELPERS:
                stop_helpers()


def stop_helpers() -> None:
    """Stop multiprocessing's forkserver and resource tracker; the next pool starts them again.

    Python has no public call for this (its own tests use these methods); where they are
    missing the two processes stay, as they would without this call.
    """

    gc.collect()  # the semaphores of a shut-down pool are released before the tracker is told to go
    for helper in (getattr(forkserver, "_forkserver", None), getattr(resource_tracker, "_resource_tracker", None)):
        stop = getattr(helper, "_stop", None)
        if stop is not None:
            try:
                stop()
            except (OSError, ChildProcessError) as exc:
                log.debug("stopping a multiprocessing helper process: %s", exc)
