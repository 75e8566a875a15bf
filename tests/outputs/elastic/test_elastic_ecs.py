"""The ECS mapping of ``elastic_bulk`` on its own: what goes where, and what is kept shallow."""
from __future__ import annotations

import json
from typing import Any

from forwarder_core.plugin_api import traits_of
from siem_forwarder_plugins.outputs.elastic.ecs import ecs_document, valid_ip, vendor_fields
from tests.outputs.builtin import source_block


def event(source_type: str, raw: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """An event whose ``source`` block is what the built-in class of that type puts there."""
    return {"id": "e1", "timestamp": "2026-11-01T00:00:00.000Z", "source": source_block(source_type),
            "raw": raw, **fields}


def doc_of(ev: dict[str, Any]) -> dict[str, Any]:
    return ecs_document(ev, ingested="2026-11-01T00:00:01.000Z", traits=traits_of(ev["source"]))


def test_dataset_module_and_vendor_key_come_from_the_source_block() -> None:
    docs = {t: doc_of(event(t, {"k": "v"})) for t in ("incydr", "agilicus", "agilicus_auth", "pangea", "asana")}
    assert {t: (d["event"]["dataset"], d["event"]["module"]) for t, d in docs.items()} == {
        "incydr": ("incydr.audit", "incydr"), "agilicus": ("agilicus.audit", "agilicus"),
        "agilicus_auth": ("agilicus.auth_audit", "agilicus"), "pangea": ("pangea.audit", "pangea"),
        "asana": ("asana.audit", "asana")}
    assert docs["agilicus_auth"]["agilicus"] == {"k": "v"}
    undeclared = doc_of(event("My-Plugin", {"k": "v"}))
    assert undeclared["event"]["dataset"] == "my_plugin.audit" and undeclared["my_plugin"] == {"k": "v"}
    assert undeclared["event"]["severity"] == 3


def test_severity_is_the_events_else_the_sources() -> None:
    ev = event("example_sso", {}, severity=8)
    ev["source"].update(dataset="okta.system", severity=6)
    assert doc_of(ev)["event"]["severity"] == 8
    del ev["severity"]
    assert doc_of(ev)["event"]["severity"] == 6 and doc_of(ev)["event"]["dataset"] == "okta.system"


def test_every_user_target_is_related_and_the_first_is_user_target() -> None:
    targets = [{"id": "app1", "type": "AppInstance"}, {"id": "u2", "type": "User", "name": "Bo"},
               {"id": "u3", "type": "User", "email": "cy@example.com"}]
    doc = doc_of(event("example_sso", {}, actor={"id": "u1"}, target=targets))
    assert doc["user"]["target"] == {"id": "u2", "name": "Bo"}
    assert doc["related"]["user"] == ["u1", "u2", "Bo", "u3", "cy@example.com"]


def test_vendor_fields_stay_two_levels_deep_and_type_stable() -> None:
    raw = {"a": "x", "n": 3, "none": None, "tags": ["p", "q"],
           "obj": {"s": "v", "deep": {"k": 1}, "objs": [{"k": 1}], "nothing": None},
           "attrs": [{"attribute_id": "a1"}],
           "details": {"old_value": {"x": 1}, "new_value": True, "group": {"gid": "g"}}}
    out = vendor_fields(raw, frozenset({"details.old_value", "details.new_value"}))
    assert out == {"a": "x", "n": 3, "tags": ["p", "q"],
                   "obj": {"s": "v", "deep": '{"k":1}', "objs": '[{"k":1}]'},
                   "attrs": '[{"attribute_id":"a1"}]',
                   "details": {"old_value": '{"x":1}', "new_value": "true", "group": '{"gid":"g"}'}}


def test_pangea_message_new_old_are_text_and_integrity_is_kept() -> None:
    raw = {"event": {"action": "login", "message": {"k": "v"}, "new": 5, "old": "s"},
           "received_at": "2026-11-01T00:00:00.000001Z"}
    doc = doc_of(event("pangea", raw, integrity={"hash": "pass", "membership": "none", "signature": "fail"}))
    assert doc["pangea"]["event"] == {"action": "login", "message": '{"k":"v"}', "new": "5", "old": "s"}
    assert doc["pangea"]["integrity"] == {"hash": "pass", "membership": "none", "signature": "fail"}
    assert json.loads(doc["event"]["original"]) == raw


def test_only_a_single_valid_ip_reaches_ip_fields() -> None:
    assert valid_ip("50.93.255.223") == "50.93.255.223"
    assert valid_ip("2001:db8::1") == "2001:db8::1"
    assert valid_ip("50.93.255.223, 64.252.71.111") is None
    assert valid_ip("null") is None
    assert valid_ip(None) is None
    doc = doc_of(event("incydr", {"actorIpAddress": "null"}, actor={"name": "a@example.com", "ip": "null"}))
    assert "source" not in doc and "ip" not in doc.get("related", {})
    assert doc["incydr"]["actorIpAddress"] == "null"


def test_a_target_that_is_not_a_user_is_not_user_target() -> None:
    doc = doc_of(event("asana", {"gid": "1"}, actor={"id": "u1"}, target={"id": "p1", "type": "project", "name": "Roadmap"}))
    assert doc["user"] == {"id": "u1"}
    assert doc["related"]["user"] == ["u1"]
    user_target = doc_of(event("agilicus", {}, target={"id": "u2", "type": "users"}))
    assert user_target["user"]["target"] == {"id": "u2"}


def test_minimal_event_still_has_the_required_ecs_fields() -> None:
    doc = doc_of(event("agilicus_auth", {"time": "2026-11-01T00:00:00Z"}))
    assert doc["@timestamp"] == "2026-11-01T00:00:00.000Z"
    assert doc["event"]["kind"] == "event" and doc["event"]["id"] == "e1"
    assert doc["event"]["dataset"] == "agilicus.auth_audit" and doc["event"]["provider"] == "agilicus_auth"
    assert doc["ecs"] == {"version": "8.11.0"}
    assert doc["observer"] == {"vendor": "V", "product": "P"}
    assert "user" not in doc and "related" not in doc and "message" not in doc
    labelled = doc_of(event("asana", {}, labels={"env": "prod"}, message="hello",
                            organization={"id": "o1", "name": "Org"}))
    assert labelled["labels"] == {"env": "prod", "forwarder_source": "src"}
    assert labelled["message"] == "hello"
    assert labelled["organization"] == {"id": "o1", "name": "Org"}
