"""What the built-in sources look like in every SIEM, pinned byte for byte.

Users have dashboards, saved searches, index templates and correlation rules built on the
sourcetypes, datasets, data stream names and CEF headers the forwarder sends today. One event of
every built-in source type is normalized by its real source class and encoded by each built-in
output; the bytes must equal ``golden/builtin_sources.json``. Regenerate it only for a deliberate,
documented change: ``SIEM_FORWARDER_REGOLD=1 python -m pytest tests/outputs/test_builtin_mapping.py``.
"""
from __future__ import annotations

import copy
import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from forwarder_core.metrics import Metrics
from forwarder_core.plugin_api import ComponentConfig, Context, Source, apply_defaults
from siem_forwarder_plugins.outputs.elastic.bulk import ElasticBulk
from siem_forwarder_plugins.outputs.splunk_hec import SplunkHec
from siem_forwarder_plugins.outputs.syslog.cef import format_event
from siem_forwarder_plugins.sources.agilicus.source import AgilicusAudits, AgilicusAuthAudits
from siem_forwarder_plugins.sources.asana import AsanaSource
from siem_forwarder_plugins.sources.incydr import IncydrSource
from siem_forwarder_plugins.sources.pangea.source import PangeaSource

GOLDEN = Path(__file__).parent / "golden" / "builtin_sources.json"
INGESTED = "2026-12-01T00:00:00.000Z"
VERSION = "9.9.9"
INDEXES = ("logs-{dataset}-default", "{vendor}-{source_type}-{source}")

RAW: dict[str, tuple[type[Source], dict[str, Any], Any]] = {
    "incydr": (IncydrSource, {"base_url": "http://127.0.0.1:9", "client_id": "id", "client_secret": "secret"}, {
        "type$": "audit_log::user_deactivated/1", "actorId": "898209175991065670", "actorName": "admin@example.com",
        "actorAgent": "py42 1.29.1", "actorIpAddress": "50.93.255.223, 64.252.71.111",
        "timestamp": "2022-10-03T13:14:46.962Z", "actorType": "USER", "userId": "1004",
        "userName": "leaver@example.com"}),
    "agilicus": (AgilicusAudits, {"base_url": "http://127.0.0.1:9", "token": "t", "org_id": "o1"}, {
        "user_id": "u1", "org_id": "o1", "time": "2024-01-01T00:00:01.123456Z", "action": "DELETE",
        "api_name": "users", "target_resource_type": "users", "target_id": "t1", "target_resource_name": None,
        "source_ip": "192.0.2.3", "description": "deleted user"}),
    "agilicus_auth": (AgilicusAuthAudits, {"base_url": "http://127.0.0.1:9", "token": "t", "org_id": "o1"}, {
        "user_id": "u1", "org_id": "o1", "org_name": "Org", "time": "2024-01-01T00:00:00+00:00",
        "event_name": "Token", "result": "Denied", "source_ip": "192.0.2.3", "client_id": "my-client",
        "application_name": "wiki", "upstream_user_id": "bob@example.com", "user_agent": "Mozilla/5.0"}),
    "pangea": (PangeaSource, {"base_url": "http://127.0.0.1:9", "token": "t", "on_verification_failure": "forward"}, {
        "envelope": {"event": {"action": "login", "actor": "user0@example.com", "target": "app-0",
                               "status": "failure", "tenant_id": "tenant-a", "message": {"attempt": 2},
                               "new": 5, "old": "x", "timestamp": "2026-11-01T00:00:00.000000Z"},
                     "received_at": "2026-11-01T00:00:00.100000Z"},
        "hash": "a" * 64, "hash_verification": "pass", "membership_verification": "fail",
        "signature_verification": "none", "consistency_verification": "none"}),
    "asana": (AsanaSource, {"base_url": "http://127.0.0.1:9", "token": "t", "workspace_gid": "1"}, {
        "gid": "12345", "created_at": "2024-01-01T00:00:01.000Z", "event_type": "user_login_failed",
        "event_category": "logins",
        "actor": {"actor_type": "user", "gid": "1111", "name": "Greg Sanchez", "email": "greg@example.com"},
        "resource": {"resource_type": "user", "gid": "1111", "name": "Greg Sanchez", "email": "greg@example.com"},
        "details": {"old_value": "a", "new_value": 2},
        "context": {"context_type": "web", "client_ip_address": "192.0.2.1", "user_agent": "Mozilla/5.0"}}),
}


def _component(cls: type[Any], name: str, options: dict[str, Any], tmp_path: Path) -> Any:
    config = ComponentConfig(name=name, type=cls.type_name, options=apply_defaults(cls.options_schema, options))
    context = Context(name=name, state_dir=str(tmp_path), logger=logging.getLogger(f"test.{name}"),
                      metrics=Metrics())
    return cls(config, context)


def _variants(event: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The event as its source made it; without its own severity (the source's default applies); without an
    action too (the source's default CEF Name applies)."""
    bare = copy.deepcopy(event)
    bare.pop("severity", None)
    failed = dict(copy.deepcopy(bare), outcome="failure")
    failed.pop("integrity", None)
    unnamed = copy.deepcopy(failed)
    unnamed.pop("action", None)
    return {"as_normalized": event, "default_severity": bare, "default_severity_failure": failed,
            "default_name": unnamed}


def _render(tmp_path: Path) -> dict[str, Any]:
    hec = _component(SplunkHec, "hec", {"url": "http://127.0.0.1:9", "token": "t", "host": "golden-host"}, tmp_path)
    bulks = {index: _component(ElasticBulk, "es", {"url": "http://127.0.0.1:9", "index": index}, tmp_path)
             for index in INDEXES}
    default_index = _component(ElasticBulk, "es", {"url": "http://127.0.0.1:9"}, tmp_path)
    rendered: dict[str, Any] = {}
    for source_type, (cls, options, raw) in RAW.items():
        source = _component(cls, f"{source_type}-main", options, tmp_path)
        try:
            event = source.normalize(raw)
        finally:
            source.close()
        for variant, ev in _variants(event).items():
            rendered[f"{source_type}/{variant}"] = {
                "hec": hec.encode(ev).decode("utf-8"),
                "bulk": {index: bulk.encode(ev, INGESTED).decode("utf-8") for index, bulk in bulks.items()},
                "cef": format_event(ev, VERSION),
            }
            assert default_index.encode(ev, INGESTED) == bulks["logs-{dataset}-default"].encode(ev, INGESTED)
    default_index.close()
    hec.close()
    for bulk in bulks.values():
        bulk.close()
    return rendered


def test_every_builtin_source_maps_to_the_same_bytes_as_before(tmp_path: Path) -> None:
    rendered = _render(tmp_path)
    if os.environ.get("SIEM_FORWARDER_REGOLD"):
        GOLDEN.write_text(json.dumps(rendered, indent=1, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")
        pytest.skip("golden file rewritten")
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    assert sorted(rendered) == sorted(golden)
    for key in golden:
        assert rendered[key] == golden[key], key


def test_the_golden_file_pins_what_users_rely_on() -> None:
    """A guard on the guard: the golden bytes hold the names the docs promise."""
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    sourcetypes = {key.split("/")[0]: json.loads(v["hec"])["sourcetype"] for key, v in golden.items()}
    assert sourcetypes == {"incydr": "incydr:audit", "agilicus": "agilicus:audit",
                           "agilicus_auth": "agilicus:auth_audit", "pangea": "pangea:audit", "asana": "asana:audit"}
    streams = {key.split("/")[0]: json.loads(v["bulk"]["logs-{dataset}-default"].split("\n")[0])["create"]["_index"]
               for key, v in golden.items()}
    assert streams == {"incydr": "logs-incydr.audit-default", "agilicus": "logs-agilicus.audit-default",
                       "agilicus_auth": "logs-agilicus.auth_audit-default", "pangea": "logs-pangea.audit-default",
                       "asana": "logs-asana.audit-default"}
    names = {key.split("/")[0]: v["cef"].split("|")[5] for key, v in golden.items() if key.endswith("/as_normalized")}
    assert names["incydr"] == "audit_log::user_deactivated/1" and names["asana"] == "user_login_failed"
    defaults = {key.split("/")[0]: v["cef"].split("|")[5] for key, v in golden.items() if key.endswith("/default_name")}
    assert defaults == {"incydr": "Incydr audit event", "agilicus": "Agilicus audit event",
                        "agilicus_auth": "Agilicus authentication event", "pangea": "Pangea audit event",
                        "asana": "Asana audit event"}


def test_events_queued_by_an_older_version_keep_their_sourcetype_and_data_stream(
        tmp_path: Path, counter_config: Any) -> None:
    """Disk buffers written before events carried their source's declarations drain after the
    upgrade into the same sourcetype and data stream as before (the loaded class says them)."""
    from forwarder_core.engine.diskbuffer import DiskBuffer
    from tests.fakes.elastic import FakeElasticsearch
    from tests.fakes.splunk_hec import DEFAULT_TOKEN, SplunkHecFake
    from tests.helpers import run_forwarder

    cls, options, raw = RAW["agilicus_auth"]
    source = _component(cls, "agilicus-auth", options, tmp_path)
    legacy = source.normalize(raw)
    source.close()
    legacy["source"] = {k: legacy["source"][k] for k in ("name", "type", "vendor", "product")}
    cfg = counter_config(count=0)
    cfg["delivery"] = {"once_give_up_after": 5}
    with SplunkHecFake() as hec, FakeElasticsearch() as es:
        cfg["outputs"] = [
            {"name": "splunk", "type": "splunk_hec", "buffer": "disk", "options": {"url": hec.url, "token": DEFAULT_TOKEN}},
            {"name": "elastic", "type": "elastic_bulk", "buffer": "disk", "options": {"url": es.url}}]
        state = Path(cfg["state_dir"])
        state.mkdir(parents=True)
        for name in ("splunk", "elastic"):
            queued = DiskBuffer(str(state), name, 1 << 20)
            assert queued.put("agilicus-auth", [legacy])
            queued._db.close()
        done = run_forwarder(tmp_path, cfg)
        assert done.returncode == 0, done.stderr
        assert [e["sourcetype"] for e in hec.events] == ["agilicus:auth_audit"]
        (doc,) = es.documents("logs-agilicus.auth_audit-default").values()
    assert doc["event"]["dataset"] == "agilicus.auth_audit" and doc["event"]["module"] == "agilicus"
