"""The commit path of one source (:class:`SourceRunner`), in process: a page's cursor is committed
only once every output it is routed to took (or dead-lettered) each of its events, with a ledger
that accounts for every event the vendor served, and what the run reports is what was committed."""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from forwarder_core.engine import pipeline
from forwarder_core.engine.delivery import OutputRunner
from forwarder_core.engine.fetch import Fetcher
from forwarder_core.engine.pipeline import SourceRunner
from forwarder_core.errors import OutputError
from forwarder_core.metrics import Metrics
from forwarder_core.plugin.context import ComponentConfig, Context
from forwarder_core.plugin.results import Page, SendResult
from forwarder_core.storage.checkpoint import CheckpointStore
from forwarder_core.storage.ledger import NO_OUTPUT, Ledger
from forwarder_core.storage.setaside import DEAD_LETTER, QUARANTINE, SetAside
from forwarder_core.testing import MemorySource
from tests.core.engine.test_delivery import RecordingStop, Scripted
from tests.helpers import read_jsonl


def raw(i: int, minute: int = 0) -> dict[str, Any]:
    return {"id": f"e{i}", "time": f"2026-01-01T00:{minute:02d}:{i:02d}Z"}


class PagedSource(MemorySource):
    """Yields the pages it is given; the cursor is the page number and tells the time (its watermark)."""

    pages: list[Page] = []
    fail_after: int | None = None

    def poll(self, cursor: Any) -> Iterator[Page]:
        start = (cursor or {}).get("page", 0)
        for n, page in enumerate(self.pages[start:], start):
            if self.fail_after is not None and n >= self.fail_after:
                raise RuntimeError("vendor answered garbage")
            yield page

    def cursor_time(self, cursor: Any) -> datetime | None:
        return datetime(2026, 1, 1, 1, cursor["page"], tzinfo=timezone.utc) if cursor else None


class Rig:
    def __init__(self, tmp_path: Path, pages: list[Page], scripts: dict[str, list[Any]] | None = None,
                 routed: dict[str, list[str]] | None = None, fail_after: int | None = None, transform: Any = None,
                 source_class: type[PagedSource] = PagedSource):
        self.metrics = Metrics()
        self.stop = RecordingStop(100)
        context = Context(name="src", state_dir=str(tmp_path), logger=logging.getLogger("test.src"), metrics=self.metrics)
        self.source = source_class(ComponentConfig(name="src", type="memory", options={}), context)
        self.source.pages = pages
        self.source.fail_after = fail_after
        self.store = CheckpointStore(str(tmp_path))
        self.quarantine = SetAside(str(tmp_path), QUARANTINE)
        self.dead_letter = SetAside(str(tmp_path), DEAD_LETTER)
        self.outputs: dict[str, Scripted] = {}
        runners = []
        for name, script in (scripts if scripts is not None else {"siem": []}).items():
            out = Scripted(script, sources=(routed or {}).get(name))
            out.name = out.config.name = name
            self.outputs[name] = out
            runners.append(OutputRunner(out, self.dead_letter, self.metrics, self.stop,
                                        logger=logging.getLogger("test.delivery")))
        self.delivered_pages: list[dict[str, Any]] = []
        self.runner = SourceRunner(self.source, runners, self.store, self.quarantine, self.metrics, self.stop,
                                   transform=transform, page_delivered=lambda **kw: self.delivered_pages.append(kw),
                                   logger=logging.getLogger("test.pipeline"))

    def cursor(self) -> Any:
        cp = self.store.get("src")
        return cp.cursor if cp else None


def test_each_page_is_committed_with_a_ledger_that_accounts_for_every_event_served(tmp_path: Path) -> None:
    pages = [Page([raw(1), raw(2), {"id": "bad"}], {"page": 1}, already_delivered=2, held_back=1),
             Page([raw(3)], {"page": 2})]
    rig = Rig(tmp_path, pages, {"siem": [SendResult(rejected={0: "refused"})], "other": []})
    result = rig.runner.run_until_caught_up()
    assert result.ok and result.done and (result.pages, result.delivered, result.quarantined, result.polled) == (2, 2, 1, 7)  # what every output took
    ledger = Ledger(read=7, quarantined=1, already_delivered=2, held_back=1,
                    delivered={"siem": 2, "other": 3}, dead_lettered={"siem": 1, "other": 0})
    assert result.ledger == ledger and ledger.balanced
    ledger.dead_lettered.pop("other")  # the store keeps no zero term
    assert rig.store.ledger("src") == ledger
    cp = rig.store.get("src")
    assert cp is not None and (cp.cursor, cp.delivered, cp.watermark) == (
        {"page": 2}, 3, "2026-01-01T01:02:00.000000Z")
    assert cp.newest_event == "2026-01-01T00:00:03.000000Z"  # the newest event of the last page with events
    assert [q["raw"] for q in read_jsonl(rig.quarantine.path("src"))] == [{"id": "bad"}]
    assert rig.metrics.get("events_polled_total", source="src") == 7
    assert rig.metrics.get("events_quarantined_total", source="src") == 1
    assert rig.metrics.get("pages_committed_total", source="src") == 2
    assert rig.metrics.get("ledger_events_total", source="src", term="already_delivered") == 2
    assert rig.metrics.get("ledger_events_total", source="src", term="delivered", output="other") == 3
    assert [(p["count"], p["cursor"]) for p in rig.delivered_pages] == [(2, {"page": 1}), (1, {"page": 2})]
    assert rig.store.polls()["src"].outcome == "caught up (2 delivered)" and rig.store.polls()["src"].ok


def test_a_page_an_output_did_not_take_is_not_committed_and_is_sent_again(tmp_path: Path,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    pages = [Page([raw(1)], {"page": 1}), Page([raw(2)], {"page": 2})]
    rig = Rig(tmp_path, pages, {"up": [], "down": [SendResult(), OutputError("503")] + [OutputError("503")] * 5})
    result = rig.runner.run_until_caught_up(give_up_after=0)
    assert rig.cursor() == {"page": 1}  # the second page never got past "down"
    assert not result.ok and result.error == "output down kept failing: 503" and not result.done
    assert (result.pages, result.delivered) == (1, 1)
    assert "page of 1 event(s) not committed (output down kept failing: 503); it will be sent again" in caplog.text
    polls = rig.store.polls()["src"]
    assert not polls.ok and polls.outcome == "output down kept failing: 503"
    rig.outputs["down"].script = []
    again = rig.runner.run_until_caught_up()
    assert again.ok and again.done and rig.cursor() == {"page": 2}
    assert rig.outputs["up"].batches == [["e1"], ["e2"], ["e2"]]  # at least once: the page went again everywhere


def test_a_stop_during_delivery_commits_nothing_and_is_not_an_error(tmp_path: Path) -> None:
    rig = Rig(tmp_path, [Page([raw(1)], {"page": 1})], {"down": [OutputError("503")] * 5})
    rig.stop.set()
    result = rig.runner.run_until_caught_up()
    assert rig.cursor() is None and result.ok and not result.done
    stopped = rig.store.polls()["src"]
    assert stopped.outcome == "stopped (0 delivered)" and stopped.ok  # state shows no failure for a stop


def test_a_source_routed_to_no_output_counts_its_events_delivered_to_none(tmp_path: Path) -> None:
    rig = Rig(tmp_path, [Page([raw(1), raw(2)], {"page": 1})], scripts={"elsewhere": []},
              routed={"elsewhere": ["another"]})
    assert rig.runner.routes == []
    result = rig.runner.run_until_caught_up()
    assert result.done and rig.store.ledger("src") == Ledger(read=2, delivered={NO_OUTPUT: 2})
    assert rig.outputs["elsewhere"].batches == []


def test_an_empty_page_moves_the_cursor_without_sending_or_touching_the_newest_event(tmp_path: Path) -> None:
    pages = [Page([raw(1)], {"page": 1}), Page([], {"page": 2}, already_delivered=3)]
    rig = Rig(tmp_path, pages)
    assert rig.runner.run_until_caught_up().done
    cp = rig.store.get("src")
    assert cp is not None and cp.cursor == {"page": 2} and cp.newest_event == "2026-01-01T00:00:01.000000Z"
    assert rig.outputs["siem"].batches == [["e1"]]
    assert rig.store.ledger("src") == Ledger(read=4, already_delivered=3, delivered={"siem": 1})
    assert rig.runner.last_event > 0  # an event arrived: "no events for N minutes" counts from now
    (tmp_path / "quiet").mkdir()
    quiet = Rig(tmp_path / "quiet", [Page([], {"page": 1})])
    assert quiet.runner.run_until_caught_up().done and quiet.runner.last_event == 0.0


def test_the_newest_time_a_source_gives_wins_over_the_events_own(tmp_path: Path) -> None:
    newest = datetime(2026, 2, 1, tzinfo=timezone.utc)
    rig = Rig(tmp_path, [Page([raw(1)], {"page": 1}, newest=newest)])
    assert rig.runner.run_until_caught_up().done
    cp = rig.store.get("src")
    assert cp is not None and cp.newest_event == "2026-02-01T00:00:00.000000Z"
    assert rig.metrics.get("cursor_lag_seconds", source="src") > 0


def test_a_poll_that_fails_keeps_the_cursor_of_the_last_page_committed_and_says_why(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pages = [Page([raw(1)], {"page": 1}), Page([raw(2)], {"page": 2})]
    rig = Rig(tmp_path, pages, fail_after=1)
    with caplog.at_level(logging.DEBUG, logger="test.pipeline"):
        result = rig.runner.run_until_caught_up()
    [trace] = [r for r in caplog.records if r.levelno == logging.DEBUG and "traceback" in r.getMessage()]
    assert trace.exc_info and trace.exc_info[0] is RuntimeError  # for the debug log, the vendor's bug in full
    assert result.error == "poll failed: vendor answered garbage" and not result.done
    assert rig.cursor() == {"page": 1} and rig.metrics.get("poll_errors_total", source="src") == 1
    assert "source src: poll failed: vendor answered garbage; the cursor stays where it was" in caplog.text


def test_a_slice_ends_after_its_pages_when_others_wait_with_its_last_page_committed(tmp_path: Path) -> None:
    pages = [Page([raw(i)], {"page": i + 1}) for i in range(5)]
    rig = Rig(tmp_path, pages)
    poll = rig.runner.open_poll()
    fetcher = Fetcher("fetch-test")
    try:
        assert rig.runner.run_slice(poll, fetcher, max_pages=2, others_waiting=lambda: True) is False
        assert rig.cursor() == {"page": 2} and poll.pending is None  # nothing fetched ahead while it waits
        assert rig.runner.run_slice(poll, fetcher, max_pages=2, others_waiting=lambda: False) is True
    finally:
        fetcher.close()
    assert rig.cursor() == {"page": 5} and poll.result.done and poll.result.pages == 5


def test_progress_is_reported_after_every_committed_page_and_at_the_end(tmp_path: Path) -> None:
    pages = [Page([raw(i)], {"page": i + 1}) for i in range(3)]
    rig = Rig(tmp_path, pages)
    seen: list[tuple[int, float | None]] = []
    result = rig.runner.run_until_caught_up(progress=lambda r: seen.append((r.pages, r.progress)))
    assert [p for p, _ in seen] == [1, 2, 3, 3] and result.done
    assert rig.metrics.get("last_poll_timestamp_seconds", source="src") > 0
    assert rig.metrics.get("last_event_age_seconds", source="src") >= 0


def test_stopping_between_pages_ends_the_poll_after_the_page_in_hand(tmp_path: Path) -> None:
    pages = [Page([raw(i)], {"page": i + 1}) for i in range(3)]
    rig = Rig(tmp_path, pages)
    rig.runner.page_delivered = lambda **kw: rig.stop.set()
    result = rig.runner.run_until_caught_up()
    assert rig.cursor() == {"page": 1} and result.ok and not result.done and result.pages == 1
    assert threading.active_count() >= 1


def test_a_slice_past_its_pages_yields_as_soon_as_others_start_waiting(tmp_path: Path) -> None:
    pages = [Page([raw(i)], {"page": i + 1}) for i in range(6)]
    rig = Rig(tmp_path, pages)
    asked: list[int] = []

    def others_waiting() -> bool:
        asked.append(1)
        return len(asked) >= 3  # asked after pages 2, 3 and 4: someone waits from the fourth

    poll = rig.runner.open_poll()
    fetcher = Fetcher("fetch-test")
    try:
        assert rig.runner.run_slice(poll, fetcher, max_pages=2, others_waiting=others_waiting) is False
    finally:
        rig.runner.end_poll(poll)
        fetcher.close()
    assert rig.cursor() == {"page": 4}


def test_events_a_plugin_filters_out_are_counted_filtered_not_lost(tmp_path: Path) -> None:
    def drop_e2(source_name: str, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [e for e in events if e["id"] != "e2"]  # as Hooks.forwarder_transform_events answers: the kept events

    rig = Rig(tmp_path, [Page([raw(1), raw(2), raw(3)], {"page": 1})], transform=drop_e2)
    result = rig.runner.run_until_caught_up()
    assert result.done and (result.delivered, result.filtered) == (2, 1)
    assert rig.outputs["siem"].batches == [["e1", "e3"]]
    assert rig.store.ledger("src") == Ledger(read=3, filtered=1, delivered={"siem": 2})
    assert rig.metrics.get("events_filtered_total", source="src") == 1


def test_cursor_lag_is_never_negative_even_for_an_event_stamped_in_the_future(tmp_path: Path) -> None:
    future = datetime(2999, 1, 1, tzinfo=timezone.utc)
    rig = Rig(tmp_path, [Page([raw(1)], {"page": 1}, newest=future)])
    assert rig.runner.run_until_caught_up().done
    assert rig.metrics.get("cursor_lag_seconds", source="src") == 0.0


def test_a_slice_that_has_run_its_seconds_yields_to_a_waiting_source_not_before(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each page here takes 2 s of the slice's 5: while others wait, the poll keeps its slot for the
    pages shipped within 5 s and hands it over after the first page that starts past them."""
    clock = [1000.0]
    monkeypatch.setattr(pipeline.time, "monotonic", lambda: clock[0])
    pages = [Page([raw(i)], {"page": i + 1}) for i in range(8)]
    rig = Rig(tmp_path, pages)

    def two_seconds_a_page(**_: Any) -> list[Any]:
        clock[0] += 2.0
        return []

    rig.runner.page_delivered = two_seconds_a_page
    poll = rig.runner.open_poll()
    fetcher = Fetcher("fetch-test")
    try:
        assert rig.runner.run_slice(poll, fetcher, max_seconds=5.0, others_waiting=lambda: True) is False
    finally:
        rig.runner.end_poll(poll)
        fetcher.close()
    assert rig.cursor() == {"page": 4}  # pages started at 0, 2, 4 and 6 s into the slice


def test_ending_a_poll_closes_the_sources_pages_at_once(tmp_path: Path) -> None:
    """A poll that ends before its source is done (stopped, or ended while suspended in the queue)
    closes the source's page generator then, so the source's clean-up (a vendor's result set, a
    session) runs when the poll ends, not whenever the poll object is collected."""
    closed: list[bool] = []

    class Closing(PagedSource):
        def poll(self, cursor: Any) -> Iterator[Page]:
            try:
                yield from super().poll(cursor)
            finally:
                closed.append(True)

    rig = Rig(tmp_path, [Page([raw(i)], {"page": i + 1}) for i in range(4)], source_class=Closing)
    poll = rig.runner.open_poll()
    fetcher = Fetcher("fetch-test")
    try:
        assert rig.runner.run_slice(poll, fetcher, max_pages=1, others_waiting=lambda: True) is False
        assert closed == []  # suspended: its source is still mid-poll
        rig.runner.end_poll(poll)
        assert closed == [True] and rig.cursor() == {"page": 1}
    finally:
        fetcher.close()


def test_the_age_of_the_last_event_counts_from_start_until_one_arrives_then_from_it(tmp_path: Path) -> None:
    """``last_event_age_seconds`` is what an alert "no events for N minutes" reads."""
    (tmp_path / "quiet").mkdir()
    quiet = Rig(tmp_path / "quiet", [Page([], {"page": 1})])
    quiet.metrics.started = time.time() - 600
    assert quiet.runner.run_until_caught_up().done
    assert 600 <= quiet.metrics.get("last_event_age_seconds", source="src") < 660
    busy = Rig(tmp_path, [Page([raw(1)], {"page": 1})])
    busy.metrics.started = time.time() - 600
    assert busy.runner.run_until_caught_up().done
    assert 0 <= busy.metrics.get("last_event_age_seconds", source="src") < 60


def test_a_quarantine_is_logged_with_its_count_where_the_events_went_and_the_first_reason_cut_short(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    class Wordy(PagedSource):
        def normalize(self, raw: dict[str, Any]) -> dict[str, Any]:
            if raw["id"] == "long":
                raise ValueError("y" * 400)
            return super().normalize(raw)

    rig = Rig(tmp_path, [Page([raw(1), {"id": "long"}, {"id": "long"}], {"page": 1})], source_class=Wordy)
    with caplog.at_level(logging.WARNING, logger="test.pipeline"):
        assert rig.runner.run_until_caught_up().done
    [line] = [r.getMessage() for r in caplog.records if r.name == "test.pipeline"]
    reason = "normalize failed: ValueError: " + "y" * 400
    assert line == f"source src: 2 event(s) set aside in {rig.quarantine.path('src')} (first: {reason[:300]})"
