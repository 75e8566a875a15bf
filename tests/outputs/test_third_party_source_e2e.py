"""A third-party source (``acme_guard`` of the testkit distribution) gets what it declares from every
built-in output, through the real ``siem-forwarder once`` and the fakes and rsyslog.

The source enters as any plugin does (the ``siem_forwarder`` entry-point group, from a
``plugin_paths`` directory) and no output knows its name, so what arrives here can only come from
its declarations: ``dataset``, ``splunk_sourcetype``, ``cef_name``, ``severity``,
``varying_fields``, and the events' own ``name``, ``severity`` and target lists.
"""
from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from forwarder_core.storage.checkpoint import CheckpointStore
from siem_forwarder_plugins.outputs.elastic.bulk import document_id
from siem_forwarder_plugins.outputs.syslog.cef import parse_cef, strip_syslog_header
from tests.fakes.elastic import FakeElasticsearch
from tests.fakes.splunk_hec import DEFAULT_TOKEN, SplunkHecFake
from tests.helpers import run_forwarder
from tests.rsyslog import Rsyslog

IDS = ["g-1", "g-2", "g-3"]


def config(tmp_path: Path, testkit_path: str, *outputs: dict[str, Any]) -> dict[str, Any]:
    return {"state_dir": str(tmp_path / "state"), "plugin_paths": [testkit_path], "delivery": {"once_give_up_after": 5},
            "sources": [{"name": "guard-main", "type": "acme_guard"}], "outputs": list(outputs)}


def test_hec_and_elasticsearch_file_the_events_as_the_source_declares(tmp_path: Path, testkit_path: str) -> None:
    with SplunkHecFake() as hec, FakeElasticsearch() as es:
        cfg = config(tmp_path, testkit_path,
                     {"name": "splunk", "type": "splunk_hec", "options": {"url": hec.url, "token": DEFAULT_TOKEN}},
                     {"name": "elastic", "type": "elastic_bulk", "options": {"url": es.url}})
        done = run_forwarder(tmp_path, cfg)
        assert done.returncode == 0, done.stderr
        hec_events = {e["fields"]["event_id"]: e for e in hec.events}
        docs = es.documents("logs-acme.guard-default")
    assert CheckpointStore(cfg["state_dir"]).get("guard-main").cursor == {"done": True}

    assert sorted(hec_events) == IDS
    assert {e["sourcetype"] for e in hec_events.values()} == {"acme:guard:json"}
    assert hec_events["g-1"]["event"]["title"] == "Policy changed" and hec_events["g-1"]["source"] == "guard-main"

    assert sorted(docs) == sorted(document_id("acme_guard", i) for i in IDS)
    by_id = {d["event"]["id"]: d for d in docs.values()}
    assert {d["event"]["dataset"] for d in by_id.values()} == {"acme.guard"}
    assert {d["event"]["module"] for d in by_id.values()} == {"acme"}
    assert [by_id[i]["event"]["severity"] for i in IDS] == [9, 7, 7]
    first = by_id["g-1"]
    assert first["user"] == {"id": "admin@acme.test", "target": {"id": "u-2", "name": "Bo Lee"}}
    assert first["related"]["user"] == ["admin@acme.test", "u-2", "Bo Lee", "u-3", "Cy Ng"]
    # A declared varying field is text in every document, so none was refused for its type.
    assert [by_id[i]["acme"]["detail"]["value"] for i in IDS] == ["strict", "5", json.dumps({"nested": True},
                                                                                          separators=(",", ":"))]


@pytest.mark.rsyslog
def test_cef_through_rsyslog_takes_name_and_severity_from_event_then_source(
        tmp_path: Path, testkit_path: str, rsyslog: Rsyslog) -> None:
    app = "guard" + uuid.uuid4().hex[:10]
    cfg = config(tmp_path, testkit_path, {"name": "siem", "type": "syslog_cef",
                                          "options": {"host": "127.0.0.1", "port": rsyslog.tcp_port, "app_name": app}})
    done = run_forwarder(tmp_path, cfg)
    assert done.returncode == 0, done.stderr
    received = {ext["externalId"]: (header, ext) for header, ext in
                (parse_cef(strip_syslog_header(line)) for line in rsyslog.wait_for(f" {app} ", 3))}
    assert sorted(received) == IDS
    headers = {i: received[i][0] for i in IDS}
    assert {tuple(h[1:3]) for h in headers.values()} == {("Acme", "Guard")}
    # Name: the event's name, else its action, else the source's cef_name; Severity: the event's, else the source's.
    assert [headers[i][5] for i in IDS] == ["Policy changed", "user.login", "Acme Guard event"]
    assert [headers[i][6] for i in IDS] == ["9", "7", "7"]
    first = received["g-1"][1]
    assert (first["cs5"], first["cs6"], first["flexString1"]) == ("app", "app-7", "Payroll")  # the first target
    assert "duser" not in first
    assert received["g-2"][1]["duser"] == "Bo Lee" and received["g-2"][1]["duid"] == "u-2"
