"""The ``incydr`` source against a local Incydr that speaks the real protocol (tests/fakes/incydr.py)."""
from __future__ import annotations

import base64
import json
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forwarder_core.config.schema import EventValidator
from forwarder_core.errors import SourceError
from forwarder_core.net.client import HttpClient
from forwarder_core.plugin_api import content_id
from siem_forwarder_plugins.sources.incydr import IncydrOAuth, IncydrSource
from tests.fakes.incydr import COUNT, SEARCH, IncydrFake
from tests.helpers import file_output, read_jsonl, run_forwarder
from tests.sources.polling import Drain, drain_through_faults, fault_kinds, make_source, start_fake_process

SECRET = "s3cret-incydr-client"


@pytest.fixture
def fake():
    with IncydrFake(events=1234, span=900, client_secret=SECRET) as server:
        yield server


def source(fake: IncydrFake, tmp_path: Path, **options: Any) -> IncydrSource:
    opts = {"base_url": fake.url, "client_id": fake.client_id, "client_secret": SECRET,
            "page_size": 100, "settle_delay": 0, "lookback": 300, **options}
    return make_source(IncydrSource, opts, fake.begin, tmp_path)  # type: ignore[return-value]


def expected_ids(fake: IncydrFake) -> Counter[str]:
    return Counter(content_id(e) for e in fake.events())


def occurrences(fake: IncydrFake) -> Counter[str]:
    """The ids of the fake's events as CONTRACT.md numbers identical ones: ``<digest>``, ``<digest>-2``, ..."""
    met: Counter[str] = Counter()
    for event in fake.events():
        met[content_id(event)] += 1
    return Counter(d if n == 1 else f"{d}-{n}" for d, count in met.items() for n in range(1, count + 1))


def assert_exactly_once(drain: Drain, fake: IncydrFake) -> None:
    delivered = Counter(drain.ids())
    assert max(delivered.values()) == 1, [k for k, v in delivered.items() if v > 1][:3]
    assert delivered == expected_ids(fake)


# ---------------------------------------------------------------------------- delivery


def test_backfill_delivers_exactly_the_fakes_events_then_nothing(fake, tmp_path):
    drain = Drain(source(fake, tmp_path))
    drain.poll()
    assert_exactly_once(drain, fake)
    assert drain.poll() == []

    token_calls = fake.calls("/v1/oauth")
    assert len(token_calls) == 1 and token_calls[0].body == b""
    assert token_calls[0].headers["Authorization"] == "Basic " + base64.b64encode(f"key-1:{SECRET}".encode()).decode()
    searches = [r.json() for r in fake.calls(SEARCH)]
    assert searches[0]["page"] == 0 and all(s["pageSize"] == 100 for s in searches)
    assert all(isinstance(s["dateRange"]["startTime"], float) for s in searches)
    # the SDK's request shape: every filter key present, null when unset
    assert searches[0]["eventTypes"] is None and searches[0]["actorIds"] is None


def test_a_page_past_the_end_without_events_ends_the_window(tmp_path):
    with IncydrFake(events=300, span=600, client_secret=SECRET) as fake:
        drain = Drain(source(fake, tmp_path))
        drain.poll()
        assert_exactly_once(drain, fake)
        last = fake.calls(SEARCH)[-1].json()
        assert last["page"] == 3  # 300 events, 100 a page: page 3 answers without "events"


def test_new_and_late_events_are_delivered_once(fake, tmp_path):
    drain = Drain(source(fake, tmp_path))
    drain.poll()
    newest = max(datetime.fromisoformat(e["timestamp"]) for e in drain.events)
    late = fake.make_event(newest - timedelta(seconds=30))  # older than what was delivered, inside lookback
    new = fake.make_event(datetime.now(timezone.utc) - timedelta(milliseconds=5))
    fake.add_events([late, new])

    delivered = drain.poll()
    assert sorted(e["id"] for e in delivered) == sorted([content_id(late), content_id(new)])
    assert drain.poll() == []
    assert_exactly_once(drain, fake)


def test_a_restart_from_each_committed_cursor_delivers_the_rest_exactly_once(fake, tmp_path):
    first = Drain(source(fake, tmp_path))
    pages = first.pages_of()
    for _ in range(4):
        next(pages)
    committed = first.cursor
    pages.close()

    second = Drain(source(fake, tmp_path), committed)
    second.poll()
    both = Drain(first.source)
    both.events = first.events + second.events
    assert_exactly_once(both, fake)


def test_pages_that_shift_while_paging_are_read_again(fake, tmp_path):
    """Events arriving inside the window being paged move others between pages."""
    drain = Drain(source(fake, tmp_path))
    pages = drain.pages_of()
    next(pages)
    window = drain.cursor["window"]
    inside = datetime.fromtimestamp((window["start"] + window["end"]) / 2000, tz=timezone.utc)
    fake.add_events([fake.make_event(inside + timedelta(milliseconds=i)) for i in range(50)])
    for _ in pages:
        pass
    assert_exactly_once(drain, fake)
    assert drain.source.metrics.total("source_window_rereads_total") >= 1


def test_a_crowded_window_is_narrowed_before_it_is_paged(fake, tmp_path):
    src = source(fake, tmp_path)
    src.WINDOW_PAGES = 3
    drain = Drain(src)
    drain.poll()
    assert_exactly_once(drain, fake)
    assert max(r.json()["page"] for r in fake.calls(SEARCH)) <= 3
    assert len(fake.calls(COUNT)) > 3


@pytest.mark.timeout(30)
def test_a_server_that_never_ends_a_window_fails_the_poll_instead_of_looping(fake, tmp_path):
    full_page = {"events": fake.events()[:100]}
    fake.fault("status", path=SEARCH, status=200, body=full_page, count=10_000)
    drain = Drain(source(fake, tmp_path))
    with pytest.raises(SourceError, match="full pages"):
        drain.poll()
    assert len(fake.calls(SEARCH)) < 40


def test_without_the_count_endpoint_windows_are_read_whole(fake, tmp_path):
    fake.fault("status", path=COUNT, status=404, count=1000)
    src = source(fake, tmp_path)
    drain = Drain(src)
    drain.poll()
    assert_exactly_once(drain, fake)
    assert len(fake.calls(COUNT)) == 1  # asked once, then not again
    assert "readable" in src.check_connection()


def test_filters_are_sent_as_the_sdk_sends_them(fake, tmp_path):
    drain = Drain(source(fake, tmp_path, event_types=["audit_log::logged_in/1"], user_types=["USER"]))
    drain.poll()
    body = fake.calls(SEARCH)[0].json()
    assert body["eventTypes"] == ["audit_log::logged_in/1"] and body["userTypes"] == ["USER"]
    assert body["actorNames"] is None
    wanted = {content_id(e) for e in fake.events()
              if e["type$"] == "audit_log::logged_in/1" and e["actorType"] == "USER"}
    assert wanted and set(drain.ids()) == wanted and len(drain.ids()) == len(wanted)


# ---------------------------------------------------------------------------- faults


FAULTS = fault_kinds({"events": [{"type$": "audit_log::logged_in/1"}] * 20})


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_every_fault_ends_in_complete_delivery_without_duplicates(fault, fake, tmp_path):
    drain = Drain(source(fake, tmp_path))
    drain_through_faults(drain, fake, SEARCH, FAULTS[fault])
    assert_exactly_once(drain, fake)


def test_retry_after_is_waited_for(fake, tmp_path):
    import time

    drain = Drain(source(fake, tmp_path))
    fake.fault("status", path=SEARCH, status=429, retry_after="1")
    started = time.monotonic()
    drain.poll()
    assert time.monotonic() - started >= 1.0
    assert drain.source.metrics.total("rate_limit_waits_total") == 1
    assert_exactly_once(drain, fake)


def test_a_revoked_token_is_renewed_once_on_401(fake, tmp_path):
    drain = Drain(source(fake, tmp_path))
    pages = drain.pages_of()
    next(pages)
    fake.revoke_tokens()
    for _ in pages:
        pass
    assert_exactly_once(drain, fake)
    assert len(fake.calls("/v1/oauth")) == 2


def test_the_token_is_renewed_before_it_expires(fake):
    now = [1000.0]
    fake.expires_in = 100
    auth = IncydrOAuth(fake.client_id, SECRET, clock=lambda: now[0])
    client = HttpClient(component="t", options={"base_url": fake.url}, auth=auth)
    first = auth.headers(client)["Authorization"]
    now[0] += 89  # a margin of a tenth of the life: renewed from 90 s on
    assert auth.headers(client)["Authorization"] == first
    now[0] += 2
    assert auth.headers(client)["Authorization"] != first
    assert auth.fetches == 2 and len(fake.calls("/v1/oauth")) == 2


def test_a_token_that_expires_sooner_than_announced_is_renewed_on_401(tmp_path):
    with IncydrFake(events=250, span=600, client_secret=SECRET, expires_in=900) as fake:
        fake.next_token_ttls = [0.3]  # the first token lives 0.3 s although it announces 900
        drain = Drain(source(fake, tmp_path))
        fake.fault("slow", path=SEARCH, delay=0.4)  # the token dies while this request is on its way
        drain.poll()
        assert_exactly_once(drain, fake)
        assert len(fake.calls("/v1/oauth")) == 2
        assert drain.source.metrics.total("http_requests_total", status="401") == 1


def test_wrong_credentials_fail_clearly_without_the_secret(fake, tmp_path):
    src = make_source(IncydrSource, {"base_url": fake.url, "client_id": "key-1", "client_secret": "wrong-secret-value",
                                     "settle_delay": 0}, fake.begin, tmp_path)
    with pytest.raises(SourceError) as info:
        list(src.poll(None))
    assert "401" in str(info.value) and "wrong-secret-value" not in str(info.value)
    with pytest.raises(SourceError):
        src.check_connection()


def test_check_connection_authenticates_and_counts(fake, tmp_path):
    message = source(fake, tmp_path).check_connection()
    assert "key-1" in message and SECRET not in message
    assert fake.calls(COUNT) and fake.calls("/v1/oauth")


# ---------------------------------------------------------------------------- events


def test_every_fake_event_passes_the_raw_and_normalized_schemas_and_drift_fails(fake, tmp_path):
    src = source(fake, tmp_path)
    validator = EventValidator(IncydrSource.event_schema)
    events = fake.events()
    assert all(validator.is_valid(src.normalize(raw)) for raw in events)
    assert {e["type$"] for e in events} >= {"audit_log::logged_in/1", "audit_log::search_issued/1"}

    drifted = dict(events[0], actorId=898209175991065670)  # the id became a number
    assert not validator.is_valid(src.normalize(drifted))
    assert "actorId" in validator.explain(src.normalize(drifted))
    missing = {k: v for k, v in events[0].items() if k != "actorType"}
    assert not validator.is_valid(src.normalize(missing))
    extra = dict(events[0], brandNewField={"x": 1})
    assert validator.is_valid(src.normalize(extra))


def test_normalize_maps_the_fields(fake, tmp_path):
    src = source(fake, tmp_path)
    raw = {"type$": "audit_log::user_deactivated/1", "actorId": "898209175991065670", "actorName": "admin@example.com",
           "actorAgent": "py42 1.29.1", "actorIpAddress": "50.93.255.223, 64.252.71.111",
           "timestamp": "2022-10-03T13:14:46.962Z", "actorType": "USER",
           "userId": "1004", "userName": "leaver@example.com"}
    event = src.normalize(raw)
    assert event["id"] == content_id(raw) and event["raw"] is raw
    assert event["timestamp"] == "2022-10-03T13:14:46.962Z"
    assert event["source"] == {"name": "src", "type": "incydr", "vendor": "Code42", "product": "Incydr",
                               "dataset": "incydr.audit", "splunk_sourcetype": "incydr:audit",
                               "cef_name": "Incydr audit event", "severity": 5}
    assert event["action"] == "audit_log::user_deactivated/1"
    assert event["category"] == ["iam"] and event["type"] == ["user", "deletion"] and event["outcome"] == "success"
    assert event["actor"] == {"id": "898209175991065670", "name": "admin@example.com", "email": "admin@example.com",
                              "type": "USER", "ip": "50.93.255.223", "user_agent": "py42 1.29.1"}
    assert event["target"] == {"id": "1004", "name": "leaver@example.com", "email": "leaver@example.com", "type": "user"}
    assert 0 <= event["severity"] <= 10

    no_ip = src.normalize(dict(raw, actorIpAddress="null", success=False, timestamp="2023-06-16T21:49:21.072416Z"))
    assert "ip" not in no_ip["actor"] and no_ip["outcome"] == "failure"
    assert no_ip["timestamp"] == "2023-06-16T21:49:21.072416Z"


# ---------------------------------------------------------------------------- the fake on its own


def test_the_fake_runs_standalone_and_serves_a_backlog(tmp_path):
    proc, url = start_fake_process("tests.fakes.incydr", tmp_path, "--events", "2500", "--client-secret", SECRET)
    try:
        opts = {"base_url": url, "client_id": "key-1", "client_secret": SECRET, "settle_delay": 0}
        src = make_source(IncydrSource, opts, datetime.now(timezone.utc) - timedelta(days=2), tmp_path)
        drain = Drain(src)
        drain.poll()
        assert len(set(drain.ids())) == len(drain.ids()) == 2500
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# ---------------------------------------------------------------------------- the real process


def test_end_to_end_through_the_cli_with_a_drifted_event_quarantined(fake, tmp_path):
    newest = max(datetime.fromisoformat(e["timestamp"]) for e in fake.events())
    drifted = fake.make_event(newest - timedelta(seconds=61), actorId=898209175991065670)
    fake.add_events([drifted])
    secret_file = tmp_path / "incydr.secret"
    secret_file.write_text(SECRET + "\n")
    out = tmp_path / "out.jsonl"
    config = {
        "sources": [{"name": "code42", "type": "incydr", "start_time": fake.begin.isoformat(),
                     "options": {"base_url": fake.url, "client_id": fake.client_id,
                                 "client_secret_file": str(secret_file), "settle_delay": 0, "page_size": 500}}],
        "outputs": [file_output(out)],
    }
    done = run_forwarder(tmp_path, config)
    assert done.returncode == 0, done.stderr
    events = read_jsonl(out)
    want = expected_ids(fake)
    del want[content_id(drifted)]
    assert Counter(e["id"] for e in events) == want
    quarantined = [json.loads(line) for f in sorted((tmp_path / "state" / "quarantine").glob("*.jsonl"))
                   for line in f.read_text().splitlines()]
    assert [q["raw"] for q in quarantined] == [drifted] and "actorId" in quarantined[0]["reason"]
    assert SECRET not in done.stderr

    again = run_forwarder(tmp_path, config)
    assert again.returncode == 0, again.stderr
    assert len(read_jsonl(out)) == len(events)
    assert sum(len(f.read_text().splitlines()) for f in (tmp_path / "state" / "quarantine").glob("*.jsonl")) == 1


# ---------------------------------------------------------------------------- the cursor, whatever arrives when


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(schedule=st.lists(st.tuples(st.integers(0, 30), st.integers(0, 6), st.integers(1, 290), st.booleans()),
                         min_size=1, max_size=4),
       page_size=st.sampled_from([7, 40]))
def test_any_arrival_schedule_is_delivered_exactly_once(schedule, page_size, tmp_path):
    """New events, late events anywhere inside lookback, restarts between polls: each event once."""
    with IncydrFake(events=90, span=200, client_secret=SECRET) as fake:
        drain = Drain(source(fake, tmp_path, page_size=page_size))
        drain.poll()
        for new, late, age, restart in schedule:
            watermark = drain.cursor["watermark"]
            now = datetime.now(timezone.utc)
            fake.add_events([fake.make_event(now - timedelta(milliseconds=i + 1)) for i in range(new)]
                            + [fake.make_event(datetime.fromtimestamp((watermark - age * 1000 - i) / 1000, tz=timezone.utc))
                               for i in range(late)])
            if restart:
                fresh = Drain(source(fake, tmp_path, page_size=page_size), drain.cursor)
                fresh.events = drain.events
                drain = fresh
            drain.poll()
        assert_exactly_once(drain, fake)


def test_events_inside_settle_delay_wait_for_the_next_poll(fake, tmp_path):
    recent = fake.make_event(datetime.now(timezone.utc) - timedelta(seconds=10))
    fake.add_events([recent])
    src = source(fake, tmp_path, settle_delay=30)
    drain = Drain(src)
    drain.poll()
    assert content_id(recent) not in drain.ids() and len(drain.ids()) == len(fake) - 1
    src.settle = 0  # as if 30 s had passed
    assert [e["id"] for e in drain.poll()] == [content_id(recent)]


def test_a_stop_request_ends_the_poll_at_a_resumable_page(fake, tmp_path):
    src = source(fake, tmp_path)
    drain = Drain(src)
    pages = drain.pages_of()
    next(pages)
    src.context.stop.set()
    assert list(pages) == []
    rest = Drain(source(fake, tmp_path), drain.cursor)
    rest.poll()
    both = Drain(src)
    both.events = drain.events + rest.events
    assert_exactly_once(both, fake)


# ---------------------------------------------------------------------------- the fake is faithful


def _search(fake: IncydrFake, body: dict[str, Any], token: str | None = None) -> requests.Response:
    if token is None:
        token = requests.post(fake.url + "/v1/oauth", auth=(fake.client_id, SECRET), timeout=5).json()["access_token"]
    return requests.post(fake.url + SEARCH, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=5)


def test_the_fake_checks_paging_and_auth_as_the_api_does(fake):
    assert _search(fake, {"page": 0, "pageSize": 10_001}).status_code == 400
    assert _search(fake, {"page": -1, "pageSize": 10}).status_code == 400
    assert _search(fake, {"page": 0, "pageSize": 10}, token="nope").status_code == 401
    assert requests.post(fake.url + "/v1/oauth", auth=("key-1", "wrong"), timeout=5).status_code == 401
    past = _search(fake, {"page": 1000, "pageSize": 10}).json()
    assert "events" not in past and past["totalResultCount"] == len(fake)


def test_the_fakes_date_range_is_start_inclusive_end_exclusive(fake):
    first = fake.events()[10]
    at = datetime.fromisoformat(first["timestamp"]).timestamp()
    same_ms = [e for e in fake.events() if e["timestamp"] == first["timestamp"]]
    inclusive = _search(fake, {"page": 0, "pageSize": 100, "dateRange": {"startTime": at, "endTime": at + 0.001}})
    assert sorted(map(content_id, inclusive.json()["events"])) == sorted(map(content_id, same_ms))
    exclusive = _search(fake, {"page": 0, "pageSize": 100, "dateRange": {"startTime": at - 1, "endTime": at}}).json()
    assert first not in exclusive.get("events", [])


# ---------------------------------------------------------------------------- the bytes a worker gets


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(copies=st.lists(st.integers(1, 9), min_size=1, max_size=12), page_size=st.sampled_from([3, 7, 50]),
       extra=st.integers(0, 30))
def test_the_bytes_a_page_carries_rebuild_exactly_its_events(copies, page_size, extra, tmp_path):
    """Each page's ``body`` decodes, through its picks, to exactly the page's events: identical
    events split across pages, copies held back and released at the window's end (which cross as
    they are), pages of distinct events. Drain checks every page (tests/sources/polling.py)."""
    start = datetime.now(timezone.utc) - timedelta(seconds=90)
    with IncydrFake(events=extra, start=start, span=60, client_secret=SECRET) as fake:
        for i, n in enumerate(copies):
            fake.add_copies(fake.make_event(start + timedelta(milliseconds=10 * i), actorName=f"actor{i}"), n)
        drain = Drain(source(fake, tmp_path, page_size=page_size))
        drain.poll()
        assert 0 < drain.bodies <= drain.filled
        assert Counter(drain.ids()) == occurrences(fake)


def test_copies_released_at_the_window_end_cross_as_they_are(tmp_path):
    start = datetime.now(timezone.utc) - timedelta(seconds=90)
    with IncydrFake(events=6, start=start, span=60, client_secret=SECRET) as fake:
        fake.add_copies(fake.make_event(start), 5)  # one event five times among six others, pages of 3
        drain = Drain(source(fake, tmp_path, page_size=3))
        drain.poll()
        assert drain.bodies > 0 and drain.extras > 0
        assert Counter(drain.ids()) == occurrences(fake)
