"""The delivery promise, through the real `siem-forwarder` process."""
from __future__ import annotations

import json
import os
import sqlite3
import stat
from pathlib import Path

from tests.helpers import read_jsonl, run_forwarder


def ids(path: Path) -> list[str]:
    return [e["id"] for e in read_jsonl(path)]


def test_backfill_then_nothing_more(tmp_path: Path, counter_config) -> None:
    config = counter_config(count=25, page_size=10)
    result = run_forwarder(tmp_path, config)
    assert result.returncode == 0, result.stderr
    assert ids(tmp_path / "out.jsonl") == [f"counter-{i}" for i in range(25)]
    assert "counter  25      25" in result.stdout  # the summary table
    again = run_forwarder(tmp_path, config)
    assert again.returncode == 0
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 25


def test_normalized_event_shape(tmp_path: Path, counter_config) -> None:
    run_forwarder(tmp_path, counter_config(count=1))
    (event,) = read_jsonl(tmp_path / "out.jsonl")
    assert event == {
        "id": "counter-0", "timestamp": "2026-01-01T00:00:00Z",
        "source": {"name": "counter", "type": "counter", "vendor": "Testkit", "product": "Counter",
                   "dataset": "counter.audit", "splunk_sourcetype": "counter:audit", "cef_name": "Counter event",
                   "severity": 3},
        "action": "logout", "outcome": "success", "actor": {"name": "user0"},
        "raw": {"seq": 0, "time": "2026-01-01T00:00:00Z", "user": "user0", "action": "logout"},
    }


def test_invalid_events_are_quarantined_and_the_rest_flow(tmp_path: Path, counter_config) -> None:
    result = run_forwarder(tmp_path, counter_config(count=30, invalid_every=10))
    assert result.returncode == 0, result.stderr  # set aside is handled, not failed
    delivered = ids(tmp_path / "out.jsonl")
    assert len(delivered) == 27 and "counter-9" not in delivered
    quarantined = read_jsonl(tmp_path / "state" / "quarantine" / "counter.jsonl")
    assert [q["id"] for q in quarantined] == ["counter-9", "counter-19", "counter-29"]
    assert set(quarantined[0]) == {"time", "source", "reason", "id", "raw"}
    assert quarantined[0]["raw"]["seq"] == "9"
    assert "$.raw.seq" in quarantined[0]["reason"]
    assert "quarantined" in result.stderr and "3" in result.stdout.splitlines()[1]


def test_crash_between_send_and_commit_resends_never_skips(tmp_path: Path, counter_config) -> None:
    marker = tmp_path / "crash-now"
    config = counter_config(count=50, page_size=10)
    config["outputs"] = [{"name": "out", "type": "flaky",
                          "options": {"path": str(tmp_path / "out.jsonl"), "crash_after_write_marker": str(marker)}}]
    first = run_forwarder(tmp_path, config)
    assert first.returncode == 0
    marker.touch()  # the next batch is written and flushed, then the process dies before reporting success
    config["sources"][0]["options"]["count"] = 80
    crashed = run_forwarder(tmp_path, config)
    assert crashed.returncode == 137
    resumed = run_forwarder(tmp_path, config)
    assert resumed.returncode == 0, resumed.stderr
    delivered = ids(tmp_path / "out.jsonl")
    assert set(delivered) == {f"counter-{i}" for i in range(80)}, "nothing skipped"
    duplicates = len(delivered) - len(set(delivered))
    assert duplicates == 10, "exactly the one batch in flight was sent again"


def test_failing_output_is_retried_and_cursor_waits(tmp_path: Path, counter_config) -> None:
    config = counter_config(count=20, page_size=10)
    config["outputs"] = [{"name": "out", "type": "flaky",
                          "options": {"path": str(tmp_path / "out.jsonl"), "fail_times": 3}}]
    result = run_forwarder(tmp_path, config)
    assert result.returncode == 0, result.stderr
    assert ids(tmp_path / "out.jsonl") == [f"counter-{i}" for i in range(20)]
    # Logged once per change of state, not once per retry.
    assert result.stderr.count("output out: failing") == 1
    assert result.stderr.count("delivering again") == 1


def test_paused_output_keeps_cursor_and_once_fails_with_summary(tmp_path: Path, counter_config) -> None:
    flag = tmp_path / "token-is-wrong"
    flag.touch()
    config = counter_config(count=20, page_size=10)
    config["delivery"] = {"once_give_up_after": 1}
    config["outputs"] = [{"name": "out", "type": "flaky",
                          "options": {"path": str(tmp_path / "out.jsonl"), "paused_while_exists": str(flag)}}]
    result = run_forwarder(tmp_path, config)
    assert result.returncode == 1
    assert "output out kept failing" in result.stderr and "kept failing" not in result.stdout  # said once
    assert "FAILED" in result.stdout
    assert result.stderr.count("paused") == 1
    state = run_forwarder(tmp_path, config, "state")
    assert "never" in state.stdout  # no checkpoint moved
    flag.unlink()
    result = run_forwarder(tmp_path, config)
    assert result.returncode == 0
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 20


def test_permanent_rejects_go_to_the_dead_letter_file(tmp_path: Path, counter_config) -> None:
    config = counter_config(count=10)
    config["outputs"] = [{"name": "out", "type": "flaky",
                          "options": {"path": str(tmp_path / "out.jsonl"), "reject_ids": ["counter-3"]}}]
    result = run_forwarder(tmp_path, config)
    assert result.returncode == 0
    assert "counter-3" not in ids(tmp_path / "out.jsonl")
    (dead,) = read_jsonl(tmp_path / "state" / "dead-letter" / "out.jsonl")
    assert dead["id"] == "counter-3" and dead["output"] == "out" and dead["source"] == "counter"
    assert dead["raw"]["seq"] == 3


def test_routing_filter(tmp_path: Path, counter_config) -> None:
    config = counter_config(count=3)
    config["sources"].append({"name": "other", "type": "counter", "options": {"count": 2}})
    config["outputs"][0]["sources"] = ["other"]
    config["outputs"].append({"name": "all", "type": "file", "options": {"path": str(tmp_path / "all.jsonl")}})
    assert run_forwarder(tmp_path, config).returncode == 0
    assert {e["source"]["name"] for e in read_jsonl(tmp_path / "out.jsonl")} == {"other"}
    assert len(read_jsonl(tmp_path / "all.jsonl")) == 5


def test_once_source_filter(tmp_path: Path, counter_config) -> None:
    config = counter_config(count=3)
    config["sources"].append({"name": "other", "type": "counter", "options": {"count": 2}})
    assert run_forwarder(tmp_path, config, "once", "--source", "other").returncode == 0
    assert {e["source"]["name"] for e in read_jsonl(tmp_path / "out.jsonl")} == {"other"}


def test_state_dir_permissions_and_no_secret_in_state(tmp_path: Path, counter_config) -> None:
    config = counter_config(count=5, token="state-secret-token-77")
    assert run_forwarder(tmp_path, config).returncode == 0
    state = tmp_path / "state"
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    for path in state.rglob("*"):
        if path.is_file():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
            assert b"state-secret-token-77" not in path.read_bytes()


def test_corrupt_checkpoint_store_is_refused_not_reset(tmp_path: Path, counter_config) -> None:
    config = counter_config(count=5)
    assert run_forwarder(tmp_path, config).returncode == 0
    db = tmp_path / "state" / "checkpoints.sqlite"
    for suffix in ("-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    db.write_bytes(b"this is not a database" * 100)
    result = run_forwarder(tmp_path, config)
    assert result.returncode == 74
    assert "unreadable" in result.stderr and "left untouched" in result.stderr
    assert db.read_bytes().startswith(b"this is not a database")


def test_checkpoint_holds_the_cursor(tmp_path: Path, counter_config) -> None:
    assert run_forwarder(tmp_path, counter_config(count=25)).returncode == 0
    with sqlite3.connect(tmp_path / "state" / "checkpoints.sqlite") as db:
        (cursor, delivered) = db.execute("SELECT cursor, delivered FROM checkpoints WHERE source='counter'").fetchone()
    assert json.loads(cursor) == {"next": 25} and delivered == 25
    reset = run_forwarder(tmp_path, counter_config(count=25), "state", "reset", "counter")
    assert reset.returncode == 0 and "removed" in reset.stdout
    assert run_forwarder(tmp_path, counter_config(count=25)).returncode == 0
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 50


def test_second_process_on_same_state_is_refused(tmp_path: Path, counter_config) -> None:
    import fcntl

    config = counter_config(count=5)
    (tmp_path / "state").mkdir(mode=0o700)
    fd = os.open(tmp_path / "state" / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        result = run_forwarder(tmp_path, config)
    finally:
        os.close(fd)
    assert result.returncode == 74
    assert "another siem-forwarder is running" in result.stderr
