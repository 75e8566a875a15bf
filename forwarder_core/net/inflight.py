"""Requests in flight: cut off at their total deadline, or at once when the forwarder stops.

A socket timeout bounds one wait for bytes, not a request: a vendor that sends a byte every 2 s
never trips a 30 s timeout and held a poll (and SIGTERM) for as long as it liked. Each attempt
the :class:`~forwarder_core.net.client.HttpClient` makes is an :class:`InFlight` with a
deadline and the client's stop event. One watcher thread per process (started with the first
request, idle when none is in flight) looks at them every :data:`TICK` seconds and, when one is
past its deadline or its stop event is set, shuts down the sockets of its connections:
``shutdown(SHUT_RDWR)`` wakes a ``recv`` blocked in another thread at once, whether it waits for
the status line, the headers or the body. The request then fails in its own thread, where the
client turns it into an error naming the deadline, or into "stopped".

The connections are learned from the shared pool (:class:`WatchedAdapter`): each connection
that serves a request is recorded on the thread's current :class:`InFlight` as the request
starts on it, before any byte is sent, so a fresh and a reused keep-alive connection alike are
covered. A connection still in ``connect()`` has no socket yet; the watcher tries again at
every tick, and the connect timeout bounds that phase.
"""
from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import requests.adapters
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

TICK = 0.25
"""Seconds between the watcher's looks at the requests in flight (only while there are some)."""


class InFlight:
    """One attempt: its deadline (monotonic), the stop event, the body limit, its connections."""

    __slots__ = ("conns", "deadline", "limit", "seconds", "stop", "why")

    def __init__(self, *, seconds: float, stop: threading.Event, limit: int):
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self.stop = stop
        self.limit = limit
        self.conns: list[Any] = []
        self.why: str | None = None
        """``"stopped"`` or ``"deadline"`` once cut off."""

    def due(self, now: float) -> str | None:
        if self.stop.is_set():
            return "stopped"
        return "deadline" if now >= self.deadline else None

    def check(self) -> None:
        """Cut off here, between two reads, when due (the reader calls it after each chunk)."""
        why = self.why or self.due(time.monotonic())
        if why is not None:
            self.why = why
            raise Aborted(why)

    def abort(self, why: str) -> None:
        if self.why is None:
            self.why = why
        for conn in list(self.conns):
            sock = getattr(conn, "sock", None)
            if sock is None:
                continue
            try:
                # socket.socket's own shutdown, not SSLSocket's (which also drops its SSL object
                # under the reading thread's feet): the reader sees end of file at once.
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
            except (OSError, TypeError, ValueError):
                pass


class Aborted(Exception):
    """Raised in the requesting thread when its :class:`InFlight` was cut off (``args[0]``: why)."""


class _Watcher:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._active: set[InFlight] = set()
        self._thread: threading.Thread | None = None

    def add(self, flight: InFlight) -> None:
        with self._cond:
            self._active.add(flight)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="http-deadlines", daemon=True)
                self._thread.start()
            self._cond.notify()

    def remove(self, flight: InFlight) -> None:
        with self._cond:
            self._active.discard(flight)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._active:
                    self._cond.wait()
                self._cond.wait(TICK)
                now = time.monotonic()
                due = [(f, why) for f in self._active if (why := f.why or f.due(now)) is not None]
            for flight, why in due:
                flight.abort(why)  # again at each tick: a connection may have got its socket since


_watcher = _Watcher()
_local = threading.local()


def current() -> InFlight | None:
    """The :class:`InFlight` of this thread's request, if one is being made."""
    return getattr(_local, "flight", None)


@contextlib.contextmanager
def watching(flight: InFlight) -> Iterator[InFlight]:
    """Make ``flight`` this thread's current request and have the watcher cut it off when due."""
    _local.flight = flight
    _watcher.add(flight)
    try:
        yield flight
    finally:
        _watcher.remove(flight)
        _local.flight = None


class _Recording:
    """Pool mixin: record each connection on the thread's current InFlight as a request starts on it."""

    def _make_request(self, conn: Any, *args: Any, **kwargs: Any) -> Any:
        flight = current()
        if flight is not None:
            flight.conns.append(conn)
            flight.check()
        return super()._make_request(conn, *args, **kwargs)  # type: ignore[misc]


class _WatchedHTTPPool(_Recording, HTTPConnectionPool):
    pass


class _WatchedHTTPSPool(_Recording, HTTPSConnectionPool):
    pass


_POOLS = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class WatchedAdapter(requests.adapters.HTTPAdapter):
    """An HTTPAdapter whose pools (direct, and through an HTTP proxy) record their connections."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):
            manager.pool_classes_by_scheme = _POOLS
        return manager


__all__ = ["TICK", "Aborted", "InFlight", "WatchedAdapter", "current", "watching"]
