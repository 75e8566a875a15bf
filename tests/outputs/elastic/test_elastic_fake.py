"""The Elasticsearch fake answers as an 8.x cluster does, so tests against it mean something."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from elasticsearch import ApiError, Elasticsearch

from tests.fakes.elastic import FakeElasticsearch

NDJSON = {"Content-Type": "application/x-ndjson"}


def bulk(fake: FakeElasticsearch, body: bytes, path: str = "/_bulk", **headers: str) -> requests.Response:
    return requests.post(fake.url + path, data=body, headers={**NDJSON, **headers}, timeout=5)


def test_data_stream_rules_and_item_errors_in_request_order() -> None:
    with FakeElasticsearch() as fake:
        body = b"".join([
            b'{"create":{"_index":"logs-x.audit-default","_id":"1"}}\n{"@timestamp":"2026-01-01T00:00:00Z"}\n',
            b'{"index":{"_index":"logs-x.audit-default","_id":"2"}}\n{"@timestamp":"2026-01-01T00:00:00Z"}\n',
            b'{"create":{"_index":"logs-x.audit-default","_id":"3"}}\n{"no":"timestamp"}\n',
            b'{"create":{"_index":"logs-x.audit-default","_id":"1"}}\n{"@timestamp":"2026-01-01T00:00:00Z"}\n',
            b'{"create":{"_index":"Upper","_id":"4"}}\n{"a":1}\n',
        ])
        resp = bulk(fake, body)
        assert resp.status_code == 200 and resp.headers["X-elastic-product"] == "Elasticsearch"
        answer = resp.json()
        assert answer["errors"] is True
        items = [next(iter(i.items())) for i in answer["items"]]
        assert [(op, r["status"]) for op, r in items] == [
            ("create", 201), ("index", 400), ("create", 400), ("create", 409), ("create", 400)]
        assert "op_type of create" in items[1][1]["error"]["reason"]
        assert "[@timestamp] is missing" in items[2][1]["error"]["reason"]
        assert items[3][1]["error"]["type"] == "version_conflict_engine_exception"
        assert items[4][1]["error"]["type"] == "invalid_index_name_exception"
        assert items[0][1]["_index"].startswith(".ds-logs-x.audit-default-")


def test_request_level_answers() -> None:
    with FakeElasticsearch(max_content_length=100) as fake:
        line = b'{"create":{"_index":"a","_id":"1"}}\n{"a":1}\n'
        assert bulk(fake, line.rstrip(b"\n")).json()["error"]["reason"].startswith("The bulk request must be terminated")
        assert bulk(fake, line, **{"Content-Type": "text/plain"}).status_code == 406
        assert bulk(fake, line * 5).status_code == 413
        fake.reject_requests(1, status=429, retry_after="3")
        busy = bulk(fake, line)
        assert busy.status_code == 429 and busy.headers["Retry-After"] == "3"
        assert busy.json()["error"]["type"] == "es_rejected_execution_exception"
        filtered = bulk(fake, line, path="/_bulk?filter_path=errors,items.*.status")
        assert filtered.json() == {"errors": False, "items": [{"create": {"status": 201}}]}


def test_auth_and_rest_compatibility_like_a_secured_8x_node() -> None:
    with FakeElasticsearch(users={"elastic": "changeme"}) as fake:
        missing = requests.get(fake.url + "/", timeout=5)
        assert missing.status_code == 401 and "WWW-Authenticate" in missing.headers
        assert missing.json()["error"]["type"] == "security_exception"
        assert Elasticsearch(fake.url, basic_auth=("elastic", "changeme")).info()["tagline"] == "You Know, for Search"
        with pytest.raises(ApiError) as wrong:
            Elasticsearch(fake.url, basic_auth=("elastic", "nope")).info()
        assert wrong.value.meta.status == 401
        nine = requests.get(fake.url + "/", auth=("elastic", "changeme"), timeout=5,
                            headers={"Accept": "application/vnd.elasticsearch+json; compatible-with=9"})
        assert nine.status_code == 400
        assert nine.json()["error"]["type"] == "media_type_header_exception"


def test_runs_standalone_and_reports_stats(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-m", "tests.fakes.elastic", "--port", "0", "--ready-file", str(ready),
                             "--bench"], cwd=Path(__file__).resolve().parents[3])
    try:
        deadline = time.monotonic() + 20
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the fake did not start"
            time.sleep(0.02)
        url = ready.read_text()
        body = b'{"create":{"_index":"logs-a.audit-default","_id":"x1"}}\n{"@timestamp":"2026-01-01T00:00:00Z"}\n'
        first = requests.post(url + "/_bulk", data=body, headers=NDJSON, timeout=5).json()
        again = requests.post(url + "/_bulk", data=body, headers=NDJSON, timeout=5).json()
        assert [i["create"]["status"] for i in first["items"] + again["items"]] == [201, 409]
        stats = requests.get(url + "/_fake/stats", timeout=5).json()
        assert stats == {"bulk_requests": 2, "indices": {"logs-a.audit-default": 1}}
    finally:
        proc.terminate()
        proc.wait(timeout=10)
