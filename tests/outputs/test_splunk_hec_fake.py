"""The HEC fake answers as Splunk does: these pin its protocol so the output's tests mean something."""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.fakes.splunk_hec import DEFAULT_TOKEN, SplunkHecFake, TokenConfig

ACK_TOKEN = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
CHANNEL = "0aeeac95-ac74-4aa9-b30d-6c4c0ac581ba"
AUTH = {"Authorization": f"Splunk {DEFAULT_TOKEN}"}


@pytest.fixture
def hec() -> Iterator[SplunkHecFake]:
    with SplunkHecFake(tokens={
        DEFAULT_TOKEN: TokenConfig(indexes=frozenset({"main", "audit"})),
        ACK_TOKEN: TokenConfig(ack=True),
        "disabled-token-0001": TokenConfig(disabled=True),
    }) as fake:
        yield fake  # type: ignore[misc]


def post(fake: SplunkHecFake, body: bytes | str, headers: dict[str, str] | None = None,
         path: str = "/services/collector/event") -> tuple[int, dict[str, Any]]:
    resp = requests.post(fake.url + path, data=body, headers=AUTH if headers is None else headers, timeout=5)
    return resp.status_code, resp.json()


def ev(n: int, **extra: Any) -> str:
    return json.dumps({"event": {"n": n}, "fields": {"event_id": f"e{n}"}, **extra})


@pytest.mark.parametrize("headers, status, code", [
    ({}, 401, 2),
    ({"Authorization": "Bearer x"}, 401, 3),
    ({"Authorization": "Splunk"}, 401, 3),
    ({"Authorization": "Splunk not-a-token"}, 403, 4),
    ({"Authorization": "Splunk disabled-token-0001"}, 403, 1),
])
def test_token_errors(hec: SplunkHecFake, headers: dict[str, str], status: int, code: int) -> None:
    got_status, body = post(hec, ev(1), headers)
    assert (got_status, body["code"]) == (status, code)
    assert hec.indexed_count == 0


def test_basic_auth_with_the_token_as_password(hec: SplunkHecFake) -> None:
    resp = requests.post(hec.url + "/services/collector/event", data=ev(1), auth=("x", DEFAULT_TOKEN), timeout=5)
    assert resp.json() == {"text": "Success", "code": 0}


def test_concatenated_and_gzip_bodies_are_indexed_in_order(hec: SplunkHecFake) -> None:
    body = (ev(1) + ev(2) + "\n" + ev(3)).encode()
    assert post(hec, gzip.compress(body), {**AUTH, "Content-Encoding": "gzip"}) == (200, {"text": "Success", "code": 0})
    assert hec.event_ids == ["e1", "e2", "e3"]
    assert hec.events[0]["index"] == "main"  # the token's default index


@pytest.mark.parametrize("bad, code, text", [
    ('{"fields": {"event_id": "x"}}', 12, "Event field is required"),
    ('{"event": ""}', 13, "Event field cannot be blank"),
    ('{"event": null}', 13, "Event field cannot be blank"),
    ('{"event": "x", "fields": {"a": {"b": 1}}}', 15, "Error in handling indexed fields"),
    ('{"event": "x", "fields": {"a": [["b"]]}}', 15, "Error in handling indexed fields"),
    ('{"event": "x", "index": "secret"}', 7, "Incorrect index"),
    ('{"event": {"v": NaN}}', 6, "Invalid data format"),
    ('{"event": {"n": ', 6, "Invalid data format"),
])
def test_a_bad_event_stops_the_request_after_indexing_the_ones_before(hec: SplunkHecFake, bad: str, code: int,
                                                                      text: str) -> None:
    status, body = post(hec, ev(0) + ev(1) + bad + ev(3))
    assert (status, body) == (400, {"text": text, "code": code, "invalid-event-number": 2})
    assert hec.event_ids == ["e0", "e1"]


def test_fields_may_hold_strings_and_lists_of_strings(hec: SplunkHecFake) -> None:
    assert post(hec, '{"event": "x", "fields": {"a": "1", "b": ["2", "3"]}}')[0] == 200


def test_empty_body_is_no_data(hec: SplunkHecFake) -> None:
    assert post(hec, "") == (400, {"text": "No data", "code": 5})


def test_busy_answers_503_code_9_then_recovers(hec: SplunkHecFake) -> None:
    hec.busy(1, retry_after="2")
    resp = requests.post(hec.url + "/services/collector/event", data=ev(1), headers=AUTH, timeout=5)
    assert (resp.status_code, resp.json()["code"], resp.headers["Retry-After"]) == (503, 9, "2")
    assert post(hec, ev(1))[0] == 200


def test_ack_channel_ids_and_status(hec: SplunkHecFake) -> None:
    auth = {"Authorization": f"Splunk {ACK_TOKEN}"}
    assert post(hec, ev(1), auth) == (400, {"text": "Data channel is missing", "code": 10})
    assert post(hec, ev(1), {**auth, "X-Splunk-Request-Channel": "nope"})[1]["code"] == 11
    with_channel = {**auth, "X-Splunk-Request-Channel": CHANNEL}
    assert post(hec, ev(1), with_channel) == (200, {"text": "Success", "code": 0, "ackId": 0})
    hec.lose_acks(1)
    assert post(hec, ev(2), with_channel)[1]["ackId"] == 1
    assert post(hec, ev(3), with_channel)[1]["ackId"] == 2

    ack_path = f"/services/collector/ack?channel={CHANNEL}"
    status, body = post(hec, json.dumps({"acks": [0, 1, 2, 7]}), auth, ack_path)
    assert (status, body) == (200, {"acks": {"0": True, "1": False, "2": True, "7": False}})
    # A true ack is forgotten once reported; a lost one stays false forever.
    assert post(hec, json.dumps({"acks": [0, 1]}), auth, ack_path)[1] == {"acks": {"0": False, "1": False}}
    assert hec.event_ids == ["e1", "e3"]
    assert post(hec, json.dumps({"acks": [0]}), AUTH, ack_path) == (400, {"text": "ACK is disabled", "code": 14})


def test_health(hec: SplunkHecFake) -> None:
    def health(headers: dict[str, str] | None = None) -> tuple[int, int]:
        resp = requests.get(hec.url + "/services/collector/health", headers=headers or {}, timeout=5)
        return resp.status_code, resp.json()["code"]

    assert health() == (200, 17)
    assert health(AUTH) == (200, 17)
    assert health({"Authorization": "Splunk unknown-token"}) == (400, 21)
    assert health({"Authorization": "Splunk disabled-token-0001"}) == (400, 22)
    hec.busy(1)
    assert health() == (503, 18)


def test_standalone_process_counts_without_keeping_events(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-m", "tests.fakes.splunk_hec", "--port", "0", "--ready-file", str(ready)],
                            cwd=Path(__file__).resolve().parents[2], env={**os.environ})
    try:
        deadline_checks = 0
        while not ready.exists():
            deadline_checks += 1
            assert proc.poll() is None, "the fake exited"
            assert deadline_checks < 200, "the fake did not become ready"
            try:
                proc.wait(timeout=0.05)
            except subprocess.TimeoutExpired:
                pass
        url = ready.read_text()
        envelope = '{"time":1.5,"host":"h","fields":{"event_id":"e%d"},"event":{"event_id":"inner"}}'
        lines = "\n".join(envelope % n for n in range(3, 6))
        for body in (ev(1) + ev(2), lines):  # decoded, then skimmed
            resp = requests.post(url + "/services/collector/event", data=body, headers=AUTH, timeout=5)
            assert resp.json()["code"] == 0
        resp = requests.post(url + "/services/collector/event", data='{"time":1,"event":""}', headers=AUTH, timeout=5)
        assert resp.json()["code"] == 13
        stats = requests.get(url + "/_fake/stats", timeout=5).json()
        assert stats == {"indexed": 5, "distinct_ids": 5, "requests": 3}
    finally:
        proc.terminate()
        proc.wait(timeout=10)
