"""A source's ledger: every event read from the vendor is accounted for, or it is a bug.

For every committed page, and so for every poll and since the state directory was created::

    read = delivered + quarantined + dead-lettered + filtered + already delivered + held back

held for each output the source is routed to (an event is delivered to, or dead-lettered by,
each output on its own). ``read`` is what the vendor served: the page's events plus those the
source recognised as delivered before (a re-read of the lookback) or kept for a later poll.
A ledger that does not balance means an event left the path uncounted: the pipeline logs it at
ERROR with the counts, and raises :class:`LedgerError` where ``SIEM_FORWARDER_STRICT_LEDGER`` is
set (the test suite sets it, so every test fails on it). docs/reliability.md lists every place
an event can leave the path and the term that counts it.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from forwarder_core.metrics import Metrics

STRICT_ENV = "SIEM_FORWARDER_STRICT_LEDGER"
TERMS = ("read", "delivered", "quarantined", "dead_lettered", "filtered", "already_delivered", "held_back")
"""The ledger's terms, as they are stored in the checkpoint store and named in /metrics."""
NO_OUTPUT = ""
"""The output name of a source routed to no output: its prepared events count as delivered."""


class LedgerError(AssertionError):
    """A ledger that does not balance, raised where :data:`STRICT_ENV` is set."""


def strict() -> bool:
    return os.environ.get(STRICT_ENV, "") not in ("", "0")


@dataclass
class Ledger:
    """The counts of one source: a page's, a poll's, or the totals since the state dir began."""

    read: int = 0
    quarantined: int = 0
    filtered: int = 0
    already_delivered: int = 0
    held_back: int = 0
    delivered: dict[str, int] = field(default_factory=dict)
    """output name -> events it accepted"""
    dead_lettered: dict[str, int] = field(default_factory=dict)
    """output name -> events it refused for good (written to its dead-letter file)"""

    def add(self, other: "Ledger") -> None:
        self.read += other.read
        self.quarantined += other.quarantined
        self.filtered += other.filtered
        self.already_delivered += other.already_delivered
        self.held_back += other.held_back
        for mine, theirs in ((self.delivered, other.delivered), (self.dead_lettered, other.dead_lettered)):
            for name, n in theirs.items():
                mine[name] = mine.get(name, 0) + n

    def outputs(self) -> list[str]:
        return sorted(set(self.delivered) | set(self.dead_lettered))

    def unbalanced(self) -> list[str]:
        """The outputs whose equation does not hold (empty: balanced)."""
        rest = self.quarantined + self.filtered + self.already_delivered + self.held_back
        names = self.outputs() or [NO_OUTPUT]
        return [o for o in names if self.read != self.delivered.get(o, 0) + self.dead_lettered.get(o, 0) + rest]

    @property
    def balanced(self) -> bool:
        return not self.unbalanced()

    def line(self) -> str:
        """``read 10 = delivered 7 + quarantined 1 + ...``; per output where there are several."""
        def per_output(counts: dict[str, int]) -> str:
            if not counts:
                return "0"
            if len(counts) == 1:
                return str(next(iter(counts.values())))
            return "(" + ", ".join(f"{o or '-'} {n}" for o, n in sorted(counts.items())) + ")"
        text = (f"read {self.read} = delivered {per_output(self.delivered)} + quarantined {self.quarantined}"
                f" + dead-lettered {per_output(self.dead_lettered)} + filtered {self.filtered}"
                f" + already delivered {self.already_delivered} + held back {self.held_back}")
        bad = self.unbalanced()
        if bad:
            text += "  !! UNBALANCED" + (f" for {', '.join(o or '-' for o in bad)}" if self.outputs() else "")
        return text

    def rows(self) -> list[tuple[str, str, int]]:
        """``(term, output, count)`` rows, as the checkpoint store keeps them."""
        out = [(term, NO_OUTPUT, getattr(self, term)) for term in ("read", "quarantined", "filtered",
                                                                   "already_delivered", "held_back")]
        out += [("delivered", o, n) for o, n in self.delivered.items()]
        out += [("dead_lettered", o, n) for o, n in self.dead_lettered.items()]
        return out

    @classmethod
    def from_rows(cls, rows: list[tuple[str, str, int]]) -> "Ledger":
        ledger = cls()
        for term, output, count in rows:
            if term in ("delivered", "dead_lettered"):
                getattr(ledger, term)[output] = count
            elif term in TERMS:
                setattr(ledger, term, count)
        return ledger


def check_balance(ledger: Ledger, source: str, metrics: Metrics, log: logging.Logger, what: str) -> None:
    """An unbalanced ledger is a bug: ERROR with the counts, and :class:`LedgerError` where
    :func:`strict` (the test suites)."""
    if ledger.balanced:
        return
    metrics.inc("ledger_unbalanced_total", source=source)
    log.error("source %s: the %s's ledger does not balance, an event left the path uncounted: %s",
              source, what, ledger.line())
    if strict():
        raise LedgerError(f"source {source}: unbalanced ledger: {ledger.line()}")


def count_terms(ledger: Ledger, source: str, metrics: Metrics) -> None:
    """Add a committed page's ledger to ``ledger_events_total``."""
    for term, output, n in ledger.rows():
        if n:
            if output:
                metrics.inc("ledger_events_total", n, source=source, term=term, output=output)
            else:
                metrics.inc("ledger_events_total", n, source=source, term=term)
