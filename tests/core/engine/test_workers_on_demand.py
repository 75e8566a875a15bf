"""``workers: auto``: no worker process while the sources are caught up; a pool that starts under a
backlog and stops when idle, losing and reordering nothing across either.

Every case runs the real ``siem-forwarder run`` and awaits what it does (processes appearing and
going, lines reaching the file); none measures time. ``workers_idle_stop`` is short so the pool
stops within the test.
"""
from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from forwarder_core.config.loader import worker_count
from forwarder_core.engine.workers import BACKLOG
from tests.core.engine.test_workers import _children, _prepared_in, _workers
from tests.helpers import lines_written, read_jsonl, run_forwarder, start_forwarder
from tests.reliability.harness import _drain_stderr, wait_until

PAGE = 1000
BACKFILL = 30_000  # BACKLOG events prepared in the main process, then pages for the workers

pytestmark = pytest.mark.skipif(worker_count("auto") < 1, reason="workers: auto means none on one CPU")


def _growing(testkit_path: str, tmp_path: Path, count: int, **settings: Any) -> dict[str, Any]:
    """A ``counter`` source that reads how many events it has from a file at each poll."""
    (tmp_path / "count").write_text(str(count))
    return {
        "state_dir": str(tmp_path / "state"),
        "plugin_paths": [testkit_path],
        "workers_idle_stop": 2,
        **settings,
        "sources": [{"name": "counter", "type": "counter", "interval": 1,
                     "options": {"count_file": str(tmp_path / "count"), "page_size": PAGE, "tag_process": True}}],
        "outputs": [{"name": "out", "type": "file", "options": {"path": str(tmp_path / "out.jsonl")}}],
    }


def test_auto_starts_the_pool_for_a_backlog_and_stops_it_when_idle_losing_and_reordering_nothing(
        tmp_path: Path, testkit_path: str) -> None:
    out = tmp_path / "out.jsonl"
    proc = start_forwarder(tmp_path, _growing(testkit_path, tmp_path, 300))
    log: list[str] = []
    _drain_stderr(proc, log)
    size = worker_count("auto")
    try:
        wait_until(lambda: lines_written(out) == 300, 60, "the first 300 events", proc, log)
        # A caught-up source: its poll prepared its pages itself and started no process at all
        # (a pool started in that poll would still be up: it stops only after workers_idle_stop).
        assert _children(proc.pid) == set()
        for total in (BACKFILL, 2 * BACKFILL):  # a start and a stop, twice over, in one pool
            (tmp_path / "count").write_text(str(total))
            wait_until(lambda: len(_workers(proc.pid)) == size, 60, f"{size} worker(s) for the backlog", proc, log)
            wait_until(lambda: _children(proc.pid) == set(), 60, "the pool to stop when idle", proc, log)
            assert lines_written(out) == total  # idle means every page was delivered
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, "".join(log[-30:])
    text = "".join(log)
    assert text.count(f"{size} worker process(es) prepare and encode pages") == 2
    assert text.count("the worker processes stopped after 2 s without a page") == 2
    assert "leaked" not in text  # the resource tracker stopped with nothing left to clean up
    events = read_jsonl(out)
    assert [e["id"] for e in events] == [f"counter-{i}" for i in range(2 * BACKFILL)]  # once each, in order
    # Each backlog's first BACKLOG events were prepared in the main process, the rest mostly in a worker.
    for start in (300, BACKFILL):
        assert _prepared_in(events[start:start + BACKLOG]) == {"MainProcess"}
        assert "ForkServerProcess" in _prepared_in(events[start + BACKLOG:start + BACKFILL - 300])
    state = run_forwarder(tmp_path, None, "state")
    assert f"read {2 * BACKFILL} = delivered {2 * BACKFILL} + quarantined 0" in state.stdout, state.stdout


def test_workers_n_keeps_its_processes_whatever_workers_idle_stop_says(tmp_path: Path, testkit_path: str) -> None:
    out = tmp_path / "out.jsonl"
    proc = start_forwarder(tmp_path, _growing(testkit_path, tmp_path, 300, workers=1, workers_idle_stop=0.1))
    log: list[str] = []
    _drain_stderr(proc, log)
    try:
        wait_until(lambda: lines_written(out) == 300, 60, "the first 300 events", proc, log)
        first = _workers(proc.pid)
        assert len(first) == 1  # workers: N sends every page of 100 events or more, backlog or not
        (tmp_path / "count").write_text("600")  # a poll later, the same worker prepares the next pages
        wait_until(lambda: lines_written(out) == 600, 60, "the next 300 events", proc, log)
        assert _workers(proc.pid) == first
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, "".join(log[-30:])
    assert "stopped after" not in "".join(log)
    assert [e["id"] for e in read_jsonl(out)] == [f"counter-{i}" for i in range(600)]


def test_once_with_auto_prepares_a_backlog_in_the_workers(tmp_path: Path, testkit_path: str) -> None:
    config = _growing(testkit_path, tmp_path, BACKFILL)
    result = run_forwarder(tmp_path, config)
    assert result.returncode == 0, result.stderr
    assert f"{worker_count('auto')} worker process(es) prepare and encode pages" in result.stderr
    events = read_jsonl(tmp_path / "out.jsonl")
    assert [e["id"] for e in events] == [f"counter-{i}" for i in range(BACKFILL)]
    assert _prepared_in(events[:BACKLOG]) == {"MainProcess"}
    assert "ForkServerProcess" in _prepared_in(events)
