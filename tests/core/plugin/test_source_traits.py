"""The plugin contract's mapping attributes: declared on the class, defaulted per class, carried by each event."""
from __future__ import annotations

import logging
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from forwarder_core.config.schema import EventValidator
from forwarder_core.metrics import Metrics
from forwarder_core.plugin_api import ComponentConfig, Context, Source, targets_of, traits_of


# Type names are unique per process (a loaded class answers for blocks of its type), hence the prefix.
class Plain(Source):
    type_name = "traits_okta_system"
    vendor = "Okta"
    product = "System Log"


class Declared(Source):
    type_name = "traits_okta"
    vendor = "Okta"
    product = "System Log"
    dataset = "okta.system"
    splunk_sourcetype = "OktaIM2:log"
    cef_name = "Okta System Log event"
    severity = 6
    varying_fields = frozenset({"debugContext.debugData"})


class Renamed(Plain):
    """Another type built on ``Plain``: its defaults follow its own type_name."""

    type_name = "traits_okta_other"


class Derived(Declared):
    """Another type built on ``Declared``: what the parent declared is inherited."""

    type_name = "traits_okta_derived"


def built(cls: type[Source]) -> Source:
    config = ComponentConfig(name="src", type=cls.type_name, options={})
    return cls(config, Context(name="src", state_dir="/nonexistent", logger=logging.getLogger("t"), metrics=Metrics()))


def test_undeclared_attributes_get_the_contracts_defaults() -> None:
    assert (Plain.dataset, Plain.splunk_sourcetype, Plain.cef_name, Plain.severity, Plain.varying_fields) == (
        "traits_okta_system.audit", "traits_okta_system:audit", "System Log event", 3, frozenset())
    assert (Renamed.dataset, Renamed.splunk_sourcetype) == ("traits_okta_other.audit", "traits_okta_other:audit")


def test_declared_attributes_are_kept_and_inherited() -> None:
    assert Declared.traits.block() == {"dataset": "okta.system", "splunk_sourcetype": "OktaIM2:log",
                                       "cef_name": "Okta System Log event", "severity": 6,
                                       "varying_fields": ["debugContext.debugData"]}
    assert Derived.traits == Declared.traits


def test_a_severity_outside_0_10_is_refused_when_the_class_is_made() -> None:
    with pytest.raises(TypeError, match="severity must be an integer 0-10"):
        type("Loud", (Source,), {"type_name": "loud", "severity": 11})


def test_every_event_carries_its_sources_declarations_and_passes_the_schema() -> None:
    event = built(Declared).make_event({"k": 1}, id="e1", timestamp="2026-11-01T00:00:00Z", name="User login",
                                       severity=9, target=[{"id": "a", "name": None}, {"id": "b"}])
    assert event["source"] == {"name": "src", "type": "traits_okta", "vendor": "Okta", "product": "System Log",
                               **Declared.traits.block()}
    assert traits_of(event["source"]) == Declared.traits
    assert event["target"] == [{"id": "a"}, {"id": "b"}]
    validator = EventValidator(None)
    assert validator.is_valid(event), validator.explain(event)
    for bad in ({"severity": 11}, {"name": ""}, {"target": []}, {"target": [{"id": 1}]}):
        assert not validator.is_valid({**event, **bad}), bad


def test_a_source_block_without_declarations_reads_as_its_loaded_class_else_the_defaults() -> None:
    assert traits_of({"name": "s", "type": "traits_okta", "vendor": "Okta", "product": "System Log"}) == Declared.traits
    unknown = traits_of({"name": "s", "type": "gone", "vendor": "V", "product": "Thing"})
    assert (unknown.dataset, unknown.splunk_sourcetype, unknown.cef_name, unknown.severity) == (
        "gone.audit", "gone:audit", "Thing event", 3)


@given(st.one_of(st.none(), st.fixed_dictionaries({"id": st.text()}),
                 st.lists(st.fixed_dictionaries({}, optional={"id": st.text(), "name": st.text()}))))
def test_targets_are_always_a_list_of_objects(target: Any) -> None:
    targets = targets_of({} if target is None else {"target": target})
    assert isinstance(targets, list) and all(isinstance(t, dict) and t for t in targets)
    if isinstance(target, dict):
        assert targets == [target]
    elif isinstance(target, list):
        assert targets == [t for t in target if t]
