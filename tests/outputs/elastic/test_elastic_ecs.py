"""The ECS mapping of ``elastic_bulk`` on its own: what goes where, and what is kept shallow."""
from __future__ import annotations

import json
from typing import Any

from siem_forwarder_plugins.outputs.elastic.ecs import dataset_of, ecs_document, namespace_of, valid_ip, vendor_fields


def event(source_type: str, raw: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"id": "e1", "timestamp": "2026-11-01T00:00:00.000Z",
            "source": {"name": "src", "type": source_type, "vendor": "V", "product": "P"}, "raw": raw, **fields}


def doc_of(ev: dict[str, Any]) -> dict[str, Any]:
    ns = namespace_of(ev["source"]["type"])
    return ecs_document(ev, ingested="2026-11-01T00:00:01.000Z", namespace=ns, dataset=dataset_of(ev["source"]["type"]))


def test_namespaces_and_datasets_per_source_type() -> None:
    assert [namespace_of(t) for t in ("incydr", "agilicus", "agilicus_auth", "pangea", "asana")] == [
        "incydr", "agilicus", "agilicus", "pangea", "asana"]
    assert dataset_of("agilicus_auth") == "agilicus.auth_audit"
    assert dataset_of("incydr") == "incydr.audit"
    assert namespace_of("My-Plugin") == "my_plugin"


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
