"""``elastic_bulk`` through the real ``siem-forwarder`` process: the delivery promise end to end."""
from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch

from forwarder_core.storage.checkpoint import CheckpointStore
from siem_forwarder_plugins.outputs.elastic.bulk import document_id
from tests.fakes.elastic import FakeElasticsearch
from tests.helpers import read_jsonl, run_forwarder

KEY_ID, KEY = "fwd-key", "Zm9yd2FyZGVyLWtleQ"
STREAM = "logs-counter.audit-default"


@pytest.fixture
def es() -> Iterator[FakeElasticsearch]:
    with FakeElasticsearch() as fake:
        yield fake  # type: ignore[misc]


def config(counter_config: Any, es: FakeElasticsearch, key_file: Path, **options: Any) -> dict[str, Any]:
    cfg = counter_config(count=25, page_size=10)
    cfg["delivery"] = {"once_give_up_after": 2}
    cfg["outputs"] = [{"name": "elastic", "type": "elastic_bulk",
                       "options": {"url": es.url, "index": "logs-{vendor}.audit-default",
                                   "api_key_file": str(key_file), **options}}]
    return cfg


def key_file(tmp_path: Path, es: FakeElasticsearch) -> Path:
    path = tmp_path / "es-api-key"
    path.write_text(es.add_api_key(KEY_ID, KEY) + "\n")
    return path


def test_events_arrive_as_ecs_and_a_lost_commit_duplicates_nothing(
        tmp_path: Path, counter_config: Any, es: FakeElasticsearch) -> None:
    cfg = config(counter_config, es, key_file(tmp_path, es))
    first = run_forwarder(tmp_path, cfg)
    assert first.returncode == 0, first.stderr
    assert es.count(STREAM) == 25
    assert CheckpointStore(cfg["state_dir"]).get("counter").cursor == {"next": 25}

    client = Elasticsearch(es.url, api_key=es.add_api_key(KEY_ID, KEY))
    hit = client.search(index=STREAM, query={"term": {"event.id": "counter-7"}})["hits"]["hits"][0]
    assert hit["_id"] == document_id("counter", "counter-7")
    assert hit["_source"]["@timestamp"] == "2026-01-01T00:00:07Z"
    assert json.loads(hit["_source"]["event"]["original"]) == {
        "seq": 7, "time": "2026-01-01T00:00:07Z", "user": "user0", "action": "login"}
    assert hit["_source"]["user"] == {"name": "user0"}

    # The checkpoint is lost (as after a crash between delivery and commit): everything is sent
    # again, and Elasticsearch answers 409 for every document instead of storing a second copy.
    reset = run_forwarder(tmp_path, cfg, "state", "reset", "counter")
    assert reset.returncode == 0, reset.stderr
    bulks_before = len(es.calls("/_bulk$"))
    second = run_forwarder(tmp_path, cfg)
    assert second.returncode == 0, second.stderr
    assert len(es.calls("/_bulk$")) > bulks_before
    assert es.count(STREAM) == 25
    assert client.count(index=STREAM)["count"] == 25


def test_a_poisoned_document_is_dead_lettered_and_once_still_succeeds(
        tmp_path: Path, counter_config: Any, es: FakeElasticsearch) -> None:
    es.poison(b'"seq":12,')
    cfg = config(counter_config, es, key_file(tmp_path, es))
    done = run_forwarder(tmp_path, cfg)
    assert done.returncode == 0, done.stderr
    assert es.count(STREAM) == 24
    (letter,) = read_jsonl(Path(cfg["state_dir"]) / "dead-letter" / "elastic.jsonl")
    assert letter["id"] == "counter-12"
    assert letter["output"] == "elastic"
    assert "400 document_parsing_exception" in letter["reason"]
    assert letter["raw"]["seq"] == 12
    assert CheckpointStore(cfg["state_dir"]).get("counter").cursor == {"next": 25}


def test_busy_items_and_requests_still_deliver_everything(
        tmp_path: Path, counter_config: Any, es: FakeElasticsearch) -> None:
    es.reject_items(9, status=429)
    es.reject_requests(2, status=503, retry_after="0", after=1)
    cfg = config(counter_config, es, key_file(tmp_path, es))
    cfg["delivery"]["once_give_up_after"] = 30
    done = run_forwarder(tmp_path, cfg)
    assert done.returncode == 0, done.stderr
    assert sorted(es.documents(STREAM)) == sorted(document_id("counter", f"counter-{i}") for i in range(25))
    assert len(es.calls("/_bulk$")) >= 3 + 2 + 1  # three pages, two refused requests, a round of refused items


def test_a_wrong_api_key_pauses_keeps_the_cursor_and_never_shows_the_key(
        tmp_path: Path, counter_config: Any, es: FakeElasticsearch) -> None:
    good = key_file(tmp_path, es)
    wrong = base64.b64encode(f"{KEY_ID}:not-the-right-key".encode()).decode()
    bad = tmp_path / "wrong-key"
    bad.write_text(wrong + "\n")
    cfg = config(counter_config, es, bad)
    first = run_forwarder(tmp_path, cfg)
    assert first.returncode != 0
    paused = [line for line in first.stderr.splitlines() if "paused" in line]
    assert len(paused) == 1, first.stderr
    assert "refused the credentials" in paused[0] and "security_exception" in paused[0]
    assert wrong not in first.stderr + first.stdout and "not-the-right-key" not in first.stderr + first.stdout
    assert es.count() == 0
    assert CheckpointStore(cfg["state_dir"]).get("counter") is None

    cfg["outputs"][0]["options"]["api_key_file"] = str(good)
    second = run_forwarder(tmp_path, cfg)
    assert second.returncode == 0, second.stderr
    assert es.count(STREAM) == 25


def test_check_connect_reports_the_cluster_and_the_data_stream(
        tmp_path: Path, counter_config: Any, es: FakeElasticsearch) -> None:
    cfg = config(counter_config, es, key_file(tmp_path, es))
    cfg["outputs"][0]["options"]["index"] = STREAM
    checked = run_forwarder(tmp_path, cfg, "check", "--connect")
    assert checked.returncode == 0, checked.stderr
    out = checked.stdout + checked.stderr
    assert "Elasticsearch 8.15.3" in out
    assert "built-in logs-*-* index template creates it" in out


def test_real_vendor_sources_land_in_their_own_data_streams_in_ecs(tmp_path: Path, es: FakeElasticsearch) -> None:
    from datetime import datetime, timedelta, timezone

    from tests.fakes.incydr import IncydrFake
    from tests.fakes.pangea import TOKEN, PangeaFake

    start = datetime.now(timezone.utc) - timedelta(minutes=20)
    with IncydrFake(events=120, start=start, span=600) as incydr, PangeaFake(30, start=start) as pangea:
        cfg = {
            "sources": [
                {"name": "incydr-us", "type": "incydr", "start_time": (start - timedelta(seconds=1)).isoformat(),
                 "options": {"base_url": incydr.url, "client_id": incydr.client_id,
                             "client_secret": "${INCYDR_SECRET}", "settle_delay": 0}},
                {"name": "pangea-main", "type": "pangea", "start_time": (start - timedelta(seconds=1)).isoformat(),
                 "options": {"base_url": pangea.url, "token": "${PANGEA_TOKEN}", "settle_delay": 0}},
            ],
            "outputs": [{"name": "elastic", "type": "elastic_bulk",
                         "options": {"url": es.url, "index": "logs-{dataset}-default",
                                     "api_key_file": str(key_file(tmp_path, es))}}],
        }
        done = run_forwarder(tmp_path, cfg, env={"INCYDR_SECRET": incydr.client_secret, "PANGEA_TOKEN": TOKEN})
        assert done.returncode == 0, done.stderr
        raw_incydr = {json.dumps(e, sort_keys=True) for e in incydr.events()}
        pangea_hashes = {r.hash for r in pangea.records}

    client = Elasticsearch(es.url, api_key=es.add_api_key(KEY_ID, KEY))
    assert client.count(index="logs-incydr.audit-default")["count"] == 120
    assert client.count(index="logs-pangea.audit-default")["count"] == 30

    incydr_docs = client.search(index="logs-incydr.audit-default", size=200)["hits"]["hits"]
    assert {json.dumps(json.loads(h["_source"]["event"]["original"]), sort_keys=True) for h in incydr_docs} == raw_incydr
    for hit in incydr_docs:
        doc = hit["_source"]
        assert hit["_id"] == document_id("incydr", doc["event"]["id"])
        assert doc["event"]["dataset"] == "incydr.audit" and doc["observer"]["product"] == "Incydr"
        assert doc["user"]["id"] == doc["incydr"]["actorId"]
        assert doc["@timestamp"] == json.loads(doc["event"]["original"])["timestamp"]

    pangea_docs = client.search(index="logs-pangea.audit-default", size=100)["hits"]["hits"]
    assert {h["_source"]["event"]["id"] for h in pangea_docs} == pangea_hashes
    for hit in pangea_docs:
        assert hit["_source"]["pangea"]["integrity"]["hash"] == "pass"
        assert "received_at" in hit["_source"]["pangea"]
