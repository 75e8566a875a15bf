"""Raw schema before normalize: a malformed event is set aside with the schema's words, never normalized."""
from __future__ import annotations

import logging
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forwarder_core import hookimpl
from forwarder_core.engine.prepare import Preparer
from forwarder_core.metrics import Metrics
from forwarder_core.plugin_api import ComponentConfig, Context, Page, Source

RAW_SCHEMA = {
    "type": "object",
    "required": ["uuid", "published", "eventType"],
    "properties": {"uuid": {"type": "string"}, "published": {"type": "string"}, "eventType": {"type": "string"}},
}


class SystemLog(Source):
    """An Okta-like source whose normalize() trusts the raw schema (and records what it was shown)."""

    type_name = "syslog_like"
    vendor = "Example"
    product = "System Log"
    event_schema = RAW_SCHEMA
    event_id_key = "uuid"
    options_schema = {"type": "object", "properties": {"events": {"type": "array"}}}

    def __init__(self, config: ComponentConfig, context: Context):
        super().__init__(config, context)
        self.normalized: list[Any] = []

    def poll(self, cursor: Any):
        yield Page(list(self.options.get("events", [])), {"done": True})

    def normalize(self, raw: Any) -> dict[str, Any]:
        self.normalized.append(raw)
        return self.make_event(raw, id=raw["uuid"], timestamp=raw["published"], action=raw["eventType"])


def source(cls: type[Source] = SystemLog) -> Any:
    config = ComponentConfig(name="okta", type=cls.type_name, options={})
    return cls(config, Context(name="okta", state_dir="/tmp", logger=logging.getLogger("t"), metrics=Metrics()))


GOOD = {"uuid": "u-1", "published": "2026-01-01T00:00:00.000Z", "eventType": "user.session.start"}


def test_an_event_failing_its_raw_schema_never_reaches_normalize() -> None:
    src = source()
    broken = {"uuid": "u-2", "eventType": "user.session.start"}  # no "published"
    prepared = Preparer(src).prepare([GOOD, broken])
    assert [e["id"] for e in prepared.events] == ["u-1"] and prepared.origins == [0]
    assert src.normalized == [GOOD]
    (rejected,) = prepared.rejected
    assert rejected.index == 1 and rejected.event_id == "u-2" and rejected.raw is broken
    assert rejected.reason == "raw schema: $.raw: 'published' is a required property"
    assert "normalize failed" not in rejected.reason


def test_without_an_id_key_the_quarantine_id_is_the_raw_digest() -> None:
    from forwarder_core.plugin_api import content_id

    class NoIds(SystemLog):
        event_id_key = None

    broken = {"published": 7}
    (rejected,) = Preparer(source(NoIds)).prepare([broken]).rejected
    assert rejected.event_id == content_id(broken)
    assert "$.raw.published: 7 is not of type 'string'" in rejected.reason


def test_raw_event_picks_the_part_the_schema_describes() -> None:
    class Wrapped(SystemLog):
        """Page items wrap the vendor event with the source's own bookkeeping (as Pangea's do)."""

        def raw_event(self, item: Any) -> Any:
            return item.get("event")

        def normalize(self, raw: Any) -> dict[str, Any]:
            return super().normalize(raw["event"])

    src = source(Wrapped)
    prepared = Preparer(src).prepare([{"event": GOOD, "checked": True}, {"event": {"uuid": 5}, "checked": True}])
    assert [e["id"] for e in prepared.events] == ["u-1"]
    assert prepared.rejected[0].reason.startswith("raw schema: $.raw")
    assert prepared.rejected[0].raw == {"event": {"uuid": 5}, "checked": True}  # the item, so replay can normalize it


def test_the_normalized_schema_is_still_checked_after_normalize() -> None:
    class BadTime(SystemLog):
        def normalize(self, raw: Any) -> dict[str, Any]:
            return self.make_event(raw, id=raw["uuid"], timestamp="yesterday")

    (rejected,) = Preparer(source(BadTime)).prepare([GOOD]).rejected
    assert rejected.reason.startswith("event schema: $.timestamp") and rejected.event_id == "u-1"


_value = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=2))
_raw = st.one_of(
    st.fixed_dictionaries({}, optional={"uuid": _value | st.text(min_size=1, max_size=8),
                                        "published": _value | st.just("2026-01-01T00:00:00Z"),
                                        "eventType": _value | st.just("app.login")}),
    _value,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_raw, max_size=12))
def test_generated_events_are_each_delivered_or_set_aside_and_normalize_sees_only_valid_ones(items) -> None:
    src = source()
    prepared = Preparer(src).prepare(items)
    assert len(prepared.events) + len(prepared.rejected) == len(items)  # nothing lost, nothing twice
    assert sorted(prepared.origins + [r.index for r in prepared.rejected]) == list(range(len(items)))
    valid = [i for i in items if isinstance(i, dict) and all(isinstance(i.get(k), str) for k in RAW_SCHEMA["required"])]
    assert src.normalized == valid
    for r in prepared.rejected:
        assert r.reason.startswith(("raw schema:", "event schema:")), r.reason


def test_a_quarantined_raw_event_in_the_file_carries_the_schema_message_and_id(forwarder_once) -> None:
    class Plugin:
        @hookimpl
        def forwarder_register_sources(self, registry):
            registry.add(SystemLog)

    broken = {"uuid": "u-9", "published": "2026-01-01T00:00:01Z"}
    run = forwarder_once(source={"type": "syslog_like", "options": {"events": [GOOD, broken]}}, plugins=[Plugin()])
    assert run.ok and [e["id"] for e in run.events] == ["u-1"]
    (record,) = run.quarantined
    assert record["id"] == "u-9" and record["raw"] == broken
    assert record["reason"] == "raw schema: $.raw: 'eventType' is a required property"
