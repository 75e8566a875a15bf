"""Delivering a batch to one output (:class:`OutputRunner`): every event ends accepted, dead-lettered
or retried, exactly one of them, and the counters, the ledger's tally and the log say which.

The output here is a scripted one: each ``send`` answers the next verdict of its script (a
:class:`SendResult` or an exception). The stop event records the waits instead of sleeping.
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import backoff
import pytest

from forwarder_core.engine import delivery
from forwarder_core.engine.delivery import OutputRunner
from forwarder_core.errors import OutputError
from forwarder_core.metrics import Metrics
from forwarder_core.plugin.base import Output
from forwarder_core.plugin.context import ComponentConfig, Context
from forwarder_core.plugin.encoded import Encoded, EncodedEvents
from forwarder_core.plugin.results import SendResult
from forwarder_core.secrets import register_secret_text
from forwarder_core.storage.setaside import DEAD_LETTER, SetAside
from tests.helpers import read_jsonl


class RecordingStop(threading.Event):
    """A stop event whose ``wait`` returns at once, remembering how long it was asked to wait;
    it sets itself after ``limit`` waits so a runaway retry loop ends."""

    def __init__(self, limit: int = 50):
        super().__init__()
        self.waits: list[float] = []
        self.limit = limit

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout if timeout is not None else -1.0)
        if len(self.waits) >= self.limit:
            self.set()
        return self.is_set()


class Scripted(Output):
    type_name = "scripted"
    options_schema: dict[str, Any] = {"type": "object"}

    def __init__(self, script: list[Any], sources: list[str] | None = None):
        metrics = Metrics()
        super().__init__(ComponentConfig(name="siem", type="scripted", options={}, sources=sources),
                         Context(name="siem", state_dir="", logger=logging.getLogger("test.scripted"), metrics=metrics))
        self.script = list(script)
        self.batches: list[list[Any]] = []
        self.closed = False

    def _next(self) -> Any:
        verdict = self.script.pop(0) if self.script else SendResult()
        if isinstance(verdict, BaseException):
            raise verdict
        return verdict

    def send(self, events: list[dict[str, Any]]) -> SendResult:
        self.batches.append([e["id"] for e in events])
        return self._next()  # type: ignore[no-any-return]

    def send_encoded(self, batch: Encoded) -> SendResult:
        self.batches.append([p.decode() for p in batch.parts])
        return self._next()  # type: ignore[no-any-return]

    def close(self) -> None:
        self.closed = True
        raise OSError("socket already gone")


def events(n: int) -> list[dict[str, Any]]:
    return [{"id": f"e{i}", "raw": {"n": i}, "message": f"event {i}"} for i in range(n)]


class Rig:
    def __init__(self, tmp_path: Path, script: list[Any], *, stop_after: int = 50, max_backoff: float = 300.0):
        self.output = Scripted(script)
        self.metrics = Metrics()
        self.stop = RecordingStop(stop_after)
        self.dead_letter = SetAside(str(tmp_path), DEAD_LETTER)
        self.runner = OutputRunner(self.output, self.dead_letter, self.metrics, self.stop, max_backoff=max_backoff,
                                   logger=logging.getLogger("test.delivery"))
        self.tally: dict[str, int] = {}

    def deliver(self, batch: Any, give_up_at: float | None = None) -> bool:
        return self.runner.deliver(batch, "src", give_up_at, tally=self.tally)

    def dead_letters(self) -> list[dict[str, Any]]:
        return read_jsonl(self.dead_letter.path("siem"))

    def counter(self, name: str) -> float:
        return self.metrics.get(name, output="siem", source="src")


def test_the_first_refused_event_of_a_batch_is_dead_lettered_not_delivered(tmp_path: Path) -> None:
    rig = Rig(tmp_path, [SendResult(rejected={0: "mapping conflict"})])
    assert rig.deliver(events(3))
    [letter] = rig.dead_letters()
    assert (letter["id"], letter["raw"], letter["reason"], letter["output"], letter["source"]) == (
        "e0", {"n": 0}, "mapping conflict", "siem", "src")
    assert rig.tally == {"accepted": 2, "dead_lettered": 1}
    assert rig.counter("events_dead_lettered_total") == 1 and rig.counter("events_delivered_total") == 2
    assert rig.output.batches == [["e0", "e1", "e2"]]  # refused for good: never sent again


def test_the_last_event_of_a_batch_can_be_refused(tmp_path: Path) -> None:
    rig = Rig(tmp_path, [SendResult(rejected={2: "too large"})])
    assert rig.deliver(events(3))
    assert [d["id"] for d in rig.dead_letters()] == ["e2"]
    assert rig.tally == {"accepted": 2, "dead_lettered": 1}
    assert rig.output.batches == [["e0", "e1", "e2"]]


def test_a_verdict_naming_an_index_outside_the_batch_is_a_plugin_error_and_the_batch_is_sent_again(
        tmp_path: Path) -> None:
    """An answer that names no event of the batch (3, -1) cannot be trusted for the others either:
    nothing of it counts, and the whole batch goes again."""
    rig = Rig(tmp_path, [SendResult(rejected={2: "too large", 3: "no such event", -1: "nor this"}, retry=[3, -1]),
                         SendResult(rejected={2: "too large"})])
    assert rig.deliver(events(3))
    assert rig.output.batches == [["e0", "e1", "e2"], ["e0", "e1", "e2"]]
    assert [d["id"] for d in rig.dead_letters()] == ["e2"]
    assert rig.tally == {"accepted": 2, "dead_lettered": 1}
    assert rig.metrics.total("plugin_errors_total") == 1


def test_only_the_events_to_retry_are_sent_again_and_each_is_counted_once(tmp_path: Path) -> None:
    rig = Rig(tmp_path, [SendResult(retry=[0, 2], retry_after=3.0), SendResult(retry=[1]), SendResult()])
    assert rig.deliver(events(4))
    assert rig.output.batches == [["e0", "e1", "e2", "e3"], ["e0", "e2"], ["e2"]]
    assert rig.tally == {"accepted": 4, "dead_lettered": 0}
    assert rig.counter("events_delivered_total") == 4 and rig.counter("events_retried_total") == 3
    assert rig.stop.waits[0] == 3.0  # the output's Retry-After is honoured
    assert rig.dead_letters() == [] and rig.counter("events_dead_lettered_total") == 0


def test_an_event_both_retried_and_refused_is_a_plugin_error_so_it_ends_in_one_place(tmp_path: Path) -> None:
    """Retry and refuse at once is no verdict: the whole batch goes again, and the next answer decides."""
    rig = Rig(tmp_path, [SendResult(retry=[1], rejected={1: "busy and refused", 0: "refused"}),
                         SendResult(rejected={0: "refused"})])
    assert rig.deliver(events(2))
    assert [d["id"] for d in rig.dead_letters()] == ["e0"]
    assert rig.output.batches == [["e0", "e1"], ["e0", "e1"]]
    assert rig.tally == {"accepted": 1, "dead_lettered": 1}
    assert rig.metrics.total("plugin_errors_total") == 1


def test_a_tally_already_holding_counts_is_added_to(tmp_path: Path) -> None:
    rig = Rig(tmp_path, [SendResult(rejected={1: "no"})])
    rig.tally.update(accepted=6, dead_lettered=3)
    assert rig.deliver(events(3))
    assert rig.tally == {"accepted": 8, "dead_lettered": 4}


def test_an_output_that_returns_no_verdict_has_accepted_the_whole_batch(tmp_path: Path) -> None:
    rig = Rig(tmp_path, [None])
    assert rig.deliver(events(2))
    assert rig.tally == {"accepted": 2, "dead_lettered": 0} and rig.counter("events_delivered_total") == 2


def test_a_batch_prepared_in_a_worker_dead_letters_its_first_event_and_retries_a_sub_batch(tmp_path: Path) -> None:
    batch = EncodedEvents(Encoded([b"p0", b"p1", b"p2"]), ["e0", "e1", "e2"], [{"n": 0}, {"n": 1}, {"n": 2}])
    rig = Rig(tmp_path, [SendResult(rejected={0: "bad"}, retry=[2]), SendResult()])
    assert OutputRunner.accepts_encoded  # the pipeline hands it such batches
    assert rig.deliver(batch)
    assert rig.output.batches == [["p0", "p1", "p2"], ["p2"]]
    [letter] = rig.dead_letters()
    assert (letter["id"], letter["raw"]) == ("e0", {"n": 0})
    assert rig.tally == {"accepted": 2, "dead_lettered": 1}


def test_a_secret_in_a_refusal_reason_never_reaches_the_dead_letter_file(tmp_path: Path) -> None:
    register_secret_text("s3cr3t-delivery-token")
    rig = Rig(tmp_path, [SendResult(rejected={0: "token s3cr3t-delivery-token refused"})])
    assert rig.deliver(events(1))
    assert "s3cr3t" not in (tmp_path / DEAD_LETTER / "siem.jsonl").read_text()


def test_a_failed_send_is_retried_until_accepted_and_nothing_is_lost_meanwhile(tmp_path: Path,
                                                                              caplog: pytest.LogCaptureFixture) -> None:
    rig = Rig(tmp_path, [RuntimeError("plugin bug"), OutputError("503"), SendResult()])
    with caplog.at_level(logging.DEBUG, logger="test.delivery"):
        assert rig.deliver(events(2))
    # a plugin's bug leaves its traceback for the debug log, once, when the output starts failing
    [trace] = [r for r in caplog.records if r.levelno == logging.DEBUG]
    assert trace.getMessage() == "output siem: send raised" and trace.exc_info and trace.exc_info[0] is RuntimeError
    assert rig.output.batches == [["e0", "e1"]] * 3
    assert rig.tally == {"accepted": 2, "dead_lettered": 0}
    assert rig.metrics.get("output_errors_total", output="siem") == 2
    assert rig.runner.state == "ok"


def test_without_a_deadline_a_failing_output_is_retried_until_stopped_and_never_raises(tmp_path: Path) -> None:
    """``run`` delivers with no deadline: a failing send waits and retries; only stop ends it."""
    rig = Rig(tmp_path, [OutputError("down")] * 10, stop_after=3)
    assert rig.deliver(events(1), give_up_at=None) is False
    assert len(rig.output.batches) == 3 and rig.tally == {}


def test_with_a_deadline_passed_a_failing_output_is_given_up_after_one_send(tmp_path: Path) -> None:
    rig = Rig(tmp_path, [OutputError("down")] * 10)
    assert rig.deliver(events(1), give_up_at=time.monotonic() - 1) is False
    assert len(rig.output.batches) == 1 and rig.stop.waits == []


def test_a_deadline_shortens_the_wait_but_a_far_one_leaves_it_as_the_output_asked(tmp_path: Path) -> None:
    rig = Rig(tmp_path, [OutputError("slow down", retry_after=7.0), OutputError("slow down", retry_after=7.0)],
              stop_after=2)
    assert rig.deliver(events(1), give_up_at=time.monotonic() + 1000) is False
    assert rig.stop.waits == [7.0, 7.0]
    near = Rig(tmp_path, [OutputError("slow down", retry_after=7.0)], stop_after=1)
    assert near.deliver(events(1), give_up_at=time.monotonic() + 2) is False
    assert 0.0 < near.stop.waits[0] <= 2.0


def test_waits_between_failed_sends_double_from_half_a_second_up_to_max_backoff(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backoff, "full_jitter", lambda value: value)  # the ceiling of each random wait
    rig = Rig(tmp_path, [OutputError("down")] * 10, stop_after=6, max_backoff=10.0)
    assert not rig.deliver(events(1))
    assert rig.stop.waits == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0]


def test_output_paused_is_one_while_the_siem_refuses_the_configuration_and_zero_otherwise(tmp_path: Path) -> None:
    rig = Rig(tmp_path, [OutputError("bad token", pause=True)], stop_after=1)
    assert not rig.deliver(events(1))
    assert rig.runner.state == "paused" and rig.metrics.get("output_paused", output="siem") == 1
    rig.stop.clear()
    rig.stop.limit = 100
    assert rig.deliver(events(1))
    assert rig.runner.state == "ok" and rig.metrics.get("output_paused", output="siem") == 0
    failing = Rig(tmp_path, [OutputError("503")], stop_after=1)
    assert not failing.deliver(events(1))
    assert failing.runner.state == "failing" and failing.metrics.get("output_paused", output="siem") == 0
    assert failing.runner.reason == "503"


def test_an_outage_is_logged_once_when_it_starts_and_once_when_it_ends(tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    rig = Rig(tmp_path, [OutputError("503")] * 4 + [OutputError("bad token", pause=True)] * 2)
    with caplog.at_level(logging.DEBUG, logger="test.delivery"):
        assert rig.deliver(events(1))
    lines = [(r.levelname, r.getMessage()) for r in caplog.records if r.levelno >= logging.WARNING]
    assert lines == [
        ("ERROR", "output siem: failing: 503. Cursors stay where they are; retrying with backoff"),
        ("ERROR", "output siem: paused, the SIEM refuses this configuration: bad token. Cursors stay where they are; "
                  "fix the config and the output resumes by itself"),
        ("WARNING", "output siem: delivering again after 0s (bad token)"),
    ]


def _each_wait_moves_the_clock(monkeypatch: pytest.MonkeyPatch, rig: Rig, *, start: float, step: float) -> None:
    """delivery's monotonic clock reads ``start``, and moves on by ``step`` at each retry wait."""
    clock = [start]
    monkeypatch.setattr(delivery.time, "monotonic", lambda: clock[0])
    original_wait = rig.stop.wait

    def wait(timeout: float | None = None) -> bool:
        clock[0] += step
        return original_wait(timeout)

    rig.stop.wait = wait  # type: ignore[method-assign]


def test_a_long_outage_is_recalled_every_ten_minutes_not_on_every_retry(tmp_path: Path,
                                                                        caplog: pytest.LogCaptureFixture,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    rig = Rig(tmp_path, [OutputError("503")] * 5)
    _each_wait_moves_the_clock(monkeypatch, rig, start=10.0, step=200.0)
    with caplog.at_level(logging.ERROR, logger="test.delivery"):
        assert rig.deliver(events(1))
    still = [r.getMessage() for r in caplog.records if "still" in r.getMessage()]
    assert still == ["output siem: still failing after 600s: 503"]
    assert delivery.REMIND_EVERY == 600.0


def test_a_refusal_is_logged_with_its_count_and_where_the_events_went(tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    rig = Rig(tmp_path, [SendResult(rejected={0: "x" * 400, 1: "second"})])
    with caplog.at_level(logging.WARNING, logger="test.delivery"):
        assert rig.deliver(events(2))
    [line] = [r.getMessage() for r in caplog.records]
    assert line.startswith(f"output siem: 2 event(s) of src refused for good, written to {rig.dead_letter.path('siem')}")
    assert line.endswith("(first reason: " + "x" * 300 + ")")


def test_an_output_routed_to_some_sources_wants_only_those() -> None:
    routed = OutputRunner(Scripted([], sources=["a"]), None, Metrics(), threading.Event())  # type: ignore[arg-type]
    everything = OutputRunner(Scripted([]), None, Metrics(), threading.Event())  # type: ignore[arg-type]
    assert routed.wants("a") and not routed.wants("b") and everything.wants("b")


def test_an_output_that_fails_to_close_is_logged_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rig = Rig(tmp_path, [])
    with caplog.at_level(logging.WARNING, logger="test.delivery"):
        rig.runner.close()
    assert rig.output.closed and [r.getMessage() for r in caplog.records] == [
        "output siem: close failed: socket already gone"]


def test_a_plugin_bug_is_traced_once_when_the_output_starts_failing_not_on_every_retry(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    rig = Rig(tmp_path, [RuntimeError("bug")] * 3)
    _each_wait_moves_the_clock(monkeypatch, rig, start=50.0, step=1.5)
    with caplog.at_level(logging.DEBUG, logger="test.delivery"):
        assert rig.deliver(events(1))
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG] == ["output siem: send raised"]


def test_a_deadline_reached_to_the_instant_gives_up_without_another_send(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A poll's deadline is the last moment delivery may run: at it exactly, the batch is given up
    (left uncommitted for the next poll), not sent once more."""
    monkeypatch.setattr(delivery.time, "monotonic", lambda: 100.0)
    rig = Rig(tmp_path, [OutputError("down")] * 10)
    assert rig.deliver(events(1), give_up_at=100.0) is False
    assert len(rig.output.batches) == 1 and rig.stop.waits == []


def test_a_wait_before_a_near_deadline_ends_at_the_deadline_not_later(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The output asks for 7 s, a quarter of a second is left: delivery waits that quarter, so the
    poll ends when its deadline says, not a second late."""
    monkeypatch.setattr(delivery.time, "monotonic", lambda: 100.0)
    rig = Rig(tmp_path, [OutputError("slow down", retry_after=7.0)], stop_after=1)
    assert rig.deliver(events(1), give_up_at=100.25) is False
    assert rig.stop.waits == [0.25]


@pytest.mark.parametrize("encoded", [False, True])
def test_a_plugin_bug_is_counted_and_told_under_the_plugin_and_the_hook_that_raised(tmp_path: Path,
                                                                                    encoded: bool) -> None:
    """``plugin_errors_total`` and the output's failure reason name the plugin the output comes from
    (the output's type unless told otherwise) and the hook that raised: ``send`` for events,
    ``send_encoded`` for a batch encoded in a worker."""
    batch: Any = (EncodedEvents(Encoded([b"p0"]), ["e0"], [{"n": 0}]) if encoded else events(1))
    hook = "send_encoded" if encoded else "send"
    for plugin, named in ((None, "scripted"), ("vendor-pack", "vendor-pack")):
        rig = Rig(tmp_path, [RuntimeError("bug")], stop_after=1)
        rig.runner = OutputRunner(rig.output, rig.dead_letter, rig.metrics, rig.stop, plugin=plugin,
                                  logger=logging.getLogger("test.delivery"))
        assert not rig.deliver(batch)
        assert rig.metrics.get("plugin_errors_total", plugin=named, hook=hook) == 1
        assert rig.runner.reason == f"plugin {named}: {hook} raised RuntimeError: bug"
