"""``buffer: disk`` in process: what is queued survives a restart and is sent in order, a page at a
time, deleted only once the output took it; a page handed over twice is queued once; a full buffer
holds the source back and never drops."""
from __future__ import annotations

import json
import logging
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from forwarder_core.engine.delivery import OutputRunner
from forwarder_core.engine.diskbuffer import DEFAULT_MAX_BYTES, DRAIN_BATCH, BufferedOutputRunner, DiskBuffer
from forwarder_core.errors import OutputError
from forwarder_core.metrics import Metrics
from forwarder_core.plugin.results import SendResult
from forwarder_core.storage.setaside import DEAD_LETTER, SetAside
from tests.core.engine.test_delivery import RecordingStop, Scripted
from tests.helpers import read_jsonl


def page(source: str, *ids: str) -> list[dict[str, Any]]:
    return [{"id": i, "source": source, "message": f"event {i}"} for i in ids]


def buffered(tmp_path: Path, script: list[Any] | None = None, max_bytes: int | None = None,
             stop_after: int = 50) -> BufferedOutputRunner:
    output = Scripted(script or [])
    inner = OutputRunner(output, SetAside(str(tmp_path), DEAD_LETTER), Metrics(), RecordingStop(stop_after),
                         logger=logging.getLogger("test.delivery"))
    return BufferedOutputRunner(inner, str(tmp_path), max_bytes)


def no_drainer(runner: BufferedOutputRunner) -> None:
    """The test drains by hand: ``start()`` finds a (finished) drainer and starts none."""
    runner._thread = threading.Thread(target=lambda: None)
    runner._thread.start()


def test_queued_events_survive_a_restart_and_drain_in_order_a_page_at_a_time(tmp_path: Path) -> None:
    first = buffered(tmp_path)
    tally: dict[str, int] = {}
    no_drainer(first)
    assert first.deliver(page("a", "1", "2"), "a", tally=tally)
    assert first.deliver(page("b", "3"), "b", tally=tally)
    assert tally == {"accepted": 3}
    assert BufferedOutputRunner.accepts_encoded is False  # it stores normalized events: the pipeline brings them back
    queued = first.buffer.bytes
    assert first.metrics.get("buffer_bytes", output="siem") == queued > 0
    first.buffer.close()

    again = buffered(tmp_path)
    assert (again.buffer.count, again.buffer.bytes) == (3, queued)
    assert again.metrics.get("buffer_bytes", output="siem") == queued
    assert again.drain_once()
    assert again.output.batches == [["1", "2"]]  # the oldest page alone
    assert (again.buffer.count, again.metrics.get("buffer_bytes", output="siem")) == (1, again.buffer.bytes)
    assert again.drain()
    assert again.output.batches == [["1", "2"], ["3"]]
    assert (again.buffer.count, again.buffer.bytes) == (0, 0) and again.drain_once()
    assert again.metrics.get("events_delivered_total", output="siem", source="b") == 1


def test_a_page_handed_over_again_after_a_crash_is_queued_once(tmp_path: Path) -> None:
    buffer = DiskBuffer(str(tmp_path), "siem", DEFAULT_MAX_BYTES)
    assert buffer.put("a", page("a", "1", "2"))
    assert not buffer.put("a", page("a", "1", "2"))  # its cursor was not committed: the same page again
    assert buffer.put("b", page("b", "1", "2"))  # another source's page with the same ids is its own
    assert buffer.put("a", page("a", "3"))
    assert buffer.put("a", page("a", "1", "2"))  # not the last page of a: new events that share ids
    assert buffer.count == 7
    buffer.close()


def test_the_head_of_the_queue_stops_at_the_end_of_the_oldest_page(tmp_path: Path) -> None:
    buffer = DiskBuffer(str(tmp_path), "siem", DEFAULT_MAX_BYTES)
    assert buffer.head(10) == []
    buffer.put("a", page("a", "1", "2", "3"))
    buffer.put("a", page("a", "4"))
    assert [row[2].count('"id"') for row in buffer.head(10)] == [1, 1, 1]
    two = buffer.head(2)
    assert len(two) == 2 and [r[1] for r in two] == ["a", "a"]
    buffer.delete_through(two)
    assert buffer.count == 2 and len(buffer.head(10)) == 1  # what is left of the first page
    buffer.delete_through([])
    assert buffer.count == 2
    assert DRAIN_BATCH == 1000
    buffer.close()


def test_a_buffer_from_before_pages_were_kept_keeps_its_events_and_numbers_new_pages_after(tmp_path: Path) -> None:
    (tmp_path / "buffer").mkdir()
    with sqlite3.connect(tmp_path / "buffer" / "siem.sqlite") as db:
        db.execute("CREATE TABLE queue (seq INTEGER PRIMARY KEY AUTOINCREMENT, source TEXT NOT NULL, payload TEXT NOT NULL)")
        db.execute("""INSERT INTO queue (source, payload) VALUES ('a', '{"id":"old"}')""")
    db.close()
    buffer = DiskBuffer(str(tmp_path), "siem", DEFAULT_MAX_BYTES)
    assert (buffer.count, buffer.bytes) == (1, len('{"id":"old"}'))
    buffer.put("a", page("a", "new"))
    buffer.put("a", page("a", "newer"))
    assert [len(buffer.head(10))] == [1]
    pages = sqlite3.connect(buffer.path).execute("SELECT page FROM queue ORDER BY seq").fetchall()
    assert pages == [(None,), (1,), (2,)]
    buffer.close()
    reopened = DiskBuffer(str(tmp_path), "siem", DEFAULT_MAX_BYTES)
    assert reopened._next_page == 3
    reopened.close()


def test_events_queued_before_pages_were_kept_are_sent_under_their_own_source(tmp_path: Path) -> None:
    (tmp_path / "buffer").mkdir()
    with sqlite3.connect(tmp_path / "buffer" / "siem.sqlite") as db:
        db.execute("CREATE TABLE queue (seq INTEGER PRIMARY KEY AUTOINCREMENT, source TEXT NOT NULL, payload TEXT NOT NULL)")
        for source, i in (("a", "1"), ("b", "2"), ("a", "3")):
            db.execute("INSERT INTO queue (source, payload) VALUES (?, ?)", (source, f'{{"id":"{i}"}}'))
    db.close()
    runner = buffered(tmp_path)
    no_drainer(runner)
    assert runner.drain()
    assert runner.output.batches == [["1"], ["2"], ["3"]]
    assert [runner.metrics.get("events_delivered_total", output="siem", source=s) for s in "ab"] == [2, 1]


def test_a_siem_down_is_retried_across_drain_windows_with_doubling_waits_up_to_max_backoff(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from forwarder_core.engine import diskbuffer

    monkeypatch.setattr(diskbuffer, "DRAIN_WINDOW", 0.0)  # each window gives up after one send
    runner = buffered(tmp_path, [OutputError("down")] * 10)
    runner.inner.max_backoff = 3.0
    no_drainer(runner)
    runner.deliver(page("a", "1"), "a")
    runner._closing = RecordingStop(3)  # the drainer's waits between windows, recorded, not slept
    runner._drain_forever()
    assert runner._closing.waits == [1.0, 2.0, 3.0]
    assert runner.buffer.count == 1  # nothing was given up on: the events wait for the SIEM


def test_the_drainer_never_keeps_the_process_alive_at_exit(tmp_path: Path) -> None:
    runner = buffered(tmp_path)
    runner.start()
    assert runner._thread is not None and runner._thread.daemon
    runner.close()


def test_a_full_buffer_holds_the_source_back_until_given_up_or_stopped_and_queues_nothing(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    runner = buffered(tmp_path, max_bytes=10)
    no_drainer(runner)
    assert runner.deliver(page("a", "1"), "a")  # under the limit when it came: queued
    full = runner.buffer.bytes
    tally: dict[str, int] = {}
    with caplog.at_level(logging.WARNING, logger="siem_forwarder.buffer"):
        assert not runner.deliver(page("a", "2"), "a", give_up_at=0.0, tally=tally)
        runner.stop.set()
        assert not runner.deliver(page("a", "3"), "a", tally=tally)
    assert tally == {} and runner.buffer.bytes == full and runner.buffer.count == 1
    assert [r.getMessage() for r in caplog.records] == [
        f"output siem: disk buffer full ({full} bytes); holding sources back until it drains"] * 2


def test_the_drainer_thread_sends_what_is_queued_and_empties_the_buffer(tmp_path: Path) -> None:
    runner = buffered(tmp_path, [SendResult(rejected={0: "refused"})])
    assert runner.deliver(page("a", "1", "2"), "a")
    with runner.buffer.changed:
        assert runner.buffer.changed.wait_for(lambda: runner.buffer.count == 0, timeout=60)
    runner.close()
    assert runner.output.batches == [["1", "2"]] and runner.output.closed
    assert [d["id"] for d in read_jsonl(Path(runner.inner.dead_letter.path("siem")))] == ["1"]
    assert runner._thread is None


def test_a_drain_that_gives_up_deletes_nothing(tmp_path: Path) -> None:
    runner = buffered(tmp_path, [OutputError("down")] * 5, stop_after=2)
    no_drainer(runner)
    runner.deliver(page("a", "1"), "a")
    runner.deliver(page("b", "2"), "b")
    assert not runner.drain()
    assert runner.buffer.count == 2 and runner.output.batches == [["1"], ["1"]]
    assert runner.state == "failing" and "down" in runner.reason
    assert runner.wants("anything")


def test_a_drain_window_spends_its_seconds_on_a_siem_that_is_down_then_the_drainer_backs_off(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each send to the SIEM here takes 1 s: a window of DRAIN_WINDOW (2 s) makes two, then gives up,
    so the drainer comes back to its own loop (where close() can end it) between windows."""
    from forwarder_core.engine import diskbuffer

    clock = [1000.0]
    monkeypatch.setattr(diskbuffer.time, "monotonic", lambda: clock[0])
    runner = buffered(tmp_path, [OutputError("down")] * 200, stop_after=100)
    sends = runner.output.send

    def one_second_each(events: list[dict[str, Any]]) -> SendResult:
        clock[0] += 1.0
        return sends(events)

    runner.output.send = one_second_each  # type: ignore[method-assign]
    no_drainer(runner)
    runner.deliver(page("a", "1"), "a")
    runner._closing = RecordingStop(2)
    runner._drain_forever()
    assert diskbuffer.DRAIN_WINDOW == 2.0
    assert len(runner.output.batches) == 4 and runner._closing.waits == [1.0, 2.0]


def test_the_drainers_waits_stop_doubling_at_nine_hours_whatever_max_backoff_says(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A SIEM down for weeks never makes the wait overflow: past 2**15 s it stays there."""
    from forwarder_core.engine import diskbuffer

    monkeypatch.setattr(diskbuffer, "DRAIN_WINDOW", 0.0)
    runner = buffered(tmp_path, [OutputError("down")] * 30, stop_after=1000)
    runner.inner.max_backoff = 1e9
    no_drainer(runner)
    runner.deliver(page("a", "1"), "a")
    runner._closing = RecordingStop(18)
    runner._drain_forever()
    assert runner._closing.waits == [0.5 * 2 ** n for n in range(1, 17)] + [2.0 ** 15] * 2


@pytest.mark.parametrize("deadline", [None, 60.0])
def test_a_full_buffer_holds_the_source_back_until_the_drain_makes_room_then_queues_its_page(
        tmp_path: Path, deadline: float | None) -> None:
    """Under ``run`` (no deadline) and under ``once`` with time left, a full buffer waits; it neither
    refuses the page nor fails."""
    import time

    runner = buffered(tmp_path, max_bytes=10)
    no_drainer(runner)
    assert runner.deliver(page("a", "1"), "a")
    answers: list[bool] = []
    give_up_at = None if deadline is None else time.monotonic() + deadline
    waiting = threading.Thread(target=lambda: answers.append(runner.deliver(page("a", "2"), "a", give_up_at)))
    waiting.start()
    waiting.join(0.3)
    assert answers == [] and runner.buffer.count == 1  # held back
    assert runner.drain_once()
    waiting.join(30)
    assert answers == [True] and runner.buffer.count == 1
    assert [json.loads(row[2])["id"] for row in runner.buffer.head(10)] == ["2"]


def test_text_is_queued_as_itself_so_non_ascii_takes_its_own_room_and_comes_back_unchanged(tmp_path: Path) -> None:
    """The buffer's size (its cap, ``buffer_bytes``) counts the text as written, not six characters
    for each non-ASCII one; a lone surrogate, which UTF-8 cannot hold, goes in escaped and comes back."""
    runner = buffered(tmp_path)
    no_drainer(runner)
    text = "東京のログ" * 20
    event = {"id": "1", "message": text, "odd": "\ud800"}
    assert runner.deliver([event], "a")
    assert runner.buffer.bytes < len(text) + 60
    sent: list[dict[str, Any]] = []
    runner.output.send = lambda events: sent.extend(events) or SendResult()  # type: ignore[method-assign]
    assert runner.drain_once()
    assert sent == [event]


def test_a_page_that_fails_to_be_queued_leaves_nothing_behind_and_the_next_page_is_queued(tmp_path: Path) -> None:
    """A write that fails half-way (a full disk, here a trigger refusing it) is rolled back: none of
    the page is queued, the same page can be handed over again, and the buffer keeps working."""
    buffer = DiskBuffer(str(tmp_path), "siem", DEFAULT_MAX_BYTES)
    buffer._db.execute("CREATE TRIGGER full_disk BEFORE INSERT ON queue WHEN NEW.payload LIKE '%poison%' "
                       "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END")
    with pytest.raises(sqlite3.DatabaseError, match="disk is full"):
        buffer.put("a", page("a", "1", "poison"))
    assert (buffer.count, buffer.head(10)) == (0, [])
    assert buffer.put("a", page("a", "2"))
    buffer._db.execute("DROP TRIGGER full_disk")
    assert buffer.put("a", page("a", "1", "poison"))  # not taken for a page already queued
    assert buffer.count == 3
    buffer.close()


def test_a_page_handed_over_again_after_a_restart_is_logged_as_not_queued_twice(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    runner = buffered(tmp_path)
    no_drainer(runner)
    with caplog.at_level(logging.INFO, logger="siem_forwarder.buffer"):
        assert runner.deliver(page("a", "1", "2"), "a")
        assert caplog.records == []
        assert runner.deliver(page("a", "1", "2"), "a")
    assert [r.getMessage() for r in caplog.records] == [
        "output siem: a page of 2 event(s) from a was already queued before a restart; not queued twice"]
    assert runner.buffer.count == 2
