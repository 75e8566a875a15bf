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

import hashlib
import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, ClassVar

try:
    import orjson as _orjson
except ImportError:  # pragma: no cover - orjson is a dependency; the stdlib gives the same bytes, slower
    _orjson = None  # type: ignore[assignment]

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
    probe: bool = False
    """True under ``check --connect``: one attempt per request, no retry loop, so an unreachable
    vendor is reported at once. A plugin with a loop of its own should try once too."""

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
            single_attempt=self.probe,
        )


@dataclass
class Page:
    """A page of raw events and the cursor that is safe to commit once they are all delivered.

    ``events`` may be empty (a page that only moves the cursor, e.g. a time window with nothing
    in it). ``cursor`` must be JSON-serializable; only the source that made it reads it.
    ``newest`` is the time of the newest event of the page, if known (for lag metrics).
    """

    events: list[Any]
    cursor: Any
    newest: datetime | None = None


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


# --------------------------------------------------------------------------- helpers


def _orjson_exact(value: Any, depth: int = 0) -> bool:
    """True when orjson writes ``value`` byte for byte as :mod:`json` does (compact, non-ASCII kept).

    That holds for trees of dicts, lists, strings, ints, bools and None. Floats are spelled
    differently (``0.00001`` against ``1e-05``) and NaN is written as ``null``, so a tree holding
    any other type goes to :mod:`json`. What orjson refuses (ints over 64 bits, keys that are not
    strings, lone surrogates, nesting deeper than orjson's limit) raises TypeError, and the caller
    falls back to :mod:`json` too.
    """
    if depth > 200:
        return False
    kind = type(value)
    if kind is dict:
        items: Any = value.values()
    elif kind is list:
        items = value
    else:
        return kind is str or kind is int or kind is bool or value is None
    for item in items:
        kind = type(item)
        if kind is str or kind is int or kind is bool or item is None:
            continue
        if (kind is dict or kind is list) and _orjson_exact(item, depth + 1):
            continue
        return False
    return True


def canonical_json_bytes(value: Any) -> bytes:
    """:func:`canonical_json` as UTF-8 bytes, built by orjson where its output is the same."""
    if _orjson is not None and _orjson_exact(value):
        try:
            return _orjson.dumps(value, option=_orjson.OPT_SORT_KEYS)
        except TypeError:
            pass
    return canonical_json(value).encode("utf-8")


def canonical_json(value: Any) -> str:
    """Keys sorted, separators ``,`` and ``:``, non-ASCII kept: the text event ids are hashed over."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def content_id(raw: Any) -> str:
    """SHA-256 hex of the canonical JSON (UTF-8) of a raw event: the id of events that have none."""
    return hashlib.sha256(canonical_json_bytes(raw)).hexdigest()


_compact_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_strict_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def compact_json(value: Any, *, allow_nan: bool = True) -> bytes:
    """``json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=allow_nan)`` as
    UTF-8 bytes, done by orjson where its output is byte-identical: one encode per event per
    output, at C speed. With ``allow_nan=False`` NaN and infinities raise ValueError, as there."""
    if _orjson is not None and _orjson_exact(value):
        try:
            return _orjson.dumps(value)
        except TypeError:
            pass
    return (_compact_encode if allow_nan else _strict_encode)(value).encode("utf-8")


def parse_time(value: str | float | int) -> datetime:
    """An RFC 3339 string or epoch seconds, as an aware UTC datetime."""
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, tz=timezone.utc)
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc)


def format_time(dt: datetime) -> str:
    """RFC 3339 UTC with milliseconds and ``Z``: the normalized event's ``timestamp`` format."""
    dt = dt.astimezone(timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


# --------------------------------------------------------------------------- base classes


class _Component:
    type_name: ClassVar[str]
    options_schema: ClassVar[dict[str, Any]] = {"type": "object"}
    secret_options: ClassVar[frozenset[str]] = frozenset()
    """Options that are secrets beyond the standard ``token``/``client_secret``/``api_key``/``password``."""
    declared_metrics: ClassVar[dict[str, tuple[str, str]]] = {}
    """The plugin's own metrics: ``{name: (type, help)}``, type ``counter`` (name ends in
    ``_total``) or ``gauge``; ``/metrics`` shows them with that type and help."""

    def __init__(self, config: ComponentConfig, context: Context):
        self.config = config
        self.name = config.name
        self.options = config.options
        self.context = context
        self.log = context.logger
        self.metrics = context.metrics
        if self.declared_metrics:
            self.metrics.declare_all(self.declared_metrics)

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

    def make_event(self, raw: Any, *, id: str, timestamp: str | datetime, **fields: Any) -> dict[str, Any]:
        """Build a normalized event: ``id``, ``timestamp``, ``source`` and ``raw`` plus ``fields``.

        ``fields`` takes the optional normalized fields (``action``, ``category``, ``outcome``,
        ``actor``, ``target``, ``message``, ``integrity``, ...); None values are left out.
        """
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


# --------------------------------------------------------------------------- shared option schemas

TLS_OPTIONS: dict[str, Any] = {
    "tls_verify": {"type": "boolean", "default": True, "description": "Verify the server's TLS certificate."},
    "ca_file": {"type": "string", "minLength": 1, "description": "PEM bundle of CAs to trust instead of the system store."},
    "timeout": {"type": "number", "exclusiveMinimum": 0, "default": 30, "description": "Seconds per HTTP request."},
}


def source_options_schema(
    *,
    properties: dict[str, Any],
    required: list[str] | tuple[str, ...] = (),
    base_url: str | None,
    page_size_max: int,
    page_size_default: int | None = None,
    settle_delay: float = 60,
    lookback: float = 300,
) -> dict[str, Any]:
    """The options schema of a source: its own ``properties`` plus the options every source takes.

    ``base_url`` is the vendor's production URL (None makes ``base_url`` required);
    ``page_size`` defaults to the vendor's maximum.
    """
    common: dict[str, Any] = {
        "base_url": {"type": "string", "pattern": "^https?://[^\\s]+$", "description": "The vendor API's base URL."},
        "page_size": {"type": "integer", "minimum": 1, "maximum": page_size_max,
                      "default": page_size_default or page_size_max},
        "settle_delay": {"type": "number", "minimum": 0, "default": settle_delay,
                         "description": "Seconds a window's end stays behind now, so slow vendor indexing is not missed."},
        "lookback": {"type": "number", "minimum": 0, "default": lookback,
                     "description": "Seconds each poll re-reads before the cursor (de-duplicated) for late events."},
        **TLS_OPTIONS,
    }
    if base_url is not None:
        common["base_url"] = {**common["base_url"], "default": base_url}
    req = list(required)
    if base_url is None and "base_url" not in req:
        req.append("base_url")
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {**common, **properties},
        "required": req,
    }


def http_output_options_schema(
    *,
    properties: dict[str, Any],
    required: list[str] | tuple[str, ...] = (),
    batch_max_bytes: int,
    batch_max_events: int,
) -> dict[str, Any]:
    """The options schema of an HTTP output: its own ``properties`` plus gzip, batching and TLS."""
    common: dict[str, Any] = {
        "url": {"type": "string", "pattern": "^https?://[^\\s]+$"},
        "gzip": {"type": "boolean", "default": True},
        "batch_max_bytes": {"type": "integer", "minimum": 1024, "default": batch_max_bytes},
        "batch_max_events": {"type": "integer", "minimum": 1, "default": batch_max_events},
        **TLS_OPTIONS,
    }
    req = list(required)
    if "url" not in req:
        req.insert(0, "url")
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {**common, **properties},
        "required": req,
    }


def apply_defaults(schema: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``options`` with the schema's top-level ``default`` values filled in."""
    result = dict(options)
    for key, prop in schema.get("properties", {}).items():
        if key not in result and isinstance(prop, dict) and "default" in prop:
            result[key] = prop["default"]
    return result
