"""The batching every HTTP output shares: requests capped by bytes and count, split on 413, rounds."""
from __future__ import annotations

import gzip
import threading
from collections import deque

import pytest
from hypothesis import given
from hypothesis import strategies as st

from forwarder_core.errors import OutputError
from forwarder_core.plugin.encoded import Encoded
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


@given(st.lists(st.binary(min_size=0, max_size=40), max_size=40), st.sets(st.integers(min_value=0, max_value=39)),
       st.integers(min_value=1, max_value=120), st.integers(min_value=1, max_value=9), st.booleans(),
       st.lists(st.integers(min_value=0, max_value=39), max_size=12))
def test_bodies_built_ahead_are_the_bodies_the_send_would_build(parts: list[bytes], rejected: set[int], max_bytes: int,
                                                                max_events: int, gzip_on: bool,
                                                                retry: list[int]) -> None:
    limits = Limits(max_bytes, max_events, gzip_on)
    batch = Encoded(parts, {i: "bad" for i in rejected if i < len(parts)})
    sizes = [len(p) + 1 for p in parts]
    limits.build_ahead(batch, sizes, b"\n", 1)
    todo = [i for i in range(len(parts)) if i not in batch.rejected]
    first = list(limits.chunks(todo, sizes))
    if gzip_on:  # the first attempt's requests, each built once, ahead
        assert sorted(c for c, _ in batch.bodies.values()) == sorted(first)
    else:
        assert batch.bodies == {}
    for chunk in first:  # ... are byte for byte what sending would have built
        body = limits.body_of(chunk, batch, b"\n", 1)
        assert body == limits.body([parts[i] for i in chunk], b"\n", 1)
        # ISA-L's gzip (or zlib's) is the gzip every receiver reads
        assert (gzip.decompress(body) if gzip_on else body) == b"\n".join(parts[i] for i in chunk)
    # A later request (a retry, half of a split) is built from its own parts, never from a body
    # built for another set of parts.
    again = sorted({i for i in retry if i < len(parts)})
    if again:
        assert limits.body_of(again, batch, b"\n", 1) == limits.body([parts[i] for i in again], b"\n", 1)
        half = again[: max(1, len(again) // 2)]
        assert limits.body_of(half, batch, b"\n", 1) == limits.body([parts[i] for i in half], b"\n", 1)


def test_a_batch_taken_apart_for_a_retry_builds_its_bodies_again() -> None:
    limits = Limits(1_000, 2, True)
    batch = limits.build_ahead(Encoded([b"a", b"b", b"c", b"d"]), [2, 2, 2, 2], b"\n", 1)
    assert set(batch.bodies) == {(0, 2), (2, 2)}
    assert batch.take([0, 1, 2, 3]) is batch
    again = batch.take([2, 3])  # re-indexed from 0: [0, 1] now means c, d
    assert again.bodies == {}
    assert gzip.decompress(limits.body_of([0, 1], again, b"\n", 1)) == b"c\nd"
