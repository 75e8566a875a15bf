"""The delivery promise under SIGKILL and SIEM outages, the short form that runs in CI.

For each output type: the real ``siem-forwarder run`` process reads a backlog from the Incydr
fake (its own process, 50 events a page) and is killed with SIGKILL at seeded random points,
three times, with outages of the SIEM between (connection refused, 503, a refused token); the file
and Elasticsearch once more with two worker processes preparing pages of 200. Some events come
with identical copies, each an occurrence of its own. Then what the SIEM holds is
compared with what the vendor served: nothing missing, at most one page sent twice per kill
(none in Elasticsearch), and the source's ledger balanced. The long form (20 rounds per output type) is
``python -m tests.reliability.long``.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability.harness import (
    ElasticSink,
    FileSink,
    HecSink,
    Outcome,
    Sink,
    SyslogSink,
    VendorProcess,
    run_rounds,
)
from tests.rsyslog import Rsyslog

ROUNDS = 3
EVENTS = 2000
PAGE_SIZE = 50
SEED = 20261122
IDENTICAL = 20
"""Events of the backlog that come with 1-3 copies equal in every byte, each copy to be delivered."""


@pytest.fixture(scope="module")
def vendor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VendorProcess]:
    fake = VendorProcess(tmp_path_factory.mktemp("incydr"), events=EVENTS, seed=SEED, identical=IDENTICAL)
    yield fake
    fake.stop()


def _run(tmp_path: Path, vendor: VendorProcess, sink: Sink, *, page_size: int = PAGE_SIZE,
         workers: int | None = None) -> Outcome:
    try:
        outcome = run_rounds(tmp_path, vendor, sink, rounds=ROUNDS, seed=SEED, page_size=page_size,
                             outage_chance=0.75, catch_up_timeout=90, workers=workers)
    finally:
        sink.close()
    print(outcome.row())
    assert outcome.kills == ROUNDS
    assert outcome.expected >= EVENTS + IDENTICAL  # every copy is an event of its own
    assert outcome.missing == 0, outcome.row()
    assert outcome.unexpected == 0, outcome.row()
    assert outcome.duplicates <= outcome.duplicate_bound, outcome.row()
    assert outcome.rounds_over_bound == 0, outcome.row()
    assert outcome.ledger_balanced, outcome.row()
    return outcome


def test_file_output_loses_nothing_across_kills(tmp_path: Path, vendor: VendorProcess) -> None:
    sink = FileSink(tmp_path / "out.jsonl")
    outcome = _run(tmp_path, vendor, sink)
    assert outcome.extra["torn_lines"] == 0


def test_splunk_hec_loses_nothing_across_kills_and_outages(tmp_path: Path, vendor: VendorProcess) -> None:
    outcome = _run(tmp_path, vendor, HecSink())
    assert sum(outcome.outages.values()) >= 1


def test_elasticsearch_loses_nothing_and_never_holds_a_duplicate(tmp_path: Path, vendor: VendorProcess) -> None:
    outcome = _run(tmp_path, vendor, ElasticSink())
    # Resent pages (counted as 409s in outcome.extra) were refused by _id, never stored twice.
    assert outcome.duplicates == 0 and outcome.max_copies == 1


def test_syslog_cef_into_rsyslog_loses_nothing_across_kills_and_restarts(tmp_path: Path, vendor: VendorProcess,
                                                                         rsyslog_tcp: Rsyslog) -> None:
    outcome = _run(tmp_path, vendor, SyslogSink(rsyslog_tcp))
    assert outcome.outages["refused"] >= 1


@pytest.mark.parametrize("sink_type", ["file", "elastic_bulk"])
def test_with_two_workers_the_same_bounds_hold(tmp_path: Path, vendor: VendorProcess, sink_type: str) -> None:
    """Pages of 200 (above workers.SMALL_PAGE) prepared and encoded in two worker processes: each
    kill takes the workers with it, and the bounds are those of the in-process path."""
    sink: Sink = FileSink(tmp_path / "out.jsonl") if sink_type == "file" else ElasticSink()
    outcome = _run(tmp_path, vendor, sink, page_size=200, workers=2)
    assert any("2 worker process(es) prepare and encode pages" in line for line in outcome.log)
    if sink_type == "elastic_bulk":
        assert outcome.duplicates == 0 and outcome.max_copies == 1
    else:
        assert outcome.extra["torn_lines"] == 0
