"""How the HTTP outputs turn a batch into requests and settle every event: one mechanism for all of them.

An HTTP output encodes each event once, then hands the indexes of those still to send to
:func:`send_in_rounds`. A **round** posts them in requests capped by encoded bytes and by count
(:func:`chunks`), in order, through the output's ``post_chunk``, which reads the SIEM's answer and
records it on the :class:`Round`: settled (accepted, or rejected for good into the
``SendResult``), to send again in the next round (``again``: HEC acks that never came,
Elasticsearch items answered 429/5xx), or split (a 413 halves the request until the event that
cannot fit is alone, :func:`split`). A retryable failure of a whole request
(:class:`Retryable`) ends the round: what was not answered is ``unsent``.

Between rounds: nothing settled at all and a request failed means nothing got through, so
:class:`OutputError` lets the core back off with the cursor still; otherwise the unsettled
events go back to the core as ``SendResult.retry``. Rounds end after ``rounds`` re-sends, or
when the forwarder stops; the wait before each re-send starts at ``wait`` and doubles up to
``wait_cap``.
"""
from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from forwarder_core.plugin_api import Encoded, OutputError, SendResult

try:  # ISA-L's gzip: a quarter of zlib's CPU at level 1, for a body 1% smaller (bench/stages.py)
    from isal.igzip import compress as gzip_compress
except ImportError:  # pragma: no cover - isal is a dependency where it has wheels (x86_64, aarch64)
    from gzip import compress as gzip_compress  # type: ignore[assignment]


class Retryable(Exception):
    """A request failed in a way a later retry can fix; carries the wait the SIEM asked for."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class Round:
    """The outcome of posting a list of events once."""

    progressed: bool = False  # some event was accepted or rejected for good
    again: list[int] = field(default_factory=list)  # answered "later": send in the next round
    unsent: list[int] = field(default_factory=list)  # not answered because a request failed
    failure: Retryable | None = None

    def fail(self, failure: Retryable, chunk: list[int], queue: deque[list[int]]) -> None:
        self.failure = failure
        self.unsent = [i for c in (chunk, *queue) for i in c]


@dataclass(frozen=True)
class Limits:
    """The batching options every HTTP output takes (``http_output_options_schema``)."""

    max_bytes: int
    max_events: int
    gzip: bool

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Limits:
        return cls(int(options["batch_max_bytes"]), int(options["batch_max_events"]), bool(options["gzip"]))

    def chunks(self, indexes: Sequence[int], sizes: Sequence[int]) -> deque[list[int]]:
        return chunks(indexes, sizes, self.max_bytes, self.max_events)

    def body(self, parts: list[bytes], separator: bytes, level: int) -> bytes:
        """The request body of ``parts``, gzip-compressed at ``level`` when ``gzip`` is on."""
        body = separator.join(parts)
        return gzip_compress(body, compresslevel=level, mtime=0) if self.gzip else body

    def build_ahead(self, batch: Encoded, sizes: Sequence[int], separator: bytes, level: int) -> Encoded:
        """``batch`` with the compressed bodies of its first attempt's requests (:attr:`Encoded.bodies`).

        Called in ``encode_batch``, which runs in a worker process when there are workers: there
        gzip costs CPU like encoding does (zlib at level 1: 8.3 us an event of bench/stages.py's
        bulk page, against 17.7 for encoding it), and in the main process it was the largest cost
        left. Without gzip, joining the parts costs next to nothing, and nothing is built ahead.
        """
        if self.gzip:
            parts = batch.parts
            todo = [i for i in range(len(parts)) if i not in batch.rejected]
            for chunk in self.chunks(todo, sizes):
                batch.bodies[(chunk[0], len(chunk))] = (chunk, self.body([parts[i] for i in chunk], separator, level))
        return batch

    def body_of(self, chunk: list[int], batch: Encoded, separator: bytes, level: int) -> bytes:
        """The body of the request holding ``chunk``: built ahead when one holds exactly these parts."""
        ready = batch.bodies.get((chunk[0], len(chunk))) if batch.bodies else None
        if ready is not None and ready[0] == chunk:
            return ready[1]
        return self.body([batch.parts[i] for i in chunk], separator, level)


def chunks(indexes: Sequence[int], sizes: Sequence[int], max_bytes: int, max_events: int) -> deque[list[int]]:
    """``indexes`` in order, cut into requests of at most ``max_bytes`` (by ``sizes[i]``) and
    ``max_events``; an event larger than the cap goes alone."""
    out: deque[list[int]] = deque()
    current: list[int] = []
    size = 0
    for i in indexes:
        n = sizes[i]
        if current and (size + n > max_bytes or len(current) >= max_events):
            out.append(current)
            current, size = [], 0
        current.append(i)
        size += n
    if current:
        out.append(current)
    return out


def split(chunk: list[int], queue: deque[list[int]]) -> bool:
    """Put the two halves of ``chunk`` first in ``queue`` (a 413, or a bad event the SIEM did not
    point at); False when ``chunk`` is one event, which the caller then rejects."""
    if len(chunk) < 2:
        return False
    half = len(chunk) // 2
    queue.appendleft(chunk[half:])
    queue.appendleft(chunk[:half])
    return True


def post_round(queue: deque[list[int]], post_chunk: Callable[[list[int], deque[list[int]]], None],
               rnd: Round) -> Round:
    """Post the requests of ``queue`` in order through ``post_chunk`` (which records its answer on
    ``rnd`` and may put requests back first in ``queue``); stop at the first :class:`Retryable`."""
    while queue:
        chunk = queue.popleft()
        try:
            post_chunk(chunk, queue)
        except Retryable as exc:
            rnd.fail(exc, chunk, queue)
            break
    return rnd


def send_in_rounds(todo: list[int], result: SendResult, attempt: Callable[[list[int]], Round], *,
                   rounds: int, stop: threading.Event, wait: float = 0.0, wait_cap: float = 0.0,
                   on_give_up: Callable[[list[int]], None] | None = None) -> SendResult:
    """Run ``attempt`` on ``todo``, then on what it answered ``again``, until all is settled; see the module docstring."""
    progressed = bool(result.rejected)
    resent = 0
    while todo:
        rnd = attempt(todo)
        progressed = progressed or rnd.progressed
        if rnd.failure is not None:
            if not progressed:
                raise OutputError(str(rnd.failure), retry_after=rnd.failure.retry_after)
            result.retry = sorted(rnd.again + rnd.unsent)
            result.retry_after = rnd.failure.retry_after
            return result
        todo = rnd.again
        if not todo:
            break
        resent += 1
        if resent > rounds or stop.wait(wait):
            if on_give_up is not None:
                on_give_up(todo)
            result.retry = sorted(todo)
            result.retry_after = wait or None
            return result
        wait = min(wait * 2, wait_cap)
    return result
