"""What the core lends a plugin instance: its validated config block and its :class:`Context`.

Re-exported by :mod:`forwarder_core.plugin.base`, where plugins import them from.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from forwarder_core.metrics import Metrics
    from forwarder_core.net.auth import Auth
    from forwarder_core.net.client import HttpClient
    from forwarder_core.net.waits import ResponseWait


class _HasClose(Protocol):
    def close(self) -> Any: ...


Closeable = TypeVar("Closeable", bound=_HasClose)


@dataclass
class ComponentConfig:
    """One validated ``sources:`` or ``outputs:`` block."""

    name: str
    type: str
    options: dict[str, Any]
    interval: float = 60.0
    start_time: datetime | None = None
    sources: list[str] | None = None  # outputs only: the routing filter (None = every source)
    buffer: str = "memory"  # outputs only
    buffer_max_bytes: int | None = None  # outputs only
    file: str = ""  # config file the block came from, for messages
    line: int = 0
    path: str = ""
    """The block's JSON path in the config (``$.sources[0]``), as ``check``'s messages name it."""


@dataclass
class Context:
    """What the core lends a plugin instance."""

    name: str
    state_dir: str
    logger: logging.Logger
    metrics: "Metrics"
    stop: threading.Event = field(default_factory=threading.Event)
    probe: bool = False
    """True under ``check --connect``: one attempt per request, no retry loop, so an unreachable
    vendor is reported at once. A plugin with a loop of its own should try once too."""
    halt: threading.Event | None = None
    """Set when work in flight is to be cut off (an output's: once ``shutdown_timeout`` has passed
    after the stop; None: the stop event). :meth:`http` clients cut a request in flight on it."""
    _held: list[Any] = field(default_factory=list, repr=False)

    def closing(self, resource: Closeable) -> Closeable:
        """Hand ``resource`` (anything with ``close()``) to the core, which closes it with the
        instance (:meth:`release`, called by the default ``close()``), so no plugin leaks a file
        or socket by forgetting to. Returns ``resource``."""
        self._held.append(resource)
        return resource

    def release(self) -> None:
        """Close every resource :meth:`closing` and :meth:`http` handed over, newest first; a close
        that fails is logged, and the others are still closed."""
        held, self._held = self._held, []
        for resource in reversed(held):
            try:
                resource.close()
            except Exception as exc:
                self.logger.warning("%s: closing %s failed: %s", self.name, type(resource).__name__, exc)

    def http(self, options: dict[str, Any], *, auth: Auth | None = None, base_url: str | None = None,
             response_wait: ResponseWait | None = None, rate_limit: ResponseWait | None = None) -> HttpClient:
        """A new HTTP client (one ``requests.Session``) for this plugin instance.

        ``options`` supplies ``timeout``, ``tls_verify``, ``ca_file`` and, unless ``base_url`` is
        given, ``base_url`` or ``url``; ``auth`` is an :class:`~forwarder_core.net.auth.Auth` that sets
        headers and refreshes once on 401; ``response_wait`` reads how long the vendor asks to
        wait from a 429/5xx answer, beside ``Retry-After`` (:mod:`forwarder_core.net.waits`);
        ``rate_limit`` says which answers of any status (GitHub's 403) are a rate limit and how
        long to wait (None: not one).
        """
        from forwarder_core.net.client import HttpClient

        return self.closing(HttpClient(
            component=self.name,
            options=options,
            auth=auth,
            base_url=base_url,
            response_wait=response_wait,
            rate_limit=rate_limit,
            metrics=self.metrics,
            logger=self.logger,
            stop=self.stop,
            halt=self.halt,
            single_attempt=self.probe,
        ))
