"""`siem-forwarder run`: SIGTERM drains and exits 0; SIGHUP reloads, or keeps the old config if bad."""
from __future__ import annotations

import signal
import time
from pathlib import Path

from tests.helpers import lines_written, read_jsonl, start_forwarder, write_config


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def test_sigterm_finishes_and_exits_zero(tmp_path: Path, counter_config) -> None:
    config = counter_config(count=40, page_size=10)
    proc = start_forwarder(tmp_path, config)
    try:
        assert wait_for(lambda: lines_written(tmp_path / "out.jsonl") == 40)
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "stopped" in err
    # Restarting delivers nothing again: checkpoints were saved.
    restarted = time.time()
    proc = start_forwarder(tmp_path, config)
    try:
        # SIGINT once the restarted daemon has polled (its handlers are in place by then): a fixed
        # delay sent it before Python had started on a loaded machine.
        assert wait_for(lambda: _polled_since(tmp_path / "state", "counter", restarted))
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 40


def test_sighup_bad_config_keeps_running_good_config_applies(tmp_path: Path, counter_config) -> None:
    config = counter_config(count=5)
    config["sources"][0]["interval"] = 1
    proc = start_forwarder(tmp_path, config)
    path = tmp_path / "config.yaml"
    try:
        assert wait_for(lambda: lines_written(tmp_path / "out.jsonl") == 5)
        path.write_text("sources: [\n")
        proc.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        assert proc.poll() is None, "a bad config must not stop the daemon"
        config["sources"][0]["options"]["count"] = 9
        write_config(path, config)
        proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: lines_written(tmp_path / "out.jsonl") == 9)
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0
    assert "reload refused" in err and "not valid YAML" in err
    assert "reloaded: 1 source(s)" in err
    assert [e["id"] for e in read_jsonl(tmp_path / "out.jsonl")] == [f"counter-{i}" for i in range(9)]


def _polled_since(state_dir: Path, source: str, since: float) -> bool:
    """Whether ``source``'s latest poll was recorded after ``since`` (read-only; False before the store exists)."""
    import sqlite3

    try:
        db = sqlite3.connect(f"file:{state_dir / 'checkpoints.sqlite'}?mode=ro", uri=True, timeout=1)
        try:
            row = db.execute("SELECT time FROM polls WHERE source = ?", (source,)).fetchone()
        finally:
            db.close()
    except sqlite3.Error:
        return False
    return row is not None and row[0] > since
