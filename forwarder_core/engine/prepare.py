"""One page's raw events made ready to route: raw schema → normalize → event schema → transform.

The pipeline and ``quarantine replay`` both prepare events with :class:`Preparer`, so an event
replayed from the quarantine passes exactly the checks it failed the first time. It decides
and counts nothing on its own: the caller writes the rejected items to the quarantine and
keeps its ledger.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from forwarder_core.config.schema import EventValidator
from forwarder_core.errors import QuarantineEvent
from forwarder_core.plugin.base import Source
from forwarder_core.plugin.hooks import PluginError

log = logging.getLogger("siem_forwarder.plugins")
TransformEvents = Callable[..., "list[dict[str, Any]]"]
""":meth:`forwarder_core.plugin.hooks.Hooks.forwarder_transform_events`, called with keywords."""


@dataclass
class Rejected:
    """A page item set aside, and why; ``index`` is its place in the page."""

    index: int
    reason: str
    event_id: str | None
    raw: Any
    integrity: Any = None
    """The source's verification verdicts, where it has them (Pangea), for the quarantine record."""


@dataclass
class Prepared:
    """The events to route, the page index each came from, what was set aside and how many a plugin filtered."""

    events: list[dict[str, Any]] = field(default_factory=list)
    origins: list[int] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    filtered: int = 0


class Preparer:
    """Prepares the pages of one source; see the module docstring."""

    def __init__(self, source: Source, transform: TransformEvents | None = None):
        self.source = source
        self.name = source.name
        self.validator = EventValidator(source.event_schema)
        self.transform = transform
        # Most sources keep the page item as the raw event: skip a call per event for them.
        self.raw_of = None if type(source).raw_event is Source.raw_event else source.raw_event

    def prepare(self, items: Sequence[Any], ids: Sequence[str | None] | None = None) -> Prepared:
        """Each item checked against the raw schema, normalized, checked against the event schema.

        ``ids`` is the page's ``Page.ids`` (the id the source gave each item while paging, an
        occurrence id for identical events), handed to :meth:`Source.normalize_as`; ignored
        unless it has one entry per item.
        """
        out = Prepared()
        normalize = self.source.normalize_as
        raw_of = self.raw_of
        raw_ok = self.validator.check_raw
        event_ok = self.validator.check_event
        events, origins, rejected = out.events, out.origins, out.rejected
        if ids is not None and len(ids) != len(items):
            ids = None
        for index, item in enumerate(items):
            pid = ids[index] if ids is not None else None
            if raw_ok is not None:
                raw = item if raw_of is None else raw_of(item)
                if not raw_ok(raw):
                    rejected.append(Rejected(index, self.validator.explain_raw(raw),
                                             pid or self.source.raw_event_id(item), item))
                    continue
            try:
                event = normalize(item, pid)
            except QuarantineEvent as exc:
                rejected.append(Rejected(index, exc.reason, exc.event_id or pid, item, exc.integrity))
                continue
            except Exception as exc:
                rejected.append(Rejected(index, f"normalize failed: {type(exc).__name__}: {exc}", pid, item))
                continue
            if event_ok(event):
                events.append(event)
                origins.append(index)
            else:
                rejected.append(Rejected(index, self.validator.explain(event), event.get("id"), event.get("raw", item),
                                         event.get("integrity")))
        if self.transform is not None and events:
            self._transform(out, self.transform, items)
        return out

    def _transform(self, out: Prepared, transform: TransformEvents, items: Sequence[Any]) -> None:
        """Plugins' ``forwarder_transform_events``; an event a plugin breaks is set aside, one it drops is filtered.

        A plugin that raises or answers with a wrong value (:class:`PluginError`) has the whole
        page set aside with the reason, the page items as they came: the events it was given may
        be half changed, and only what the plugin kept could count as filtered, which is nothing.
        """
        given = out.events
        origin_of = {id(e): o for e, o in zip(given, out.origins)}
        before = [(_str_or_none(e.get("id")), e.get("integrity")) for e in given]  # a failing plugin may change them
        try:
            kept = transform(source_name=self.name, events=given)
        except PluginError as exc:
            self.source.metrics.inc("plugin_errors_total", plugin=exc.plugin, hook=exc.hook)
            log.error("source %s: %s; the page's %d event(s) are set aside in the quarantine, none filtered",
                      self.name, exc, len(given))
            reason = f"{exc}; the page is set aside, none of it filtered"
            out.rejected.extend(Rejected(origin, reason, event_id, items[origin], integrity)
                                for (event_id, integrity), origin in zip(before, out.origins))
            out.rejected.sort(key=lambda r: r.index)
            out.events, out.origins = [], []
            return
        out.filtered = len(given) - len(kept)
        out.events, out.origins = [], []
        for event in kept:
            if self.validator.is_valid(event):
                out.events.append(event)
                out.origins.append(origin_of[id(event)])
            else:
                out.rejected.append(Rejected(origin_of[id(event)], "after a plugin's forwarder_transform_events: "
                                             + self.validator.explain(event), event.get("id"), event.get("raw"),
                                             event.get("integrity")))


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None
