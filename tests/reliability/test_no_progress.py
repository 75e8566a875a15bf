"""A vendor that repeats a cursor or a page stops the poll with an error naming it, not forever.

Before, a vendor that handed back the ``next_page`` it was given made 28,331 requests in 45 s and
``once`` never ended. The guard is in the core (:mod:`forwarder_core.engine.noprogress`), so the
simplest third-party source (``hostile_follow``, no loop detection of its own) and the built-in
``asana`` source both get it.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from forwarder_core.engine import noprogress
from forwarder_core.errors import NoProgressError
from forwarder_core.storage.checkpoint import CheckpointStore
from tests.fakes.hostile_data import HostileVendor, good_text
from tests.reliability.test_poison_events import follow, run_once

MAX_REQUESTS = 4
"""Requests a looping vendor may get in one poll: the page delivered, the repeat, one fetched ahead."""


def file_ids(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_bytes().split(b"\n") if line] if path.exists() else []


def out(tmp_path: Path) -> list[dict[str, Any]]:
    return [{"name": "file", "type": "file", "options": {"path": str(tmp_path / "out.jsonl")}}]


def stopped(vendor: HostileVendor, timeout: float = 20) -> threading.Timer:
    """Ends the vendor's data after ``timeout``: a guard that does not hold fails the test, not the suite."""
    timer = threading.Timer(timeout, vendor.give_up)
    timer.daemon = True
    timer.start()
    return timer


def test_a_repeated_cursor_stops_the_poll_naming_source_and_cursor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with HostileVendor("repeat_cursor", [good_text(0), good_text(1)]) as vendor:
        timer = stopped(vendor)
        first = run_once(tmp_path, follow(vendor), out(tmp_path), monkeypatch)
        requests_first = vendor.data_requests
        second = run_once(tmp_path, follow(vendor), out(tmp_path), monkeypatch)
        timer.cancel()

    result = first.result
    assert not result.ok and not result.done
    assert "hostile: no progress: the source repeated a cursor" in result.error
    assert '"same-cursor"' in result.error and "page 2" in result.error
    assert requests_first <= MAX_REQUESTS
    assert result.delivered == 2 and result.pages == 1  # what came before stays delivered and counted
    assert CheckpointStore(str(first.state)).get("hostile").cursor == "same-cursor"
    assert first.metrics.get("polls_without_progress_total", source="hostile") == 1
    assert first.metrics.get("poll_errors_total", source="hostile") == 1
    # the next poll starts from that cursor and is handed the same page under it: stopped before sending
    assert not second.result.ok and "the committed cursor this poll started from" in second.result.error
    assert second.result.delivered == 0
    assert vendor.data_requests - requests_first <= MAX_REQUESTS
    assert file_ids(tmp_path / "out.jsonl") == ["good-0", "good-1"]


def test_an_identical_page_under_new_cursors_stops_the_poll(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with HostileVendor("identical_page", [good_text(0), good_text(1)]) as vendor:
        timer = stopped(vendor)
        first = run_once(tmp_path, follow(vendor), out(tmp_path), monkeypatch)
        timer.cancel()

    result = first.result
    assert not result.ok
    assert "hostile: no progress: the source served an identical page: page 2" in result.error
    assert "same 2 event(s) as page 1" in result.error
    assert vendor.data_requests <= MAX_REQUESTS
    assert result.delivered == 2
    assert CheckpointStore(str(first.state)).get("hostile").cursor == "c1"
    assert first.metrics.get("polls_without_progress_total", source="hostile") == 1
    assert file_ids(tmp_path / "out.jsonl") == ["good-0", "good-1"]


def test_pages_that_shift_while_read_are_progress_and_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Offset paging over a list that grows at its head: each page repeats the last event of the one
    before, but no page and no cursor repeats, so the poll goes on to the end and delivers every
    event a page held (the repeated ones again: at least once is what such a vendor allows)."""
    with HostileVendor("shift", page_size=3, shift_total=12) as vendor:
        timer = stopped(vendor)
        first = run_once(tmp_path, follow(vendor), out(tmp_path), monkeypatch)
        timer.cancel()

    result = first.result
    assert result.ok and result.done, result.error
    assert first.metrics.get("polls_without_progress_total", source="hostile") == 0
    assert len(set(vendor.served)) < len(vendor.served)  # the pages did shift
    assert file_ids(tmp_path / "out.jsonl") == vendor.served


def test_the_builtin_asana_source_is_stopped_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The issue's case: an Asana ``next_page.offset`` that never changes, with the same data."""
    with HostileVendor("repeat_cursor", page_size=3) as vendor:
        timer = stopped(vendor)
        source = {"name": "asana", "type": "asana", "start_time": "2026-11-02T09:00:00Z",
                  "options": {"base_url": vendor.url + "/api/1.0", "token": "t0ken", "workspace_gid": "12345",
                              "settle_delay": 0}}
        first = run_once(tmp_path, source, out(tmp_path), monkeypatch)
        timer.cancel()

    result = first.result
    assert not result.ok, "the poll should have been stopped"
    assert "asana: no progress" in result.error
    assert vendor.data_requests <= MAX_REQUESTS + noprogress.EMPTY_REPEATS  # its own de-duplication empties the repeats
    assert result.delivered == 3
    assert len(file_ids(tmp_path / "out.jsonl")) == 3


def test_the_guard_remembers_a_bounded_number_of_cursors() -> None:
    from forwarder_core.metrics import Metrics
    from forwarder_core.plugin_api import Page

    def pages() -> Any:
        for n in range(noprogress.RECENT * 3):
            yield Page([{"n": n}], {"n": n})
        yield Page([{"n": 0}], {"n": "again"})  # the first page's events again, further on: not a fault
        # the cursor and the events of the last page but one: a fault (the same cursor with other events
        # is a source paging inside a window under the cursor it commits at the window's end)
        yield Page([{"n": noprogress.RECENT * 3 - 1}], {"n": noprogress.RECENT * 3 - 1})

    guarded = noprogress.guard("s", pages(), Metrics())
    for _ in range(noprogress.RECENT * 3 + 1):
        next(guarded)
    with pytest.raises(NoProgressError, match="page 194 of this poll has the cursor of page 192 of this poll"):
        next(guarded)


def test_a_source_reading_an_edge_again_is_not_a_fault() -> None:
    """Pangea searches again from its edge and finds only what it delivered: an empty page under the
    cursor it already had. A few of those in a row are fine; an endless run is not."""
    from forwarder_core.metrics import Metrics
    from forwarder_core.plugin_api import Page

    def pages(repeats: int) -> Any:
        yield Page([{"n": 1}], {"at": 1})
        for _ in range(repeats):
            yield Page([], {"at": 1}, already_delivered=1)
        yield Page([], {"at": 2})

    assert len(list(noprogress.guard("s", pages(noprogress.EMPTY_REPEATS), Metrics()))) == noprogress.EMPTY_REPEATS + 2
    assert len(list(noprogress.guard("s", iter([Page([], {"at": 0})]), Metrics(), start={"at": 0}))) == 1
    with pytest.raises(NoProgressError, match="repeated a cursor"):
        list(noprogress.guard("s", pages(noprogress.EMPTY_REPEATS + 1), Metrics()))


def test_events_met_again_further_on_are_not_an_identical_page() -> None:
    """A source whose de-duplication cannot recognise an event (Incydr's NaN events) serves it again
    a few pages later: only a page identical to the one right before is a loop."""
    from forwarder_core.metrics import Metrics
    from forwarder_core.plugin_api import Page

    nan = [{"n": float("nan")}]
    ok = [Page(nan, 1), Page([{"n": 1}], 2), Page(nan, 3), Page([], 4), Page(nan, 5)]
    assert len(list(noprogress.guard("s", iter(ok), Metrics()))) == 5
    with pytest.raises(NoProgressError, match="page 3 of this poll holds the same 1 event"):
        list(noprogress.guard("s", iter([Page(nan, 1), Page([{"n": 1}], 2), Page([{"n": 1}], 3)]), Metrics()))
