"""Incydr's normalize, with make_event and normalize_as, as they were before they were made faster
(commit d07df68), copied verbatim as functions of a source instance; ``test_incydr_exact``
compares the fast ones with them, event by event and key by key."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from forwarder_core.plugin_api import content_id, format_time, parse_time
from siem_forwarder_plugins.sources.incydr import _classify, _first_ip


def make_event(self: Any, raw: Any, *, id: str | None = None, timestamp: str | datetime, **fields: Any) -> dict[str, Any]:
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
        elif isinstance(value, list) and value and isinstance(value[0], dict):  # several targets
            value = [kept for item in value if (kept := {k: v for k, v in item.items() if v is not None})]
            if not value:
                continue
        event[key] = value
    event["raw"] = raw
    return event


def normalize(self: Any, raw: Any) -> dict[str, Any]:
    stamp = raw["timestamp"]
    if not isinstance(stamp, str):
        raise TypeError("timestamp is not a string")
    timestamp = stamp if stamp.endswith("Z") and "T" in stamp else format_time(parse_time(stamp))
    event_type = raw["type$"]
    kind = self._kinds.get(event_type)
    if kind is None:
        kind = self._kinds[event_type] = _classify(str(event_type))
    category, types, severity, failed, short = kind
    success = raw.get("success")
    outcome = "failure" if success is False or (success is None and failed) else "success"
    actor_name = raw.get("actorName")
    actor_id = raw.get("actorId")
    target: dict[str, Any] | None = None
    if raw.get("userId") is not None or raw.get("userName") is not None:
        user_name = raw.get("userName")
        target = {"id": raw.get("userId"), "name": user_name, "type": "user",
                  "email": user_name if isinstance(user_name, str) and "@" in user_name else None}
    elif raw.get("resourceId") is not None:
        target = {"id": raw.get("resourceId"), "type": "resource"}
    elif raw.get("federationId") is not None:
        target = {"id": raw.get("federationId"), "type": "federation"}
    message = f"{short} by {actor_name or actor_id or 'unknown actor'}"
    if target is not None and (target.get("name") or target.get("id")):
        message += f" on {target.get('name') or target.get('id')}"
    return make_event(
        self,
        raw,
        timestamp=timestamp,
        action=event_type,
        category=category[:],
        type=types[:],
        outcome=outcome,
        severity=severity,
        actor={"id": actor_id, "name": actor_name, "type": raw.get("actorType"),
               "email": actor_name if isinstance(actor_name, str) and "@" in actor_name else None,
               "ip": _first_ip(raw.get("actorIpAddress")), "user_agent": raw.get("actorAgent")},
        target=target,
        message=message,
    )


def normalize_as(self: Any, raw: Any, page_id: str | None) -> dict[str, Any]:
    if page_id is None:
        return normalize(self, raw)
    self.page_id = page_id
    try:
        event = normalize(self, raw)
    finally:
        self.page_id = None
    if isinstance(event, dict) and event.get("id") != page_id and page_id.startswith(f"{event.get('id')}-"):
        event["id"] = page_id
    return event
