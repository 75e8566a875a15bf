"""What a source declares for the outputs, and how an output reads it back from an event.

A source class declares how the SIEMs should file its events (CONTRACT.md, "Plugin contract"):
``dataset``, ``splunk_sourcetype``, ``cef_name``, ``severity`` and ``varying_fields``.
:meth:`~forwarder_core.plugin.base.Source.make_event` copies them into every event's ``source``
block, so they travel with the event: an output formats it the same whether it comes straight
from the source, out of the disk buffer hours later after a restart, or from a dead-letter
replay, and a third-party output needs nothing but the event. An output holds no table about
source types; it calls :func:`traits_of` on the event's ``source``. An event made without them (by
hand, or queued in a disk buffer by a version that did not carry them) reads as what the class
of its type declares, where that class is loaded in this process, else as the defaults.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_SEVERITY = 3
TRAITS = ("dataset", "splunk_sourcetype", "cef_name", "severity", "varying_fields")
"""The class attributes a source may declare, in the order they appear in the ``source`` block."""

_SLUG_BAD = re.compile(r"[^a-z0-9_.]+")
_LOADED: dict[str, SourceTraits] = {}
"""type_name → the traits its class declares, for every source class created in this process."""


def slug(value: str) -> str:
    """Lower case, anything but ``[a-z0-9_.]`` as ``_``: safe inside an index or data stream name."""
    return _SLUG_BAD.sub("_", value.lower())


def default_dataset(type_name: str) -> str:
    return f"{slug(type_name)}.audit"


def default_splunk_sourcetype(type_name: str) -> str:
    return f"{type_name}:audit"


def default_cef_name(product: str, type_name: str) -> str:
    return f"{product or type_name} event"


def check_severity(value: Any, what: str) -> int:
    """``value`` if it is a CEF severity (an int 0-10); TypeError naming ``what`` otherwise."""
    if type(value) is not int or not 0 <= value <= 10:
        raise TypeError(f"{what}: severity must be an integer 0-10, not {value!r}")
    return value


@dataclass(frozen=True)
class SourceTraits:
    """The declared mapping of one source's events. See the module docstring."""

    dataset: str
    splunk_sourcetype: str
    cef_name: str
    severity: int = DEFAULT_SEVERITY
    varying_fields: frozenset[str] = frozenset()
    """Raw-event fields (dotted, at most two levels: ``details.old_value``) whose JSON type varies
    between events; outputs with typed fields (Elasticsearch) send them as text."""

    @property
    def namespace(self) -> str:
        """The dataset's first part (``agilicus`` of ``agilicus.auth_audit``): ECS ``event.module``,
        the key of the vendor's own fields in a document, and ``{vendor}`` in an index template."""
        return self.dataset.partition(".")[0]

    def block(self) -> dict[str, Any]:
        """The keys :meth:`Source.make_event` adds to the ``source`` block (JSON, for the schema)."""
        block: dict[str, Any] = {"dataset": self.dataset, "splunk_sourcetype": self.splunk_sourcetype,
                                 "cef_name": self.cef_name, "severity": self.severity}
        if self.varying_fields:
            block["varying_fields"] = sorted(self.varying_fields)
        return block


def declared(type_name: str, product: str, attributes: Mapping[str, Any]) -> SourceTraits:
    """The traits of a source type from what it declared (missing or empty: the defaults)."""
    varying: Iterable[str] = attributes.get("varying_fields") or ()
    if isinstance(varying, str):
        raise TypeError(f"{type_name}: varying_fields must be a collection of field names, not a string")
    severity = attributes.get("severity")
    return SourceTraits(
        dataset=attributes.get("dataset") or default_dataset(type_name),
        splunk_sourcetype=attributes.get("splunk_sourcetype") or default_splunk_sourcetype(type_name),
        cef_name=attributes.get("cef_name") or default_cef_name(product, type_name),
        severity=DEFAULT_SEVERITY if severity is None else check_severity(severity, type_name),
        varying_fields=frozenset(varying),
    )


def remember(type_name: str, traits: SourceTraits) -> None:
    """Record what a source class declares (called as the class is created)."""
    _LOADED[type_name] = traits


def traits_of(source: Mapping[str, Any]) -> SourceTraits:
    """The traits an event's ``source`` block carries, with the defaults for what it lacks.

    A block without any (no ``dataset``) comes from before sources carried them; its loaded
    class says what they are, so an upgrade with events still queued moves no sourcetype or index.
    """
    if "dataset" not in source:
        loaded = _LOADED.get(str(source.get("type")))
        if loaded is not None:
            return loaded
    return declared(str(source.get("type") or ""), str(source.get("product") or ""), source)


def targets_of(event: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The event's ``target`` as a list: a vendor may name several (the schema allows one or a list).

    Outputs map the first to their single-valued keys and keep all where the SIEM has a
    multi-valued place.
    """
    target = event.get("target")
    if not target:
        return []
    if isinstance(target, dict):
        return [target]
    return [t for t in target if isinstance(t, dict) and t]
