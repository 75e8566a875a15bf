"""`state`: watermark, lag behind now, newest event and when delivered, last poll's outcome."""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from tests.fakes.asana import AsanaFake
from tests.helpers import run_forwarder

TOKEN = "2/1204/1207:state-test-account"


def _config(tmp_path: Path, base_url: str) -> dict:
    return {
        "sources": [{"name": "asana", "type": "asana",
                     "start_time": (datetime.now(timezone.utc) - timedelta(hours=12)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                     "options": {"base_url": base_url + "/api/1.0", "token": "${T}", "workspace_gid": "12345",
                                 "settle_delay": 30}}],
        "outputs": [{"name": "out", "type": "file", "options": {"path": str(tmp_path / "out.jsonl")}}],
    }


def _row(stdout: str, name: str) -> dict[str, str]:
    lines = stdout.splitlines()
    header = lines[0]
    starts = [header.index(col) for col in header.split()]
    row = next(line for line in lines[1:] if line.startswith(name + " "))
    cells = [row[a:b].strip() for a, b in zip(starts, starts[1:] + [None])]
    return dict(zip(header.split(), cells))


def test_a_caught_up_source_on_a_quiet_tenant_shows_a_small_lag(tmp_path: Path) -> None:
    ten_hours_ago = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=10)
    with AsanaFake(events=20, span=600, start=ten_hours_ago, token=TOKEN) as fake:
        config = _config(tmp_path, fake.url)
        result = run_forwarder(tmp_path, config, "once", env={"T": TOKEN})
        assert result.returncode == 0, result.stdout + result.stderr
        before_state = time.time()
        state = run_forwarder(tmp_path, config, "state", env={"T": TOKEN})
    assert state.returncode == 0, state.stderr
    assert state.stdout.splitlines()[0].split() == [
        "SOURCE", "WATERMARK", "LAG", "NEWEST", "EVENT", "DELIVERED", "AT", "EVENTS", "LAST", "POLL", "CURSOR"]
    text = state.stdout.replace("NEWEST EVENT", "NEWEST_EVENT").replace("DELIVERED AT", "DELIVERED_AT") \
        .replace("LAST POLL", "LAST_POLL")
    row = _row(text, "asana")
    lag = row["LAG"]
    assert lag.endswith("s") and int(lag[:-1]) < 90, f"a caught-up source lags {lag}: {state.stdout}"
    watermark = datetime.strptime(row["WATERMARK"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    assert abs(before_state - 30 - watermark.timestamp()) < 60
    newest = datetime.strptime(row["NEWEST_EVENT"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    assert ten_hours_ago <= newest <= ten_hours_ago + timedelta(minutes=11)
    delivered_at = datetime.strptime(row["DELIVERED_AT"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    assert abs(delivered_at.timestamp() - before_state) < 60
    assert row["EVENTS"] == "20"
    assert "ago, caught up (20 delivered)" in row["LAST_POLL"]


def test_a_failed_poll_is_shown_with_its_reason(tmp_path: Path) -> None:
    with AsanaFake(events=5, token=TOKEN) as fake:
        config = _config(tmp_path, fake.url)
        result = run_forwarder(tmp_path, config, "once", env={"T": "wrong-token-000"})
        assert result.returncode == 1
        state = run_forwarder(tmp_path, config, "state", env={"T": "wrong-token-000"})
    assert state.returncode == 0
    line = next(line for line in state.stdout.splitlines() if line.startswith("asana "))
    assert "never" in line and "ago, FAILED: poll failed:" in line and "401" in line, state.stdout
    assert "wrong-token-000" not in state.stdout


def test_agilicus_auth_shows_its_watermark_and_lag_once_it_delivered(tmp_path: Path) -> None:
    """Both Agilicus sources keep the end of the last window read in their cursor; `state` shows it."""
    from tests.fakes.agilicus import DEFAULT_TOKEN, AgilicusFake

    two_hours_ago = datetime.now(timezone.utc) - timedelta(hours=2)
    with AgilicusFake(events=50, base_time=two_hours_ago, span=600) as fake:
        config = {
            "sources": [{"name": kind, "type": kind,
                         "start_time": (two_hours_ago - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                         "options": {"base_url": fake.url, "token": "${T}"}} for kind in ("agilicus", "agilicus_auth")],
            "outputs": [{"name": "out", "type": "file", "options": {"path": str(tmp_path / "out.jsonl")}}],
        }
        result = run_forwarder(tmp_path, config, "once", env={"T": DEFAULT_TOKEN})
        assert result.returncode == 0, result.stdout + result.stderr
        state = run_forwarder(tmp_path, config, "state", env={"T": DEFAULT_TOKEN})
    assert state.returncode == 0, state.stderr
    text = state.stdout.replace("NEWEST EVENT", "NEWEST_EVENT").replace("DELIVERED AT", "DELIVERED_AT") \
        .replace("LAST POLL", "LAST_POLL")
    for name in ("agilicus", "agilicus_auth"):
        row = _row(text, name)
        assert row["EVENTS"] == "50", state.stdout
        assert row["WATERMARK"] != "-" and row["LAG"] != "-", f"{name} shows no watermark:\n{state.stdout}"
        watermark = datetime.strptime(row["WATERMARK"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
        assert watermark > two_hours_ago, state.stdout
