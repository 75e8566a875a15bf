"""The window cursor shared by the asana and incydr sources: bounded, JSON, resumable."""
from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from forwarder_core.metrics import Metrics
from forwarder_core.plugin_api import ComponentConfig, Context, Page, SourceError
from forwarder_core.times import iso_ms, parse_ms
from siem_forwarder_plugins.sources.windows import MAX_SEEN, EdgeDedup, WindowCursor, WindowedSource


def test_a_fresh_cursor_starts_at_the_start_time_and_round_trips_through_json():
    cursor = WindowCursor.load(None, 1_700_000_000_000)
    assert cursor.next_window(1_700_000_060_000, 300_000) == (1_700_000_000_000, 1_700_000_060_000)
    cursor.seen["a"] = 1_700_000_000_001
    cursor.window = {"start": 1, "end": 2, "page": 3}
    again = WindowCursor.load(json.loads(json.dumps(cursor.dump())), 0)
    assert again == cursor


def test_the_first_window_of_a_poll_overlaps_by_lookback_but_never_below_floor():
    cursor = WindowCursor(watermark=1_000_000, floor=0)
    assert cursor.next_window(2_000_000, 300_000) == (700_000, 2_000_000)
    cursor.floor = 900_000
    assert cursor.next_window(2_000_000, 300_000) == (900_000, 2_000_000)
    assert cursor.next_window(1_000_000, 300_000) is None  # nothing new has settled


def test_later_windows_of_a_poll_start_where_the_last_one_ended_even_short_of_the_watermark():
    cursor = WindowCursor(watermark=1_000_000, floor=0)
    cursor.finish_window(800_000, 300_000)  # a narrowed overlap window ended before the watermark
    assert cursor.watermark == 1_000_000
    assert cursor.next_window(2_000_000, 300_000, after=800_000) == (800_000, 2_000_000)
    assert cursor.next_window(2_000_000, 300_000, after=2_000_000) is None


def test_finishing_a_window_forgets_ids_out_of_the_lookback():
    cursor = WindowCursor(watermark=0, floor=0, seen={"old": 100, "edge": 700, "new": 900})
    cursor.window = {"start": 0, "end": 1000}
    cursor.finish_window(1000, 300)
    assert cursor.seen == {"edge": 700, "new": 900} and cursor.watermark == 1000 and cursor.window is None


def test_the_seen_set_is_bounded_and_floor_rises_past_what_was_dropped():
    seen = {f"id{i}": 10_000 + i // 3 for i in range(MAX_SEEN + 10)}  # three events per millisecond
    cursor = WindowCursor(watermark=0, floor=0, seen=seen)
    cursor.finish_window(20_000_000, 10**9)
    assert len(cursor.seen) <= MAX_SEEN
    dropped_times = {t for k, t in seen.items() if k not in cursor.seen}
    assert cursor.floor == max(dropped_times) + 1
    assert min(cursor.seen.values()) >= cursor.floor  # no instant is half kept: a re-read from floor repeats nothing


def test_edge_dedup_admits_once_and_keeps_only_what_the_next_overlap_reaches():
    cursor = WindowCursor(watermark=0, floor=0, seen={"delivered-before": 950})
    dedup = EdgeDedup(cursor, window_end=1000, lookback=100, window_ids=set())
    assert not dedup.admit("delivered-before", 950)
    assert dedup.admit("early", 500) and dedup.admit("late", 950)
    assert not dedup.admit("late", 950)
    assert cursor.seen == {"delivered-before": 950, "late": 950}
    assert dedup.met == 3
    assert dedup.take_already() == 2  # the one delivered before and the one met twice: the ledger's "already delivered"


def test_a_foreign_cursor_is_refused_clearly():
    with pytest.raises(ValueError, match="unrecognised cursor"):
        WindowCursor.load({"offset": "abc"}, 0)
    with pytest.raises(ValueError) as refused:
        WindowCursor.load("x" * 500, 0)
    assert str(refused.value).endswith("window cursor): " + "x" * 200)  # quoted, and only its start


def test_time_helpers_are_exact_to_the_millisecond():
    assert parse_ms("2024-01-01T00:00:00.001Z") == 1_704_067_200_001
    assert parse_ms("2024-01-01T00:00:00.001999Z") == 1_704_067_200_001  # truncated, never rounded up
    assert iso_ms(1_704_067_200_001) == "2024-01-01T00:00:00.001Z"


# ---------------------------------------------------------------------------- occurrences


def test_occurrences_are_numbered_and_a_re_read_delivers_none_of_them_again():
    cursor = WindowCursor(watermark=0, floor=0)
    digest = "ab" * 32
    first = EdgeDedup(cursor, window_end=1000, lookback=500)
    assert [first.occurrence(digest, 900) for _ in range(3)] == [digest, f"{digest}-2", f"{digest}-3"]
    stored = json.loads(json.dumps(cursor.dump()))
    assert stored["seen"] == {digest[:16]: [900, 3]}
    again = WindowCursor.load(stored, 0)
    reread = EdgeDedup(again, window_end=1200, lookback=500)
    assert [reread.occurrence(digest, 900) for _ in range(3)] == [None, None, None]
    assert reread.occurrence(digest, 900) == f"{digest}-4"  # a copy that arrived late
    assert reread.take_already() == 3 and reread.take_already() == 0


def test_a_cursor_written_before_occurrences_loads_as_one_delivery_per_id():
    """The form every earlier version wrote: ``seen`` maps a key to its time alone."""
    old = {"v": 1, "watermark": 1_000_000, "watermark_time": iso_ms(1_000_000), "floor": 700_000,
           "seen": {"9f2c51e07a3bd4c1": 950_000, "0123456789abcdef": 990_000}, "window": None}
    cursor = WindowCursor.load(old, 0)
    assert (cursor.watermark, cursor.floor) == (1_000_000, 700_000)
    assert cursor.seen.delivered("9f2c51e07a3bd4c1") == 1 and cursor.seen.delivered("ffffffffffffffff") == 0
    assert cursor.dump()["seen"] == old["seen"]  # nothing counted twice: the old form is written back
    dedup = EdgeDedup(cursor, window_end=1_100_000, lookback=300_000)
    digest = "9f2c51e07a3bd4c1" + "0" * 48
    assert dedup.occurrence(digest, 950_000) is None
    assert dedup.occurrence(digest, 950_000) == f"{digest}-2"


def test_the_seen_set_bound_drops_whole_instants_and_says_where_it_is_complete_from():
    from siem_forwarder_plugins.sources.windows import SeenSet

    seen = SeenSet({f"k{i}": i // 2 for i in range(10)})
    seen.add("k9", 4, 3)
    assert seen.bound(5) == 3 and sorted(seen.values()) == [3, 3, 4, 4]
    assert seen.delivered("k9") == 3 and seen.delivered("k0") == 0
    seen.forget_before(4)
    assert set(seen) == {"k8", "k9"} and seen.to_json() == {"k8": 4, "k9": [4, 3]}
    assert SeenSet.from_json(seen.to_json()).delivered("k9") == 3


# ---------------------------------------------------------------------------- promises at the edges


def test_an_event_exactly_on_the_lookback_boundary_is_delivered_once_across_polls():
    """The next poll re-reads from ``watermark - lookback`` inclusive, so an event at that very
    millisecond is read again: the cursor must remember it, and the re-read must skip it."""
    cursor = WindowCursor(watermark=0, floor=0)
    first = EdgeDedup(cursor, window_end=1000, lookback=300)
    assert first.admit("on-edge", 700) and first.admit("before-edge", 699)
    digest = "cd" * 32
    assert first.occurrence(digest, 700) == digest
    cursor.finish_window(1000, 300)
    assert set(cursor.seen) == {"on-edge", digest[:16]}  # 699 is never read again: not kept
    stored = WindowCursor.load(json.loads(json.dumps(cursor.dump())), 0)
    assert stored.next_window(2000, 300) == (700, 2000)
    again = EdgeDedup(stored, window_end=2000, lookback=300)
    assert not again.admit("on-edge", 700)
    assert again.occurrence(digest, 700) is None
    assert again.take_already() == 2


def test_a_re_read_counts_each_event_it_skips_as_already_delivered_and_the_rest_as_met():
    cursor = WindowCursor(watermark=1000, floor=0, seen={"old": 900})
    dedup = EdgeDedup(cursor, window_end=2000, lookback=300)
    assert not dedup.admit("old", 900) and dedup.admit("new", 1500)
    assert (dedup.met, dedup.already) == (0, 1)  # without window ids, admit meets nothing of its own
    assert dedup.take_already() == 1 and dedup.already == 0
    digest = "ef" * 32
    assert dedup.occurrence(digest, 1500) == digest and dedup.occurrence(digest, 1500) == f"{digest}-2"
    assert (dedup.met, dedup.already) == (2, 0)


def test_a_second_pass_over_a_window_delivers_only_occurrences_no_pass_delivered_yet():
    """Deep pages can shift while a window is read: a new pass meets copies again; it delivers
    only a copy beyond the most any pass met, and counts the rest as already delivered."""
    from siem_forwarder_plugins.sources.windows import WindowTally

    cursor = WindowCursor(watermark=0, floor=0)
    tally = WindowTally()
    digest = "12" * 32
    first = EdgeDedup(cursor, window_end=1000, lookback=100, tally=tally)
    assert [first.occurrence(digest, 500) for _ in range(2)] == [digest, f"{digest}-2"]
    tally.new_pass()
    second = EdgeDedup(cursor, window_end=1000, lookback=100, tally=tally)
    assert [second.occurrence(digest, 500) for _ in range(3)] == [None, None, f"{digest}-3"]
    assert (second.already, second.met) == (2, 1)
    assert digest[:16] not in cursor.seen  # 500 is out of the next overlap [900, ...)


def test_a_late_copy_inside_the_overlap_raises_the_count_the_cursor_keeps():
    cursor = WindowCursor(watermark=1000, floor=0, seen={"34" * 8: 950})
    digest = "34" * 32
    dedup = EdgeDedup(cursor, window_end=2000, lookback=1500)
    assert dedup.occurrence(digest, 950) is None and dedup.occurrence(digest, 950) == f"{digest}-2"
    assert cursor.seen.delivered(digest[:16]) == 2
    fresh = "56" * 32
    assert [dedup.occurrence(fresh, 600) for _ in range(2)] == [fresh, f"{fresh}-2"]
    assert cursor.seen.delivered(fresh[:16]) == 2 and cursor.seen[fresh[:16]] == 600


def test_the_seen_set_keeps_the_latest_time_and_the_highest_count_of_a_key():
    from siem_forwarder_plugins.sources.windows import SeenSet

    seen = SeenSet()
    seen.add("k", 10)
    seen.add("k", 5, 3)
    assert seen["k"] == 10 and seen.delivered("k") == 3
    seen.add("k", 20, 2)
    assert seen["k"] == 20 and seen.delivered("k") == 3
    seen.add("one", 7, 1)
    assert seen.delivered("one") == 1 and "one" not in seen.counts
    assert seen.bound(3) is None and len(seen) == 2  # under the bound: nothing goes
    assert SeenSet.from_json(None) == {} and SeenSet.from_json({"a": 5}).to_json() == {"a": 5}


def test_a_cursor_without_a_floor_starts_its_floor_at_the_watermark_and_keeps_its_window():
    cursor = WindowCursor.load({"v": 1, "watermark": 5000, "seen": {}, "window": {"start": 1, "end": 2, "page": 7}}, 0)
    assert (cursor.watermark, cursor.floor, cursor.window) == (5000, 5000, {"start": 1, "end": 2, "page": 7})
    assert WindowCursor.load({}, 42) == WindowCursor(watermark=42, floor=42)
    dumped = cursor.dump()
    assert dumped["watermark_time"] == "1970-01-01T00:00:05.000Z" and dumped["v"] == 1
    dumped["window"]["page"] = 8
    assert cursor.window == {"start": 1, "end": 2, "page": 7}  # a yielded page's cursor is a copy
    with pytest.raises(ValueError, match="expected a version 1"):
        WindowCursor.load({"v": 2, "watermark": 1}, 0)


def test_finishing_a_window_never_moves_the_watermark_or_the_floor_back():
    cursor = WindowCursor(watermark=5000, floor=4000)
    cursor.finish_window(3000, 100)
    assert (cursor.watermark, cursor.floor) == (5000, 4000)
    cursor.seen.update({f"k{i}": 6000 + i for i in range(MAX_SEEN + 1)})
    cursor.finish_window(7000, 10**6)
    assert cursor.floor == 6001 and cursor.watermark == 7000  # the one dropped was at 6000
    cursor.floor = 30_000
    cursor.seen.update({f"j{i}": 6000 for i in range(5)})
    cursor.finish_window(7000, 10**6)
    assert cursor.floor == 30_000


def test_a_window_ending_at_the_watermark_or_a_poll_at_its_end_reads_nothing():
    cursor = WindowCursor(watermark=1000, floor=0)
    assert cursor.next_window(1001, 0) == (1000, 1001)
    assert cursor.next_window(1000, 0) is None
    assert cursor.next_window(1500, 0, after=1499) == (1499, 1500)
    assert cursor.next_window(1500, 0, after=1500) is None


# ---------------------------------------------------------------------------- the windowed source's poll


class Spans(WindowedSource):
    """A windowed source over a list of event times: each window is read in pages of ``page_size``."""

    type_name = "spans"
    times: list[int] = []
    stop_after_pages: int | None = None

    def open_window(self, start: int, end: int) -> dict[str, Any]:
        self.opened.append((start, end))
        return {"start": start, "end": end, "page": 0}

    def read_window(self, state: WindowCursor) -> Iterator[Page]:
        win = state.window
        assert win is not None
        inside = [t for t in self.times if win["start"] <= t < win["end"]]
        dedup = EdgeDedup(state, win["end"], self.lookback)
        while True:
            chunk = inside[win["page"] * self.page_size:(win["page"] + 1) * self.page_size]
            fresh = [t for t in chunk if dedup.admit(str(t), t)]
            win["page"] += 1
            if len(chunk) < self.page_size:
                state.finish_window(win["end"], self.lookback)
            self.pages += 1
            if self.stop_after_pages is not None and self.pages >= self.stop_after_pages:
                self.context.stop.set()
            yield Page(fresh, state.dump(), already_delivered=dedup.take_already())
            if state.window is None or self.context.stop.is_set():
                return


def spans(times: list[int], start: datetime | None, **options: Any) -> Spans:
    opts = {"page_size": 2, "settle_delay": 30, "lookback": 300, **options}
    source = Spans(ComponentConfig(name="w", type="spans", options=opts, start_time=start),
                   Context(name="w", state_dir="", logger=logging.getLogger("test.w"), metrics=Metrics()))
    source.times, source.opened, source.pages = times, [], 0
    return source


def test_a_windowed_source_takes_its_settle_delay_and_lookback_in_seconds() -> None:
    source = spans([], None, settle_delay=2.5, lookback=300)
    assert (source.settle, source.lookback, source.page_size) == (2_500, 300_000, 2)


def test_a_poll_reads_every_settled_window_once_and_the_next_poll_only_the_overlap(monkeypatch) -> None:
    from siem_forwarder_plugins.sources import windows

    now = [1_000_000_000]
    monkeypatch.setattr(windows, "now_ms", lambda: now[0])
    start = datetime.fromtimestamp(999_000, tz=timezone.utc)  # 1,000 s before now, in ms: 999,000,000
    times = [999_000_000, 999_500_000, 999_969_999, 999_970_000]
    source = spans(times, start)
    delivered: list[int] = []
    cursor = None
    for page in source.poll(cursor):
        delivered += page.events
        cursor = page.cursor
    assert delivered == times[:3]  # the last one is not settled yet (30 s behind now)
    assert source.opened == [(999_000_000, 999_970_000)] and cursor["watermark"] == 999_970_000
    assert source.cursor_time(cursor) == datetime.fromtimestamp(999_970, tz=timezone.utc)
    now[0] += 60_000
    again = [e for page in source.poll(cursor) for e in page.events]
    assert again == [999_970_000]
    assert source.opened[1] == (999_670_000, 1_000_030_000)  # lookback before the watermark


def test_a_poll_stopped_part_way_keeps_the_window_open_in_its_cursor_and_resumes_it(monkeypatch) -> None:
    from siem_forwarder_plugins.sources import windows

    monkeypatch.setattr(windows, "now_ms", lambda: 2_000_000)
    times = [1_000_000 + i for i in range(5)]
    source = spans(times, datetime.fromtimestamp(1_000, tz=timezone.utc), settle_delay=0)
    source.stop_after_pages = 1
    pages = list(source.poll(None))
    assert [p.events for p in pages] == [times[:2]] and pages[-1].cursor["window"]["page"] == 1
    source.context.stop.clear()
    source.stop_after_pages = None
    rest = [e for p in source.poll(pages[-1].cursor) for e in p.events]
    assert rest == times[2:] and len(source.opened) == 1  # the same window, not a new one


def test_a_stopped_source_reads_nothing_and_one_without_a_start_time_starts_a_day_back(monkeypatch) -> None:
    from siem_forwarder_plugins.sources import windows

    monkeypatch.setattr(windows, "now_ms", lambda: int(datetime.now(timezone.utc).timestamp() * 1000))
    source = spans([], None, settle_delay=0)
    source.context.stop.set()
    assert list(source.poll(None)) == [] and source.opened == []
    source.context.stop.clear()
    list(source.poll(None))
    day_ago = (datetime.now(timezone.utc) - timedelta(hours=24)).timestamp() * 1000
    assert abs(source.opened[0][0] - day_ago) < 60_000


def test_a_cursor_the_source_cannot_read_is_refused_with_how_to_reset_it() -> None:
    source = spans([], None)
    for bad in ({"v": 1}, {"v": 1, "watermark": "soon", "floor": 0}, {"v": 1, "watermark": None}, "x" * 500):
        with pytest.raises(SourceError, match="reset it with 'siem-forwarder state reset w'") as refused:
            list(source.poll(bad))
        assert len(str(refused.value)) < 400  # a huge foreign cursor is quoted, not dumped
    assert source.cursor_time({"watermark": "1"}) is None and source.cursor_time("x") is None


def test_a_later_window_never_runs_backwards() -> None:
    cursor = WindowCursor(watermark=1000, floor=0)
    assert cursor.next_window(1400, 0, after=1500) is None


def test_the_seen_set_holds_the_documented_twenty_thousand_ids() -> None:
    """docs: about 700 KB of cursor JSON, 300 s of lookback at 60 events/s."""
    assert MAX_SEEN == 20_000
