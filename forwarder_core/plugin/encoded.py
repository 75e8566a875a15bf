"""A batch already encoded into the bytes an output sends: the seam between worker processes and delivery.

An output that implements :meth:`~forwarder_core.plugin.base.Output.encode_batch` turns a batch of
normalized events into one wire part per event (HEC: an envelope line; bulk: the action and
document lines; syslog: a framed message; file: a JSON line), and sends such a batch with
:meth:`~forwarder_core.plugin.base.Output.send_encoded`. Encoding needs no connection, so a worker
process does it and hands back only bytes; the output's connection stays in the main process.
The parts are positional, one per event, so retries (:meth:`Encoded.take`), per-item verdicts and
splitting a request all keep indexing the batch as ``send(events)`` would. An output may also
build the request bodies of its first attempt there (:attr:`Encoded.bodies`): compressing them is
the largest CPU cost the HTTP outputs would otherwise leave in the main process.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Encoded:
    """One wire part per event (``b""`` where the event could not be encoded), and the verdicts of encoding."""

    parts: list[bytes]
    rejected: dict[int, str] = field(default_factory=dict)
    """index -> why the event cannot be sent in this output's format (it goes to the dead letters)"""
    counts: dict[str, int] = field(default_factory=dict)
    """What encoding did that the output reports when it sends (e.g. ``truncated`` CEF messages)."""
    bodies: dict[tuple[int, int], tuple[list[int], bytes]] = field(default_factory=dict)
    """Request bodies built ahead, where ``encode_batch`` ran: ``(first index, count)`` -> the
    indexes of the parts a body holds and the body. An output whose requests cost CPU to build
    (gzip) builds those of its first attempt in ``encode_batch``, which runs in a worker
    process, and ``send_encoded`` uses a body only for a request of exactly those indexes."""

    def __len__(self) -> int:
        return len(self.parts)

    def take(self, indexes: Sequence[int]) -> Encoded:
        """The sub-batch of ``indexes`` (in that order), re-indexed from 0, as a retry sends it."""
        if len(indexes) == len(self.parts) and all(i == n for n, i in enumerate(indexes)):
            return self  # bodies built ahead stay valid only for the batch as it is
        where = {i: n for n, i in enumerate(indexes)}
        return Encoded([self.parts[i] for i in indexes],
                       {where[i]: why for i, why in self.rejected.items() if i in where}, {})


@dataclass
class EncodedEvents:
    """What :class:`~forwarder_core.engine.delivery.OutputRunner` delivers for a page prepared in a worker.

    ``ids`` and ``raws`` stand in for the normalized events a dead-letter record is made of: the
    event's id and its raw event, taken from the page the main process still holds.
    """

    batch: Encoded
    ids: list[str | None]
    raws: Sequence[Any]

    def __len__(self) -> int:
        return len(self.batch)
