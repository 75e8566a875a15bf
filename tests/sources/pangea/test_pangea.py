"""The ``pangea`` source against a local Pangea that computes real hashes, trees and signatures."""
from __future__ import annotations

import hashlib
import json
import logging
import socket
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from forwarder_core.config.schema import EventValidator
from forwarder_core.errors import AuthError, QuarantineEvent, ResponseError, SourceError
from forwarder_core.metrics import Metrics
from forwarder_core.plugin_api import ComponentConfig, Context, apply_defaults
from forwarder_core.secrets import Secret
from siem_forwarder_plugins.sources.pangea.source import PangeaSource
from tests.fakes.pangea import TOKEN, PangeaFake, canonical

START = datetime(2026, 11, 20, 8, 0, tzinfo=timezone.utc)


@pytest.fixture
def fake() -> Iterator[PangeaFake]:
    with PangeaFake(40, start=START, buffer_size=4) as server:
        yield server  # type: ignore[misc]


def make_source(fake: PangeaFake, tmp_path: Path, **options: Any) -> PangeaSource:
    opts = {"token": Secret(TOKEN), "base_url": fake.url, "settle_delay": 0, "lookback": 60, "page_size": 7,
            **options}
    config = ComponentConfig(name="pangea-test", type="pangea", options=apply_defaults(PangeaSource.options_schema, opts),
                             start_time=START - timedelta(seconds=1))
    context = Context(name="pangea-test", state_dir=str(tmp_path), logger=logging.getLogger("test.pangea.source"),
                      metrics=Metrics())
    source = PangeaSource(config, context)
    source.client.backoff_factor = 0.02  # keep the real retry policy, with short waits
    return source


class Run:
    """What the pipeline does with a poll, minus the outputs: normalize, validate, set aside."""

    def __init__(self, source: PangeaSource, cursor: Any = None):
        self.delivered: list[dict[str, Any]] = []
        self.quarantined: list[tuple[str, Any]] = []
        self.pages = 0
        self.cursor = cursor
        validator = EventValidator(source.event_schema)
        for page in source.poll(cursor):
            json.dumps(page.cursor)  # a cursor must be storable as it is
            self.pages += 1
            for item in page.events:
                try:
                    event = source.normalize(item)
                except QuarantineEvent as exc:
                    self.quarantined.append((exc.reason, item))
                    continue
                assert validator.is_valid(event), validator.explain(event)
                self.delivered.append(event)
            self.cursor = page.cursor

    @property
    def ids(self) -> list[str]:
        return [e["id"] for e in self.delivered]


def all_hashes(fake: PangeaFake) -> list[str]:
    return [r.hash for r in fake.records]


def unsigned_index(fake: PangeaFake, after: int = 5) -> int:
    return next(i for i, r in enumerate(fake.records) if i >= after and "signature" not in r.envelope)


def signed_index(fake: PangeaFake, after: int = 5) -> int:
    return next(i for i, r in enumerate(fake.records) if i >= after and "signature" in r.envelope)


# --------------------------------------------------------------------------- honest data


def test_honest_log_is_delivered_once_in_order_with_every_check_passing(fake: PangeaFake, tmp_path: Path) -> None:
    source = make_source(fake, tmp_path)
    run = Run(source)
    assert run.ids == all_hashes(fake)
    assert not run.quarantined
    published = {i for i, r in enumerate(fake.records) if i // fake.buffer_size < fake.published}
    assert 0 < len(published) < len(fake.records), "the fixture must hold published and unpublished events"
    for i, event in enumerate(run.delivered):
        record = fake.records[i]
        assert event["raw"] == record.envelope
        assert hashlib.sha256(canonical(event["raw"])).hexdigest() == event["id"]
        signed = "signature" in record.envelope
        assert event["integrity"] == {"hash": "pass", "membership": "pass", "signature": "pass" if signed else "none"}
        assert event["source"] == {"name": "pangea-test", "type": "pangea", "vendor": "Pangea",
                                   "product": "Secure Audit Log", **PangeaSource.traits.block()}
    first = run.delivered[0]
    assert first["action"] == "login" and first["actor"] == {"name": "user0@example.com"}
    assert first["outcome"] == "failure" and first["target"] == {"name": "app-0"}
    assert first["timestamp"] == "2026-11-01T00:00:00.000000Z"
    assert first["organization"] == {"id": "tenant-a"}
    n_signed = sum("signature" in r.envelope for r in fake.records)
    metrics = source.metrics
    assert metrics.get("pangea_verifications_total", source="pangea-test", check="hash", result="pass") == 40
    assert metrics.get("pangea_verifications_total", source="pangea-test", check="membership", result="pass") == 40
    assert metrics.get("pangea_verifications_total", source="pangea-test", check="signature", result="pass") == n_signed
    assert metrics.get("pangea_verifications_total", source="pangea-test", check="signature",
                       result="none") == 40 - n_signed
    assert metrics.total("pangea_verification_failures_total") == 0


def test_search_asks_for_the_window_the_way_the_dump_tool_does(fake: PangeaFake, tmp_path: Path) -> None:
    source = make_source(fake, tmp_path, query="action:login", search_restriction={"source": ["web"]})
    before = datetime.now(timezone.utc)
    run = Run(source)
    body = fake.calls("/v1/search")[0].json()
    assert body["order"] == "asc" and body["order_by"] == "received_at" and body["verbose"] is True
    assert body["limit"] == 7 and body["query"] == "action:login"
    assert body["search_restriction"] == {"source": ["web"]}
    assert body["start"] == "2026-11-20T07:59:59.000000Z"
    assert datetime.fromisoformat(body["end"].replace("Z", "+00:00")) >= before
    assert fake.calls("/v1/search")[0].headers["Authorization"] == f"Bearer {TOKEN}"
    assert run.ids == [r.hash for r in fake.records if r.envelope["event"]["action"] == "login"]
    for call in fake.calls("/v1/results"):
        assert set(call.json()) == {"id", "offset", "limit"}


def test_second_poll_delivers_nothing_and_late_events_once(tmp_path: Path) -> None:
    fake = PangeaFake(40, start=datetime.now(timezone.utc) - timedelta(minutes=30), buffer_size=4).start()
    try:
        _second_poll_and_late_events(fake, tmp_path)
    finally:
        fake.stop()


def _second_poll_and_late_events(fake: PangeaFake, tmp_path: Path) -> None:
    source = make_source(fake, tmp_path, lookback=3600)
    source.config.start_time = datetime.now(timezone.utc) - timedelta(hours=1)
    first = Run(source)
    assert len(first.ids) == 40
    again = Run(source, first.cursor)
    assert again.ids == []
    last = fake.records[-1].envelope["received_at"]
    late = [fake.append({"message": f"late {i}", "action": "late"}, received_at=datetime.fromisoformat(
        last.replace("Z", "+00:00"))) for i in range(3)]  # same received_at as the edge event
    third = Run(source, again.cursor)
    assert third.ids == [r.hash for r in late]
    assert Run(source, third.cursor).ids == []


def test_the_cursor_survives_a_restart_mid_window(fake: PangeaFake, tmp_path: Path) -> None:
    source = make_source(fake, tmp_path)
    pages = source.poll(None)
    delivered = []
    cursor = None
    for _ in range(3):
        page = next(pages)
        delivered += [item["hash"] for item in page.events]
        cursor = json.loads(json.dumps(page.cursor))
    pages.close()
    rest = Run(make_source(fake, tmp_path), cursor)
    assert delivered + rest.ids == all_hashes(fake)


# --------------------------------------------------------------------------- tampering


def tamper(fake: PangeaFake, mode: str) -> tuple[int, str]:
    if mode == "altered":
        index = unsigned_index(fake)
        fake.alter_after_hashing(index, message="nothing to see here")
        return index, "hash"
    if mode == "proof":
        index = unsigned_index(fake, after=20)
        fake.corrupt_proof(index)
        return index, "membership"
    index = signed_index(fake)
    fake.bad_signature(index)
    return index, "signature"


@pytest.mark.parametrize("mode", ["altered", "proof", "signature"])
def test_a_tampered_event_is_quarantined_and_never_delivered(fake: PangeaFake, tmp_path: Path, mode: str,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    index, check = tamper(fake, mode)
    bad_hash = fake.records[index].hash
    source = make_source(fake, tmp_path)
    caplog.set_level(logging.WARNING, logger="test.pangea.source")
    run = Run(source)
    assert bad_hash not in run.ids
    assert run.ids == [h for h in all_hashes(fake) if h != bad_hash]
    assert len(run.quarantined) == 1
    reason, item = run.quarantined[0]
    assert check in reason and item["hash"] == bad_hash
    security = [r.getMessage() for r in caplog.records if "SECURITY" in r.getMessage()]
    assert len(security) == 1 and bad_hash in security[0] and check in security[0] and "quarantined" in security[0]
    assert source.metrics.get("pangea_verification_failures_total", source="pangea-test", check=check) == 1
    assert source.metrics.get("pangea_verifications_total", source="pangea-test", check=check, result="fail") == 1
    assert TOKEN not in caplog.text


@pytest.mark.parametrize("mode", ["altered", "proof", "signature"])
def test_forward_mode_delivers_the_tampered_event_flagged(fake: PangeaFake, tmp_path: Path, mode: str) -> None:
    index, check = tamper(fake, mode)
    source = make_source(fake, tmp_path, on_verification_failure="forward")
    run = Run(source)
    assert run.ids == all_hashes(fake) and not run.quarantined
    flagged = [e for e in run.delivered if "fail" in e["integrity"].values()]
    assert [e["id"] for e in flagged] == [fake.records[index].hash]
    assert flagged[0]["integrity"][check] == "fail"
    assert all(v != "fail" for e in run.delivered if e is not flagged[0] for v in e["integrity"].values())


def test_a_proof_against_the_wrong_root_fails(fake: PangeaFake, tmp_path: Path) -> None:
    fake.publish(0)  # every event now proves into the unpublished root only
    run = Run(make_source(fake, tmp_path, on_verification_failure="forward"))
    assert {e["integrity"]["membership"] for e in run.delivered} == {"pass"}
    original = fake._page

    def lying_page(indexes: list[int], published: int, cold_size: int, verbose: bool) -> dict[str, Any]:
        out = original(indexes, published, cold_size, verbose)
        if out.get("unpublished_root"):
            out["unpublished_root"] = dict(out["unpublished_root"], root_hash="ab" * 32)
        return out

    fake._page = lying_page  # type: ignore[method-assign]
    rerun = Run(make_source(fake, tmp_path))
    assert rerun.ids == [] and len(rerun.quarantined) == 40


# --------------------------------------------------------------------------- protocol


def test_202_accepted_is_polled_until_the_answer_is_ready(fake: PangeaFake, tmp_path: Path) -> None:
    fake.accept_next(1, polls=1)
    run = Run(make_source(fake, tmp_path, page_size=1000))
    assert run.ids == all_hashes(fake)
    polls = fake.calls("/request/", method="GET")
    assert len(polls) == 1 and polls[0].headers["Authorization"] == f"Bearer {TOKEN}"


def test_202_that_never_finishes_gives_up_with_a_clear_error(fake: PangeaFake, tmp_path: Path) -> None:
    fake.accept_next(1, polls=100)
    source = make_source(fake, tmp_path)
    source.api.accepted_timeout = 2.0
    with pytest.raises(SourceError, match="still processing"):
        Run(source)


@pytest.mark.parametrize("expiry", ["NotFound", "BadOffset"])
def test_an_expired_result_set_is_searched_again_without_loss_or_duplicates(
        fake: PangeaFake, tmp_path: Path, expiry: str) -> None:
    if expiry == "NotFound":
        fake.expire_after(2)
    else:
        fake.fault("status", path="/v1/results", count=1, status=400,
                   body=fake.envelope("BadOffset", "Offset is out of range", {"errors": [{"code": "BadOffset"}]}))
    source = make_source(fake, tmp_path)
    run = Run(source)
    assert run.ids == all_hashes(fake)
    searches = fake.calls("/v1/search")
    assert len(searches) >= 2
    assert searches[1].json()["start"] > searches[0].json()["start"]


def test_rate_limits_and_server_errors_end_in_complete_delivery(fake: PangeaFake, tmp_path: Path) -> None:
    fake.rate_limit(count=2, retry_after="0", path="/v1/search")
    fake.server_error(count=1, status=503, path="/v1/results")
    fake.rate_limit(count=1, retry_after="0", path="/v1/results")
    fake.server_error(count=1, status=500, path="/v1/results")
    source = make_source(fake, tmp_path)
    run = Run(source)
    assert run.ids == all_hashes(fake)
    assert source.metrics.total("http_retries_total") == 5


def test_rate_limit_that_does_not_end_says_so_in_pangea_words(fake: PangeaFake, tmp_path: Path) -> None:
    fake.rate_limit(count=50, retry_after="0", path="/v1/search")
    source = make_source(fake, tmp_path)
    source.client.max_tries = 3
    with pytest.raises(SourceError, match=r"rate limited.*TooManyRequests"):
        Run(source)


def test_too_many_requests_in_a_200_body_is_waited_out(fake: PangeaFake, tmp_path: Path) -> None:
    fake.fault("status", path="/v1/search", count=1, status=200,
               body=fake.envelope("TooManyRequests", "Too many requests", None))
    assert Run(make_source(fake, tmp_path)).ids == all_hashes(fake)


def test_a_bad_token_is_an_auth_error_that_names_no_secret(fake: PangeaFake, tmp_path: Path) -> None:
    source = make_source(fake, tmp_path, token=Secret("pts_wrong_token_value_42"))
    with pytest.raises(AuthError) as info:
        Run(source)
    assert "pts_wrong_token_value_42" not in str(info.value)


def test_validation_errors_are_reported_with_pangea_details(fake: PangeaFake, tmp_path: Path) -> None:
    fake.fault("status", path="/v1/search", count=1, status=400,
               body=fake.envelope("ValidationError", "There was an error validating the payload",
                                  {"errors": [{"code": "InvalidQuery", "detail": "unknown field 'colour'",
                                               "source": "/query"}]}))
    with pytest.raises(SourceError, match=r"ValidationError.*unknown field 'colour'"):
        Run(make_source(fake, tmp_path))


@pytest.mark.parametrize("change", ["extra", "missing"])
def test_anything_but_the_strict_envelope_is_refused(fake: PangeaFake, tmp_path: Path, change: str) -> None:
    body = fake.envelope("Success", "Found 0 event(s)", {"id": "pas_x", "count": 0, "events": []})
    if change == "extra":
        body["debug"] = True
    else:
        del body["response_time"]
    fake.fault("status", path="/v1/search", count=1, status=200, body=body)
    with pytest.raises(ResponseError, match="not Pangea's response envelope"):
        Run(make_source(fake, tmp_path))


# --------------------------------------------------------------------------- consistency


def test_consistency_against_the_ledger_passes_on_honest_roots(fake: PangeaFake, tmp_path: Path) -> None:
    source = make_source(fake, tmp_path, verify_consistency=True, ledger_url=fake.url)
    run = Run(source)
    verdicts = {e["integrity"]["consistency"] for e in run.delivered}
    assert verdicts == {"pass", "none"}  # none: unpublished events and the tree's first leaf
    assert source.metrics.get("pangea_verifications_total", source="pangea-test", check="consistency",
                              result="pass") > 0
    assert fake.calls("/graphql")


def test_unreachable_ledger_is_reported_once_and_event_checks_go_on(
        fake: PangeaFake, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    source = make_source(fake, tmp_path, verify_consistency=True, ledger_url=f"http://127.0.0.1:{closed_port}")
    caplog.set_level(logging.INFO, logger="test.pangea.source")
    run = Run(source)
    again = Run(source, None)
    assert run.ids == all_hashes(fake) == again.ids
    assert {e["integrity"]["consistency"] for e in run.delivered} == {"none"}
    assert {e["integrity"]["membership"] for e in run.delivered} == {"pass"}
    warnings = [r.getMessage() for r in caplog.records if "ledger is unreachable" in r.getMessage()]
    assert len(warnings) == 1 and "go on" in warnings[0]


# --------------------------------------------------------------------------- options


def test_domain_sets_the_base_url(tmp_path: Path, fake: PangeaFake) -> None:
    opts = apply_defaults(PangeaSource.options_schema, {"token": Secret(TOKEN), "domain": "aws.eu.pangea.cloud"})
    context = Context(name="p", state_dir=str(tmp_path), logger=logging.getLogger("t"), metrics=Metrics())
    source = PangeaSource(ComponentConfig(name="p", type="pangea", options=opts), context)
    assert source.base_url == "https://audit.aws.eu.pangea.cloud"
    opts = apply_defaults(PangeaSource.options_schema, {"token": Secret(TOKEN)})
    assert PangeaSource(ComponentConfig(name="p", type="pangea", options=opts), context).base_url == \
        "https://audit.aws.us.pangea.cloud"


def test_a_cursor_from_elsewhere_is_refused_clearly(fake: PangeaFake, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="state reset pangea-test"):
        Run(make_source(fake, tmp_path), {"page": 3})


def test_check_connection_authenticates(fake: PangeaFake, tmp_path: Path) -> None:
    assert "tree size" in make_source(fake, tmp_path).check_connection()
    with pytest.raises(AuthError):
        make_source(fake, tmp_path, token=Secret("pts_nope_nope")).check_connection()


def test_the_cursor_stays_bounded_and_never_re_reads_what_it_forgot() -> None:
    from siem_forwarder_plugins.sources.pangea.cursor import MAX_SEEN, Cursor

    cursor = Cursor(0)
    total = MAX_SEEN + 101
    times = {f"{i:016x}": 1_700_000_000_000_000 + i // 2 for i in range(total)}  # pairs share a time
    for key, t in times.items():
        cursor.add(key, t)
    cursor.prune(lookback_us=10**12)
    assert MAX_SEEN - 2 <= len(cursor.seen) <= MAX_SEEN
    assert cursor.floor is not None and cursor.start(10**12) == cursor.floor
    assert all((key in cursor.seen) == (t >= cursor.floor) for key, t in times.items())
    stored = json.loads(json.dumps(cursor.dump()))
    again = Cursor.load(stored, START)
    assert (again.through, again.floor, again.seen) == (cursor.through, cursor.floor, cursor.seen)
    assert len(json.dumps(stored)) < 40 * MAX_SEEN  # the one bound of every windowed source


def test_a_cursor_written_by_earlier_versions_loads_unchanged() -> None:
    from siem_forwarder_plugins.sources.pangea.cursor import Cursor

    old = {"v": 1, "through": "2026-11-22T10:00:00.000000Z", "floor": "2026-11-22T09:55:00.000000Z",
           "seen": {"9f2c51e07a3bd4c1": 1795341300456789}}
    cursor = Cursor.load(old, START)
    assert cursor.is_seen("9f2c51e07a3bd4c1" + "0" * 48) and not cursor.is_seen("f" * 64)
    assert cursor.dump() == old
