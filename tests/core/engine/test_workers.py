"""``workers:``: pages prepared and encoded in worker processes, delivered and committed in order by the main one.

Every case runs the real ``siem-forwarder`` process and counts what reached the SIEM; none
measures time. The ``counter`` source of the testkit (a third-party plugin, found through
``plugin_paths``) tags each event with the process that normalized it.
"""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from forwarder_core.config.loader import worker_count
from tests.helpers import lines_written, read_jsonl, run_forwarder, start_forwarder, write_config
from tests.reliability.harness import ElasticSink, _drain_stderr, wait_until

COUNT = 3000
PAGE = 250  # above workers.SMALL_PAGE: each page goes to a worker


def _counter(testkit_path: str, tmp_path: Path, **options: Any) -> dict[str, Any]:
    return {
        "state_dir": str(tmp_path / "state"),
        "plugin_paths": [testkit_path],
        "sources": [{"name": "counter", "type": options.pop("type", "counter"),
                     "options": {"count": COUNT, "page_size": PAGE, "tag_process": True, **options}}],
        "outputs": [{"name": "out", "type": "file", "options": {"path": str(tmp_path / "out.jsonl")}}],
    }


def _prepared_in(events: list[dict[str, Any]]) -> set[str]:
    """Where the events were normalized: ``ForkServerProcess`` (a worker), ``MainProcess`` (the
    pages the main process prepared itself while it waited for a worker)."""
    return {e["message"].removeprefix("prepared in ").split("-")[0] for e in events}


def test_two_workers_deliver_every_event_once_in_order_to_a_file_and_elasticsearch(tmp_path: Path,
                                                                                   testkit_path: str) -> None:
    es = ElasticSink()
    es.fake.poison(b'"user3"')  # a mapping conflict: those documents are refused for good
    try:
        config = _counter(testkit_path, tmp_path, invalid_every=97)
        config["workers"] = 2
        config["outputs"].append({**es.output(), "name": "es"})
        result = run_forwarder(tmp_path, config, env=es.env())
        assert result.returncode == 0, result.stderr
        expected = [f"counter-{i}" for i in range(COUNT) if i % 97 != 96]
        events = read_jsonl(tmp_path / "out.jsonl")
        assert [e["id"] for e in events] == expected  # every page, once, in order
        refused = [e for e in events if e["actor"]["name"] == "user3"]
        stored = sorted(e["id"] for e in events if e not in refused)
        assert refused and sorted(es.ids()) == stored and es.count() == len(stored)
        assert "ForkServerProcess" in _prepared_in(events)
        assert "2 worker process(es) prepare and encode pages" in result.stderr
        quarantined = COUNT - len(expected)
        assert (f"read {COUNT} = delivered (es {len(stored)}, out {len(expected)}) + quarantined {quarantined}"
                f" + dead-lettered (es {len(refused)}, out 0)" in result.stdout)
        assert len(read_jsonl(tmp_path / "state" / "quarantine" / "counter.jsonl")) == quarantined
        # The dead letters of a batch encoded in a worker still carry each event's id and raw event.
        letters = read_jsonl(tmp_path / "state" / "dead-letter" / "es.jsonl")
        assert [(d["id"], d["raw"]) for d in letters] == [(e["id"], e["raw"]) for e in refused]
    finally:
        es.fake.stop()


@pytest.mark.parametrize("output", ["disk-buffered file", "flaky"])
def test_outputs_that_take_the_normalized_events_get_them_back_from_the_workers(tmp_path: Path, testkit_path: str,
                                                                               output: str) -> None:
    """A disk buffer keeps normalized events, and ``flaky`` has no ``encode_batch``: the events cross back."""
    config = _counter(testkit_path, tmp_path)
    config["workers"] = 1
    if output == "flaky":
        config["outputs"] = [{"name": "out", "type": "flaky",
                              "options": {"path": str(tmp_path / "out.jsonl"), "fail_times": 2,
                                          "reject_ids": ["counter-5", "counter-2999"]}}]
    else:
        config["outputs"][0]["buffer"] = "disk"
    result = run_forwarder(tmp_path, config)
    assert result.returncode == 0, result.stderr
    refused = {"counter-5", "counter-2999"} if output == "flaky" else set()
    events = read_jsonl(tmp_path / "out.jsonl")
    assert [e["id"] for e in events] == [f"counter-{i}" for i in range(COUNT) if f"counter-{i}" not in refused]
    assert "ForkServerProcess" in _prepared_in(events)
    if refused:
        letters = read_jsonl(tmp_path / "state" / "dead-letter" / "out.jsonl")
        assert {d["id"] for d in letters} == refused and all(d["raw"]["seq"] in (5, 2999) for d in letters)


def test_a_worker_killed_mid_page_has_its_page_prepared_again_and_nothing_skipped(tmp_path: Path,
                                                                                  testkit_path: str) -> None:
    marker = tmp_path / "die"
    marker.touch()
    config = _counter(testkit_path, tmp_path, die_in_worker_marker=str(marker))
    config["workers"] = 1
    result = run_forwarder(tmp_path, config)
    assert result.returncode == 0, result.stderr
    assert not marker.exists(), "the worker never met the marker"
    assert "died; the page is prepared again in the main process" in result.stderr
    events = read_jsonl(tmp_path / "out.jsonl")
    assert [e["id"] for e in events] == [f"counter-{i}" for i in range(COUNT)]
    assert "ForkServerProcess" in _prepared_in(events)
    assert f"read {COUNT} = delivered {COUNT} +" in result.stdout


def test_a_plugin_that_declares_it_cannot_run_in_workers_is_prepared_in_process(tmp_path: Path,
                                                                                testkit_path: str) -> None:
    config = _counter(testkit_path, tmp_path, type="counter_local")
    config["workers"] = 2
    result = run_forwarder(tmp_path, config)
    assert result.returncode == 0, result.stderr
    events = read_jsonl(tmp_path / "out.jsonl")
    assert [e["id"] for e in events] == [f"counter-{i}" for i in range(COUNT)]
    assert _prepared_in(events) == {"MainProcess"}
    assert "source counter: its plugin prepares pages in the main process" in result.stderr


def test_workers_zero_is_the_in_process_path(tmp_path: Path, testkit_path: str) -> None:
    config = _counter(testkit_path, tmp_path)
    config["workers"] = 0
    result = run_forwarder(tmp_path, config)
    assert result.returncode == 0, result.stderr
    assert _prepared_in(read_jsonl(tmp_path / "out.jsonl")) == {"MainProcess"}
    assert "worker process" not in result.stderr


@pytest.mark.parametrize("value, message", [
    (-1, "$.workers: -1 is not valid under any of the given schemas"),
    ("many", "$.workers: 'many' is not valid under any of the given schemas"),
])
def test_a_bad_workers_setting_is_a_located_config_error(tmp_path: Path, testkit_path: str, value: Any,
                                                         message: str) -> None:
    config = _counter(testkit_path, tmp_path)
    config = {"workers": value, **config}
    result = run_forwarder(tmp_path, config, "check")
    assert result.returncode == 78
    assert f"config.yaml:1: {message}" in result.stdout


def test_auto_leaves_one_cpu_to_the_main_process() -> None:
    cpus = len(os.sched_getaffinity(0))
    assert worker_count("auto") == cpus - 1
    assert worker_count(3) == 3 and worker_count(0) == 0


def _children(pid: int) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.add(int(entry))
    return found


def _workers(pid: int) -> set[int]:
    """The worker processes of the daemon ``pid``: the children of its forkserver."""
    return {worker for child in _children(pid) for worker in _children(child)}


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


def test_sighup_starts_new_workers_for_the_new_config_and_sigterm_stops_them(tmp_path: Path,
                                                                             testkit_path: str) -> None:
    config = _counter(testkit_path, tmp_path, count=1000)
    config["workers"] = 1
    out = tmp_path / "out.jsonl"
    proc = start_forwarder(tmp_path, config)
    log: list[str] = []
    _drain_stderr(proc, log)
    try:
        wait_until(lambda: lines_written(out) == 1000, 60, "the first 1000 events", proc, log)
        first = _workers(proc.pid)
        assert len(first) == 1
        config["sources"][0]["options"]["count"] = 2000
        config["workers"] = 2
        write_config(tmp_path / "config.yaml", config)
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: lines_written(out) == 2000, 60, "the next 1000 events", proc, log)
        assert not _alive(first), "the old configuration's worker outlived the reload"
        workers = _workers(proc.pid) | _children(proc.pid)
        assert len(_workers(proc.pid)) == 2
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, "".join(log[-30:])
    text = "".join(log)
    assert "1 worker process(es) prepare and encode pages" in text
    assert "2 worker process(es) prepare and encode pages" in text
    events = read_jsonl(out)
    assert [e["id"] for e in events] == [f"counter-{i}" for i in range(2000)]
    assert "ForkServerProcess" in _prepared_in(events)
    deadline = time.monotonic() + 10
    while _alive(workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(workers), "worker processes outlived the daemon"
