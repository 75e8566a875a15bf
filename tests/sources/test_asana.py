"""The ``asana`` source against a local Asana that speaks the real protocol (tests/fakes/asana.py)."""
from __future__ import annotations

import json
import time
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
from siem_forwarder_plugins.sources.asana import AsanaSource
from tests.fakes.asana import AsanaFake
from tests.helpers import file_output, read_jsonl, run_forwarder
from tests.sources.polling import Drain, drain_through_faults, fault_kinds, make_source, start_fake_process

TOKEN = "2/1204/1207:s3cret-service-account"
PATH = r"/audit_log_events$"


@pytest.fixture
def fake():
    with AsanaFake(events=640, span=900, token=TOKEN) as server:
        yield server


def source(fake: AsanaFake, tmp_path: Path, **options: Any) -> AsanaSource:
    opts = {"base_url": fake.url + "/api/1.0", "token": TOKEN, "workspace_gid": fake.workspace_gid,
            "settle_delay": 0, "lookback": 300, **options}
    return make_source(AsanaSource, opts, fake.begin, tmp_path)  # type: ignore[return-value]


def assert_exactly_once(drain: Drain, fake: AsanaFake) -> None:
    delivered = Counter(drain.ids())
    assert max(delivered.values()) == 1, [k for k, v in delivered.items() if v > 1][:3]
    assert delivered == Counter(e["gid"] for e in fake.events())


# ---------------------------------------------------------------------------- delivery


def test_backfill_delivers_exactly_the_fakes_events_then_nothing(fake, tmp_path):
    drain = Drain(source(fake, tmp_path))
    drain.poll()
    assert_exactly_once(drain, fake)
    calls = fake.calls(PATH)
    assert all(c.headers["Authorization"] == f"Bearer {TOKEN}" for c in calls)
    assert all(c.arg("limit") == "100" for c in calls)
    assert calls[0].arg("offset") is None and all(c.arg("offset") for c in calls[1:])  # next_page.offset followed
    assert len(calls) == 640 // 100 + 2  # 7 pages of data, then the empty page that means "caught up"
    assert drain.cursor["window"] is None

    assert drain.poll() == []


def test_new_and_late_events_are_delivered_once(fake, tmp_path):
    drain = Drain(source(fake, tmp_path))
    drain.poll()
    newest = max(datetime.fromisoformat(e["timestamp"]) for e in drain.events)
    late = fake.make_event(newest - timedelta(seconds=20))  # older than what was delivered, inside lookback
    new = fake.make_event(datetime.now(timezone.utc) - timedelta(milliseconds=5))
    fake.add_events([late, new])

    assert sorted(e["id"] for e in drain.poll()) == sorted([late["gid"], new["gid"]])
    assert drain.poll() == []
    assert_exactly_once(drain, fake)


def test_a_restart_from_each_committed_cursor_delivers_the_rest_exactly_once(fake, tmp_path):
    first = Drain(source(fake, tmp_path))
    pages = first.pages_of()
    for _ in range(3):
        next(pages)
    committed = first.cursor
    assert committed["window"]["offset"]  # the offset is kept in the cursor
    pages.close()

    second = Drain(source(fake, tmp_path), committed)
    second.poll()
    assert second.source.metrics.total("source_offset_restarts_total") == 0
    both = Drain(first.source)
    both.events = first.events + second.events
    assert_exactly_once(both, fake)


def test_a_stale_offset_falls_back_to_start_at_without_duplicates(fake, tmp_path):
    drain = Drain(source(fake, tmp_path))
    pages = drain.pages_of()
    next(pages)
    next(pages)
    pos = drain.cursor["window"]["pos"]
    fake.expire_offsets()
    for _ in pages:
        pass
    assert_exactly_once(drain, fake)
    assert drain.source.metrics.total("source_offset_restarts_total") == 1
    calls = fake.calls(PATH)
    refused = next(i for i, c in enumerate(calls) if i >= 2 and c.arg("offset"))
    restart = calls[refused + 1]
    assert restart.arg("offset") is None
    assert datetime.fromisoformat(restart.arg("start_at")) == datetime.fromtimestamp(pos / 1000, tz=timezone.utc)


def test_a_stale_offset_in_a_saved_cursor_after_a_restart(fake, tmp_path):
    first = Drain(source(fake, tmp_path))
    pages = first.pages_of()
    for _ in range(2):
        next(pages)
    pages.close()
    fake.expire_offsets()
    second = Drain(source(fake, tmp_path), first.cursor)
    second.poll()
    both = Drain(first.source)
    both.events = first.events + second.events
    assert_exactly_once(both, fake)


def test_offsets_that_expire_at_once_still_deliver_everything_once(tmp_path):
    with AsanaFake(events=300, span=900, token=TOKEN, offset_ttl=0.0) as fake:
        drain = Drain(source(fake, tmp_path))
        drain.poll()
        assert_exactly_once(drain, fake)
        assert drain.source.metrics.total("source_offset_restarts_total") >= 3


@pytest.mark.timeout(30)
def test_a_crowded_instant_with_offsets_that_always_fail_ends_the_poll_instead_of_looping(tmp_path):
    with AsanaFake(token=TOKEN, offset_ttl=0.0) as fake:
        at = datetime.now(timezone.utc) - timedelta(minutes=5)
        fake.add_events([fake.make_event(at) for _ in range(30)])
        drain = Drain(source(fake, tmp_path, page_size=25))
        drain.source.config.start_time = at - timedelta(seconds=1)
        with pytest.raises(SourceError, match="refused offsets"):
            drain.poll()
        assert len(drain.ids()) == len(set(drain.ids())) == 25


def test_events_sharing_the_restart_instant_are_neither_lost_nor_repeated(tmp_path):
    with AsanaFake(token=TOKEN) as fake:
        at = datetime.now(timezone.utc) - timedelta(minutes=5)
        fake.add_events([fake.make_event(at + timedelta(seconds=i // 30)) for i in range(150)])
        drain = Drain(source(fake, tmp_path, page_size=25))
        drain.source.config.start_time = at - timedelta(seconds=1)
        pages = drain.pages_of()
        next(pages)  # 25 events of the 30 at the first instant
        fake.expire_offsets()
        for _ in pages:
            pass
        assert_exactly_once(drain, fake)


def test_filters_are_sent(fake, tmp_path):
    actor = next(e["actor"]["gid"] for e in fake.events() if e["actor"].get("gid"))
    drain = Drain(source(fake, tmp_path, actor_gid=actor, actor_type="user", event_type="user_login_succeeded"))
    drain.poll()
    call = fake.calls(PATH)[0]
    assert call.arg("actor_gid") == actor and call.arg("event_type") == "user_login_succeeded"
    assert call.arg("actor_type") is None  # Asana asks to omit actor_type when actor_gid is given
    wanted = {e["gid"] for e in fake.events()
              if e["actor"].get("gid") == actor and e["event_type"] == "user_login_succeeded"}
    assert wanted and set(drain.ids()) == wanted and len(drain.ids()) == len(wanted)


def test_page_size_is_bounded_by_asanas_limit(fake):
    schema = AsanaSource.options_schema["properties"]["page_size"]
    assert schema["maximum"] == 100 and schema["default"] == 100
    answer = requests.get(f"{fake.url}/api/1.0/workspaces/{fake.workspace_gid}/audit_log_events",
                          params={"limit": 101}, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
    assert answer.status_code == 400 and answer.json()["errors"][0]["message"].startswith("limit")


# ---------------------------------------------------------------------------- faults


FAULTS = fault_kinds({"data": [{"gid": "1"}] * 20, "next_page": None})


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_every_fault_ends_in_complete_delivery_without_duplicates(fault, fake, tmp_path):
    drain = Drain(source(fake, tmp_path))
    drain_through_faults(drain, fake, PATH, FAULTS[fault])
    assert_exactly_once(drain, fake)


def test_retry_after_is_waited_for(fake, tmp_path):
    drain = Drain(source(fake, tmp_path))
    fake.fault("status", path=PATH, status=429, retry_after="1",
               body={"errors": [{"message": "You have made too many requests recently.", "help": "..."}]})
    started = time.monotonic()
    drain.poll()
    assert time.monotonic() - started >= 1.0
    assert drain.source.metrics.total("rate_limit_waits_total") == 1
    assert_exactly_once(drain, fake)


def test_a_refused_token_fails_clearly_without_the_token(fake, tmp_path):
    opts = {"base_url": fake.url + "/api/1.0", "token": "2/1/2:wrong-token-value", "workspace_gid": fake.workspace_gid}
    src = make_source(AsanaSource, opts, fake.begin, tmp_path)
    with pytest.raises(SourceError) as info:
        list(src.poll(None))
    assert "401" in str(info.value) and "wrong-token-value" not in str(info.value)
    with pytest.raises(SourceError):
        src.check_connection()
    assert len(fake.calls(PATH)) == 2  # one request each: a refused token is not retried


def test_check_connection(fake, tmp_path):
    message = source(fake, tmp_path).check_connection()
    assert fake.workspace_gid in message and TOKEN not in message


# ---------------------------------------------------------------------------- events


def test_every_fake_event_passes_the_raw_and_normalized_schemas_and_drift_fails(fake, tmp_path):
    src = source(fake, tmp_path)
    validator = EventValidator(AsanaSource.event_schema)
    events = fake.events()
    assert all(validator.is_valid(src.normalize(raw)) for raw in events)
    assert len({e["event_category"] for e in events}) >= 5

    drifted = dict(events[0], actor={**events[0]["actor"], "actor_type": "robot"})
    assert not validator.is_valid(src.normalize(drifted))
    no_context = {k: v for k, v in events[0].items() if k != "context"}
    assert not validator.is_valid(src.normalize(no_context))
    assert "context" in validator.explain(src.normalize(no_context))
    assert validator.is_valid(src.normalize(dict(events[0], new_top_level={"x": 1})))


def test_normalize_maps_the_fields(fake, tmp_path):
    raw = {"gid": "12345", "created_at": "2024-01-01T00:00:01.000Z", "event_type": "user_login_failed",
           "event_category": "logins",
           "actor": {"actor_type": "user", "gid": "1111", "name": "Greg Sanchez", "email": "greg@example.com"},
           "resource": {"resource_type": "user", "gid": "1111", "name": "Greg Sanchez", "email": "greg@example.com"},
           "details": {}, "context": {"context_type": "web", "client_ip_address": "192.0.2.1", "user_agent": "Mozilla/5.0"}}
    event = source(fake, tmp_path).normalize(raw)
    assert event["id"] == "12345" and event["raw"] is raw
    assert event["timestamp"] == "2024-01-01T00:00:01.000Z"
    assert event["source"] == {"name": "src", "type": "asana", "vendor": "Asana", "product": "Asana Audit Log",
                               **AsanaSource.traits.block()}
    assert event["action"] == "user_login_failed" and event["outcome"] == "failure"
    assert event["category"] == ["authentication"] and event["type"] == ["start"]
    assert event["actor"] == {"id": "1111", "name": "Greg Sanchez", "email": "greg@example.com", "type": "user",
                              "ip": "192.0.2.1", "user_agent": "Mozilla/5.0"}
    assert event["target"] == {"id": "1111", "type": "user", "name": "Greg Sanchez", "email": "greg@example.com"}
    assert event["organization"] == {"id": fake.workspace_gid}
    assert 0 <= event["severity"] <= 10 and "Greg Sanchez" in event["message"]
    offset_time = source(fake, tmp_path).normalize(dict(raw, created_at="2024-01-01T01:00:01.5+01:00"))
    assert offset_time["timestamp"] == "2024-01-01T00:00:01.500Z"


# ---------------------------------------------------------------------------- the fake on its own


def test_the_fake_runs_standalone(tmp_path):
    proc, url = start_fake_process("tests.fakes.asana", tmp_path, "--events", "700", "--token", TOKEN)
    try:
        opts = {"base_url": url + "/api/1.0", "token": TOKEN, "workspace_gid": "12345", "settle_delay": 0}
        drain = Drain(make_source(AsanaSource, opts, datetime.now(timezone.utc) - timedelta(days=2), tmp_path))
        drain.poll()
        assert len(set(drain.ids())) == len(drain.ids()) == 700
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# ---------------------------------------------------------------------------- the real process


def test_end_to_end_through_the_cli_with_a_drifted_event_quarantined(fake, tmp_path):
    newest = max(datetime.fromisoformat(e["created_at"]) for e in fake.events())
    drifted = fake.make_event(newest - timedelta(seconds=61))
    drifted["created_at"] = drifted["created_at"].replace("T", " ")  # no longer RFC 3339 in the raw schema's eyes
    drifted["gid"] = int(drifted["gid"])
    fake.add_events([drifted])
    out = tmp_path / "out.jsonl"
    config = {
        "sources": [{"name": "asana-main", "type": "asana", "start_time": fake.begin.isoformat(),
                     "options": {"base_url": fake.url + "/api/1.0", "token": "${ASANA_TOKEN}",
                                 "workspace_gid": fake.workspace_gid, "settle_delay": 0}}],
        "outputs": [file_output(out)],
    }
    done = run_forwarder(tmp_path, config, env={"ASANA_TOKEN": TOKEN})
    assert done.returncode == 0, done.stderr
    events = read_jsonl(out)
    assert Counter(e["id"] for e in events) == Counter(e["gid"] for e in fake.events() if e is not drifted)
    quarantined = [json.loads(line) for f in sorted((tmp_path / "state" / "quarantine").glob("*.jsonl"))
                   for line in f.read_text().splitlines()]
    assert [q["raw"] for q in quarantined] == [drifted]
    assert TOKEN not in done.stderr

    again = run_forwarder(tmp_path, config, env={"ASANA_TOKEN": TOKEN})
    assert again.returncode == 0, again.stderr
    assert len(read_jsonl(out)) == len(events)
    assert sum(len(f.read_text().splitlines()) for f in (tmp_path / "state" / "quarantine").glob("*.jsonl")) == 1


# ---------------------------------------------------------------------------- the cursor, whatever arrives when


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(schedule=st.lists(st.tuples(st.integers(0, 30), st.integers(0, 6), st.integers(1, 290), st.booleans(),
                                   st.booleans()), min_size=1, max_size=4),
       page_size=st.sampled_from([7, 100]))
def test_any_arrival_schedule_is_delivered_exactly_once(schedule, page_size, tmp_path):
    """New and late events, restarts mid-window, stale offsets: each event exactly once."""
    with AsanaFake(events=90, span=200, token=TOKEN) as fake:
        drain = Drain(source(fake, tmp_path, page_size=page_size))
        drain.poll()
        for new, late, age, restart, stale in schedule:
            watermark = drain.cursor["watermark"]
            now = datetime.now(timezone.utc)
            fake.add_events([fake.make_event(now - timedelta(milliseconds=i + 1)) for i in range(new)]
                            + [fake.make_event(watermark - age * 1000 - i) for i in range(late)])
            pages = drain.pages_of()
            if restart:  # stop after the first page of this poll and start over from its cursor
                next(pages, None)
                pages.close()
                if stale:
                    fake.expire_offsets()
                fresh = Drain(source(fake, tmp_path, page_size=page_size), drain.cursor)
                fresh.events = drain.events
                drain = fresh
                pages = drain.pages_of()
            for _ in pages:
                pass
        assert_exactly_once(drain, fake)


def test_every_event_asana_serves_is_counted_read_even_those_skipped_after_an_offset_restart(tmp_path):
    """The ledger's ``read`` is what the vendor served: an event skipped because the restart at the last
    instant meets it again counts as already delivered, so the page's ledger still adds up to it."""
    with AsanaFake(token=TOKEN) as fake:
        at = datetime.now(timezone.utc) - timedelta(minutes=5)
        fake.add_events([fake.make_event(at + timedelta(seconds=i // 30)) for i in range(150)])
        asana = source(fake, tmp_path, page_size=25)
        asana.config.start_time = at - timedelta(seconds=1)
        served = []
        get_json = asana.http.get_json

        def counting_get_json(*args, **kwargs):
            answer = get_json(*args, **kwargs)
            served.append(len(answer.get("data") or []))
            return answer

        asana.http.get_json = counting_get_json
        drain = Drain(asana)
        pages = drain.pages_of()
        read = [len(p.events) + p.already_delivered for p in [next(pages)]]
        fake.expire_offsets()
        read += [len(p.events) + p.already_delivered for p in pages]
        assert_exactly_once(drain, fake)
    assert drain.source.metrics.total("source_offset_restarts_total") == 1
    assert sum(read) == sum(served) > 150  # the restart re-read some events, each counted once more as read
    assert read == served
