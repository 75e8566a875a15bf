"""``elastic_bulk`` against a local Elasticsearch 8 that answers as a real one does.

The promises under test (issue 5, siem-protocols.md §2): one bad document costs only itself;
429 items end in complete delivery; 413 splits; a replayed batch creates no duplicates; bad
credentials pause with a clear message and no secret; what was written reads back through the
official ``elasticsearch`` client in ECS shape.
"""
from __future__ import annotations

import json
import logging
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from elasticsearch import Elasticsearch

from forwarder_core.errors import OutputError
from forwarder_core.metrics import Metrics
from forwarder_core.plugin_api import ComponentConfig, Context, apply_defaults
from forwarder_core.secrets import Secret
from siem_forwarder_plugins.outputs.elastic.bulk import ElasticBulk, document_id
from tests.fakes.base import FakeServer, Response
from tests.fakes.elastic import FakeElasticsearch
from tests.outputs.encoded import CompressHere, from_a_worker

KEY_ID, KEY = "VuaCfGcBCdbkQm-e5aOx", "ui2lp2axTNmsyakw9tvNnw"
STREAM = "logs-asana.audit-default"


@pytest.fixture
def es() -> Iterator[FakeElasticsearch]:
    with FakeElasticsearch(users={"forwarder": "pa55word-long"}) as fake:
        fake.add_api_key(KEY_ID, KEY)
        yield fake  # type: ignore[misc]


def api_key(fake: FakeElasticsearch) -> str:
    return fake.add_api_key(KEY_ID, KEY)


def make_output(fake: FakeServer, tmp_path: Path, **options: Any) -> ElasticBulk:
    opts: dict[str, Any] = {"url": fake.url, "index": "logs-{vendor}.audit-default", **options}
    jsonschema.validate(opts, ElasticBulk.options_schema)
    for name in ("api_key", "password"):
        if name in opts:
            opts[name] = Secret(opts[name])
    config = ComponentConfig(name="elastic", type="elastic_bulk", options=apply_defaults(ElasticBulk.options_schema, opts))
    context = Context(name="elastic", state_dir=str(tmp_path), logger=logging.getLogger("test.elastic"),
                      metrics=Metrics())
    return ElasticBulk(config, context)


def asana_event(n: int, **raw_extra: Any) -> dict[str, Any]:
    """A normalized Asana event as the ``asana`` source makes it."""
    ts = f"2026-11-01T10:{n // 60 % 60:02d}:{n % 60:02d}.{n % 1000:03d}Z"
    raw = {"gid": str(120000 + n), "created_at": ts, "event_type": "user_login_succeeded",
           "event_category": "logins",
           "actor": {"actor_type": "user", "gid": "1111", "name": "Greg Sanchez", "email": "greg@example.com"},
           "resource": {"resource_type": "user", "gid": "1111", "name": "Greg Sanchez", "email": "greg@example.com"},
           "details": {}, "context": {"context_type": "web", "client_ip_address": "192.0.2.1",
                                      "user_agent": "Mozilla/5.0"}, **raw_extra}
    return {"id": raw["gid"], "timestamp": ts,
            "source": {"name": "asana-main", "type": "asana", "vendor": "Asana", "product": "Asana"},
            "action": "user_login_succeeded", "category": ["authentication"], "type": ["start"],
            "outcome": "success",
            "actor": {"id": "1111", "name": "Greg Sanchez", "email": "greg@example.com", "type": "user",
                      "ip": "192.0.2.1", "user_agent": "Mozilla/5.0"},
            "target": {"id": "1111", "type": "user", "name": "Greg Sanchez", "email": "greg@example.com"},
            "raw": raw}


def statuses(out: ElasticBulk) -> dict[str, float]:
    return {labels["status"]: value for name, labels, value in out.metrics.items()
            if name.endswith("bulk_item_status_total")}


# --------------------------------------------------------------------------- reading back


def test_the_official_client_reads_back_ecs_documents(es: FakeElasticsearch, tmp_path: Path) -> None:
    out = make_output(es, tmp_path, api_key=api_key(es))
    events = [asana_event(n) for n in range(5)]
    assert out.send(events).retry == []

    client = Elasticsearch(es.url, api_key=api_key(es))
    assert client.info()["version"]["number"].startswith("8.")
    assert client.indices.get_data_stream(name=STREAM)["data_streams"][0]["name"] == STREAM
    client.indices.refresh(index=STREAM)
    assert client.count(index=STREAM)["count"] == 5

    hits = client.search(index=STREAM, query={"term": {"event.id": "120003"}})["hits"]["hits"]
    assert len(hits) == 1
    hit = hits[0]
    assert hit["_id"] == document_id("asana", "120003")
    assert hit["_index"].startswith(f".ds-{STREAM}-")
    doc = hit["_source"]
    assert doc["@timestamp"] == events[3]["timestamp"]
    assert doc["event"]["id"] == "120003"
    assert doc["event"]["kind"] == "event"
    assert doc["event"]["dataset"] == "asana.audit"
    assert doc["event"]["action"] == "user_login_succeeded"
    assert doc["event"]["outcome"] == "success"
    assert json.loads(doc["event"]["original"]) == events[3]["raw"]
    assert doc["user"] == {"id": "1111", "name": "Greg Sanchez", "email": "greg@example.com",
                           "target": {"id": "1111", "name": "Greg Sanchez", "email": "greg@example.com"}}
    assert doc["source"] == {"ip": "192.0.2.1"}
    assert doc["user_agent"] == {"original": "Mozilla/5.0"}
    assert doc["observer"] == {"vendor": "Asana", "product": "Asana"}
    assert doc["related"]["ip"] == ["192.0.2.1"]
    assert "greg@example.com" in doc["related"]["user"]
    assert doc["ecs"]["version"].startswith("8.")
    assert doc["asana"]["actor"]["gid"] == "1111"
    assert doc["labels"] == {"forwarder_source": "asana-main"}

    by_id = client.get(index=STREAM, id=document_id("asana", "120000"))
    assert by_id["_source"]["event"]["id"] == "120000"


def test_requests_are_gzip_ndjson_create_actions_with_the_api_key(es: FakeElasticsearch, tmp_path: Path) -> None:
    out = make_output(es, tmp_path, api_key=api_key(es), pipeline="audit-enrich")
    es.pipelines.add("audit-enrich")
    assert out.send([asana_event(1)]).rejected == {}
    (bulk,) = es.calls("/_bulk$", "POST")
    assert bulk.headers["content-encoding"] == "gzip"
    assert bulk.headers["content-type"] == "application/x-ndjson"
    assert bulk.headers["authorization"] == f"ApiKey {api_key(es)}"
    assert bulk.arg("pipeline") == "audit-enrich"
    action, doc, end = bulk.body.split(b"\n")
    assert end == b""
    assert json.loads(action) == {"create": {"_index": STREAM, "_id": document_id("asana", "120001")}}
    assert json.loads(doc)["event"]["id"] == "120001"


def test_basic_auth_and_a_static_plain_index(es: FakeElasticsearch, tmp_path: Path) -> None:
    out = make_output(es, tmp_path, index="audit-events", username="forwarder", password="pa55word-long", gzip=False)
    assert "does not exist yet" in out.check_connection()
    assert out.send([asana_event(1), asana_event(2)]).rejected == {}
    assert es.count("audit-events") == 2
    assert not es.indices["audit-events"].data_stream
    assert "index audit-events exists" in out.check_connection()


def test_the_index_template_sends_each_vendor_to_its_own_data_stream(es: FakeElasticsearch, tmp_path: Path) -> None:
    out = make_output(es, tmp_path, api_key=api_key(es), index="logs-{dataset}-{source}")
    incydr = asana_event(1)
    incydr["source"] = {"name": "Incydr EU", "type": "incydr", "vendor": "Code42", "product": "Incydr"}
    assert out.send([asana_event(1), incydr]).rejected == {}
    assert es.count("logs-asana.audit-asana_main") == 1
    assert es.count("logs-incydr.audit-incydr_eu") == 1
    doc = next(iter(es.documents("logs-incydr.audit-incydr_eu").values()))
    assert doc["event"]["dataset"] == "incydr.audit"
    assert "incydr" in doc and "asana" not in doc


def test_index_option_defaults_to_a_data_stream_per_dataset_and_is_checked(tmp_path: Path) -> None:
    jsonschema.validate({"url": "http://x"}, ElasticBulk.options_schema)
    assert apply_defaults(ElasticBulk.options_schema, {"url": "http://x"})["index"] == "logs-{dataset}-default"
    for bad in ("Logs-Upper", "_hidden", "logs-{tenant}-default", "logs-{vendor", "a b"):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({"url": "http://x", "index": bad}, ElasticBulk.options_schema)
    for good in ("logs-{vendor}.audit-default", "{source}-audit", "audit+2026", "logs-{dataset}-{source_type}"):
        jsonschema.validate({"url": "http://x", "index": good}, ElasticBulk.options_schema)
    with pytest.raises(jsonschema.ValidationError, match="'password' is a dependency of 'username'"):
        jsonschema.validate({"url": "http://x", "index": "a", "username": "u"}, ElasticBulk.options_schema)
    with FakeElasticsearch() as fake, pytest.raises(OutputError, match="unknown placeholders"):
        ElasticBulk(ComponentConfig(name="e", type="elastic_bulk", options=apply_defaults(
            ElasticBulk.options_schema, {"url": fake.url, "index": "logs-{tenant}-default"})),
            Context(name="e", state_dir=str(tmp_path), logger=logging.getLogger("t"), metrics=Metrics()))


# --------------------------------------------------------------------------- item verdicts


def test_one_bad_document_is_dead_lettered_and_the_rest_delivered(es: FakeElasticsearch, tmp_path: Path) -> None:
    out = make_output(es, tmp_path, api_key=api_key(es))
    events = [asana_event(n, workspace="w1") for n in range(10)]
    events[4]["raw"]["workspace"] = {"gid": "w1"}  # the field was a string in every earlier document
    result = out.send(events)
    assert result.retry == []
    assert list(result.rejected) == [4]
    assert "400 document_parsing_exception" in result.rejected[4]
    assert "[asana.workspace]" in result.rejected[4]
    assert es.count(STREAM) == 9
    assert document_id("asana", events[4]["id"]) not in es.documents(STREAM)
    assert statuses(out) == {"201": 9, "400": 1}


def test_item_429s_end_in_complete_delivery(es: FakeElasticsearch, tmp_path: Path) -> None:
    out = make_output(es, tmp_path, api_key=api_key(es))
    es.reject_items(6, status=429)
    es.reject_items(2, status=503)
    events = [asana_event(n) for n in range(20)]
    result = out.send(events)
    assert result.retry == [] and result.rejected == {}
    assert es.count(STREAM) == 20
    assert statuses(out) == {"201": 20, "429": 6, "503": 2}
    bulks = es.calls("/_bulk$")
    assert len(bulks) == 2
    assert bulks[1].body.count(b"\n") == 2 * 8  # only the refused items went again


def test_items_still_refused_go_back_to_the_core_and_then_arrive(es: FakeElasticsearch, tmp_path: Path) -> None:
    out = make_output(es, tmp_path, api_key=api_key(es), item_retry_rounds=0)
    es.reject_items(3)
    events = [asana_event(n) for n in range(6)]
    result = out.send(events)
    assert result.retry == [0, 1, 2] and result.rejected == {}
    assert result.retry_after is not None and result.retry_after > 0
    again = out.send([events[i] for i in result.retry])
    assert again.retry == [] and again.rejected == {}
    assert es.count(STREAM) == 6


def test_replaying_a_batch_creates_no_duplicates(es: FakeElasticsearch, tmp_path: Path) -> None:
    events = [asana_event(n) for n in range(8)]
    first = make_output(es, tmp_path, api_key=api_key(es))
    assert first.send(events[:5]).retry == []
    # A crash before the checkpoint: a new process sends the whole page again.
    second = make_output(es, tmp_path, api_key=api_key(es))
    result = second.send(events)
    assert result.retry == [] and result.rejected == {}
    assert es.count(STREAM) == 8
    assert statuses(second) == {"409": 5, "201": 3}


# --------------------------------------------------------------------------- whole-request answers


def test_413_halves_the_request_until_it_fits(tmp_path: Path) -> None:
    with FakeElasticsearch(max_content_length=6_000) as fake:
        out = make_output(fake, tmp_path)
        events = [asana_event(n) for n in range(12)]
        events[7]["raw"]["details"] = {"note": "x" * 7_000}  # can never fit
        result = out.send(events)
        assert result.retry == []
        assert list(result.rejected) == [7]
        assert "413" in result.rejected[7] and "http.max_content_length" in result.rejected[7]
        assert fake.count(STREAM) == 11
        sizes = [len(r.body) for r in fake.calls("/_bulk$")]
        assert max(sizes) > 6_000 and sizes[0] > sizes[1]


def test_whole_request_429_with_nothing_accepted_is_a_retryable_error(es: FakeElasticsearch, tmp_path: Path) -> None:
    out = make_output(es, tmp_path, api_key=api_key(es))
    es.reject_requests(1, status=429, retry_after="1")
    with pytest.raises(OutputError) as caught:
        out.send([asana_event(1)])
    assert not caught.value.pause
    assert caught.value.retry_after == 1.0
    assert "es_rejected_execution_exception" in str(caught.value)
    assert out.send([asana_event(1)]).retry == []
    assert es.count(STREAM) == 1


def test_a_failure_after_some_requests_hands_back_only_the_rest(es: FakeElasticsearch, tmp_path: Path) -> None:
    out = make_output(es, tmp_path, api_key=api_key(es), batch_max_events=3)
    events = [asana_event(n) for n in range(7)]
    es.reject_requests(1, status=503, retry_after="0", after=1)
    result = out.send(events)
    assert result.retry == [3, 4, 5, 6]
    assert result.retry_after == 0.0
    assert es.count(STREAM) == 3


def test_a_proxy_error_page_instead_of_a_bulk_answer_is_retried(es: FakeElasticsearch, tmp_path: Path) -> None:
    out = make_output(es, tmp_path, api_key=api_key(es))
    es.fault("html200", path="_bulk")
    with pytest.raises(OutputError, match="not a bulk response") as caught:
        out.send([asana_event(1)])
    assert not caught.value.pause
    assert out.send([asana_event(1)]).retry == []
    assert es.count(STREAM) == 1


def test_a_timeout_whose_request_was_applied_is_resent_without_duplicates(
        es: FakeElasticsearch, tmp_path: Path) -> None:
    out = make_output(es, tmp_path, api_key=api_key(es), timeout=0.3)
    events = [asana_event(n) for n in range(4)]
    es.fault("slow", path="_bulk", delay=0.8)
    with pytest.raises(OutputError, match="timed out"):
        out.send(events)
    assert out.send(events).retry == []
    assert es.wait_for_bulk_requests(2)  # the slow first request may still be in the fake
    assert es.count(STREAM) == 4


def test_connection_refused_is_a_retryable_error(tmp_path: Path) -> None:
    fake = FakeElasticsearch().start()
    out = make_output(fake, tmp_path)
    fake.stop()
    with pytest.raises(OutputError) as caught:
        out.send([asana_event(1)])
    assert not caught.value.pause
    assert "connection refused" in str(caught.value)


def test_https_needs_the_private_ca_in_ca_file(tmp_path: Path, pki: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(pki.other_ca))  # must not override ca_file
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    fake = FakeElasticsearch()
    fake.ssl_context = context
    with fake:
        assert fake.url.startswith("https://")
        with pytest.raises(OutputError, match="TLS error") as caught:
            make_output(fake, tmp_path).send([asana_event(1)])
        assert not caught.value.pause
        with pytest.raises(OutputError, match="TLS error"):
            make_output(fake, tmp_path, ca_file=str(pki.other_ca)).send([asana_event(1)])
        assert make_output(fake, tmp_path, ca_file=str(pki.ca)).send([asana_event(1)]).rejected == {}
        assert fake.count(STREAM) == 1


# --------------------------------------------------------------------------- credentials


def test_wrong_api_key_pauses_with_a_clear_message_and_no_secret(es: FakeElasticsearch, tmp_path: Path) -> None:
    import base64

    wrong = base64.b64encode(f"{KEY_ID}:not-the-key-at-all".encode()).decode()
    out = make_output(es, tmp_path, api_key=wrong)
    with pytest.raises(OutputError) as caught:
        out.send([asana_event(1)])
    message = str(caught.value)
    assert caught.value.pause
    assert "refused the credentials" in message and "401 security_exception" in message
    assert "api_key" in message and "nothing was dropped" in message
    assert wrong not in message and "not-the-key-at-all" not in message
    assert es.count() == 0
    with pytest.raises(OutputError, match="refused the credentials") as check:
        out.check_connection()
    assert check.value.pause


def test_wrong_password_pauses_too(es: FakeElasticsearch, tmp_path: Path) -> None:
    out = make_output(es, tmp_path, username="forwarder", password="wrong-password")
    with pytest.raises(OutputError) as caught:
        out.send([asana_event(1)])
    assert caught.value.pause
    assert "unable to authenticate user [forwarder]" in str(caught.value)
    assert "wrong-password" not in str(caught.value)


def test_item_403_on_the_index_pauses(es: FakeElasticsearch, tmp_path: Path) -> None:
    es.forbid("logs-asana.*")
    out = make_output(es, tmp_path, api_key=api_key(es))
    with pytest.raises(OutputError) as caught:
        out.send([asana_event(1)])
    assert caught.value.pause
    assert "create_doc" in str(caught.value)


# --------------------------------------------------------------------------- check --connect


def test_check_connection_reports_version_and_target(es: FakeElasticsearch, tmp_path: Path) -> None:
    out = make_output(es, tmp_path, api_key=api_key(es), index=STREAM)
    first = out.check_connection()
    assert "Elasticsearch 8.15.3" in first
    assert "built-in logs-*-* index template creates it" in first
    out.send([asana_event(1)])
    assert f"data stream {STREAM} exists" in out.check_connection()


def test_check_connection_refuses_a_server_that_is_not_elasticsearch(tmp_path: Path) -> None:
    with FakeServer() as other:
        other.route("GET", "/", lambda r: Response(body={"version": {"number": "2.11.0", "distribution": "opensearch"}}))
        out = make_output(other, tmp_path)
        with pytest.raises(OutputError, match="is not Elasticsearch"):
            out.check_connection()


def test_a_batch_encoded_in_a_worker_is_sent_with_the_bodies_compressed_there(
        es: FakeElasticsearch, tmp_path: Path, compress_here: CompressHere) -> None:
    out = make_output(es, tmp_path, api_key=api_key(es), batch_max_events=3)
    events = [asana_event(n) for n in range(7)]
    batch = from_a_worker(out, events)
    assert len(batch.bodies) == 3
    compress_here.forbid()
    es.reject_requests(1, status=503, retry_after="0", after=1)
    result = out.send_encoded(batch)
    assert result.retry == [3, 4, 5, 6] and es.count(STREAM) == 3
    compress_here.allow()  # the retry is a sub-batch, re-indexed: its requests are built here, from its own parts
    assert out.send_encoded(batch.take(result.retry)).retry == []
    assert es.count(STREAM) == 7
    sent = [json.loads(line)["create"]["_id"] for call in es.calls("/_bulk$", "POST")
            for line in call.body.split(b"\n")[0::2] if line]
    assert sorted(set(sent)) == sorted(document_id("asana", str(120000 + n)) for n in range(7))
