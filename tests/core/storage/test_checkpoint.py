"""The checkpoint store: what a commit stores is what the next run reads, exactly; a commit is all or
nothing; a store SQLite finds damaged is refused and left as it is, never reset."""
from __future__ import annotations

import json
import os
import sqlite3
import stat
import struct
import threading
import time
from pathlib import Path

import pytest

from forwarder_core.errors import StateError
from forwarder_core.storage.checkpoint import FILENAME, SCHEMA_VERSION, CheckpointStore, store_problems
from forwarder_core.storage.ledger import Ledger


@pytest.fixture
def store(tmp_path: Path):
    s = CheckpointStore(str(tmp_path))
    yield s
    s.close()


def test_a_committed_cursor_is_read_back_exactly_with_its_watermark_and_delivery(store: CheckpointStore) -> None:
    """``state`` shows these fields: the watermark is the source's time, not when it was delivered."""
    before = time.time()
    store.commit("a", {"page": 3, "ids": ["x", "y"]}, "2026-01-01T00:00:05Z", 7, watermark="2026-01-01T00:00:10Z")
    after = time.time()
    cp = store.get("a")
    assert cp is not None
    assert (cp.source, cp.cursor, cp.newest_event, cp.delivered, cp.watermark) == (
        "a", {"page": 3, "ids": ["x", "y"]}, "2026-01-01T00:00:05Z", 7, "2026-01-01T00:00:10Z")
    assert before <= cp.updated <= after
    assert cp.delivered_at is not None and before <= cp.delivered_at <= after


def test_a_later_commit_moves_the_cursor_adds_deliveries_and_keeps_what_it_does_not_know(
        store: CheckpointStore) -> None:
    store.commit("a", {"n": 1}, "2026-01-01T00:00:05Z", 7, watermark="2026-01-01T00:00:10Z")
    first = store.get("a")
    assert first is not None and first.delivered_at is not None
    store.commit("a", {"n": 2}, None, 0)  # an empty page: no newest event, no watermark, nothing delivered
    cp = store.get("a")
    assert cp is not None
    assert (cp.cursor, cp.newest_event, cp.delivered, cp.watermark, cp.delivered_at) == (
        {"n": 2}, "2026-01-01T00:00:05Z", 7, "2026-01-01T00:00:10Z", first.delivered_at)
    assert cp.updated >= first.updated
    store.commit("a", {"n": 3}, "2026-01-01T00:01:00Z", 2, watermark="2026-01-01T00:02:00Z")
    cp = store.get("a")
    assert cp is not None
    assert (cp.cursor, cp.newest_event, cp.delivered, cp.watermark) == (
        {"n": 3}, "2026-01-01T00:01:00Z", 9, "2026-01-01T00:02:00Z")


def test_a_source_that_delivered_nothing_has_no_delivery_time(store: CheckpointStore) -> None:
    store.commit("quiet", {"n": 0}, None, 0)
    cp = store.get("quiet")
    assert cp is not None and cp.delivered == 0 and cp.delivered_at is None and cp.newest_event is None
    assert store.get("unknown") is None


def test_the_same_cursor_is_always_stored_as_the_same_text(store: CheckpointStore) -> None:
    store.commit("a", {"b": 1, "a": [1, 2]}, None, 0)
    store.commit("b", {"a": [1, 2], "b": 1}, None, 0)
    with sqlite3.connect(store.path) as db:
        texts = [t for (t,) in db.execute("SELECT cursor FROM checkpoints ORDER BY source")]
    db.close()
    assert texts == ['{"a":[1,2],"b":1}'] * 2


def test_every_source_is_listed_in_name_order(store: CheckpointStore) -> None:
    for name in ("b", "c", "a"):
        store.commit(name, {"at": name}, None, 1)
    assert [(cp.source, cp.cursor) for cp in store.all()] == [("a", {"at": "a"}), ("b", {"at": "b"}), ("c", {"at": "c"})]


def test_a_failed_commit_stores_nothing_and_the_next_commit_succeeds(store: CheckpointStore) -> None:
    store.commit("a", {"n": 1}, None, 1, ledger=Ledger(read=1, delivered={"out": 1}))
    broken = Ledger(read=1, delivered={"out": object()})  # type: ignore[dict-item]  # cannot be stored
    with pytest.raises(sqlite3.Error):
        store.commit("a", {"n": 2}, None, 1, ledger=broken)
    cp = store.get("a")
    assert cp is not None and cp.cursor == {"n": 1} and cp.delivered == 1  # the cursor did not move alone
    store.commit("a", {"n": 3}, None, 1, ledger=Ledger(read=1, delivered={"out": 1}))
    cp = store.get("a")
    assert cp is not None and cp.cursor == {"n": 3} and cp.delivered == 2
    assert store.ledger("a") == Ledger(read=2, delivered={"out": 2})


def test_the_ledger_totals_add_up_across_commits_per_source(store: CheckpointStore) -> None:
    store.commit("a", {}, None, 3, ledger=Ledger(read=5, quarantined=1, already_delivered=1, delivered={"x": 3, "y": 2},
                                                   dead_lettered={"y": 1}))
    store.commit("a", {}, None, 2, ledger=Ledger(read=3, filtered=1, held_back=0, delivered={"x": 2, "y": 2}))
    store.commit("b", {}, None, 1, ledger=Ledger(read=1, delivered={"x": 1}))
    assert store.ledger("a") == Ledger(read=8, quarantined=1, filtered=1, already_delivered=1,
                                       delivered={"x": 5, "y": 4}, dead_lettered={"y": 1})
    assert store.ledger("b") == Ledger(read=1, delivered={"x": 1})
    rows = sqlite3.connect(store.path).execute("SELECT count FROM ledger").fetchall()
    assert all(n for (n,) in rows)  # a zero term is not a row


def test_the_store_survives_a_reopen_and_says_its_schema_version(tmp_path: Path) -> None:
    first = CheckpointStore(str(tmp_path))
    first.commit("a", {"n": 1}, None, 4, watermark="2026-01-01T00:00:00Z")
    first.close()
    again = CheckpointStore(str(tmp_path))
    cp = again.get("a")
    assert cp is not None and (cp.cursor, cp.delivered, cp.watermark) == ({"n": 1}, 4, "2026-01-01T00:00:00Z")
    again.close()
    version = sqlite3.connect(tmp_path / FILENAME).execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    assert version == (str(SCHEMA_VERSION),) and SCHEMA_VERSION == 2


def test_a_store_from_before_watermarks_keeps_every_row_and_gains_the_columns(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / FILENAME) as db:
        db.execute("CREATE TABLE checkpoints (source TEXT PRIMARY KEY, cursor TEXT NOT NULL, "
                   "updated REAL NOT NULL, newest_event TEXT, delivered INTEGER NOT NULL DEFAULT 0)")
        db.execute("INSERT INTO checkpoints VALUES ('old', '{\"page\":9}', 1.5, '2025-01-01T00:00:00Z', 12)")
    db.close()
    store = CheckpointStore(str(tmp_path))
    cp = store.get("old")
    assert cp is not None
    assert (cp.cursor, cp.updated, cp.newest_event, cp.delivered, cp.watermark, cp.delivered_at) == (
        {"page": 9}, 1.5, "2025-01-01T00:00:00Z", 12, None, None)
    store.commit("old", {"page": 10}, None, 1, watermark="2025-01-02T00:00:00Z")
    cp = store.get("old")
    assert cp is not None and cp.watermark == "2025-01-02T00:00:00Z" and cp.delivered == 13
    store.close()


def _corrupt_a_page_of_checkpoints(path: Path) -> None:
    """A real SQLite database whose header and schema are intact but one page of the checkpoints
    table is damaged (a cell pointer into the page header), as a torn disk write leaves it."""
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        leaf = db.execute("SELECT rootpage FROM sqlite_master WHERE name='checkpoints'").fetchone()[0]
    db.close()
    for suffix in ("-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    data = bytearray(path.read_bytes())
    # the table's root is an interior page once it holds this many rows: damage its last leaf instead
    pages = [p for p in range(2, len(data) // page_size + 1) if data[(p - 1) * page_size] == 0x0D]
    leaf = pages[-1] if pages else leaf
    struct.pack_into(">H", data, (leaf - 1) * page_size + 8, 2)
    path.write_bytes(bytes(data))


def _damaged_store(tmp_path: Path) -> Path:
    """A store of 300 checkpoints with one of its pages corrupted; its path."""
    store = CheckpointStore(str(tmp_path))
    for i in range(300):
        store.commit(f"source-{i:03d}", {"pos": "x" * 200, "i": i}, None, 1)
    store.close()
    path = tmp_path / FILENAME
    _corrupt_a_page_of_checkpoints(path)
    return path


def test_a_damaged_store_is_refused_with_the_integrity_answer_and_left_untouched(tmp_path: Path) -> None:
    path = _damaged_store(tmp_path)
    damaged = path.read_bytes()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA quick_check").fetchone()[0] != "ok"  # the damage is real
    db.close()
    with pytest.raises(StateError) as refused:
        CheckpointStore(str(tmp_path))
    message = str(refused.value)
    assert "unreadable (integrity check failed: " in message and "left untouched" in message
    assert "On tree page" in message  # SQLite's own answer, for whoever restores the store
    assert path.read_bytes() == damaged


def test_a_file_that_is_not_a_database_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / FILENAME
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StateError, match="unreadable"):
        CheckpointStore(str(tmp_path))
    assert path.read_bytes() == b"this is not a database" * 100


def test_a_cursor_that_is_not_json_is_refused_not_guessed(store: CheckpointStore) -> None:
    store.commit("a", {"n": 1}, None, 1)
    with sqlite3.connect(store.path) as db:
        db.execute("UPDATE checkpoints SET cursor = '{broken' WHERE source = 'a'")
    db.close()
    with pytest.raises(StateError, match="not valid JSON"):
        store.get("a")


def test_the_last_poll_of_each_source_is_remembered_with_its_outcome(store: CheckpointStore) -> None:
    before = time.time()
    store.record_poll("a", True, "caught up (3 delivered)")
    store.record_poll("b", False, "x" * 600)
    store.record_poll("a", False, "poll failed: 401")
    polls = store.polls()
    assert set(polls) == {"a", "b"}
    assert (polls["a"].ok, polls["a"].outcome, polls["b"].ok, polls["b"].outcome) == (
        False, "poll failed: 401", False, "x" * 500)
    assert polls["a"].ok is False and before <= polls["a"].time <= time.time()
    assert (polls["a"].source, polls["b"].source) == ("a", "b")
    store.record_poll("b", True, "caught up")
    assert store.polls()["b"].ok is True


def test_reset_forgets_the_cursor_and_the_last_poll_and_says_whether_there_was_one(store: CheckpointStore) -> None:
    store.commit("a", {"n": 1}, None, 1, ledger=Ledger(read=1, delivered={"out": 1}))
    store.record_poll("a", True, "caught up")
    assert store.reset("a") is True
    assert store.get("a") is None and "a" not in store.polls()
    assert store.ledger("a") == Ledger(read=1, delivered={"out": 1})  # the totals survive a reset
    assert store.reset("a") is False


def test_the_store_and_its_journal_are_private_to_the_service_user(tmp_path: Path) -> None:
    CheckpointStore(str(tmp_path)).close()
    store = CheckpointStore(str(tmp_path))  # a reopen secures the journal files WAL left behind
    store.commit("a", {"n": 1}, None, 1)
    for name in os.listdir(tmp_path):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
    assert any(name.endswith("-wal") for name in os.listdir(tmp_path))
    store.close()


def test_commits_from_many_threads_all_land(store: CheckpointStore) -> None:
    def commit(name: str) -> None:
        for i in range(20):
            store.commit(name, {"i": i}, None, 1, ledger=Ledger(read=1, delivered={"out": 1}))

    threads = [threading.Thread(target=commit, args=(f"s{n}",)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [(cp.cursor, cp.delivered) for cp in store.all()] == [({"i": 19}, 20)] * 4
    assert json.loads(json.dumps(store.ledger("s0").delivered)) == {"out": 20}


def test_journal_files_a_crash_left_behind_are_made_private_when_the_store_opens(tmp_path: Path) -> None:
    crashed = CheckpointStore(str(tmp_path))  # never closed: its -wal and -shm stay, as after kill -9
    crashed.commit("a", {"n": 1}, None, 1)
    for suffix in ("-wal", "-shm"):
        os.chmod(str(tmp_path / FILENAME) + suffix, 0o644)
    again = CheckpointStore(str(tmp_path))
    for suffix in ("-wal", "-shm"):
        assert stat.S_IMODE(os.stat(str(tmp_path / FILENAME) + suffix).st_mode) == 0o600, suffix
    again.close()
    crashed.close()


def test_a_state_directory_that_is_a_file_is_refused_naming_the_store_and_the_system_reason(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "state"
    not_a_dir.write_text("")
    with pytest.raises(StateError) as refused:
        CheckpointStore(str(not_a_dir))
    assert str(refused.value) == f"checkpoint store {not_a_dir / FILENAME}: Not a directory"


def test_check_finds_nothing_wrong_with_a_healthy_store_or_with_none_yet(tmp_path: Path) -> None:
    """``check`` (:func:`store_problems`) passes a state directory where nothing ran yet, and creates nothing there."""
    assert store_problems(str(tmp_path)) == [] and os.listdir(tmp_path) == []
    store = CheckpointStore(str(tmp_path))
    store.commit("a", {"n": 1}, None, 1)
    assert store_problems(str(tmp_path)) == []
    store.close()
    assert store_problems(str(tmp_path)) == []


def test_check_finds_a_damaged_store_with_sqlites_answer_and_leaves_it_untouched(tmp_path: Path) -> None:
    path = _damaged_store(tmp_path)
    damaged = path.read_bytes()
    [problem] = store_problems(str(tmp_path))
    assert problem.startswith(f"checkpoint store {path} is unreadable (integrity check failed: ")
    assert "On tree page" in problem and "run and once would refuse it" in problem
    assert path.read_bytes() == damaged


def test_check_finds_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / FILENAME
    path.write_bytes(b"this is not a database" * 100)
    [problem] = store_problems(str(tmp_path))
    assert problem.startswith(f"checkpoint store {path} is unreadable (file is not a database)")
    assert path.read_bytes() == b"this is not a database" * 100


def test_check_names_each_cursor_that_is_not_json(tmp_path: Path) -> None:
    store = CheckpointStore(str(tmp_path))
    for name in ("a", "b", "c"):
        store.commit(name, {"n": 1}, None, 1)
    store.close()
    with sqlite3.connect(tmp_path / FILENAME) as db:
        db.execute("UPDATE checkpoints SET cursor = '{broken' WHERE source IN ('a', 'c')")
    db.close()
    assert store_problems(str(tmp_path)) == [
        f"checkpoint of source {name!r} in {tmp_path / FILENAME} is not valid JSON; run and once would refuse it"
        for name in ("a", "c")]


def test_check_passes_a_database_without_checkpoints_yet(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / FILENAME) as db:
        db.execute("CREATE TABLE other (x)")
    db.close()
    assert store_problems(str(tmp_path)) == []
