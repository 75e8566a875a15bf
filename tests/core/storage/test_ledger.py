"""The ledger: read = delivered + quarantined + dead-lettered + filtered + already delivered + held
back, per output; persisted with the cursor; in the summary, `state` and /metrics; a bug when it
does not balance. And occurrence ids for a source that is not a built-in."""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from forwarder_core.engine.delivery import OutputRunner
from forwarder_core.engine.pipeline import SourceRunner
from forwarder_core.metrics import Metrics
from forwarder_core.plugin_api import ComponentConfig, Context, Output, Page, SendResult, Source, content_id
from forwarder_core.storage.checkpoint import CheckpointStore
from forwarder_core.storage.ledger import STRICT_ENV, Ledger, LedgerError
from forwarder_core.storage.setaside import DEAD_LETTER, QUARANTINE, SetAside
from siem_forwarder_plugins.sources.windows import EdgeDedup, WindowCursor, WindowTally
from tests.helpers import run_forwarder

SAME = {"actor": "SYSTEM", "type": "logged_in", "time": "2026-01-01T00:00:00.001Z"}
OTHER = {"actor": "ana", "type": "logged_out", "time": "2026-01-01T00:00:00.002Z"}
BAD = {"actor": "bob", "type": "logged_in"}  # no time: normalize fails, the core quarantines it


class Twins(Source):
    """A third-party source without vendor ids, built on the core's content id and the shared window dedup."""

    type_name = "twins"
    vendor = "Example"
    product = "Twins"
    pass_digest = False  # a normalize that passes id=content_id(raw) itself

    def poll(self, cursor: Any) -> Iterator[Page]:
        state = WindowCursor.load(cursor, 0)
        dedup = EdgeDedup(state, window_end=10_000, lookback=10_000, tally=WindowTally())
        fresh, ids = [], []
        for raw in [SAME, dict(SAME), OTHER, dict(SAME), BAD]:
            occurrence = dedup.occurrence(content_id(raw), 1)
            if occurrence is not None:
                fresh.append(raw)
                ids.append(occurrence)
        state.finish_window(10_000, 10_000)
        yield Page(fresh, state.dump(), ids=ids, already_delivered=dedup.take_already())

    def normalize(self, raw: Any) -> dict[str, Any]:
        return self.make_event(raw, id=content_id(raw) if self.pass_digest else None, timestamp=raw["time"],
                               action=raw["type"])


class Memory(Output):
    type_name = "memory_out"

    def __init__(self, config: ComponentConfig, context: Context, refuse: str | None = None):
        super().__init__(config, context)
        self.events: list[dict[str, Any]] = []
        self.refuse = refuse

    def send(self, events: list[dict[str, Any]]) -> SendResult:
        rejected = {i: "no" for i, e in enumerate(events) if self.refuse and e["raw"].get("actor") == self.refuse}
        self.events.extend(e for i, e in enumerate(events) if i not in rejected)
        return SendResult(rejected=rejected)


def rig(tmp_path: Path, *, pass_digest: bool = False, refuse: str | None = None,
        runner_cls: type[OutputRunner] = OutputRunner) -> tuple[SourceRunner, list[Memory], CheckpointStore, Metrics]:
    metrics = Metrics()
    stop = threading.Event()
    log = logging.getLogger("test.ledger")
    source = Twins(ComponentConfig("twins", "twins", {}), Context("twins", str(tmp_path), log, metrics))
    source.pass_digest = pass_digest
    outputs = [Memory(ComponentConfig("a", "memory_out", {}), Context("a", str(tmp_path), log, metrics)),
               Memory(ComponentConfig("b", "memory_out", {}), Context("b", str(tmp_path), log, metrics), refuse)]
    runners = [runner_cls(o, SetAside(str(tmp_path), DEAD_LETTER), metrics, stop) for o in outputs]
    store = CheckpointStore(str(tmp_path))
    runner = SourceRunner(source, runners, store, SetAside(str(tmp_path), QUARANTINE), metrics, stop)
    return runner, outputs, store, metrics


@pytest.mark.parametrize("pass_digest", [False, True], ids=["id left out", "id=content_id(raw)"])
def test_a_third_party_source_on_the_core_content_id_gets_occurrence_ids(tmp_path: Path, pass_digest: bool) -> None:
    runner, outputs, store, _ = rig(tmp_path, pass_digest=pass_digest)
    result = runner.run_until_caught_up()
    d, e = content_id(SAME), content_id(OTHER)
    assert [ev["id"] for ev in outputs[0].events] == [d, f"{d}-2", e, f"{d}-3"]
    again = runner.run_until_caught_up()  # the same window read again: nothing twice
    assert len(outputs[0].events) == 4 and again.ledger.already_delivered == 5  # the quarantined one too
    assert result.ledger.quarantined == 1
    store.close()


def test_the_ledger_balances_per_output_and_is_kept_since_the_state_dir_began(tmp_path: Path) -> None:
    runner, _outputs, store, metrics = rig(tmp_path, refuse="ana")
    first = runner.run_until_caught_up()
    assert first.ledger == Ledger(read=5, quarantined=1, delivered={"a": 4, "b": 3}, dead_lettered={"a": 0, "b": 1})
    assert first.ledger.balanced
    second = runner.run_until_caught_up()
    assert second.ledger.already_delivered == 5 and second.ledger.balanced
    total = store.ledger("twins")
    assert total.read == 10 and total.delivered == {"a": 4, "b": 3} and total.already_delivered == 5
    assert total.balanced
    text = metrics.render()
    assert 'siem_forwarder_ledger_events_total{output="b",source="twins",term="dead_lettered"} 1' in text
    assert 'siem_forwarder_ledger_events_total{source="twins",term="read"} 10' in text
    store.close()


class LosingRunner(OutputRunner):
    """An output path with a bug: it reports success without accounting for the events."""

    def deliver(self, events: list[dict[str, Any]], source_name: str, give_up_at: float | None = None,
                tally: dict[str, int] | None = None) -> bool:
        return super().deliver(events[1:], source_name, give_up_at, tally)


def test_an_unbalanced_ledger_fails_the_suite(tmp_path: Path) -> None:
    runner, _, store, _ = rig(tmp_path, runner_cls=LosingRunner)
    with pytest.raises(LedgerError, match="UNBALANCED"):
        runner.run_until_caught_up()
    assert store.get("twins") is None  # and nothing was committed
    store.close()


def test_outside_the_suite_an_unbalanced_ledger_is_an_error_with_the_counts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv(STRICT_ENV, "0")
    runner, _, store, metrics = rig(tmp_path, runner_cls=LosingRunner)
    with caplog.at_level(logging.ERROR):
        runner.run_until_caught_up()
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("does not balance" in m and "read 5 = delivered (a 3, b 3)" in m for m in errors), errors
    assert metrics.get("ledger_unbalanced_total", source="twins") == 1
    store.close()


def test_state_shows_the_ledger_since_the_state_dir_was_created(tmp_path: Path, counter_config: Any) -> None:
    config = counter_config(count=25, page_size=10)
    assert run_forwarder(tmp_path, config).returncode == 0
    done = run_forwarder(tmp_path, config)
    assert "ledger counter: read 0 = delivered 0" in done.stdout
    state = run_forwarder(tmp_path, None, "state", config_path=tmp_path / "config.yaml")
    assert state.returncode == 0, state.stderr
    line = next(x for x in state.stdout.splitlines() if x.startswith("ledger counter"))
    assert line == ("ledger counter (since the state dir was created): read 25 = delivered 25 + quarantined 0"
                    " + dead-lettered 0 + filtered 0 + already delivered 0 + held back 0")


def test_the_ledger_line_names_every_term_and_each_output_where_there_are_several() -> None:
    one = Ledger(read=11, quarantined=1, filtered=2, already_delivered=3, held_back=2, delivered={"a": 2},
                 dead_lettered={"a": 1})
    assert one.line() == ("read 11 = delivered 2 + quarantined 1 + dead-lettered 1 + filtered 2"
                          " + already delivered 3 + held back 2")
    several = Ledger(read=4, delivered={"b": 3, "a": 4, "": 1}, dead_lettered={"b": 1})
    assert several.unbalanced() == [""]
    assert several.line() == ("read 4 = delivered (- 1, a 4, b 3) + quarantined 0 + dead-lettered 1 + filtered 0"
                              " + already delivered 0 + held back 0  !! UNBALANCED for -")
    assert Ledger(read=1).line().endswith("held back 0  !! UNBALANCED")  # routed to no output: no name to give
    assert Ledger().balanced and Ledger().outputs() == [] and Ledger(read=1).unbalanced() == [""]


def test_ledgers_add_term_by_term_and_output_by_output() -> None:
    total = Ledger(read=1, quarantined=1, filtered=1, already_delivered=1, held_back=1, delivered={"a": 1},
                   dead_lettered={"a": 1})
    total.add(Ledger(read=10, quarantined=2, filtered=3, already_delivered=4, held_back=5, delivered={"a": 6, "b": 7},
                     dead_lettered={"b": 8}))
    assert total == Ledger(read=11, quarantined=3, filtered=4, already_delivered=5, held_back=6,
                           delivered={"a": 7, "b": 7}, dead_lettered={"a": 1, "b": 8})
    assert total.outputs() == ["a", "b"]


def test_ledger_rows_round_trip_and_an_unknown_term_is_ignored() -> None:
    ledger = Ledger(read=9, quarantined=1, filtered=2, already_delivered=3, held_back=1, delivered={"a": 2},
                    dead_lettered={"a": 0})
    rows = ledger.rows()
    assert ("read", "", 9) in rows and ("delivered", "a", 2) in rows and ("dead_lettered", "a", 0) in rows
    assert Ledger.from_rows(rows + [("invented", "", 5)]) == ledger


def test_strictness_is_on_for_any_value_but_empty_or_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    from forwarder_core.storage.ledger import strict

    for value, expected in (("1", True), ("yes", True), ("0", False), ("", False)):
        monkeypatch.setenv(STRICT_ENV, value)
        assert strict() is expected
    monkeypatch.delenv(STRICT_ENV)
    assert strict() is False and STRICT_ENV == "SIEM_FORWARDER_STRICT_LEDGER"


def test_a_committed_pages_terms_are_counted_in_metrics_by_output_and_zeros_left_out() -> None:
    from forwarder_core.storage.ledger import check_balance, count_terms

    metrics = Metrics()
    count_terms(Ledger(read=3, filtered=1, delivered={"a": 2}, dead_lettered={"a": 0}), "s", metrics)
    assert metrics.get("ledger_events_total", source="s", term="read") == 3
    assert metrics.get("ledger_events_total", source="s", term="delivered", output="a") == 2
    counted = sorted(sorted(labels.items()) for name, labels, _ in metrics.items() if name.endswith("ledger_events_total"))
    assert counted == sorted(sorted(d.items()) for d in ({"source": "s", "term": "read"},
                                                          {"source": "s", "term": "filtered"},
                                                          {"source": "s", "term": "delivered", "output": "a"}))
    check_balance(Ledger(read=2, delivered={"a": 2}), "s", metrics, logging.getLogger("test.ledger"), "page")
    assert metrics.get("ledger_unbalanced_total", source="s") == 0
