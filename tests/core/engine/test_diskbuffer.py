"""`buffer: disk`: one output down does not hold the others back, and nothing is dropped."""
from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.helpers import read_jsonl, run_forwarder


def _config(tmp_path: Path, counter_config, count: int, page_size: int = 10, **buffer):
    flag = tmp_path / "siem-down"
    config = counter_config(count=count, page_size=page_size)
    config["delivery"] = {"once_give_up_after": 1}
    config["outputs"].append({"name": "slow", "type": "flaky", "buffer": "disk", **buffer,
                              "options": {"path": str(tmp_path / "slow.jsonl"), "paused_while_exists": str(flag)}})
    return config, flag


def test_a_down_output_does_not_hold_back_the_others(tmp_path: Path, counter_config) -> None:
    config, flag = _config(tmp_path, counter_config, count=30)
    flag.touch()
    result = run_forwarder(tmp_path, config)
    assert result.returncode == 1
    assert "output slow: 30 event(s) still in its disk buffer" in result.stdout
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 30, "the healthy output got everything"
    assert not (tmp_path / "slow.jsonl").exists()
    state = run_forwarder(tmp_path, config, "state")
    assert '{"next":30}' in state.stdout, "the cursor moved: the buffer holds the events durably"
    flag.unlink()
    result = run_forwarder(tmp_path, config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert [e["id"] for e in read_jsonl(tmp_path / "slow.jsonl")] == [f"counter-{i}" for i in range(30)], "in order"
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 30


def test_a_full_buffer_pushes_back_and_never_drops(tmp_path: Path, counter_config) -> None:
    config, flag = _config(tmp_path, counter_config, count=8000, page_size=500, buffer_max_bytes=1048576)
    flag.touch()
    result = run_forwarder(tmp_path, config, timeout=300)
    assert result.returncode == 1
    assert "disk buffer full" in result.stderr
    db = tmp_path / "state" / "buffer" / "slow.sqlite"
    with sqlite3.connect(db) as conn:
        (count, size) = conn.execute("SELECT COUNT(*), SUM(LENGTH(payload)) FROM queue").fetchone()
    assert size < 1048576 + 500 * 400, "at most one page beyond the cap"
    assert count < 8000
    flag.unlink()
    result = run_forwarder(tmp_path, config, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    ids = [e["id"] for e in read_jsonl(tmp_path / "slow.jsonl")]
    assert ids == [f"counter-{i}" for i in range(8000)]


def test_a_lone_surrogate_is_buffered_and_read_back_unchanged(tmp_path: Path) -> None:
    """SQLite stores text as UTF-8, which has no form for ``"\\ud800"``: queued as its JSON escape."""
    import json

    from forwarder_core.engine.diskbuffer import DiskBuffer

    buffer = DiskBuffer(str(tmp_path), "out", 1 << 20)
    try:
        event = {"id": "\ud800-1", "raw": {"name": "\ud800", "\udc80": "é"}}
        assert buffer.put("src", [event])
        (row,) = buffer.head(10)
        assert json.loads(row[2]) == event
    finally:
        buffer.close()
