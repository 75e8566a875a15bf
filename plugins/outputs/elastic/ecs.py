"""The normalized event as an Elastic Common Schema (ECS) document, for the ``elastic_bulk`` output.

Kept apart from the transport so the mapping can be read (and tested) on its own. One document
per event, built once and encoded once by the output. Field choices, and why:

* ``@timestamp`` is the event's own time (data streams require it; dashboards sort on it).
* ``event.*`` carries the normalized classification; ``event.original`` is the vendor's event as
  a JSON string, so nothing the vendor said is lost even where ECS has no field for it.
* ``user.*``/``user.target.*``/``source.ip``/``related.*`` are the pivots SIEM rules use. A target
  goes to ``user.target`` only when it is a user (ECS has no generic target).
* The vendor's own fields go under its namespace (``asana.*``, ``incydr.*``, ``agilicus.*``,
  ``pangea.*``) at most two levels deep. Deeper values, lists of objects, and fields known to
  change type from event to event are JSON strings there, because Elasticsearch maps a field
  by the first value it sees and rejects a later document that disagrees (a whole document
  dead-lettered over one free-form vendor field would be a poor trade).
"""
from __future__ import annotations

import ipaddress
import json
import re
from typing import Any

from forwarder_core.plugin_api import compact_json

ECS_VERSION = "8.11.0"

NAMESPACES = {
    "incydr": "incydr",
    "agilicus": "agilicus",
    "agilicus_auth": "agilicus",
    "pangea": "pangea",
    "asana": "asana",
}
"""Source type → the vendor namespace of its documents (and ``{vendor}`` in index templates)."""

DATASETS = {"agilicus_auth": "agilicus.auth_audit"}
"""Source types whose ``event.dataset`` is not ``<namespace>.audit``."""

ALWAYS_TEXT: dict[str, frozenset[str]] = {
    "asana": frozenset({"details.old_value", "details.new_value"}),
    "pangea": frozenset({"event.message", "event.new", "event.old"}),
}
"""Vendor fields whose type varies between events: always sent as (JSON) text."""

_SLUG_BAD = re.compile(r"[^a-z0-9_.]+")
_SCALARS = (str, int, float, bool)
_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
_ECS = {"version": ECS_VERSION}
_IP_CACHE_MAX = 4096
_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_DOTTED_QUAD = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")
"""An IPv4 address in the form ``str(ipaddress.ip_address(...))`` gives back (no leading zeros)."""
_ip_cache: dict[str, str | None] = {}


def slug(value: str) -> str:
    """Lower case, anything but ``[a-z0-9_.]`` as ``_``: safe inside an index or data stream name."""
    return _SLUG_BAD.sub("_", value.lower())


def namespace_of(source_type: str) -> str:
    return NAMESPACES.get(source_type) or slug(source_type)


def dataset_of(source_type: str) -> str:
    return DATASETS.get(source_type) or f"{namespace_of(source_type)}.audit"


def _text(value: Any) -> str:
    return value if isinstance(value, str) else _ENCODE(value)


def vendor_fields(raw: dict[str, Any], always_text: frozenset[str] = frozenset()) -> dict[str, Any]:
    """A two-level copy of the raw event: scalars kept, deeper structure as JSON text, nulls left out."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if value is None:
            continue
        if isinstance(value, dict):
            sub: dict[str, Any] = {}
            for key2, value2 in value.items():
                if value2 is None:
                    continue
                if isinstance(value2, _SCALARS) and not (always_text and f"{key}.{key2}" in always_text):
                    sub[key2] = value2
                elif isinstance(value2, list) and all(isinstance(v, str) for v in value2):
                    sub[key2] = value2
                else:
                    sub[key2] = _text(value2)
            if sub:
                out[key] = sub
        elif isinstance(value, _SCALARS):
            out[key] = _text(value) if always_text and key in always_text else value
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            out[key] = value
        else:
            out[key] = _text(value)
    return out


def valid_ip(value: Any) -> str | None:
    """The address if ``value`` is one IP (ES rejects or drops anything else in an ``ip`` field).

    Audit logs repeat a few client addresses endlessly, so answers are remembered (bounded).
    """
    if not isinstance(value, str) or not value:
        return None
    try:
        return _ip_cache[value]
    except KeyError:
        pass
    if _DOTTED_QUAD.fullmatch(value):
        ip: str | None = value  # what ipaddress would answer, without building an address object
    else:
        try:
            ip = str(ipaddress.ip_address(value.strip()))
        except ValueError:
            ip = None
    if len(_ip_cache) >= _IP_CACHE_MAX:
        _ip_cache.clear()
    _ip_cache[value] = ip
    return ip


def _is_user(target: dict[str, Any]) -> bool:
    kind = target.get("type")
    return kind is None or "user" in kind.lower() or "email" in target


def ecs_document(ev: dict[str, Any], *, ingested: str, namespace: str, dataset: str) -> dict[str, Any]:
    """The ECS document of one normalized event. ``ingested`` is now, formatted once per batch.

    Small constant parts may be shared between documents: encode them, never mutate them.
    """
    src = ev["source"]
    raw = ev["raw"]
    event: dict[str, Any] = {"id": ev["id"], "kind": "event"}
    for key in ("category", "type", "action", "outcome", "severity"):
        value = ev.get(key)
        if value is not None:
            event[key] = value
    event["dataset"] = dataset
    event["module"] = namespace
    event["provider"] = src["type"]
    event["ingested"] = ingested
    event["original"] = compact_json(raw, allow_nan=False).decode("utf-8")

    doc: dict[str, Any] = {"@timestamp": ev["timestamp"], "ecs": _ECS, "event": event}
    related_users: list[str] = []
    related_ips: list[str] = []
    user: dict[str, Any] = {}
    actor = ev.get("actor")
    if actor:
        for key in ("id", "name", "email"):
            value = actor.get(key)
            if value:
                user[key] = value
                if value not in related_users:
                    related_users.append(value)
        ip = valid_ip(actor.get("ip"))
        if ip:
            doc["source"] = {"ip": ip}
            related_ips.append(ip)
        agent = actor.get("user_agent")
        if agent:
            doc["user_agent"] = {"original": agent}
    target = ev.get("target")
    if target and _is_user(target):
        tuser = {k: target[k] for k in ("id", "name", "email") if target.get(k)}
        if tuser:
            user["target"] = tuser
            for value in tuser.values():
                if value not in related_users:
                    related_users.append(value)
    if user:
        doc["user"] = user
    org = ev.get("organization")
    if org:
        doc["organization"] = dict(org)
    doc["observer"] = {"vendor": src["vendor"], "product": src["product"]}
    if related_users or related_ips:
        related: dict[str, Any] = {}
        if related_users:
            related["user"] = related_users
        if related_ips:
            related["ip"] = related_ips
        doc["related"] = related
    message = ev.get("message")
    if message:
        doc["message"] = message
    labels = ev.get("labels")
    doc["labels"] = {**labels, "forwarder_source": src["name"]} if labels else {"forwarder_source": src["name"]}
    vendor = vendor_fields(raw, ALWAYS_TEXT.get(namespace, frozenset())) if isinstance(raw, dict) else {}
    integrity = ev.get("integrity")
    if integrity:
        vendor["integrity"] = integrity
    if vendor:
        doc[namespace] = vendor
    return doc
