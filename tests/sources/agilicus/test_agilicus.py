"""The ``agilicus`` and ``agilicus_auth`` sources against a local Agilicus API that answers as the real one.

Each test reads like a promise of the contract: a backfill delivers exactly the API's records,
a second poll nothing, late records once, faults end in complete delivery without duplicates,
an instant too dense to read is reported instead of looped on, a renewed token file is picked up.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from forwarder_core.config.schema import load_schema
from forwarder_core.errors import AuthError, SourceError
from forwarder_core.metrics import Metrics
from forwarder_core.plugin_api import ComponentConfig, Context, apply_defaults, canonical_json, content_id
from forwarder_core.times import iso_us as iso_from_us
from forwarder_core.times import parse_us as us_from_text
from forwarder_core.times import to_us as us_from_datetime
from siem_forwarder_plugins.sources.agilicus.source import AgilicusAudits, AgilicusAuthAudits, _AgilicusSource
from tests.fakes.agilicus import DEFAULT_TOKEN, AgilicusFake, to_us
from tests.helpers import file_output, read_jsonl, run_forwarder

BASE = datetime(2024, 1, 1, tzinfo=timezone.utc)
SPAN = 3600.0
NOW = BASE + timedelta(seconds=SPAN + 600)  # the tests' clock: ten minutes after the newest record
KINDS = [AgilicusAudits, AgilicusAuthAudits]
KIND_IDS = ["agilicus", "agilicus_auth"]


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def fake() -> Iterator[AgilicusFake]:
    with AgilicusFake(events=1500, base_time=BASE, span=SPAN, burst=900) as server:
        yield server  # type: ignore[misc]


def make_source(cls: type[_AgilicusSource], fake: AgilicusFake, *, metrics: Metrics | None = None,
                now: datetime = NOW, **opts: Any) -> _AgilicusSource:
    options = {"base_url": fake.url, "settle_delay": 0, "lookback": 300, **opts}
    if "token" not in options and "token_file" not in options:
        options["token"] = DEFAULT_TOKEN
    config = ComponentConfig(name=f"{cls.type_name}-test", type=cls.type_name,
                             options=apply_defaults(cls.options_schema, options), start_time=BASE)
    context = Context(name=config.name, state_dir="/nonexistent", logger=logging.getLogger(f"test.{config.name}"),
                      metrics=metrics or Metrics())
    source = cls(config, context)
    source.http.backoff_factor = 0.01  # keep the client's retry waits short
    set_clock(source, now)
    return source


def set_clock(source: _AgilicusSource, now: datetime) -> None:
    source.clock = lambda: now.timestamp()


def drain(source: _AgilicusSource, cursor: Any = None) -> tuple[list[dict[str, Any]], Any]:
    """One poll to the end: the records delivered and the last cursor, round-tripped through JSON
    as the checkpoint store does."""
    events: list[dict[str, Any]] = []
    for page in source.poll(cursor):
        events.extend(page.events)
        cursor = json.loads(json.dumps(page.cursor))
    return events, cursor


def keys(records: list[dict[str, Any]]) -> Counter[str]:
    return Counter(canonical_json(r) for r in records)


def assert_exactly(delivered: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    got, want = keys(delivered), keys(expected)
    assert sum(got.values()) == sum(want.values()), (sum(got.values()), sum(want.values()))
    assert not (got - want), "delivered records the API does not have (or twice)"
    assert not (want - got), "records of the API were not delivered"


def window_us(request: Any) -> int:
    return us_from_text(request.arg("dt_to")) - us_from_text(request.arg("dt_from"))


# --------------------------------------------------------------------------- the fake speaks the API


def test_fake_answers_as_the_vendor_documents(fake: AgilicusFake) -> None:
    import requests

    auth = {"Authorization": f"Bearer {DEFAULT_TOKEN}"}
    body = requests.get(f"{fake.url}/v1/audits", headers=auth, timeout=5,
                        params={"limit": 5, "dt_from": "2024-01-01T00:10:00Z", "dt_to": "2024-01-01T00:30:00Z"}).json()
    assert set(body) == {"limit", "audits"} and body["limit"] == 5 and len(body["audits"]) == 5
    times = [us_from_text(r["time"]) for r in body["audits"]]
    assert times == sorted(times, reverse=True), "newest first, as the agilicus CLI's backwards paging assumes"
    assert all(to_us(BASE + timedelta(minutes=10)) <= t < to_us(BASE + timedelta(minutes=30)) for t in times)
    assert "id" not in body["audits"][0]

    assert requests.get(f"{fake.url}/v1/audits", headers=auth, params={"limit": 501}, timeout=5).status_code == 400
    assert requests.get(f"{fake.url}/v1/audits", params={"limit": 5}, timeout=5).status_code == 401
    assert requests.get(f"{fake.url}/v1/auth_audits", headers={"Authorization": "Bearer stale"},
                        timeout=5).status_code == 401

    # dt_from inclusive, dt_to exclusive, on an instant shared by several records
    instant, count = Counter(fake.streams["auth_audits"].times).most_common(1)[0]
    assert count > 1
    at = iso_from_us(instant)
    inside = requests.get(f"{fake.url}/v1/auth_audits", headers=auth, timeout=5,
                          params={"dt_from": at, "dt_to": iso_from_us(instant + 1)}).json()["auth_audits"]
    assert len(inside) == count
    before = requests.get(f"{fake.url}/v1/auth_audits", headers=auth, timeout=5,
                          params={"dt_from": iso_from_us(instant - 1_000_000), "dt_to": at}).json()["auth_audits"]
    assert all(us_from_text(r["time"]) < instant for r in before)

    denied = requests.get(f"{fake.url}/v1/auth_audits", headers=auth, timeout=5,
                          params={"result": "Denied", "org_id": "o2"}).json()["auth_audits"]
    assert denied and all(r["result"] == "Denied" and r["org_id"] == "o2" for r in denied)


def test_fake_serves_repeated_queries_from_its_cache_until_data_changes(fake: AgilicusFake) -> None:
    import requests

    auth = {"Authorization": f"Bearer {DEFAULT_TOKEN}"}
    query = {"limit": 50, "dt_from": "2024-01-01T00:00:00Z", "dt_to": "2024-01-01T00:20:00Z"}
    first = requests.get(f"{fake.url}/v1/audits", headers=auth, params=query, timeout=5).content
    assert len(fake._cache) == 1
    assert requests.get(f"{fake.url}/v1/audits", headers=auth, params=query, timeout=5).content == first
    assert len(fake._cache) == 1
    added = fake.add("audits", BASE + timedelta(minutes=19, seconds=59), count=1)
    assert not fake._cache
    newest = requests.get(f"{fake.url}/v1/audits", headers=auth, params=query, timeout=5).json()["audits"][0]
    assert newest == added[0]


def test_fake_data_is_deterministic_and_shares_timestamps() -> None:
    a = AgilicusFake(events=300, base_time=BASE, seed=3)
    b = AgilicusFake(events=300, base_time=BASE, seed=3)
    assert a.all("audits") == b.all("audits") and a.all("auth_audits") == b.all("auth_audits")
    shared = Counter(a.streams["audits"].times)
    assert sum(n for n in shared.values() if n > 1) > 50, "many records share one timestamp"


# --------------------------------------------------------------------------- raw schemas


@pytest.mark.parametrize("cls", KINDS, ids=KIND_IDS)
def test_every_fake_record_fits_the_raw_schema_and_drift_does_not(cls: type[_AgilicusSource], fake: AgilicusFake) -> None:
    schema = load_schema(cls.event_schema or "")
    validator = jsonschema.Draft202012Validator(schema)
    records = fake.all(cls.list_key)
    assert all(validator.is_valid(r) for r in records)

    sample = dict(records[0])
    assert validator.is_valid({**sample, "new_field_from_the_vendor": {"x": 1}}), "extra fields are allowed"
    for drifted in ({**sample, "time": 1704067200}, {k: v for k, v in sample.items() if k != "time"},
                    {**sample, "time": "yesterday"}, {**sample, "org_id": 17}, {**sample, "user_id": ["u1"]}):
        assert not validator.is_valid(drifted), drifted


@pytest.mark.parametrize("cls", KINDS, ids=KIND_IDS)
def test_normalized_events_fit_the_event_schema(cls: type[_AgilicusSource], fake: AgilicusFake) -> None:
    source = make_source(cls, fake)
    validator = jsonschema.Draft202012Validator(load_schema("event.schema.json"))
    for raw in fake.all(cls.list_key)[:400]:
        event = source.normalize(raw)
        validator.validate(event)
        assert event["id"] == content_id(raw) and event["raw"] is raw


def test_audit_mapping() -> None:
    raw = {"user_id": "u1", "org_id": "o1", "time": "2024-01-01T00:00:01.123456Z", "action": "DELETE",
           "api_name": "users", "target_resource_type": "users", "target_id": "t1", "target_resource_name": None,
           "source_ip": "192.0.2.3", "description": "deleted user"}
    with AgilicusFake(events=0) as server:
        event = make_source(AgilicusAudits, server).normalize(raw)  # type: ignore[arg-type]
    assert event["timestamp"] == "2024-01-01T00:00:01.123456Z"
    assert event["action"] == "DELETE" and event["type"] == ["deletion"] and event["category"] == ["iam"]
    assert event["actor"] == {"id": "u1", "ip": "192.0.2.3", "type": "user"}
    assert event["target"] == {"id": "t1", "type": "users"}
    assert event["organization"] == {"id": "o1"} and event["message"] == "deleted user"
    assert event["severity"] == 5 and "outcome" not in event
    assert event["source"] == {"name": "agilicus-test", "type": "agilicus", "vendor": "Agilicus", "product": "Audit",
                               "dataset": "agilicus.audit", "splunk_sourcetype": "agilicus:audit",
                               "cef_name": "Agilicus audit event", "severity": 3}


@pytest.mark.parametrize("result,outcome,kind", [
    ("Success", "success", ["start"]), ("Denied", "failure", ["info"]), ("Failure", "failure", ["info"]),
    ("SessionExpired", "failure", ["end"]), ("InProgress", "unknown", ["info"]), ("DoMfa", "unknown", ["info"]),
    ("SomethingNew", "unknown", ["info"]),
])
def test_auth_outcome_comes_from_result(result: str, outcome: str, kind: list[str]) -> None:
    raw = {"user_id": "u1", "org_id": "o1", "org_name": "Org", "time": "2024-01-01T00:00:00+00:00",
           "event_name": "Token", "result": result, "source_ip": "192.0.2.3", "client_id": "my-client",
           "application_name": "wiki", "upstream_user_id": "bob@example.com", "user_agent": "Mozilla/5.0"}
    with AgilicusFake(events=0) as server:
        event = make_source(AgilicusAuthAudits, server).normalize(raw)  # type: ignore[arg-type]
    assert event["outcome"] == outcome and event["type"] == kind and event["category"] == ["authentication"]
    assert event["timestamp"] == "2024-01-01T00:00:00.000Z"
    assert event["actor"] == {"id": "u1", "ip": "192.0.2.3", "email": "bob@example.com", "user_agent": "Mozilla/5.0",
                              "type": "user"}
    assert event["target"] == {"id": "my-client", "type": "application", "name": "wiki"}
    assert event["organization"] == {"id": "o1", "name": "Org"}
    assert event["message"] == f"Token {result} for wiki"


@pytest.mark.parametrize("cls,raw", [
    (AgilicusAudits, {"time": "2024-01-01T00:00:00Z", "action": "GET", "org_id": "o1"}),
    (AgilicusAuthAudits, {"time": "2024-01-01T00:00:00Z", "event": "Token", "result": "Failure", "org_id": "o1"}),
], ids=KIND_IDS)
def test_a_minimal_record_normalizes_without_empty_parts(cls: type[_AgilicusSource], raw: dict[str, Any]) -> None:
    with AgilicusFake(events=0) as server:
        event = make_source(cls, server).normalize(raw)  # type: ignore[arg-type]
    jsonschema.validate(event, load_schema("event.schema.json"))
    assert "actor" not in event and "target" not in event
    assert event["action"] in ("GET", "Token") and event["organization"] == {"id": "o1"}


def test_a_record_that_is_not_an_object_fails_normalize_for_the_quarantine() -> None:
    with AgilicusFake(events=0) as server:
        source = make_source(AgilicusAudits, server)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        source.normalize(["not", "a", "record"])
    with pytest.raises(KeyError):
        source.normalize({"action": "GET"})


def test_options_schema_caps_page_size_at_the_api_limit() -> None:
    validator = jsonschema.Draft202012Validator(AgilicusAudits.options_schema)
    assert validator.is_valid({"token": "t", "page_size": 500})
    assert not validator.is_valid({"token": "t", "page_size": 501})
    missing = [e.message for e in validator.iter_errors({"page_size": 10})]
    assert missing == ["'token' is a required property"]
    # the core reads token_file into token before validating, and keeps the path for re-reads
    assert validator.is_valid({"token": "t", "token_file": "/run/agilicus/token"})
    assert AgilicusAudits.options_schema["properties"]["base_url"]["default"] == "https://api.agilicus.com"
    assert AgilicusAuthAudits.options_schema["properties"]["page_size"]["default"] == 500


# --------------------------------------------------------------------------- windows


@pytest.mark.parametrize("cls", KINDS, ids=KIND_IDS)
@pytest.mark.parametrize("page_size", [500, 60])
def test_backfill_delivers_exactly_the_apis_records(cls: type[_AgilicusSource], page_size: int,
                                                    fake: AgilicusFake) -> None:
    metrics = Metrics()
    source = make_source(cls, fake, metrics=metrics, page_size=page_size)
    delivered, cursor = drain(source)
    assert_exactly(delivered, fake.all(cls.list_key))
    assert metrics.total("agilicus_window_overflow_total") == 0

    answers = fake.calls(source.path)
    assert all(int(r.arg("limit")) <= 500 for r in answers)
    assert min(window_us(r) for r in answers) < 10_000_000, "the burst needed windows split to seconds"
    assert us_from_text(cursor["end"]) == us_from_datetime(NOW)


def test_an_instant_denser_than_page_size_is_read_whole_at_the_api_limit() -> None:
    with AgilicusFake(events=200, base_time=BASE, span=SPAN, dense=300) as server:
        metrics = Metrics()
        source = make_source(AgilicusAudits, server, metrics=metrics, page_size=100)  # type: ignore[arg-type]
        delivered, _ = drain(source)
        assert_exactly(delivered, server.all("audits"))  # type: ignore[attr-defined]
        assert metrics.total("agilicus_window_overflow_total") == 0
        one_instant = [r for r in server.calls("/v1/audits") if window_us(r) == 1]  # type: ignore[attr-defined]
        assert {r.arg("limit") for r in one_instant} >= {"100", "500"}


@pytest.mark.parametrize("cls", KINDS, ids=KIND_IDS)
def test_a_second_poll_delivers_nothing(cls: type[_AgilicusSource], fake: AgilicusFake) -> None:
    # the newest records sit inside the next poll's lookback
    caught_up = datetime.fromtimestamp(fake.newest_us(cls.list_key) / 1e6 + 1, tz=timezone.utc)
    source = make_source(cls, fake, now=caught_up)
    _, cursor = drain(source)
    set_clock(source, caught_up + timedelta(seconds=60))
    before = len(fake.requests)
    again, cursor2 = drain(source, cursor)
    assert again == []
    reread = fake.requests[before]
    assert us_from_text(reread.arg("dt_from")) == us_from_datetime(caught_up - timedelta(seconds=300))
    overlap = [r for r in fake.all(cls.list_key) if us_from_text(r["time"]) >= us_from_text(reread.arg("dt_from"))]
    assert len(overlap) > 50, "the re-read really overlapped delivered records"
    assert us_from_text(cursor2["end"]) > us_from_text(cursor["end"])
    # a restarted forwarder (a new instance) resumes from the committed cursor just the same
    restarted = make_source(cls, fake, now=caught_up + timedelta(seconds=120))
    assert drain(restarted, cursor2)[0] == []


@pytest.mark.parametrize("cls", KINDS, ids=KIND_IDS)
def test_new_and_late_records_are_delivered_once(cls: type[_AgilicusSource], fake: AgilicusFake) -> None:
    source = make_source(cls, fake)
    _, cursor = drain(source)
    key = cls.list_key
    new = fake.add(key, NOW + timedelta(seconds=5), count=3)
    late = fake.add(key, NOW - timedelta(seconds=90), count=4)  # older than the newest delivered, inside lookback
    late_at_edge = fake.add(key, NOW - timedelta(seconds=1), count=2)

    set_clock(source, NOW + timedelta(seconds=30))
    delivered, cursor = drain(source, cursor)
    assert_exactly(delivered, new + late + late_at_edge)

    later = fake.add(key, NOW - timedelta(seconds=20), count=2)  # late again, relative to the second poll
    set_clock(source, NOW + timedelta(seconds=90))
    delivered, cursor = drain(source, cursor)
    assert_exactly(delivered, later)
    set_clock(source, NOW + timedelta(seconds=150))
    assert drain(source, cursor)[0] == []


@pytest.mark.parametrize("cls", KINDS, ids=KIND_IDS)
def test_settle_delay_keeps_the_newest_seconds_for_a_later_poll(cls: type[_AgilicusSource], fake: AgilicusFake) -> None:
    source = make_source(cls, fake, settle_delay=60, lookback=0)
    _, cursor = drain(source)
    assert us_from_text(cursor["end"]) == us_from_datetime(NOW - timedelta(seconds=60))
    recent = fake.add(cls.list_key, NOW - timedelta(seconds=30), count=2)
    assert drain(source, cursor)[0] == [], "inside settle_delay: not read yet"
    set_clock(source, NOW + timedelta(seconds=60))
    assert_exactly(drain(source, cursor)[0], recent)


@pytest.mark.parametrize("cls", KINDS, ids=KIND_IDS)
def test_a_restart_mid_backfill_delivers_every_record_once(cls: type[_AgilicusSource], fake: AgilicusFake) -> None:
    source = make_source(cls, fake, page_size=200)
    delivered: list[dict[str, Any]] = []
    cursor = None
    pages = source.poll(None)
    for _ in range(4):
        page = next(pages)
        delivered.extend(page.events)
        cursor = json.loads(json.dumps(page.cursor))
    pages.close()  # the process stops here; only the committed cursor survives
    rest, _ = drain(make_source(cls, fake, page_size=200), cursor)
    assert_exactly(delivered + rest, fake.all(cls.list_key))


# --------------------------------------------------------------------------- faults


FAULTS = {
    "429": dict(kind="status", status=429, retry_after="0", body={"error": "rate limited"}),
    "500": dict(kind="status", status=500, body={"error": "internal"}),
    "html": dict(kind="html", status=502),
    "html200": dict(kind="html200"),
    "truncated": dict(kind="truncate", body={"limit": 500, "audits": [{"time": "2024-01-01T00:00:00Z"}] * 40}),
    "dropped": dict(kind="drop"),
}


@pytest.mark.parametrize("cls", KINDS, ids=KIND_IDS)
@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_each_fault_ends_in_complete_delivery_without_duplicates(cls: type[_AgilicusSource], fault: str,
                                                                 fake: AgilicusFake) -> None:
    source = make_source(cls, fake, page_size=200)
    pages = source.poll(None)
    first = next(pages)
    fake.fault(path=source.path, count=2, **FAULTS[fault])  # type: ignore[arg-type]
    delivered = list(first.events)
    for page in pages:
        delivered.extend(page.events)
    assert_exactly(delivered, fake.all(cls.list_key))
    assert not fake._faults, "the fault was served"


@pytest.mark.parametrize("cls", KINDS, ids=KIND_IDS)
def test_an_outage_fails_the_poll_and_the_next_resumes_without_loss_or_duplicates(cls: type[_AgilicusSource],
                                                                                  fake: AgilicusFake) -> None:
    source = make_source(cls, fake, page_size=200)
    delivered: list[dict[str, Any]] = []
    cursor = None
    pages = source.poll(None)
    for _ in range(2):
        page = next(pages)
        delivered.extend(page.events)
        cursor = json.loads(json.dumps(page.cursor))
    fake.fault("status", path=source.path, status=503, count=50)
    with pytest.raises(SourceError, match="503"):
        for page in pages:
            delivered.extend(page.events)
            cursor = json.loads(json.dumps(page.cursor))
    fake.clear_faults()
    rest, _ = drain(source, cursor)
    assert_exactly(delivered + rest, fake.all(cls.list_key))


def test_an_answer_without_the_list_is_an_error_not_an_empty_window(fake: AgilicusFake) -> None:
    source = make_source(AgilicusAudits, fake)
    fake.fault("status", status=200, body={"limit": 500, "auth_audits": []}, path="/v1/audits")
    with pytest.raises(SourceError, match="'audits' list"):
        drain(source)


def test_a_record_with_nan_does_not_stop_the_poll(fake: AgilicusFake) -> None:
    caught_up = datetime.fromtimestamp(fake.newest_us("audits") / 1e6 + 1, tz=timezone.utc)
    at = fake.newest_us("audits") - 1000
    odd = {**fake.make_record("audits", at), "risk": float("nan")}
    fake.add_raw("audits", at, odd)  # the fake sends the literal NaN, which Python's json reads
    source = make_source(AgilicusAudits, fake, now=caught_up)
    delivered, cursor = drain(source)
    assert sum(1 for r in delivered if "risk" in r) == 1
    with pytest.raises(ValueError):
        source.normalize(next(r for r in delivered if "risk" in r))  # the pipeline quarantines it
    set_clock(source, caught_up + timedelta(seconds=30))
    assert drain(source, cursor)[0] == [], "and it is not delivered twice"


def test_a_damaged_cursor_is_refused_with_the_way_out(fake: AgilicusFake) -> None:
    for damaged in ({"v": 1, "end": "not a time", "floor": "x"}, {"v": 0}, ["end"],
                    {"v": 1, "end": "2024-01-01T00:00:00Z", "floor": "2024-01-01T00:00:00Z", "seen": {"1": "abc"}}):
        with pytest.raises(SourceError, match="state reset agilicus-test"):
            drain(make_source(AgilicusAudits, fake), damaged)


# --------------------------------------------------------------------------- an instant over the limit


@pytest.mark.parametrize("cls", KINDS, ids=KIND_IDS)
def test_an_instant_over_the_api_limit_is_reported_once_and_does_not_loop(cls: type[_AgilicusSource],
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    with AgilicusFake(events=400, base_time=BASE, span=SPAN, dense=620) as server:
        metrics = Metrics()
        source = make_source(cls, server, metrics=metrics)  # type: ignore[arg-type]
        with caplog.at_level(logging.ERROR):
            delivered, cursor = drain(source)
        assert metrics.get("agilicus_window_overflow_total", source=source.name) == 1
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1 and "share the instant" in errors[0].getMessage()
        dense_at = AgilicusFake._vendor_time(cls.list_key, server.dense_us)  # type: ignore[arg-type]
        assert iso_from_us(dense_at) in errors[0].getMessage()
        expected = server.all(cls.list_key)  # type: ignore[attr-defined]
        assert len(delivered) == len(expected) - (620 - 500)
        assert not keys(delivered) - keys(expected)
        assert len(server.calls(source.path)) < 200  # type: ignore[attr-defined]

        # the instant is inside lookback for the next poll: re-read, nothing new, no second alarm
        caplog.clear()
        set_clock(source, NOW + timedelta(seconds=30))
        with caplog.at_level(logging.ERROR):
            assert drain(source, cursor)[0] == []
        assert metrics.get("agilicus_window_overflow_total", source=source.name) == 1
        assert not [r for r in caplog.records if r.levelno == logging.ERROR]


# --------------------------------------------------------------------------- dedup stays bounded


def test_seen_hashes_stay_inside_lookback(fake: AgilicusFake) -> None:
    source = make_source(AgilicusAudits, fake, lookback=120)
    _, cursor = drain(source)
    floor = us_from_text(cursor["floor"])
    assert floor >= us_from_datetime(NOW - timedelta(seconds=120))
    assert all(int(t) >= floor for t in cursor["seen"])
    recent = [r for r in fake.all("audits") if us_from_text(r["time"]) >= floor]
    assert sum(len(h) for h in cursor["seen"].values()) == len(recent)


def test_a_crowded_lookback_shrinks_instead_of_repeating(fake: AgilicusFake, monkeypatch: pytest.MonkeyPatch,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    import siem_forwarder_plugins.sources.agilicus.source as plugin

    monkeypatch.setattr(plugin, "MAX_SEEN", 40)
    caught_up = datetime.fromtimestamp(fake.newest_us("audits") / 1e6 + 1, tz=timezone.utc)
    source = make_source(AgilicusAudits, fake, now=caught_up, page_size=25)
    with caplog.at_level(logging.WARNING):
        _, cursor = drain(source)
    assert sum(len(h) for h in cursor["seen"].values()) <= 40
    assert any("forgot the" in r.getMessage() for r in caplog.records)
    floor = us_from_text(cursor["floor"])
    assert floor > us_from_datetime(caught_up - timedelta(seconds=300))

    late_kept = fake.add("audits", floor + 1, count=1)
    fake.add("audits", floor - 5_000_000, count=1)  # below the shrunken window: no longer looked for
    set_clock(source, caught_up + timedelta(seconds=30))
    delivered, _ = drain(source, cursor)
    assert_exactly(delivered, late_kept)


# --------------------------------------------------------------------------- auth


def test_a_changed_token_file_is_used_without_a_401(fake: AgilicusFake, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(DEFAULT_TOKEN + "\n")
    source = make_source(AgilicusAudits, fake, token_file=str(token_file))
    _, cursor = drain(source)
    fake.rotate_token("second-token-abcdef")
    token_file.write_text("second-token-abcdef-renewed\n")  # a different size, so the stamp surely changes
    fake.rotate_token("second-token-abcdef-renewed")
    fake.add("audits", NOW + timedelta(seconds=5), count=2)
    set_clock(source, NOW + timedelta(seconds=30))
    before = len(fake.requests)
    assert len(drain(source, cursor)[0]) == 2
    assert all(r.headers["Authorization"] == "Bearer second-token-abcdef-renewed" for r in fake.requests[before:])


def test_a_401_rereads_the_token_file(fake: AgilicusFake, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("token-one-0001")
    source = make_source(AgilicusAuthAudits, fake, token_file=str(token_file))
    fake.rotate_token("token-one-0001")
    _, cursor = drain(source)
    stat = token_file.stat()
    token_file.write_text("token-two-0002")  # same size, same mtime: only the 401 can reveal the change
    os.utime(token_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    fake.rotate_token("token-two-0002")
    added = fake.add("auth_audits", NOW + timedelta(seconds=5), count=3)
    set_clock(source, NOW + timedelta(seconds=30))
    before = len(fake.requests)
    delivered, _ = drain(source, cursor)
    assert_exactly(delivered, added)
    statuses = [r.headers["Authorization"] for r in fake.requests[before:]]
    assert statuses[0] == "Bearer token-one-0001" and statuses[1:] and set(statuses[1:]) == {"Bearer token-two-0002"}


def test_a_refused_token_with_nothing_newer_is_an_auth_error_without_the_token(fake: AgilicusFake,
                                                                               tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("token-that-expired-1234")
    fake.tokens["token-that-expired-1234"] = 0.0  # expired long ago
    with pytest.raises(AuthError) as err:
        drain(make_source(AgilicusAudits, fake, token_file=str(token_file)))
    assert "no newer one" in str(err.value) and "token-that-expired-1234" not in str(err.value)
    with pytest.raises(AuthError, match="token_file"):
        drain(make_source(AgilicusAudits, fake, token="fixed-token-nobody-knows"))


def test_check_connection_reads_one_record_and_reports_a_refused_token(fake: AgilicusFake) -> None:
    source = make_source(AgilicusAudits, fake)
    assert "/v1/audits" in source.check_connection()
    assert fake.calls("/v1/audits")[-1].arg("limit") == "1"
    fake.rotate_token("someone-else-entirely")
    with pytest.raises(AuthError, match="refused the token"):
        source.check_connection()


# --------------------------------------------------------------------------- filters


def test_org_and_vendor_filters_are_sent_and_honoured(fake: AgilicusFake) -> None:
    source = make_source(AgilicusAuthAudits, fake, org_id="o2", result="Denied", upstream_idp="okta")
    delivered, _ = drain(source)
    expected = [r for r in fake.all("auth_audits")
                if r["org_id"] == "o2" and r["result"] == "Denied" and r["upstream_idp"] == "okta"]
    assert expected and keys(delivered) == keys(expected)
    sent = fake.calls("/v1/auth_audits")[0]
    assert (sent.arg("org_id"), sent.arg("result"), sent.arg("upstream_idp")) == ("o2", "Denied", "okta")

    audits = make_source(AgilicusAudits, fake, action="DELETE", target_resource_type="users")
    delivered, _ = drain(audits)
    assert keys(delivered) == keys([r for r in fake.all("audits")
                                    if r["action"] == "DELETE" and r["target_resource_type"] == "users"])


# --------------------------------------------------------------------------- the real process


def test_end_to_end_through_the_cli_with_a_drifted_record_quarantined(tmp_path: Path) -> None:
    now = datetime.now(timezone.utc)
    base = now - timedelta(hours=2)
    with AgilicusFake(events=800, base_time=base, span=3600, burst=600) as server:
        drifted = {**server.make_record("audits", to_us(base + timedelta(minutes=5))), "user_id": 12345}
        server.add_raw("audits", base + timedelta(minutes=5), drifted)
        token_file = tmp_path / "agilicus.token"
        token_file.write_text(DEFAULT_TOKEN + "\n")
        out = tmp_path / "out.jsonl"
        common = {"base_url": server.url, "token_file": str(token_file), "settle_delay": 0}
        config = {
            "sources": [
                {"name": "ag", "type": "agilicus", "start_time": (base - timedelta(minutes=1)).isoformat(),
                 "options": common},
                {"name": "ag-auth", "type": "agilicus_auth", "start_time": (base - timedelta(minutes=1)).isoformat(),
                 "options": {**common, "page_size": 100}},
            ],
            "outputs": [file_output(out)],
        }
        checked = run_forwarder(tmp_path, config, "check", "--connect")
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert server.calls("/v1/audits") and server.calls("/v1/auth_audits")

        done = run_forwarder(tmp_path, config)
        assert done.returncode == 0, done.stderr
        events = read_jsonl(out)
        by_source = Counter(e["source"]["name"] for e in events)
        assert by_source == {"ag": len(server.all("audits")) - 1, "ag-auth": len(server.all("auth_audits"))}
        assert len({e["id"] for e in events}) == len(events)
        quarantined = [json.loads(line) for f in sorted((tmp_path / "state" / "quarantine").glob("*.jsonl"))
                       for line in f.read_text().splitlines()]
        assert [q["raw"] for q in quarantined] == [drifted]
        assert "user_id" in quarantined[0]["reason"]
        assert DEFAULT_TOKEN not in done.stderr

        again = run_forwarder(tmp_path, config)
        assert again.returncode == 0, again.stderr
        assert len(read_jsonl(out)) == len(events)


def test_the_fake_runs_standalone(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-m", "tests.fakes.agilicus", "--events", "50", "--port", "0",
                             "--ready-file", str(ready)], cwd=Path(__file__).resolve().parents[3],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        import time

        import requests

        deadline = time.monotonic() + 20
        while not ready.exists():  # the fake writes the file atomically once it listens
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the fake did not start"
            time.sleep(0.02)
        url = ready.read_text()
        body = requests.get(f"{url}/v1/auth_audits", headers={"Authorization": f"Bearer {DEFAULT_TOKEN}"},
                            params={"dt_from": "now-2day"}, timeout=5).json()
        assert len(body["auth_audits"]) == 50
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_cursor_written_before_occurrences_loads_and_repeats_nothing(fake: AgilicusFake) -> None:
    """The form earlier versions wrote: each delivered hash listed once under its time."""
    from siem_forwarder_plugins.sources.agilicus.cursor import WindowCursor

    caught_up = datetime.fromtimestamp(fake.newest_us("audits") / 1e6 + 1, tz=timezone.utc)
    source = make_source(AgilicusAudits, fake, now=caught_up)
    _, cursor = drain(source)
    old = {"v": 1, "end": cursor["end"], "floor": cursor["floor"],
           "seen": {t: sorted(set(hashes)) for t, hashes in cursor["seen"].items()}, "reported": []}
    assert old["seen"]
    loaded = WindowCursor.load(old)
    assert all(loaded.seen.delivered(h) == 1 for hashes in old["seen"].values() for h in hashes)
    assert {t: sorted(h) for t, h in loaded.dump()["seen"].items()} == old["seen"]
    set_clock(source, caught_up + timedelta(seconds=30))
    assert drain(source, old)[0] == []
    record = next(r for r in fake.all("audits") if us_from_text(r["time"]) >= us_from_text(old["floor"]))
    fake.add_copies("audits", record, 1)  # a copy of a record delivered before the upgrade
    again, _ = drain(source, old)
    assert again == [record]
