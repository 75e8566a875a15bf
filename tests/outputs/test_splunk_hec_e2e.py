"""``splunk_hec`` through the real ``siem-forwarder`` process: the delivery promise end to end."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from forwarder_core.storage.checkpoint import CheckpointStore
from tests.fakes.splunk_hec import DEFAULT_TOKEN, SplunkHecFake, TokenConfig
from tests.helpers import run_forwarder

WRONG_TOKEN = "99999999-8888-7777-6666-000000000000"
ACK_TOKEN = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"


@pytest.fixture
def hec() -> Iterator[SplunkHecFake]:
    with SplunkHecFake(tokens={DEFAULT_TOKEN: TokenConfig(), ACK_TOKEN: TokenConfig(ack=True)}) as fake:
        yield fake  # type: ignore[misc]


def config(counter_config: Any, tmp_path: Path, hec: SplunkHecFake, **options: Any) -> dict[str, Any]:
    cfg = counter_config(count=25, page_size=10)
    cfg["delivery"] = {"once_give_up_after": 2}
    cfg["outputs"] = [{"name": "splunk", "type": "splunk_hec",
                       "options": {"url": hec.url, "ack_poll_interval": 0.05, **options}}]
    return cfg


def test_a_wrong_token_keeps_the_cursor_still_says_so_once_then_delivers_when_fixed(
        tmp_path: Path, counter_config: Any, hec: SplunkHecFake) -> None:
    token_file = tmp_path / "hec-token"
    token_file.write_text(WRONG_TOKEN + "\n")
    cfg = config(counter_config, tmp_path, hec, token_file=str(token_file))

    first = run_forwarder(tmp_path, cfg)
    assert first.returncode != 0
    paused = [line for line in first.stderr.splitlines() if "paused" in line]
    assert len(paused) == 1, first.stderr
    assert 'code 4 "Invalid token"' in paused[0]
    assert WRONG_TOKEN not in first.stderr + first.stdout
    assert len(hec.event_requests()) >= 2  # it kept trying, and said so only once
    assert hec.indexed_count == 0
    assert CheckpointStore(cfg["state_dir"]).get("counter") is None

    token_file.write_text(DEFAULT_TOKEN + "\n")
    second = run_forwarder(tmp_path, cfg)
    assert second.returncode == 0, second.stderr
    assert hec.event_ids == [f"counter-{i}" for i in range(25)]
    assert CheckpointStore(cfg["state_dir"]).get("counter").cursor == {"next": 25}
    assert hec.events[0]["sourcetype"] == "counter:audit"
    assert hec.events[0]["event"] == {"seq": 0, "time": "2026-01-01T00:00:00Z", "user": "user0", "action": "logout"}
    assert hec.events[0]["time"] == 1767225600.0


def test_busy_hec_and_indexer_ack_through_the_cli(tmp_path: Path, counter_config: Any, hec: SplunkHecFake) -> None:
    hec.busy(3, retry_after="0")
    hec.lose_acks(1)
    cfg = config(counter_config, tmp_path, hec, token=ACK_TOKEN, ack=True, ack_timeout=0.5)
    cfg["delivery"]["once_give_up_after"] = 30
    done = run_forwarder(tmp_path, cfg)
    assert done.returncode == 0, done.stderr
    assert hec.event_ids == [f"counter-{i}" for i in range(25)]
    assert [code for _, code in hec.responses].count(9) == 3
    assert CheckpointStore(cfg["state_dir"]).get("counter").cursor == {"next": 25}


def test_check_connect_proves_the_token_without_indexing(tmp_path: Path, counter_config: Any,
                                                         hec: SplunkHecFake) -> None:
    good = run_forwarder(tmp_path, config(counter_config, tmp_path, hec, token=DEFAULT_TOKEN), "check", "--connect")
    assert good.returncode == 0, good.stdout + good.stderr
    assert "token accepted" in good.stdout

    bad = run_forwarder(tmp_path, config(counter_config, tmp_path, hec, token=WRONG_TOKEN), "check", "--connect")
    assert bad.returncode != 0
    assert "token was refused" in bad.stdout + bad.stderr
    assert WRONG_TOKEN not in bad.stdout + bad.stderr
    assert hec.indexed_count == 0
