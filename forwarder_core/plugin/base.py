"""The classes a plugin subclasses, :class:`Source` and :class:`Output`.

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
and a :class:`Context` (logger, metrics, state directory, HTTP client factory). Plugins import
these from :mod:`forwarder_core.plugin_api`, never from here.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any, ClassVar

from forwarder_core.jsoncodec import content_id
from forwarder_core.plugin.context import ComponentConfig, Context
from forwarder_core.plugin.encoded import Encoded
from forwarder_core.plugin.results import Page, SendResult
from forwarder_core.plugin.source_traits import (
    DEFAULT_SEVERITY,
    TRAITS,
    SourceTraits,
    declared,
    remember,
)
from forwarder_core.times import format_time

# --------------------------------------------------------------------------- base classes


class _Component:
    type_name: ClassVar[str]
    options_schema: ClassVar[dict[str, Any]] = {"type": "object"}
    secret_options: ClassVar[frozenset[str]] = frozenset()
    """Options that are secrets beyond the standard ``token``/``client_secret``/``api_key``/``password``."""
    declared_metrics: ClassVar[dict[str, tuple[str, str]]] = {}
    """The plugin's own metrics: ``{name: (type, help)}``, type ``counter`` (name ends in
    ``_total``) or ``gauge``; ``/metrics`` shows them with that type and help."""
    process_safe: ClassVar[bool] = True
    """Whether a worker process may build its own instance from the same config and run its
    per-event work there (a source's ``raw_event``/``normalize_as``, an output's ``encode_batch``).
    False for a plugin whose instances must be the one in the main process (shared state in
    memory, a resource it opens at construction): its pages are then prepared in-process."""

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> list[tuple[tuple[Any, ...], str]]:
        """Rules across options the schema cannot say; ``check`` reports each problem at its option.

        Called with the options once they passed ``options_schema`` (defaults filled, secrets as
        :class:`~forwarder_core.secrets.Secret`). Return ``(option path, message)`` pairs, the path
        a tuple of keys and indexes inside ``options`` (``("phrase",)``, ``("filters", 0)``; ``()``
        for the block's options as a whole); each is printed as ``file:line:
        $.sources[0].options.phrase: message``, at that option's line, and the block is refused.
        """
        return []

    def __init__(self, config: ComponentConfig, context: Context):
        self.config = config
        self.name = config.name
        self.options = config.options
        self.context = context
        self.log = context.logger
        self.metrics = context.metrics
        if self.declared_metrics:
            self.metrics.declare_all(self.declared_metrics)

    _metric_label: ClassVar[str] = "component"
    """The label naming the instance in its metrics: ``source`` for a source, ``output`` for an output."""

    def metric_series(self) -> Iterable[tuple[str, dict[str, str]]]:
        """The series of its declared counters this instance exports at 0 from start-up.

        The core calls it once the instance is built, so ``increase()`` and an alert see the first
        event counted. The default gives each declared counter labelled with the instance's name
        (``{"source": name}`` or ``{"output": name}``); a plugin whose counters carry more labels
        overrides it and names the label values it knows in advance.
        """
        for metric, (kind, _) in self.declared_metrics.items():
            if kind == "counter":
                yield metric, {self._metric_label: self.name}

    def check_connection(self) -> str:
        """For ``check --connect``: authenticate or reach the far end without forwarding anything.

        Return a one-line description of what was verified; raise a ForwarderError when it fails.
        """
        return "no connection check for this type"

    def close(self) -> None:
        """Release sockets and sessions; called once on shutdown or reload.

        The default closes what the instance handed to its context (every client from
        ``context.http()`` and whatever it passed to ``context.closing()``). An override should
        call ``super().close()``.
        """
        self.context.release()


class Source(_Component):
    """A vendor audit-log API.

    Subclasses set ``type_name``, ``vendor``, ``product``, ``options_schema`` and
    ``event_schema`` (the file name of the raw-event schema in ``siem_forwarder_schemas``, a
    schema dict, or None), and implement :meth:`poll` and :meth:`normalize`.

    They may also declare how the outputs file their events (each output reads these from the
    event's ``source`` block, never from a table of its own; see
    :mod:`forwarder_core.plugin.source_traits`): ``dataset`` (ECS ``event.dataset`` and ``{dataset}``
    in an Elasticsearch index, default ``<type_name>.audit``), ``splunk_sourcetype`` (default
    ``<type_name>:audit``), ``cef_name`` (the CEF Name of an event with neither ``name`` nor
    ``action``, default ``<product> event``), ``severity`` (0-10, for events that set none,
    default 3) and ``varying_fields`` (raw fields whose type varies between events). An attribute
    a class leaves out gets its default from that class's own ``type_name`` and ``product``, so
    a subclass with another ``type_name`` does not inherit its parent's defaults.
    """

    _metric_label = "source"
    vendor: ClassVar[str] = ""
    product: ClassVar[str] = ""
    event_schema: ClassVar[str | dict[str, Any] | None] = None
    """The raw-event schema: a file name in ``siem_forwarder_schemas`` (built-ins) or the schema itself.

    The core checks each raw event (:meth:`raw_event` of each page item) against it *before*
    :meth:`normalize`, and quarantines one that fails with the schema's message, so
    ``normalize`` only ever sees events of the shape the schema promises."""
    event_id_key: ClassVar[str | None] = None
    """The key of a page item that holds the vendor's event id, if the vendor has ids (Asana ``gid``).

    Read by :meth:`raw_event_id` to name an event the raw schema refused. None: the event's id
    is the digest of its raw event, as for vendors without ids."""
    replay_refusal: ClassVar[str | None] = None
    """Why ``siem-forwarder quarantine replay`` must not send this source's quarantined events
    again (shown to the operator, the records stay); None: they can be replayed."""
    dataset: ClassVar[str] = ""
    splunk_sourcetype: ClassVar[str] = ""
    cef_name: ClassVar[str] = ""
    severity: ClassVar[int] = DEFAULT_SEVERITY
    varying_fields: ClassVar[frozenset[str]] = frozenset()
    traits: ClassVar[SourceTraits]
    """The five attributes above, resolved (defaults filled) when the class is created."""
    _declared: ClassVar[dict[str, Any]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        mine = {k: cls.__dict__[k] for k in TRAITS if k in cls.__dict__}
        cls._declared = {**cls._declared, **mine}
        type_name = getattr(cls, "type_name", "")
        if not type_name:
            return  # an abstract base; its concrete subclasses resolve their own
        cls.traits = declared(type_name, cls.product, cls._declared)
        remember(type_name, cls.traits)
        cls.dataset = cls.traits.dataset
        cls.splunk_sourcetype = cls.traits.splunk_sourcetype
        cls.cef_name = cls.traits.cef_name
        cls.severity = cls.traits.severity
        cls.varying_fields = cls.traits.varying_fields

    def poll(self, cursor: Any | None) -> Iterator[Page]:
        """Yield pages from ``cursor`` (None on the very first poll) until caught up, then return.

        Start from ``self.config.start_time`` when ``cursor`` is None. Each page's cursor must
        be safe to resume from after a restart. Raise :class:`~forwarder_core.errors.SourceError`
        when the vendor cannot be read; the core logs it and tries again on the next interval
        from the last committed cursor. Check ``self.context.stop`` between requests.
        """
        raise NotImplementedError

    def cursor_time(self, cursor: Any) -> datetime | None:
        """The time up to which ``cursor`` has read everything (its watermark), or None if unknown.

        ``state`` shows it and the lag behind now it implies: unlike the newest event's age,
        that lag stays small for a source that is caught up on a quiet tenant. Override it when
        the cursor knows; it must not raise on a cursor this class wrote.
        """
        return None

    def normalize(self, raw: Any) -> dict[str, Any]:
        """Map one raw event (an item of ``Page.events``) to the normalized event.

        Use :meth:`make_event`. ``raw`` in the result must be the vendor's event unchanged.
        May raise KeyError/TypeError/ValueError on a malformed event: the core quarantines it.
        """
        raise NotImplementedError

    def raw_event(self, item: Any) -> Any:
        """The part of a page item that ``event_schema`` describes and ``normalize`` keeps as ``raw``.

        The item itself by default. A source whose page items wrap the vendor's event in its own
        bookkeeping (Pangea: the envelope beside its verification results) returns the event.
        Must not raise: return what is there, and let the schema say what is wrong with it.
        """
        return item

    def raw_event_id(self, item: Any) -> str | None:
        """The id to file a quarantined page item under, read without trusting its shape.

        ``item[event_id_key]`` when the class declares that key (None when it is missing), else
        the digest of the raw event (None when it cannot be computed).
        """
        key = self.event_id_key
        if key is not None:
            value = item.get(key) if isinstance(item, dict) else None
            return str(value)[:128] if isinstance(value, (str, int)) and not isinstance(value, bool) else None
        try:
            return content_id(self.raw_event(item))
        except (TypeError, ValueError, RecursionError):
            return None

    page_id: str | None = None
    """The id the current page gave the event being normalized (``Page.ids``); set by the core
    around each :meth:`normalize` call (one thread at a time normalizes a source's pages, so it needs no lock)."""

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
        ``fields`` takes the optional normalized fields (``action``, ``name``, ``severity``,
        ``category``, ``outcome``, ``actor``, ``target`` (one object or a list), ``message``,
        ``integrity``, ...); None values are left out. ``source`` carries the class's declared
        traits, so every output maps the event the way this class says.
        """
        if id is None:
            id = self.page_id or content_id(raw)
        if isinstance(timestamp, datetime):
            timestamp = format_time(timestamp)
        event: dict[str, Any] = {"id": id, "timestamp": timestamp, "source": self._source_block()}
        for key, value in fields.items():
            kind = type(value)
            if kind is str or kind is int:  # most fields, and nothing to leave out
                event[key] = value
                continue
            if value is None:
                continue
            if isinstance(value, dict):
                value = {k: v for k, v in value.items() if v is not None}
                if not value:
                    continue
            elif isinstance(value, list) and value and isinstance(value[0], dict):  # several targets
                value = [kept for item in value if (kept := {k: v for k, v in item.items() if v is not None})]
                if not value:
                    continue
            event[key] = value
        event["raw"] = raw
        return event

    def _source_block(self) -> dict[str, str]:
        block = self.__dict__.get("_source_block_cache")
        if block is None:
            block = {"name": self.name, "type": self.type_name, "vendor": self.vendor, "product": self.product,
                     **self.traits.block()}
            self.__dict__["_source_block_cache"] = block
        return block


class Output(_Component):
    """A SIEM (or file) that events are delivered to.

    Subclasses set ``type_name`` and ``options_schema`` and implement :meth:`send`. ``send`` is
    never called concurrently on one instance.
    """

    _metric_label = "output"

    def send(self, events: list[dict[str, Any]]) -> SendResult:
        """Deliver ``events`` (normalized) and return only once they are durably accepted.

        Return per-event verdicts; raise :class:`~forwarder_core.errors.OutputError` if the whole
        batch failed (connection refused, 503, bad token: ``pause=True`` for the latter).
        """
        raise NotImplementedError

    def encode_batch(self, events: list[dict[str, Any]]) -> Encoded | None:
        """Optional: ``events`` as the bytes :meth:`send_encoded` will send, one part per event.

        Runs in a worker process (on an instance built there from the same config) when
        ``workers`` is on, so it must be pure CPU work that touches no connection or file. An
        event that cannot be encoded is named in ``Encoded.rejected``. The default, None, means
        the output encodes inside :meth:`send`, and the normalized events cross back instead.
        """
        return None

    def send_encoded(self, batch: Encoded) -> SendResult:
        """Send a batch :meth:`encode_batch` made, with the verdicts :meth:`send` would give.

        Called with a sub-batch (:meth:`Encoded.take`) when the core retries part of a batch.
        """
        raise NotImplementedError

__all__ = ["Output", "Source"]
