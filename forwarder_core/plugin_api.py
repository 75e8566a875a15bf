"""The classes a plugin subclasses: :class:`Source` and :class:`Output`, and what they exchange.

A **source** turns a vendor's audit API into pages of raw events, each page with the cursor to
commit once the page is delivered. The core does everything else: it normalizes each raw event
through :meth:`Source.normalize`, validates it (the vendor's raw schema and the normalized event
schema), routes it, sends it to every output, and commits the cursor only when every output
accepted it.

An **output** takes a list of normalized events and returns only when the SIEM has durably
accepted them, with a verdict per event (:class:`SendResult`) so one bad event never blocks a
batch. Raising :class:`~forwarder_core.errors.OutputError` means "nothing of this batch was
accepted"; the pipeline keeps the cursor still and tries again with backoff.

Both are constructed with a :class:`ComponentConfig` (the validated config block, options with
their schema defaults applied and secrets wrapped in :class:`~forwarder_core.secrets.Secret`)
and a :class:`Context` (logger, metrics, state directory, HTTP client factory).
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from forwarder_core.jsoncodec import canonical_json, canonical_json_bytes, compact_json, content_id
from forwarder_core.option_schemas import TLS_OPTIONS, apply_defaults, http_output_options_schema, source_options_schema
from forwarder_core.times import format_time, parse_time

if TYPE_CHECKING:
    from forwarder_core.http import HttpClient
    from forwarder_core.metrics import Metrics


# --------------------------------------------------------------------------- exchanged values


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


@dataclass
class Context:
    """What the core lends a plugin instance."""

    name: str
    state_dir: str
    logger: logging.Logger
    metrics: "Metrics"
    stop: threading.Event = field(default_factory=threading.Event)

    def http(self, options: dict[str, Any], *, auth: Any = None, base_url: str | None = None) -> "HttpClient":
        """A new HTTP client (one ``requests.Session``) for this plugin instance.

        ``options`` supplies ``timeout``, ``tls_verify`` and ``ca_file``; ``auth`` is an
        :class:`forwarder_core.http.Auth` that sets headers and refreshes once on 401.
        """
        from forwarder_core.http import HttpClient

        return HttpClient(
            component=self.name,
            options=options,
            auth=auth,
            base_url=base_url,
            metrics=self.metrics,
            logger=self.logger,
            stop=self.stop,
        )


@dataclass
class Page:
    """A page of raw events and the cursor that is safe to commit once they are all delivered.

    ``events`` may be empty (a page that only moves the cursor, e.g. a time window with nothing
    in it). ``cursor`` must be JSON-serializable; only the source that made it reads it.
    ``newest`` is the time of the newest event of the page, if known (for lag metrics).

    ``ids``, when given, runs parallel to ``events``: the id each event gets, worked out in
    :meth:`Source.poll` (the occurrence ids of :class:`~siem_forwarder_plugins.sources.windows.EdgeDedup`,
    say), so the hash is computed once and travels with its event. The core hands it to
    :meth:`Source.make_event` (``id`` left out) and puts it in the event.

    ``already_delivered`` and ``held_back`` count, for the source's ledger, the events the vendor
    served that are *not* in ``events``: recognised as delivered by an earlier page (a re-read of
    the lookback), or kept for a later poll.
    """

    events: list[Any]
    cursor: Any
    newest: datetime | None = None
    ids: list[str | None] | None = None
    already_delivered: int = 0
    held_back: int = 0


@dataclass
class SendResult:
    """The verdict of :meth:`Output.send` on a batch, by index into the list it was given.

    Every index not named in ``retry`` or ``rejected`` counts as accepted. ``rejected`` maps an
    index to the reason the SIEM refused it for good; the core writes it to the dead-letter file.
    ``retry`` lists indexes to send again later (busy, 429, per-item 5xx).
    """

    retry: list[int] = field(default_factory=list)
    rejected: dict[int, str] = field(default_factory=dict)
    retry_after: float | None = None

    @classmethod
    def all_accepted(cls) -> "SendResult":
        return cls()

# --------------------------------------------------------------------------- base classes


class _Component:
    type_name: ClassVar[str]
    options_schema: ClassVar[dict[str, Any]] = {"type": "object"}
    secret_options: ClassVar[frozenset[str]] = frozenset()
    """Options that are secrets beyond the standard ``token``/``client_secret``/``api_key``/``password``."""

    def __init__(self, config: ComponentConfig, context: Context):
        self.config = config
        self.name = config.name
        self.options = config.options
        self.context = context
        self.log = context.logger
        self.metrics = context.metrics

    def check_connection(self) -> str:
        """For ``check --connect``: authenticate or reach the far end without forwarding anything.

        Return a one-line description of what was verified; raise a ForwarderError when it fails.
        """
        return "no connection check for this type"

    def close(self) -> None:
        """Release sockets and sessions; called once on shutdown or reload."""


class Source(_Component):
    """A vendor audit-log API.

    Subclasses set ``type_name``, ``vendor``, ``product``, ``options_schema`` and
    ``event_schema`` (the file name of the raw-event schema in ``siem_forwarder_schemas``, a
    schema dict, or None), and implement :meth:`poll` and :meth:`normalize`.
    """

    vendor: ClassVar[str] = ""
    product: ClassVar[str] = ""
    event_schema: ClassVar[str | dict[str, Any] | None] = None
    """The raw-event schema: a file name in ``siem_forwarder_schemas`` (built-ins) or the schema itself."""

    def poll(self, cursor: Any | None) -> Iterator[Page]:
        """Yield pages from ``cursor`` (None on the very first poll) until caught up, then return.

        Start from ``self.config.start_time`` when ``cursor`` is None. Each page's cursor must
        be safe to resume from after a restart. Raise :class:`~forwarder_core.errors.SourceError`
        when the vendor cannot be read; the core logs it and tries again on the next interval
        from the last committed cursor. Check ``self.context.stop`` between requests.
        """
        raise NotImplementedError

    def normalize(self, raw: Any) -> dict[str, Any]:
        """Map one raw event (an item of ``Page.events``) to the normalized event.

        Use :meth:`make_event`. ``raw`` in the result must be the vendor's event unchanged.
        May raise KeyError/TypeError/ValueError on a malformed event: the core quarantines it.
        """
        raise NotImplementedError

    page_id: str | None = None
    """The id the current page gave the event being normalized (``Page.ids``); set by the core
    around each :meth:`normalize` call (one thread per source, so it needs no lock)."""

    def normalize_as(self, raw: Any, page_id: str | None) -> dict[str, Any]:
        """:meth:`normalize` with the id ``Page.ids`` (or a quarantine record) gave the event.

        What the core calls. An event whose normalize set the bare digest itself still gets its
        occurrence id (``<digest>-<n>``), so a source that passes ``id=content_id(raw)`` loses nothing.
        """
        if page_id is None:
            return self.normalize(raw)
        self.page_id = page_id
        try:
            event = self.normalize(raw)
        finally:
            self.page_id = None
        if isinstance(event, dict) and event.get("id") != page_id and page_id.startswith(f"{event.get('id')}-"):
            event["id"] = page_id
        return event

    def make_event(self, raw: Any, *, id: str | None = None, timestamp: str | datetime, **fields: Any) -> dict[str, Any]:
        """Build a normalized event: ``id``, ``timestamp``, ``source`` and ``raw`` plus ``fields``.

        ``id`` is the vendor's event id. Left out (None), the event gets the id the page gave it
        (``Page.ids``: an occurrence id) or else the core's content id, the digest of ``raw``.
        ``fields`` takes the optional normalized fields (``action``, ``category``, ``outcome``,
        ``actor``, ``target``, ``message``, ``integrity``, ...); None values are left out.
        """
        if id is None:
            id = self.page_id or content_id(raw)
        if isinstance(timestamp, datetime):
            timestamp = format_time(timestamp)
        event: dict[str, Any] = {
            "id": id,
            "timestamp": timestamp,
            "source": self._source_block(),
        }
        for key, value in fields.items():
            if value is None:
                continue
            if isinstance(value, dict):
                value = {k: v for k, v in value.items() if v is not None}
                if not value:
                    continue
            event[key] = value
        event["raw"] = raw
        return event

    def _source_block(self) -> dict[str, str]:
        block = self.__dict__.get("_source_block_cache")
        if block is None:
            block = {"name": self.name, "type": self.type_name, "vendor": self.vendor, "product": self.product}
            self.__dict__["_source_block_cache"] = block
        return block


class Output(_Component):
    """A SIEM (or file) that events are delivered to.

    Subclasses set ``type_name`` and ``options_schema`` and implement :meth:`send`. ``send`` is
    never called concurrently on one instance.
    """

    def send(self, events: list[dict[str, Any]]) -> SendResult:
        """Deliver ``events`` (normalized) and return only once they are durably accepted.

        Return per-event verdicts; raise :class:`~forwarder_core.errors.OutputError` if the whole
        batch failed (connection refused, 503, bad token: ``pause=True`` for the latter).
        """
        raise NotImplementedError

__all__ = [
    "TLS_OPTIONS", "ComponentConfig", "Context", "Output", "Page", "SendResult", "Source", "apply_defaults",
    "canonical_json", "canonical_json_bytes", "compact_json", "content_id", "format_time",
    "http_output_options_schema", "parse_time", "source_options_schema",
]
