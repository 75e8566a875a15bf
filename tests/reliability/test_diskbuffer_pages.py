"""The disk buffer drains one source page at a time, so a crash re-sends at most one page.

(The crash-and-outage harness checks the same end to end: ``python -m tests.reliability.long
--buffer disk``.)
"""
from __future__ import annotations

import sqlite3
from pathlib import Path

from forwarder_core.engine.diskbuffer import DRAIN_BATCH, DiskBuffer


def _events(first: int, count: int) -> list[dict[str, object]]:
    return [{"id": f"e{n}", "n": n} for n in range(first, first + count)]


def test_head_stops_at_the_end_of_the_oldest_page(tmp_path: Path) -> None:
    buffer = DiskBuffer(str(tmp_path), "out", 1 << 30)
    buffer.put("a", _events(0, 3))
    buffer.put("b", _events(3, 4))
    buffer.put("a", _events(7, 2 * DRAIN_BATCH + 5))
    seen = []
    while rows := buffer.head(DRAIN_BATCH):
        assert len({source for _, source, _ in rows}) == 1
        seen.append(len(rows))
        buffer.delete_through(rows)
    assert seen == [3, 4, DRAIN_BATCH, DRAIN_BATCH, 5]
    assert buffer.count == 0 and buffer.bytes == 0
    buffer.close()


def test_pages_are_kept_across_a_restart(tmp_path: Path) -> None:
    buffer = DiskBuffer(str(tmp_path), "out", 1 << 30)
    buffer.put("a", _events(0, 2))
    buffer.put("a", _events(2, 2))
    buffer.close()
    again = DiskBuffer(str(tmp_path), "out", 1 << 30)
    again.put("a", _events(4, 2))
    sizes = []
    while rows := again.head(DRAIN_BATCH):
        sizes.append(len(rows))
        again.delete_through(rows)
    assert sizes == [2, 2, 2]
    again.close()


def test_a_buffer_written_before_pages_were_kept_still_drains(tmp_path: Path) -> None:
    path = tmp_path / "buffer" / "out.sqlite"
    path.parent.mkdir()
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE queue (seq INTEGER PRIMARY KEY AUTOINCREMENT, source TEXT NOT NULL, payload TEXT NOT NULL)")
    db.executemany("INSERT INTO queue (source, payload) VALUES (?, ?)", [("a", f'{{"n":{n}}}') for n in range(5)])
    db.commit()
    db.close()
    buffer = DiskBuffer(str(tmp_path), "out", 1 << 30)
    assert buffer.count == 5
    buffer.put("a", _events(5, 3))
    first = buffer.head(DRAIN_BATCH)
    assert [payload for _, _, payload in first] == [f'{{"n":{n}}}' for n in range(5)]
    buffer.delete_through(first)
    assert len(buffer.head(DRAIN_BATCH)) == 3
    buffer.close()


def test_the_page_a_source_hands_over_again_after_a_crash_is_not_queued_twice(tmp_path: Path) -> None:
    buffer = DiskBuffer(str(tmp_path), "out", 1 << 30)
    assert buffer.put("a", _events(0, 3))
    buffer.close()  # the crash: queued, but the source's cursor was not committed
    again = DiskBuffer(str(tmp_path), "out", 1 << 30)
    assert not again.put("a", _events(0, 3))
    assert again.count == 3
    assert again.put("b", _events(0, 3)), "another source's page is its own"
    assert again.put("a", _events(3, 3))
    assert again.put("a", _events(0, 3)), "only the last page of a source is compared"
    assert again.count == 12
    again.close()
