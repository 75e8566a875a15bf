"""The ``splunk_hec`` output against a local HEC that answers as Splunk does.

Each test is one promise of the contract or of issue 5: a bad event costs only itself, busy ends
in complete delivery, a lost ack means a resend, a bad token pauses without losing anything.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import pytest

from forwarder_core.errors import OutputError
from forwarder_core.metrics import Metrics
from forwarder_core.plugin_api import ComponentConfig, Context, SendResult, apply_defaults
from forwarder_core.secrets import Secret
from siem_forwarder_plugins.outputs.splunk_hec import SplunkHec, classify
from tests.fakes.splunk_hec import DEFAULT_TOKEN, SplunkHecFake, TokenConfig
from tests.outputs.builtin import source_block
from tests.outputs.encoded import CompressHere, from_a_worker

WRONG_TOKEN = "99999999-8888-7777-6666-000000000000"
ACK_TOKEN = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
DISABLED_TOKEN = "dddddddd-0000-0000-0000-000000000001"
MAIN_ONLY_TOKEN = "cccccccc-0000-0000-0000-000000000007"


@pytest.fixture
def hec() -> Iterator[SplunkHecFake]:
    fake = SplunkHecFake(tokens={
        DEFAULT_TOKEN: TokenConfig(),
        ACK_TOKEN: TokenConfig(ack=True),
        DISABLED_TOKEN: TokenConfig(disabled=True),
        MAIN_ONLY_TOKEN: TokenConfig(indexes=frozenset({"main"})),
    })
    with fake:
        yield fake


def make_output(fake: SplunkHecFake, tmp_path: Any, token: str = DEFAULT_TOKEN, **opts: Any) -> SplunkHec:
    options = apply_defaults(SplunkHec.options_schema, {
        "url": fake.url, "token": Secret(token), "host": "fwd-1", "ack_poll_interval": 0.02, "timeout": 5, **opts})
    context = Context(name="splunk", state_dir=str(tmp_path), logger=logging.getLogger("test.splunk"),
                      metrics=Metrics())
    return SplunkHec(ComponentConfig(name="splunk", type="splunk_hec", options=options), context)


def event(n: int, *, source_type: str = "asana", pad: int = 0, **extra: Any) -> dict[str, Any]:
    """A normalized event as a source produces it."""
    raw: dict[str, Any] = {"gid": f"evt-{n}", "event_type": "user_login_succeeded", "n": n}
    if pad:
        raw["pad"] = "x" * pad
    return {
        "id": f"evt-{n}",
        "timestamp": f"2026-11-01T12:00:{n % 60:02d}.{n % 1000:03d}Z",
        "source": source_block(source_type, "asana-main", "Asana", "Asana"),
        "action": "user_login_succeeded",
        "raw": raw,
        **extra,
    }


def deliver(out: SplunkHec, events: list[dict[str, Any]], rounds: int = 10) -> dict[str, str]:
    """What the pipeline does with a batch: send, send again what is to be retried, until done.

    Returns the dead letters by event id.
    """
    pending = list(events)
    dead: dict[str, str] = {}
    for _ in range(rounds):
        try:
            result = out.send(pending)
        except OutputError as exc:
            assert not exc.pause, str(exc)
            continue
        for i, reason in result.rejected.items():
            dead[pending[i]["id"]] = reason
        pending = [pending[i] for i in result.retry]
        if not pending:
            return dead
    raise AssertionError(f"{len(pending)} events still undelivered after {rounds} rounds")


def ids(fake: SplunkHecFake) -> list[str]:
    return list(fake.event_ids)


# --------------------------------------------------------------------------- wire format


def test_events_arrive_as_gzip_concatenated_json_with_the_event_time(hec: SplunkHecFake, tmp_path: Any) -> None:
    out = make_output(hec, tmp_path, index="security")
    events = [event(1), event(2), event(3)]
    assert out.send(events) == SendResult()

    (req,) = hec.event_requests()
    assert req.headers["Content-Encoding"] == "gzip"
    assert req.headers["Authorization"] == f"Splunk {DEFAULT_TOKEN}"
    assert int(req.headers["Content-Length"]) < len(req.body)  # the wire bytes were compressed
    text = req.body.decode()
    assert not text.lstrip().startswith("[")
    decoder, pos, objs = json.JSONDecoder(), 0, []
    while pos < len(text):
        obj, pos = decoder.raw_decode(text, pos)
        objs.append(obj)
        while pos < len(text) and text[pos].isspace():
            pos += 1
    assert [o["event"] for o in objs] == [e["raw"] for e in events]

    first = objs[0]
    assert list(first) == ["time", "host", "source", "sourcetype", "index", "fields", "event"]
    expected = datetime(2026, 11, 1, 12, 0, 1, 1000, tzinfo=timezone.utc).timestamp()
    assert first["time"] == pytest.approx(expected, abs=1e-6)
    assert '"time":1793534401.001,' in text
    assert first["host"] == "fwd-1"
    assert first["source"] == "asana-main"
    assert first["sourcetype"] == "asana:audit"
    assert first["index"] == "security"
    assert first["fields"] == {"event_id": "evt-1", "forwarder_source": "asana-main", "source_type": "asana",
                               "vendor": "Asana", "action": "user_login_succeeded"}
    assert hec.events[2]["event"] == events[2]["raw"]


def test_gzip_off_sends_plain_json(hec: SplunkHecFake, tmp_path: Any) -> None:
    out = make_output(hec, tmp_path, gzip=False)
    out.send([event(1)])
    (req,) = hec.event_requests()
    assert "Content-Encoding" not in req.headers
    assert json.loads(req.body)["fields"]["event_id"] == "evt-1"


@pytest.mark.parametrize("source_type, sourcetype", [
    ("incydr", "incydr:audit"), ("agilicus", "agilicus:audit"), ("agilicus_auth", "agilicus:auth_audit"),
    ("pangea", "pangea:audit"), ("asana", "asana:audit"), ("okta", "okta:audit"),
])
def test_the_sourcetype_is_the_one_the_source_declares(hec: SplunkHecFake, tmp_path: Any, source_type: str,
                                            sourcetype: str) -> None:
    make_output(hec, tmp_path).send([event(1, source_type=source_type)])
    assert hec.events[0]["sourcetype"] == sourcetype


def test_sourcetype_source_options_pangea_integrity_and_label_fields(hec: SplunkHecFake, tmp_path: Any) -> None:
    out = make_output(hec, tmp_path, sourcetype="custom:st", source="audit-feed")
    integrity = {"hash": "pass", "membership": "pass", "signature": "none"}
    out.send([event(1, source_type="pangea", integrity=integrity, labels={"env": "prod"})])
    got = hec.events[0]
    assert (got["sourcetype"], got["source"]) == ("custom:st", "audit-feed")
    assert got["fields"]["integrity_hash"] == "pass"
    assert got["fields"]["integrity_signature"] == "none"
    assert got["fields"]["label_env"] == "prod"
    assert all(isinstance(v, str) for v in got["fields"].values())


# --------------------------------------------------------------------------- batching


def test_requests_are_capped_by_count_and_by_bytes(hec: SplunkHecFake, tmp_path: Any) -> None:
    make_output(hec, tmp_path, batch_max_events=3).send([event(i) for i in range(10)])
    assert [len(r.body.splitlines()) for r in hec.event_requests()] == [3, 3, 3, 1]

    hec.requests.clear()
    cap = 2048
    make_output(hec, tmp_path, batch_max_bytes=cap).send([event(i, pad=300) for i in range(20)])
    bodies = [r.body for r in hec.event_requests()]
    assert len(bodies) > 1
    assert all(len(b) <= cap for b in bodies)
    assert hec.indexed_count == 30


def test_a_single_event_over_the_cap_is_rejected_alone(hec: SplunkHecFake, tmp_path: Any) -> None:
    out = make_output(hec, tmp_path, batch_max_bytes=2048)
    events = [event(i) for i in range(6)]
    events[3] = event(3, pad=5000)
    result = out.send(events)
    assert list(result.rejected) == [3]
    assert "over batch_max_bytes (2048)" in result.rejected[3]
    assert result.retry == []
    assert ids(hec) == ["evt-0", "evt-1", "evt-2", "evt-4", "evt-5"]
    assert all(b"evt-3" not in r.body for r in hec.event_requests())


def test_an_event_json_cannot_express_is_rejected_alone(hec: SplunkHecFake, tmp_path: Any) -> None:
    events = [event(0), event(1), event(2)]
    events[1]["raw"]["score"] = float("nan")
    result = make_output(hec, tmp_path).send(events)
    assert list(result.rejected) == [1]
    assert ids(hec) == ["evt-0", "evt-2"]


# --------------------------------------------------------------------------- per-event errors


def test_one_bad_event_is_dead_lettered_and_the_rest_delivered_once(hec: SplunkHecFake, tmp_path: Any) -> None:
    hec.max_event_bytes = 2000  # Splunk's per-event limit, made small
    out = make_output(hec, tmp_path)
    events = [event(i) for i in range(10)]
    events[4] = event(4, pad=3000)
    result = out.send(events)

    assert result.rejected == {4: "HEC code 6: Invalid data format"}
    assert result.retry == []
    # Splunk indexed evt-0..3 before it answered code 6; they must not come twice.
    assert ids(hec) == [f"evt-{i}" for i in range(10) if i != 4]
    first, second = [r.body for r in hec.event_requests()]
    assert len(first.splitlines()) == 10
    assert [json.loads(line)["fields"]["event_id"] for line in second.splitlines()] == \
        [f"evt-{i}" for i in range(5, 10)]
    assert hec.responses == [(400, 6), (200, 0)]


def test_several_bad_events_in_one_batch(hec: SplunkHecFake, tmp_path: Any) -> None:
    events = [event(i) for i in range(8)]
    events[0]["raw"] = ""  # blank event: code 13
    events[5]["raw"] = "   "
    result = make_output(hec, tmp_path).send(events)
    assert result.rejected == {0: "HEC code 13: Event field cannot be blank",
                               5: "HEC code 13: Event field cannot be blank"}
    assert ids(hec) == [f"evt-{i}" for i in (1, 2, 3, 4, 6, 7)]


def test_413_without_a_position_halves_until_the_culprit_is_alone(hec: SplunkHecFake, tmp_path: Any) -> None:
    hec.fault("status", path="/services/collector/event", status=413, count=1,
              body={"text": "Content-Length of 9999 too large (maximum is 1000)"})
    events = [event(i) for i in range(4)]
    assert make_output(hec, tmp_path).send(events) == SendResult()
    assert sorted(ids(hec)) == [f"evt-{i}" for i in range(4)]


# --------------------------------------------------------------------------- busy and transport


def test_busy_hec_ends_in_complete_delivery(hec: SplunkHecFake, tmp_path: Any) -> None:
    hec.busy(2, retry_after="0")
    out = make_output(hec, tmp_path)
    events = [event(i) for i in range(5)]

    with pytest.raises(OutputError) as info:
        out.send(events)
    assert not info.value.pause
    assert info.value.retry_after == 0
    assert 'code 9 "Server is busy"' in str(info.value)

    assert deliver(out, events) == {}
    assert ids(hec) == [f"evt-{i}" for i in range(5)]
    assert out.metrics.get("hec_responses_total", output="splunk", code="9") == 2
    assert out.metrics.get("hec_responses_total", output="splunk", code="0") == 1


def test_busy_midway_returns_only_the_unsent_for_retry(hec: SplunkHecFake, tmp_path: Any) -> None:
    out = make_output(hec, tmp_path, batch_max_events=2)
    events = [event(i) for i in range(6)]
    # The first request goes through, the second meets a busy indexer.
    hec.fault("slow", path="/services/collector/event", count=1)
    hec.fault("status", path="/services/collector/event", status=503, count=1, retry_after="1",
              body={"text": "Server is busy", "code": 9})
    result = out.send(events)
    assert result.retry == [2, 3, 4, 5]
    assert result.retry_after == 1
    assert ids(hec) == ["evt-0", "evt-1"]
    assert deliver(out, [events[i] for i in result.retry]) == {}
    assert ids(hec) == [f"evt-{i}" for i in range(6)]


def test_a_proxy_error_page_is_retried_not_trusted(hec: SplunkHecFake, tmp_path: Any) -> None:
    hec.fault("html", path="/services/collector/event", status=502)
    out = make_output(hec, tmp_path)
    with pytest.raises(OutputError) as info:
        out.send([event(1)])
    assert not info.value.pause and "502" in str(info.value)
    assert deliver(out, [event(1)]) == {}
    assert ids(hec) == ["evt-1"]


def test_unreachable_hec_is_a_retryable_error_without_the_token(tmp_path: Any) -> None:
    fake = SplunkHecFake().start()
    url = fake.url
    fake.stop()
    options = apply_defaults(SplunkHec.options_schema, {"url": url, "token": Secret(DEFAULT_TOKEN), "timeout": 2})
    out = SplunkHec(ComponentConfig(name="splunk", type="splunk_hec", options=options),
                    Context(name="splunk", state_dir=str(tmp_path), logger=logging.getLogger("t"), metrics=Metrics()))
    with pytest.raises(OutputError) as info:
        out.send([event(1)])
    assert not info.value.pause
    assert "connection refused" in str(info.value)
    assert DEFAULT_TOKEN not in str(info.value)


# --------------------------------------------------------------------------- auth and config


@pytest.mark.parametrize("token, opts, expect", [
    (WRONG_TOKEN, {}, 'code 4 "Invalid token"'),
    (DISABLED_TOKEN, {}, 'code 1 "Token disabled"'),
    (MAIN_ONLY_TOKEN, {"index": "secret"}, 'code 7 "Incorrect index"'),
    (ACK_TOKEN, {}, "set `ack: true`"),
])
def test_auth_and_config_errors_pause_without_losing_anything(hec: SplunkHecFake, tmp_path: Any, token: str,
                                                              opts: dict[str, Any], expect: str) -> None:
    events = [event(i) for i in range(3)]
    with pytest.raises(OutputError) as info:
        make_output(hec, tmp_path, token=token, **opts).send(events)
    message = str(info.value)
    assert info.value.pause
    assert expect in message
    assert message.startswith("Splunk HEC refused the request")
    assert token not in message and "\n" not in message
    assert hec.indexed_count == 0

    # Fixed: the same events go through, all of them, once.
    assert make_output(hec, tmp_path).send(events) == SendResult()
    assert ids(hec) == ["evt-0", "evt-1", "evt-2"]


def test_missing_token_header_answers_code_2(hec: SplunkHecFake, tmp_path: Any) -> None:
    out = make_output(hec, tmp_path)
    out.http.auth = None
    with pytest.raises(OutputError) as info:
        out.send([event(1)])
    assert info.value.pause and 'code 2 "Token is required"' in str(info.value)


# --------------------------------------------------------------------------- indexer acknowledgement


def test_ack_send_returns_only_once_every_ack_is_true(hec: SplunkHecFake, tmp_path: Any) -> None:
    hec.ack_delay_polls = 3
    out = make_output(hec, tmp_path, token=ACK_TOKEN, ack=True, batch_max_events=2)
    assert out.send([event(i) for i in range(5)]) == SendResult()
    assert ids(hec) == [f"evt-{i}" for i in range(5)]
    reqs = hec.event_requests()
    assert len(reqs) == 3
    assert {r.headers["X-Splunk-Request-Channel"] for r in reqs} == {out.channel}
    polls = hec.calls("/services/collector/ack")
    assert len(polls) == 4  # three answers "false", then all three acks true at once
    assert polls[0].json() == {"acks": [0, 1, 2]}
    assert polls[0].arg("channel") == out.channel


def test_an_ack_that_never_comes_causes_a_resend(hec: SplunkHecFake, tmp_path: Any) -> None:
    hec.lose_acks(1)
    out = make_output(hec, tmp_path, token=ACK_TOKEN, ack=True, ack_timeout=0.3)
    events = [event(i) for i in range(4)]
    assert out.send(events) == SendResult()
    reqs = hec.event_requests()
    assert len(reqs) == 2
    assert reqs[0].body == reqs[1].body
    assert ids(hec) == [f"evt-{i}" for i in range(4)]


def test_acks_lost_again_and_again_are_handed_back_for_retry(hec: SplunkHecFake, tmp_path: Any) -> None:
    hec.lose_acks(100)
    out = make_output(hec, tmp_path, token=ACK_TOKEN, ack=True, ack_timeout=0.1)
    result = out.send([event(0), event(1)])
    assert result.retry == [0, 1]
    assert len(hec.event_requests()) == 3
    assert hec.indexed_count == 0


def test_ack_on_a_token_without_ack_falls_back_to_code_0(hec: SplunkHecFake, tmp_path: Any,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    out = make_output(hec, tmp_path, ack=True)
    with caplog.at_level(logging.WARNING):
        assert out.send([event(1)]) == SendResult()
        out.send([event(2)])
    assert ids(hec) == ["evt-1", "evt-2"]
    assert sum("returned no ackId" in r.getMessage() for r in caplog.records) == 1


# --------------------------------------------------------------------------- check --connect and codes


def test_check_connection_verifies_health_and_token(hec: SplunkHecFake, tmp_path: Any) -> None:
    assert "token accepted" in make_output(hec, tmp_path).check_connection()
    assert "acknowledgement" in make_output(hec, tmp_path, token=ACK_TOKEN, ack=True).check_connection()
    assert hec.indexed_count == 0

    with pytest.raises(OutputError) as info:
        make_output(hec, tmp_path, token=WRONG_TOKEN).check_connection()
    assert "token" in str(info.value) and WRONG_TOKEN not in str(info.value)

    with pytest.raises(OutputError) as info:
        make_output(hec, tmp_path, token=ACK_TOKEN).check_connection()
    assert "set `ack: true`" in str(info.value)

    with pytest.raises(OutputError) as info:
        make_output(hec, tmp_path, ack=True).check_connection()
    assert "set `ack: false`" in str(info.value)

    hec.busy(1)
    with pytest.raises(OutputError) as info:
        make_output(hec, tmp_path).check_connection()
    assert "unhealthy" in str(info.value)


@pytest.mark.parametrize("status, code, kind", [
    (200, 0, "ok"), (200, 24, "ok"), (500, 8, "retry"), (503, 9, "retry"), (503, 18, "retry"),
    (503, 19, "retry"), (503, 20, "retry"), (503, 23, "retry"), (429, 26, "retry"), (429, 27, "retry"),
    (403, 1, "pause"), (401, 2, "pause"), (401, 3, "pause"), (403, 4, "pause"), (400, 7, "pause"),
    (400, 10, "pause"), (400, 11, "pause"), (400, 14, "pause"), (400, 16, "pause"),
    (400, 6, "event"), (400, 12, "event"), (400, 13, "event"), (400, 15, "event"),
    (502, None, "retry"), (429, None, "retry"), (200, None, "retry"), (413, None, "event"),
    (404, None, "pause"), (403, None, "pause"),
])
def test_hec_codes_decide_before_http_status(status: int, code: int | None, kind: str) -> None:
    assert classify(status, code) == kind


def test_a_url_with_the_endpoint_path_pauses_with_a_hint(hec: SplunkHecFake, tmp_path: Any) -> None:
    out = make_output(hec, tmp_path, url=hec.url + "/services/collector")
    with pytest.raises(OutputError) as info:
        out.send([event(1)])
    assert info.value.pause
    assert "without /services/collector" in str(info.value)


def test_a_batch_encoded_in_a_worker_is_sent_with_the_bodies_compressed_there(
        hec: SplunkHecFake, tmp_path: Any, compress_here: CompressHere) -> None:
    out = make_output(hec, tmp_path, batch_max_events=4)
    events = [event(i) for i in range(10)]
    batch = from_a_worker(out, events)
    assert len(batch.bodies) == 3
    compress_here.forbid()
    hec.fault("slow", path="/services/collector/event", count=1)  # the first request goes through
    hec.fault("status", path="/services/collector/event", status=503, count=1, retry_after="0",
              body={"text": "Server is busy", "code": 9})
    result = out.send_encoded(batch)
    assert result.retry == [4, 5, 6, 7, 8, 9] and ids(hec) == [f"evt-{i}" for i in range(4)]
    compress_here.allow()  # the retry is a sub-batch, re-indexed: its requests are built here, from its own parts
    again = out.send_encoded(batch.take(result.retry))
    assert again == SendResult()
    assert ids(hec) == [f"evt-{i}" for i in range(10)]
