"""The plugin calls in flight, so a plugin that hangs is named instead of silently holding a source.

The core cannot stop a thread that a plugin holds: a hook or a ``send`` that never returns keeps
its source's slot (the other sources go on in theirs). What the core can do is say so:
:data:`PLUGIN_CALLS` knows every per-page call running in this process, the daemon logs each
one that has run longer than ``delivery.plugin_call_warn_after`` (once per call) and ``/health``
lists it; after an hour without progress the systemd watchdog restarts the service, and SIGTERM
still stops it within ``shutdown_timeout`` (the hung call is abandoned, its page uncommitted).
"""
from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class PluginCalls:
    """Calls running now: ``(plugin, hook, where)`` and when each began."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._running: dict[int, tuple[str, float]] = {}
        self._reported: set[int] = set()

    @contextmanager
    def running(self, plugin: str, hook: str, where: str) -> Iterator[None]:
        key = next(self._ids)
        with self._lock:
            self._running[key] = (f"plugin {plugin}: {hook} ({where})", time.monotonic())
        try:
            yield
        finally:
            with self._lock:
                self._running.pop(key, None)
                self._reported.discard(key)

    def overdue(self, after: float) -> list[str]:
        """A line for each call running for longer than ``after`` seconds."""
        now = time.monotonic()
        with self._lock:
            calls = list(self._running.values())
        return [f"{what} has not returned for {now - began:.0f}s" for what, began in calls if now - began >= after]

    def newly_overdue(self, after: float) -> list[str]:
        """:meth:`overdue`, each call once only (for the log)."""
        now = time.monotonic()
        with self._lock:
            fresh = [(k, what, began) for k, (what, began) in self._running.items()
                     if now - began >= after and k not in self._reported]
            self._reported.update(k for k, _, _ in fresh)
        return [f"{what} has not returned for {now - began:.0f}s" for _, what, began in fresh]


PLUGIN_CALLS = PluginCalls()
"""The calls of this process (the pipeline's slot threads, the disk buffers' drain threads)."""
