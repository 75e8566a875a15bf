"""The worker processes of one running configuration, and the pages waiting for them.

A :class:`WorkerPool` starts its processes (forkserver: safe in a process that already runs
threads) with the first page it is given. A page goes to a worker only when one is free; until
then it waits here, where the main process may take it back and prepare it itself
(:meth:`WorkerPool.steal`) rather than sit idle. A pool whose worker died is retired and the
next page starts a new one. :mod:`forwarder_core.engine.workers` decides which pages come here.
"""
from __future__ import annotations

import logging
import multiprocessing
import threading
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from forwarder_core.engine.pagework import PageTask, PageWork, run_task, start_worker

log = logging.getLogger("siem_forwarder.workers")


class Ticket:
    """One page's place in the pool: waiting for a free worker, then sent to one."""

    __slots__ = ("task", "future", "executor")

    def __init__(self, task: PageTask):
        self.task: PageTask | None = task
        """Until the page is sent to a worker (then dropped: a page's bytes are not kept twice)."""
        self.future: Future[PageWork] | None = None
        self.executor: ProcessPoolExecutor | None = None


class WorkerPool:
    """The worker processes of one running configuration; replaced whole on SIGHUP.

    A page goes to a worker only when one is free: until then it waits here, where the main
    process may take it back and prepare it itself (:meth:`steal`) rather than sit idle.
    """

    def __init__(self, size: int, init_args: tuple[Any, ...]):
        self.size = size
        self._init_args = init_args
        self._lock = threading.Lock()
        self._executor: ProcessPoolExecutor | None = None
        self._waiting: deque[Ticket] = deque()
        self._running: set[Future[PageWork]] = set()
        self._wake = threading.Event()
        self._dispatcher: threading.Thread | None = None
        self._closed = False

    def submit(self, task: PageTask) -> Ticket | None:
        """Queue a page; None once the pool is closed (the caller prepares it in-process)."""
        with self._lock:
            if self._closed:
                return None
            ticket = Ticket(task)
            self._waiting.append(ticket)
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
            ticket.future, ticket.executor = future, executor

    def _executor_locked(self) -> ProcessPoolExecutor:
        if self._executor is None:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["forwarder_core.engine.pagework"])
            self._executor = ProcessPoolExecutor(self.size, mp_context=context, initializer=start_worker,
                                                 initargs=self._init_args)
            log.info("%d worker process(es) prepare and encode pages", self.size)
        if self._dispatcher is None:
            self._dispatcher = threading.Thread(target=self._dispatch_forever, name="workers-dispatch", daemon=True)
            self._dispatcher.start()
        return self._executor

    def _finished(self, future: Future[PageWork]) -> None:
        self._wake.set()  # the executor's own thread calls this: the dispatcher submits the next page

    def _dispatch_forever(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                if self._closed:
                    return
                self._dispatch_locked()

    def broken(self, executor: ProcessPoolExecutor | None) -> None:
        """Retire a broken pool (once, however many pages saw it break); the next page starts a new one."""
        with self._lock:
            if executor is None or self._executor is not executor:
                return
            self._executor = None
        log.warning("a worker process died; starting new worker processes for the pages after it")
        executor.shutdown(wait=False, cancel_futures=True)
        self._wake.set()

    def close(self) -> None:
        """Stop the workers once the pages in flight were taken back (or abandoned)."""
        with self._lock:
            self._closed = True
            executor, self._executor = self._executor, None
        self._wake.set()
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
