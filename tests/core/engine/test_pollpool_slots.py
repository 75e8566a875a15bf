"""The poll pool's slots, in process with scripted sources: every source submitted is polled and
reported done exactly once; a long poll yields its slot to waiting sources and resumes the same poll;
a poll that breaks is reported failed; closing ends what is queued without losing its cursor."""
from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from forwarder_core.engine import pollpool
from forwarder_core.engine.pollpool import PollPool
from forwarder_core.engine.polls import Poll, SourceResult
from forwarder_core.storage.ledger import LedgerError


class ScriptedRunner:
    """Stands in for a SourceRunner: each ``run_slice`` answers the next item of ``slices``
    (True: the poll ended; False: it yielded its slot; an exception: it broke)."""

    log: list[tuple[str, str]] = []

    def __init__(self, name: str, slices: list[Any], on_slice: Any = None):
        self.name = name
        self.slices = list(slices)
        self.on_slice = on_slice
        self.opened = 0
        self.calls: list[dict[str, Any]] = []
        self.ended: list[Poll] = []

    def open_poll(self) -> Poll:
        self.opened += 1
        return Poll(SourceResult(self.name), iter(()), None)

    def run_slice(self, poll: Poll, fetcher: Any, **kwargs: Any) -> bool:
        self.calls.append({**kwargs, "poll": poll, "waiting": kwargs["others_waiting"]()})
        ScriptedRunner.log.append((self.name, "slice"))
        kwargs["progress"](poll.result)
        if self.on_slice is not None:
            self.on_slice(self)
        outcome = self.slices.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return bool(outcome)

    def end_poll(self, poll: Poll, progress: Any = None) -> None:
        self.ended.append(poll)


class Done:
    def __init__(self) -> None:
        self.results: list[tuple[str, SourceResult]] = []
        self.cond = threading.Condition()

    def __call__(self, runner: Any, result: SourceResult) -> None:
        with self.cond:
            self.results.append((runner.name, result))
            self.cond.notify_all()

    def wait_for(self, n: int) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.results) >= n, timeout=60)


@pytest.fixture(autouse=True)
def _fresh_log() -> None:
    ScriptedRunner.log = []


def test_every_source_submitted_is_polled_and_reported_done_once() -> None:
    done, beats = Done(), []
    pool = PollPool(2, threading.Event(), on_done=done, progress=beats.append, give_up_after=7.0)
    runners = [ScriptedRunner(f"s{i}", [True]) for i in range(5)]
    for r in runners:
        pool.submit(r)  # type: ignore[arg-type]
    pool.start()
    pool.wait_idle()
    assert sorted(name for name, _ in done.results) == [f"s{i}" for i in range(5)]
    assert all(r.opened == 1 for r in runners) and len(beats) == 5
    call = runners[0].calls[0]
    assert (call["give_up_after"], call["max_pages"], call["max_seconds"]) == (7.0, 20, 5.0)
    assert pool.running == {} and pool.error is None
    assert pool.close(timeout=60) is True
    assert len(pool._threads) == 2 and not any(t.is_alive() for t in pool._threads)
    assert all(t.daemon for t in pool._threads)  # a slot stuck in a vendor call never holds the process at exit


def test_a_long_poll_yields_its_slot_to_a_waiting_source_and_resumes_the_same_poll() -> None:
    done = Done()
    pool = PollPool(1, threading.Event(), on_done=done)
    long = ScriptedRunner("long", [False, False, True])
    short = ScriptedRunner("short", [True])
    pool.submit(long)  # type: ignore[arg-type]
    pool.submit(short)  # type: ignore[arg-type]
    pool.start()
    pool.wait_idle()
    assert ScriptedRunner.log == [("long", "slice"), ("short", "slice"), ("long", "slice"), ("long", "slice")]
    assert [c["waiting"] for c in long.calls] == [True, False, False]  # only the first slice had someone waiting
    assert long.opened == 1 and len({id(c["poll"]) for c in long.calls}) == 1
    assert [name for name, _ in done.results] == ["short", "long"]
    pool.close(timeout=60)


def test_a_poll_that_breaks_is_reported_failed_and_a_ledger_error_is_kept_for_the_caller(
        caplog: pytest.LogCaptureFixture) -> None:
    done = Done()
    pool = PollPool(1, threading.Event(), on_done=done)
    pool.submit(ScriptedRunner("bug", [RuntimeError("oops")]))  # type: ignore[arg-type]
    pool.start()
    pool.wait_idle()
    assert pool.error is None
    [(name, result)] = done.results
    assert (name, result.error) == ("bug", "poll broke: RuntimeError")
    [broke] = [r for r in caplog.records if "the poll broke" in r.getMessage()]
    assert broke.getMessage() == "source bug: the poll broke: oops" and broke.exc_info  # a bug: its traceback too
    pool.submit(ScriptedRunner("unbalanced", [LedgerError("read 2 = delivered 1")]))  # type: ignore[arg-type]
    pool.wait_idle()
    assert isinstance(pool.error, LedgerError) and done.results[-1][1].error == "poll broke: LedgerError"
    assert pool.running == {}
    pool.close(timeout=60)


def test_a_source_submitted_with_a_delay_is_not_polled_before_it_is_due() -> None:
    done = Done()
    stop = threading.Event()
    pool = PollPool(1, stop, on_done=done)
    later = ScriptedRunner("later", [True])
    pool.submit(later, delay=3600)  # type: ignore[arg-type]
    pool.submit(ScriptedRunner("now", [True]), delay=0)  # type: ignore[arg-type]
    pool.start()
    done.wait_for(1)
    stop.set()
    pool.wait_idle()  # with the stop set, a source due later does not keep it waiting
    assert pool.close(timeout=60)
    assert [name for name, _ in done.results] == ["now"] and later.opened == 0


def test_a_source_whose_delay_has_passed_is_polled() -> None:
    done = Done()
    pool = PollPool(1, threading.Event(), on_done=done)
    pool.submit(ScriptedRunner("soon", [True]), delay=0.01)  # type: ignore[arg-type]
    pool.start()
    pool.wait_idle()
    assert [name for name, _ in done.results] == ["soon"]
    pool.close(timeout=60)


def test_closing_ends_a_suspended_poll_and_reports_it_without_running_it_again() -> None:
    done = Done()
    stop = threading.Event()
    pool = PollPool(1, stop, on_done=done)
    runner = ScriptedRunner("long", [False, True], on_slice=lambda r: stop.set())
    pool.submit(runner)  # type: ignore[arg-type]
    pool.start()
    pool.wait_idle()
    assert pool.close(timeout=60)
    assert len(runner.calls) == 1 and runner.ended == [runner.calls[0]["poll"]]
    assert done.results == [("long", runner.calls[0]["poll"].result)]
    assert not pool._ready


def test_the_watchdog_sees_a_source_only_while_it_holds_a_slot() -> None:
    seen: list[dict[str, float]] = []
    done = Done()
    pool = PollPool(1, threading.Event(), on_done=done)
    runner = ScriptedRunner("s", [True], on_slice=lambda r: seen.append(dict(pool.running)))
    pool.submit(runner)  # type: ignore[arg-type]
    pool.start()
    pool.wait_idle()
    assert list(seen[0]) == ["s"] and pool.running == {}
    pool.close(timeout=60)
    assert pollpool.SLICE_PAGES == 20 and pollpool.SLICE_SECONDS == 5.0


def test_a_close_with_no_time_left_reports_a_slot_still_busy() -> None:
    release = threading.Event()
    entered = threading.Event()
    pool = PollPool(1, threading.Event(), on_done=Done())

    def hold(runner: Any) -> None:
        entered.set()
        release.wait(60)

    pool.submit(ScriptedRunner("stuck", [True], on_slice=hold))  # type: ignore[arg-type]
    pool.start()
    assert entered.wait(60)
    assert pool.close(timeout=0) is False
    release.set()
    assert pool.close(timeout=60) is True


class FakeTime:
    """The pool's clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def test_a_delayed_source_is_due_that_many_seconds_from_now_and_only_then_makes_a_poll_yield(
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeTime()
    monkeypatch.setattr(pollpool, "time", clock)
    pool = PollPool(1, threading.Event(), on_done=Done())
    pool.submit(ScriptedRunner("later", [True]), delay=5)  # type: ignore[arg-type]
    assert [due for due, _, _ in pool._timed] == [1005.0]
    assert pool._waiting() is False  # nobody is due yet: a running poll keeps its slot
    clock.now = 1005.0
    assert pool._waiting() is True


def _held_pool(stop: threading.Event) -> tuple[PollPool, threading.Event]:
    """A pool of one slot whose poll is blocked where the stop cannot reach it, until released."""
    release = threading.Event()
    entered = threading.Event()

    def hold(runner: Any) -> None:
        entered.set()
        release.wait(60)

    pool = PollPool(1, stop, on_done=Done())
    pool.submit(ScriptedRunner("stuck", [True], on_slice=hold))  # type: ignore[arg-type]
    pool.start()
    assert entered.wait(60)
    return pool, release


def test_after_a_stop_polls_get_the_grace_then_are_reported_still_running() -> None:
    """``wait_idle(grace)`` once stopped: a poll blocked past the grace is abandoned (False), not
    waited for without end, and not before the grace has passed."""
    stop = threading.Event()
    pool, release = _held_pool(stop)
    stop.set()
    unstick = threading.Timer(20, release.set)  # a pool that waited for ever would see it end here
    unstick.start()
    try:
        started = time.monotonic()
        assert pool.wait_idle(grace=0.3) is False
        assert 0.3 <= time.monotonic() - started < 20
    finally:
        unstick.cancel()
        release.set()
        pool.close(timeout=60)


def test_after_a_stop_a_poll_that_ends_within_the_grace_is_waited_for() -> None:
    stop = threading.Event()
    pool, release = _held_pool(stop)
    stop.set()
    threading.Timer(0.2, release.set).start()
    try:
        assert pool.wait_idle(grace=30) is True
    finally:
        release.set()
        pool.close(timeout=60)


def test_without_a_stop_the_grace_does_not_cut_a_running_poll_short() -> None:
    stop = threading.Event()
    pool, release = _held_pool(stop)
    threading.Timer(0.5, release.set).start()
    try:
        assert pool.wait_idle(grace=0.1) is True
    finally:
        release.set()
        pool.close(timeout=60)


def test_a_source_is_held_while_its_poll_runs_or_waits_suspended_and_no_other_is() -> None:
    """What a fleet asks before it lets another instance take a source (``holds``): a source mid-poll,
    running or queued with its poll suspended, is held; a source at rest, or another one, is not."""
    pool = PollPool(1, threading.Event(), on_done=Done())
    seen: dict[str, tuple[bool, ...]] = {}

    def during(runner: Any) -> None:
        key = f"{runner.name}{len(runner.calls)}"
        seen[key] = (pool.holds("b"), pool.holds("a"), pool.holds("c"), pool.holds("0"))

    long = ScriptedRunner("b", [False, True], on_slice=during)  # "a" and "0" sort before it, "c" after
    short = ScriptedRunner("a", [True], on_slice=during)
    pool.submit(long)  # type: ignore[arg-type]
    pool.submit(short)  # type: ignore[arg-type]
    assert not pool.holds("b")  # queued for a new poll: nothing of it has started
    pool.start()
    pool.wait_idle()
    assert seen == {"b1": (True, False, False, False),  # b runs; a waits to start a new poll
                    "a1": (True, True, False, False),  # b is suspended in the queue; a runs
                    "b2": (True, False, False, False)}
    assert not pool.holds("b") and not pool.holds("a")  # both caught up: at rest
    pool.close(timeout=60)


def test_a_source_submitted_without_a_delay_is_due_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """``once`` submits every source with no delay: each is due now (a running poll yields to it at
    its next page), not a moment later."""
    monkeypatch.setattr(pollpool, "time", FakeTime())
    pool = PollPool(1, threading.Event(), on_done=Done())
    pool.submit(ScriptedRunner("now", [True]))  # type: ignore[arg-type]
    assert pool._waiting() is True and pool._timed == []
