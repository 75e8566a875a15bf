"""The batching every HTTP output shares: requests capped by bytes and count, split on 413, rounds."""
from __future__ import annotations

import threading
from collections import deque

import pytest
from hypothesis import given
from hypothesis import strategies as st

from forwarder_core.errors import OutputError
from forwarder_core.plugin_api import SendResult
from siem_forwarder_plugins.outputs.batching import Limits, Retryable, Round, chunks, post_round, send_in_rounds, split


@given(st.lists(st.integers(min_value=1, max_value=300), max_size=60), st.integers(min_value=1, max_value=500),
       st.integers(min_value=1, max_value=12))
def test_chunks_keep_order_and_respect_both_caps(sizes: list[int], max_bytes: int, max_events: int) -> None:
    out = chunks(range(len(sizes)), sizes, max_bytes, max_events)
    assert [i for c in out for i in c] == list(range(len(sizes)))
    for c in out:
        assert len(c) <= max_events
        assert len(c) == 1 or sum(sizes[i] for i in c) <= max_bytes  # only a lone event may exceed the cap


def test_split_halves_to_the_front_and_refuses_a_single_event() -> None:
    queue: deque[list[int]] = deque([[9]])
    assert split([1, 2, 3, 4, 5], queue) and list(queue) == [[1, 2], [3, 4, 5], [9]]
    assert not split([7], queue)


def test_limits_compress_only_when_gzip_is_on() -> None:
    on = Limits.from_options({"batch_max_bytes": 10, "batch_max_events": 2, "gzip": True})
    off = Limits(10, 2, False)
    assert off.body([b"a", b"b"], b"\n", 1) == b"a\nb"
    assert on.body([b"a", b"b"], b"\n", 1)[:2] == b"\x1f\x8b"
    assert on.body([b"a"], b"", 1) == on.body([b"a"], b"", 1)  # mtime 0: the same events, the same bytes
    assert list(on.chunks([0, 1, 2], [1, 1, 1])) == [[0, 1], [2]]


def test_a_failed_request_ends_the_round_with_the_rest_unsent() -> None:
    def post(chunk: list[int], queue: deque[list[int]]) -> None:
        if chunk[0] == 2:
            raise Retryable("503", retry_after=4)
        rnd.progressed = True

    rnd = Round()
    post_round(deque([[0, 1], [2, 3], [4]]), post, rnd)
    assert rnd.unsent == [2, 3, 4] and rnd.failure is not None and rnd.failure.retry_after == 4


def test_nothing_through_raises_so_the_core_backs_off() -> None:
    def attempt(todo: list[int]) -> Round:
        rnd = Round()
        rnd.fail(Retryable("connection refused", 2.0), todo, deque())
        return rnd

    with pytest.raises(OutputError, match="connection refused") as info:
        send_in_rounds([0, 1], SendResult(), attempt, rounds=3, stop=threading.Event())
    assert info.value.retry_after == 2.0


def test_after_progress_a_failure_hands_the_rest_back_as_retry() -> None:
    calls: list[list[int]] = []

    def attempt(todo: list[int]) -> Round:
        calls.append(todo)
        if len(calls) == 1:
            return Round(progressed=True, again=[1])
        rnd = Round()
        rnd.fail(Retryable("busy", 1.5), todo, deque())
        return rnd

    result = send_in_rounds([0, 1], SendResult(), attempt, rounds=3, stop=threading.Event())
    assert calls == [[0, 1], [1]] and result.retry == [1] and result.retry_after == 1.5


def test_rounds_wait_doubling_then_hand_back_what_is_still_refused() -> None:
    waits: list[float] = []

    class Clock(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            waits.append(float(timeout or 0))
            return False

    gave_up: list[list[int]] = []
    result = send_in_rounds([0, 1, 2], SendResult(), lambda todo: Round(progressed=True, again=todo[1:]),
                            rounds=5, stop=Clock(), wait=0.5, wait_cap=1.5, on_give_up=gave_up.append)
    assert result.retry == [] and waits == [0.5, 1.0]  # settled before the rounds ran out

    waits.clear()
    result = send_in_rounds([0, 1], SendResult(), lambda todo: Round(progressed=True, again=todo), rounds=3,
                            stop=Clock(), wait=0.5, wait_cap=1.5, on_give_up=gave_up.append)
    assert waits == [0.5, 1.0, 1.5] and result.retry == [0, 1] and result.retry_after == 1.5
    assert gave_up == [[0, 1]]


def test_a_stop_request_ends_the_rounds_at_once() -> None:
    stop = threading.Event()
    stop.set()
    result = send_in_rounds([0], SendResult(), lambda todo: Round(progressed=True, again=todo), rounds=9, stop=stop)
    assert result.retry == [0] and result.retry_after is None
