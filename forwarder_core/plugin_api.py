"""Everything a plugin imports: the one public face of the core for plugin authors.

A third-party source or output imports from here (and ``hookimpl`` from :mod:`forwarder_core`),
never from the core's packages, which may move between releases; the built-in plugins do the
same. The groups:

- base classes and what they are given or hand back: :class:`Source`, :class:`Output`,
  :class:`ComponentConfig`, :class:`Context`, :class:`Page`, :class:`PageBody`,
  :class:`SendResult`, :class:`Encoded`;
- option schemas: :func:`source_options_schema`, :func:`http_output_options_schema`,
  :data:`TLS_OPTIONS`, :func:`apply_defaults`;
- the HTTP client and its parts: :class:`HttpClient`, :class:`Auth`, :class:`BearerAuth`,
  :func:`snippet`, :func:`decode_json`, and how long a vendor asks to wait
  (:class:`ResponseWait`, :func:`parse_retry_after`, :func:`epoch_header`,
  :func:`seconds_header`, :func:`first_of`, :func:`when_header`, :func:`retry_after`,
  :data:`MAX_RETRY_AFTER`);
- errors: :class:`ForwarderError` and its subclasses;
- secrets: :class:`Secret`, :func:`reveal`, :func:`redact`, :func:`register_secret_text`, :func:`register_header_value`, :func:`read_secret_file`;
- JSON and time helpers: canonical JSON and content ids, RFC 3339 and epoch conversions;
- source traits as every output reads them (:func:`traits_of`, :func:`targets_of`, :func:`slug`);
- files: :class:`LineAppender` (durable appends that survive a crash mid-line);
- CEF: the strict parser (:func:`parse_cef`) and the checker ``siem-forwarder cef-check`` runs
  (:func:`cef_check`).
"""
from __future__ import annotations

from forwarder_core.errors import (
    AuthError,
    ConfigError,
    ForwarderError,
    HttpError,
    NoProgressError,
    OutputError,
    QuarantineEvent,
    ResponseError,
    SourceError,
    StateError,
    TransportError,
)
from forwarder_core.jsoncodec import ESCAPE, REPLACE, canonical_json, canonical_json_bytes, compact_json, content_id
from forwarder_core.jsoncodec import decode as decode_json_bytes
from forwarder_core.net.auth import Auth, BearerAuth
from forwarder_core.net.client import HttpClient, decode_json, snippet
from forwarder_core.net.failures import DeadlineExceeded, ResponseTooLarge
from forwarder_core.net.waits import (
    MAX_RETRY_AFTER,
    ResponseWait,
    epoch_header,
    first_of,
    parse_retry_after,
    retry_after,
    seconds_header,
    when_header,
)
from forwarder_core.plugin.base import Output, Source
from forwarder_core.plugin.cef import FORBIDDEN_CODEPOINTS as CEF_FORBIDDEN_CODEPOINTS
from forwarder_core.plugin.cef import CEFError, parse_cef, strip_syslog_header
from forwarder_core.plugin.cef import main as cef_check
from forwarder_core.plugin.context import ComponentConfig, Context
from forwarder_core.plugin.encoded import Encoded
from forwarder_core.plugin.option_schemas import (
    TLS_OPTIONS,
    apply_defaults,
    http_output_options_schema,
    source_options_schema,
)
from forwarder_core.plugin.results import Page, PageBody, SendResult
from forwarder_core.plugin.source_traits import DEFAULT_SEVERITY, SourceTraits, slug, targets_of, traits_of
from forwarder_core.secrets import Secret, read_secret_file, redact, register_header_value, register_secret_text, reveal
from forwarder_core.storage.durable import LineAppender
from forwarder_core.times import (
    format_time,
    from_us,
    iso_ms,
    iso_us,
    ms_datetime,
    now_ms,
    parse_ms,
    parse_time,
    parse_us,
    to_ms,
    to_us,
)

__all__ = [
    # base classes and what they meet
    "ComponentConfig", "Context", "Encoded", "Output", "Page", "PageBody", "SendResult", "Source",
    # option schemas
    "TLS_OPTIONS", "apply_defaults", "http_output_options_schema", "source_options_schema",
    # HTTP
    "MAX_RETRY_AFTER", "Auth", "BearerAuth", "HttpClient", "ResponseWait", "decode_json", "epoch_header",
    "first_of", "parse_retry_after", "retry_after", "seconds_header", "snippet", "when_header",
    # errors
    "AuthError", "ConfigError", "DeadlineExceeded", "ForwarderError", "NoProgressError", "ResponseTooLarge",
    "HttpError", "OutputError", "QuarantineEvent", "ResponseError",
    "SourceError", "StateError", "TransportError",
    # secrets
    "Secret", "read_secret_file", "redact", "register_header_value", "register_secret_text", "reveal",
    # JSON and time
    "ESCAPE", "REPLACE", "canonical_json", "canonical_json_bytes", "compact_json", "content_id", "decode_json_bytes",
    "format_time", "from_us", "iso_ms", "iso_us", "ms_datetime", "now_ms", "parse_ms", "parse_time", "parse_us",
    "to_ms", "to_us",
    # source traits
    "DEFAULT_SEVERITY", "SourceTraits", "slug", "targets_of", "traits_of",
    # files and CEF
    "CEF_FORBIDDEN_CODEPOINTS", "CEFError", "LineAppender", "cef_check", "parse_cef", "strip_syslog_header",
]
