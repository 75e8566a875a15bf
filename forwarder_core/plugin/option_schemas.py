"""The option schemas every source, and every HTTP output, share; and filling in their defaults."""
from __future__ import annotations

from typing import Any

TLS_OPTIONS: dict[str, Any] = {
    "tls_verify": {"type": "boolean", "default": True, "description": "Verify the server's TLS certificate."},
    "ca_file": {"type": "string", "minLength": 1, "description": "PEM bundle of CAs to trust instead of the system store."},
    "timeout": {"type": "number", "exclusiveMinimum": 0, "default": 30,
                "description": "Seconds the HTTP client waits for a connection or for the next bytes of an answer."},
    "request_deadline": {"type": "number", "exclusiveMinimum": 0,
                         "description": "Seconds one HTTP request may take in all, however the server trickles "
                                        "its bytes (default 5 x timeout)."},
    "max_response_bytes": {"type": "integer", "minimum": 1024, "default": 64 * 1024 * 1024,
                           "description": "Bytes of one HTTP response, on the wire and once decompressed; "
                                          "a larger one is refused unread (default 64 MiB)."},
}
"""The options of every HTTP plugin (sources and HTTP outputs alike): TLS, and the client's bounds."""


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
