"""An output that is down, against the real ``siem-forwarder run`` process.

Each case starts the daemon while its SIEM is down (connection refused, 503 busy, or a token
the SIEM refuses), and checks what an operator relies on: the source's cursor does not move,
the output retries with backoff capped at ``delivery.max_backoff``, it says so once (not once
per retry), ``/health`` reports it, and when the SIEM is back it catches up by itself.
"""
from __future__ import annotations

import re
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from siem_forwarder_plugins.outputs.syslog.output import SyslogCEF
from tests.helpers import start_forwarder, write_config
from tests.reliability.harness import ElasticSink, HecSink, Sink, SyslogSink, _drain_stderr, wait_until
from tests.rsyslog import Rsyslog

MAX_BACKOFF = 0.5
EVENTS = 40
ERRORS_BEFORE_RECOVERY = 5
"""Uncapped, the fifth consecutive failure would wait 0.5 s * 2^5 = 16 s (full jitter: up to that)."""


def _metric(port: int, name: str, **labels: str) -> float:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(f"siem_forwarder_{name}{{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _cursor(state_dir: Path) -> str | None:
    db = sqlite3.connect(f"file:{state_dir / 'checkpoints.sqlite'}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT cursor FROM checkpoints WHERE source = 'counter'").fetchone()
    finally:
        db.close()
    return row[0] if row else None


class Daemon:
    """The running forwarder, its stderr lines, and its metrics port."""

    def __init__(self, tmp_path: Path, config: dict[str, Any], env: dict[str, str]):
        self.proc = start_forwarder(tmp_path, config, env=env)
        self.log: list[str] = []
        self.pump = _drain_stderr(self.proc, self.log)
        found: list[int] = []

        def listening() -> bool:
            for line in self.log:
                if (m := re.search(r"metrics and health on http://127\.0\.0\.1:(\d+)/metrics", line)):
                    found.append(int(m.group(1)))
                    return True
            return False
        wait_until(listening, 30, "the metrics listener", self.proc)
        self.port = found[0]

    def lines(self, text: str) -> list[str]:
        return [line for line in list(self.log) if text in line]

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(30)
        self.pump.join(5)
        return code


@pytest.fixture
def daemon(tmp_path: Path, counter_config: Any) -> Iterator[Callable[[Sink], Daemon]]:
    started: list[Daemon] = []

    def start(sink: Sink) -> Daemon:
        cfg = counter_config(count=EVENTS, page_size=10)
        cfg["sources"][0]["interval"] = 1
        cfg["outputs"] = [sink.output()]
        cfg["delivery"] = {"max_backoff": MAX_BACKOFF}
        cfg["metrics"] = {"listen": "127.0.0.1:0"}
        d = Daemon(tmp_path, cfg, sink.env())
        started.append(d)
        return d

    yield start
    for d in started:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()


def _counter_ids(sink: Sink) -> set[str]:
    return {i for i in sink.ids() if i.startswith("counter-")}


def _outage(tmp_path: Path, sink: Sink, kind: str, start: Callable[[Sink], Daemon], cap: float = MAX_BACKOFF) -> None:
    state = "paused" if kind == "token" else "failing"
    sink.down(kind)
    d = start(sink)
    wait_until(lambda: _metric(d.port, "output_errors_total", output="out") >= ERRORS_BEFORE_RECOVERY, 30,
               f"{ERRORS_BEFORE_RECOVERY} failed sends", d.proc, log=d.log)
    # Cursor still, nothing delivered, one log line for the whole outage, health says why.
    assert _cursor(tmp_path / "state") is None
    assert _metric(d.port, "events_delivered_total") == 0
    assert len(d.lines(f"output out: {state}")) == 1, "".join(d.log)
    assert not d.lines("output out: still")
    health = requests.get(f"http://127.0.0.1:{d.port}/health", timeout=5)
    assert health.status_code == 503 and f"output out: {state}" in health.text

    sink.up(kind)
    back = time.monotonic()
    wait_until(lambda: len(_counter_ids(sink)) == EVENTS, 30, "every event after the outage", d.proc)
    # Backoff capped: after five failures an uncapped wait could be 16 s; this one is at most ``cap``.
    assert time.monotonic() - back < cap + 2.5
    wait_until(lambda: _cursor(tmp_path / "state") == '{"next":40}', 10, "the cursor to be committed", d.proc)
    wait_until(lambda: len(d.lines("output out: delivering again")) == 1, 10, "the recovery line", d.proc)
    assert len(d.lines(f"output out: {state}")) == 1
    assert requests.get(f"http://127.0.0.1:{d.port}/health", timeout=5).status_code == 200
    assert d.stop() == 0
    assert len(_counter_ids(sink)) == EVENTS


@pytest.mark.parametrize("kind", ["refused", "503", "token"])
def test_splunk_hec_outage(tmp_path: Path, daemon: Callable[[Sink], Daemon], kind: str) -> None:
    sink = HecSink()
    try:
        _outage(tmp_path, sink, kind, daemon)
    finally:
        sink.close()


@pytest.mark.parametrize("kind", ["refused", "503", "token"])
def test_elasticsearch_outage(tmp_path: Path, daemon: Callable[[Sink], Daemon], kind: str) -> None:
    sink = ElasticSink()
    try:
        _outage(tmp_path, sink, kind, daemon)
    finally:
        sink.close()


def test_syslog_receiver_outage(tmp_path: Path, daemon: Callable[[Sink], Daemon], rsyslog_tcp: Rsyslog) -> None:
    # syslog_cef paces its reconnects itself (0.5 s doubling, at most backoff_max), whatever delivery.max_backoff
    # says, and hands that wait to the core; after five refusals the next try comes within 8 s.
    _outage(tmp_path, _CounterSyslog(rsyslog_tcp), "refused", daemon,
            cap=min(SyslogCEF.backoff_max, SyslogCEF.backoff_initial * 2 ** (ERRORS_BEFORE_RECOVERY - 1)))


class _CounterSyslog(SyslogSink):
    """Counter ids are short, so CEF carries them in ``externalId``."""

    def ids(self) -> list[str]:
        return [m.group(1) for line in self.receiver.lines() if (m := re.search(r"externalId=(counter-\d+)", line))]


def test_a_wrong_token_fixed_in_the_config_is_picked_up_on_reload(
        tmp_path: Path, daemon: Callable[[Sink], Daemon]) -> None:
    sink = HecSink()
    try:
        right = sink.env()["RELIABILITY_HEC_TOKEN"]
        sink.env = lambda: {"RELIABILITY_HEC_TOKEN": "00000000-0000-0000-0000-000000000000"}  # type: ignore[method-assign]
        d = daemon(sink)
        wait_until(lambda: _metric(d.port, "output_errors_total", output="out") >= 3, 30, "refused sends", d.proc)
        assert _cursor(tmp_path / "state") is None
        (_paused,) = d.lines("output out: paused")
        assert "00000000-0000-0000-0000-000000000000" not in "".join(d.log)
        token_file = tmp_path / "hec-token"
        token_file.write_text(right + "\n")
        config_path = tmp_path / "config.yaml"
        cfg = yaml.safe_load(config_path.read_text())
        del cfg["outputs"][0]["options"]["token"]
        cfg["outputs"][0]["options"]["token_file"] = str(token_file)
        write_config(config_path, cfg)
        d.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: len(_counter_ids(sink)) == EVENTS, 30, "every event after the reload", d.proc)
        wait_until(lambda: _cursor(tmp_path / "state") == '{"next":40}', 10, "the cursor to be committed", d.proc)
        assert d.stop() == 0
        assert right not in "".join(d.log)
    finally:
        sink.close()
