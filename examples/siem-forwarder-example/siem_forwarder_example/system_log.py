"""``example_system_log`` source: an Okta-style System Log API, read through the core HTTP client.

``GET {base_url}/api/v1/logs?since=&until=&limit=&sortOrder=ASCENDING``, the next page named by
the ``Link: <...>; rel="next"`` header, ``Authorization: SSWS <token>``. On a 429 the API says
when its limit resets in ``X-Rate-Limit-Reset`` (epoch seconds) instead of ``Retry-After``; the
source hands the core client an :func:`~forwarder_core.plugin_api.epoch_header` reader for it, so it
writes no retry loop of its own.

The cursor is the ``published`` time of the newest event delivered and the ``uuid`` of every
event published in the ``lookback`` seconds before it: each poll re-reads from ``since -
lookback`` (late events) up to ``now - settle_delay`` (slow indexing) and skips what it has seen.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from forwarder_core.plugin_api import (
    AuthError,
    BearerAuth,
    ComponentConfig,
    Context,
    Page,
    Source,
    epoch_header,
    format_time,
    parse_time,
    source_options_schema,
)

if TYPE_CHECKING:
    from requests import Response

    from forwarder_core.plugin_api import HttpClient

LOGS = "/api/v1/logs"

EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["uuid", "published", "eventType"],
    "properties": {
        "uuid": {"type": "string", "minLength": 1},
        "published": {"type": "string", "format": "date-time"},
        "eventType": {"type": "string"},
        "displayMessage": {"type": ["string", "null"]},
        "actor": {"type": "object"},
        "client": {"type": ["object", "null"]},
        "outcome": {"type": ["object", "null"]},
        "target": {"type": ["array", "null"], "items": {"type": "object"}},
    },
}


class SswsAuth(BearerAuth):
    """``Authorization: SSWS <token>``. An API token cannot be renewed, so a 401 quotes the vendor."""

    def __init__(self, token: Any):
        super().__init__(token, scheme="SSWS")

    def refresh(self, client: HttpClient, response: Response | None = None) -> None:
        summary = ""
        if response is not None:
            try:
                summary = f": {response.json().get('errorSummary')}"
            except ValueError:
                pass
        raise AuthError(f"the System Log API refused the token{summary}")


class SystemLogSource(Source):
    """See the module docstring."""

    type_name = "example_system_log"
    vendor = "Example"
    product = "System Log"
    event_schema = EVENT_SCHEMA
    event_id_key = "uuid"
    declared_metrics = {"example_system_log_pages_total": ("counter", "System Log pages read, by source.")}
    options_schema = source_options_schema(
        properties={"token": {"type": "string", "minLength": 1}},
        required=["token"], base_url=None, page_size_max=1000, settle_delay=10, lookback=300)

    def __init__(self, config: ComponentConfig, context: Context):
        super().__init__(config, context)
        self.http = context.http(self.options, auth=SswsAuth(self.options["token"]),
                                 response_wait=epoch_header("X-Rate-Limit-Reset"))

    def poll(self, cursor: Any | None) -> Iterator[Page]:
        lookback = timedelta(seconds=self.options["lookback"])
        since = parse_time(cursor["since"]) if cursor else (self.config.start_time or _now() - timedelta(days=1))
        seen: dict[str, str] = dict(cursor["seen"]) if cursor else {}
        until = _now() - timedelta(seconds=self.options["settle_delay"])
        if until <= since:
            return
        url: str = LOGS
        params: Mapping[str, Any] | None = {"since": format_time(since - lookback), "until": format_time(until),
                                            "limit": self.options["page_size"], "sortOrder": "ASCENDING"}
        while url and not self.context.stop.is_set():
            response = self.http.request("GET", url, params=params, expect_json=True)
            self.metrics.inc("example_system_log_pages_total", source=self.name)
            items = response.parsed  # type: ignore[attr-defined]
            fresh = [e for e in items if not (isinstance(e, dict) and e.get("uuid") in seen)]
            newest = since
            for event in fresh:
                published = _published(event)
                if published is not None:
                    seen[event["uuid"]] = format_time(published)
                    newest = max(newest, published)
            since = newest
            horizon = format_time(since - lookback)
            seen = {uuid: when for uuid, when in seen.items() if when >= horizon}
            yield Page(fresh, {"since": format_time(since), "seen": sorted(seen.items())},
                       newest if fresh else None)
            url = response.links.get("next", {}).get("url", "") if items else ""
            params = None  # the next link carries the query

    def normalize(self, raw: Any) -> dict[str, Any]:
        actor = raw.get("actor") or {}
        targets = raw.get("target") or []
        first = targets[0] if targets else {}
        result = (raw.get("outcome") or {}).get("result")
        return self.make_event(
            raw,
            id=raw["uuid"],
            timestamp=parse_time(raw["published"]),
            action=raw["eventType"],
            outcome={"SUCCESS": "success", "FAILURE": "failure"}.get(str(result).upper()),
            actor={"id": actor.get("id"), "name": actor.get("displayName"), "email": actor.get("alternateId"),
                   "type": actor.get("type"), "ip": (raw.get("client") or {}).get("ipAddress")},
            target={"id": first.get("id"), "type": first.get("type"), "name": first.get("displayName")},
            message=raw.get("displayMessage"),
        )

    def check_connection(self) -> str:
        self.http.request("GET", LOGS, params={"limit": 1}, expect_json=True)
        return f"read the System Log at {self.http.base_url}"


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _published(event: Any) -> datetime | None:
    try:
        return parse_time(event["published"])
    except (KeyError, TypeError, ValueError):
        return None
