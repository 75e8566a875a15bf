"""The normalized event as an Elastic Common Schema (ECS) document, for the ``elastic_bulk`` output.

Kept apart from the transport so the mapping can be read (and tested) on its own. One document
per event, built once and encoded once by the output. Field choices, and why:

* ``@timestamp`` is the event's own time (data streams require it; dashboards sort on it).
* ``event.*`` carries the normalized classification; ``event.original`` is the vendor's event as
  a JSON string, so nothing the vendor said is lost even where ECS has no field for it.
* ``event.dataset`` is the dataset the source declares; ``event.severity`` the event's own,
  else the source's declared default.
* ``user.*``/``user.target.*``/``source.ip``/``related.*`` are the pivots SIEM rules use. The first
  target that is a user goes to ``user.target`` (ECS has no generic target); every user target
  of the event is in ``related.user``.
* The vendor's own fields go under the source's namespace (the first part of its dataset) at
  most two levels deep. Deeper values, lists of objects, and the fields the source declares as
  varying in type (``varying_fields``) are JSON strings there, because Elasticsearch maps a field
  by the first value it sees and rejects a later document that disagrees (a whole document
  dead-lettered over one free-form vendor field would be a poor trade).

Everything source-specific comes from the event's ``source`` block
(:func:`forwarder_core.plugin_api.traits_of`); this module knows no source type.
"""
from __future__ import annotations

import ipaddress
import json
import re
from typing import Any

from forwarder_core.plugin_api import SourceTraits, compact_json, slug, targets_of

ECS_VERSION = "8.11.0"

_SCALARS = (str, int, float, bool)
_FLAT_TYPES = frozenset(_SCALARS)
"""Types of a raw value that :func:`vendor_fields` keeps as it is (exactly these: a subclass takes the long way)."""
_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
_ECS = {"version": ECS_VERSION}
_IP_CACHE_MAX = 4096
_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_DOTTED_QUAD = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")
"""An IPv4 address in the form ``str(ipaddress.ip_address(...))`` gives back (no leading zeros)."""
_ip_cache: dict[str, str | None] = {}


__all__ = ["ECS_VERSION", "ecs_document", "slug", "valid_ip", "vendor_fields"]


def _text(value: Any) -> str:
    return value if isinstance(value, str) else _ENCODE(value)


def vendor_fields(raw: dict[str, Any], always_text: frozenset[str] = frozenset()) -> dict[str, Any]:
    """A two-level copy of the raw event: scalars kept, deeper structure as JSON text, nulls left out.

    Most audit events are flat: every value a string, number or boolean. Their copy is
    ``dict(raw)``, decided by one ``set(map(type, ...))`` in C instead of a Python loop that
    tests each value (bulk encode 9.84 -> 9.16 us an event of bench/stages.py's page, median of 3).
    """
    if not always_text and _FLAT_TYPES.issuperset(map(type, raw.values())):
        return dict(raw)
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


def ecs_document(ev: dict[str, Any], *, ingested: str, traits: SourceTraits) -> dict[str, Any]:
    """The ECS document of one normalized event. ``ingested`` is now, formatted once per batch;
    ``traits`` are those of the event's source (:func:`~forwarder_core.plugin_api.traits_of`).

    Small constant parts may be shared between documents: encode them, never mutate them.
    """
    src = ev["source"]
    raw = ev["raw"]
    namespace = traits.namespace
    event: dict[str, Any] = {"id": ev["id"], "kind": "event"}
    for key in ("category", "type", "action", "outcome"):
        value = ev.get(key)
        if value is not None:
            event[key] = value
    severity = ev.get("severity")
    event["severity"] = severity if severity is not None else traits.severity
    event["dataset"] = traits.dataset
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
    for target in targets_of(ev):
        if not _is_user(target):
            continue
        tuser = {k: target[k] for k in ("id", "name", "email") if target.get(k)}
        if tuser:
            user.setdefault("target", tuser)
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
    vendor = vendor_fields(raw, traits.varying_fields) if isinstance(raw, dict) else {}
    integrity = ev.get("integrity")
    if integrity:
        vendor["integrity"] = integrity
    if vendor:
        doc[namespace] = vendor
    return doc
