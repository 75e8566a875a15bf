"""Progress of ``once``: a live line on a terminal, plain lines otherwise, and the summary table.

On a terminal the live line is redrawn in place, so anything else written to the terminal
would land in the middle of it. While the line is shown, the forwarder's log handler writes
through :class:`_LineSafeStream`: the line is cleared, the record written, and the line drawn
again below it. The line is composed to fit the terminal's width by whole parts (a source's
name and count are never cut), with ``+N more`` for the sources that do not fit.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from forwarder_core.engine.polls import SourceResult
    from forwarder_core.metrics import Metrics
    from forwarder_core.storage.ledger import Ledger

CLEAR = "\r\x1b[K"  # carriage return, erase to the end of the line


class ProgressReporter:
    """Per-source counts as pages are delivered. Thread-safe (sources report from their threads).

    Use it as a context manager so log records go around the live line while it is shown.
    """

    def __init__(self, names: list[str], stream: IO[str], plain_every: float = 5.0):
        self.stream = stream
        self.tty = stream.isatty()
        self.state: dict[str, "SourceResult | None"] = {name: None for name in names}
        self._lock = threading.RLock()
        self._last_plain: dict[str, float] = {}
        self.plain_every = plain_every
        self.started = time.monotonic()
        self._shown = False
        self._swapped: list[tuple[logging.StreamHandler[Any], Any]] = []

    def __enter__(self) -> "ProgressReporter":
        if self.tty:
            for handler in logging.getLogger().handlers:
                if isinstance(handler, logging.StreamHandler) and getattr(handler, "stream", None) is self.stream:
                    self._swapped.append((handler, handler.setStream(_LineSafeStream(self))))
        return self

    def __exit__(self, *exc: object) -> None:
        self.finish()

    def update(self, result: "SourceResult") -> None:
        with self._lock:
            self.state[result.name] = result
            if self.tty:
                self._draw()
                return
            now = time.monotonic()
            final = result.done or result.error is not None
            if final or now - self._last_plain.get(result.name, self.started) >= self.plain_every:
                self._last_plain[result.name] = now
                # The reason is in the log line the failure wrote just before: said once, there.
                status = "done" if result.done else ("FAILED" if result.error else "running")
                self.stream.write(f"{result.name}: {result.delivered} delivered, {result.quarantined} quarantined, "
                                  f"{result.pages} page(s) [{status}]\n")
                self.stream.flush()

    def line(self, width: int) -> str:
        """The live line, at most ``width - 1`` characters, cut only between whole parts."""
        elapsed = time.monotonic() - self.started
        delivered = sum(r.delivered for r in self.state.values() if r is not None)
        rate = f", {delivered / elapsed:,.0f}/s" if elapsed >= 1 else ""  # a rate over a few ms means nothing
        heads = [f"[{elapsed:4.0f}s] {delivered:,} events{rate}", f"[{elapsed:4.0f}s]"]
        parts = [_part(name, res) for name, res in self.state.items()]
        limit = max(width - 1, 1)
        # The totals and as many sources as fit; if not even one fits beside the totals, the sources alone.
        counts = range(len(parts), 0, -1)
        for head, shown in [(heads[0], n) for n in counts] + [(heads[1], n) for n in counts] + [(h, 0) for h in heads]:
            more = len(parts) - shown
            line = " | ".join([head, *parts[:shown]] + ([f"+{more} more"] if more else []))
            if len(line) <= limit:
                return line
        return heads[-1][:limit]

    def _draw(self) -> None:
        self.stream.write(CLEAR + self.line(_width(self.stream)))
        self.stream.flush()
        self._shown = True

    def write_around(self, text: str) -> None:
        """Write ``text`` (a log record) on its own lines, then draw the live line again."""
        with self._lock:
            if self._shown:
                self.stream.write(CLEAR)
            self.stream.write(text)
            if self._shown and text.endswith("\n"):
                self._draw()
            else:
                self.stream.flush()

    def finish(self) -> None:
        with self._lock:
            for handler, original in reversed(self._swapped):
                handler.setStream(original)
            self._swapped.clear()
            if self.tty and self._shown:
                self._draw()
                self.stream.write("\n")
                self.stream.flush()
                self._shown = False


class _LineSafeStream:
    """What the log handler writes to while the live line is shown."""

    def __init__(self, reporter: ProgressReporter):
        self.reporter = reporter

    def write(self, text: str) -> int:
        self.reporter.write_around(text)
        return len(text)

    def flush(self) -> None:
        self.reporter.stream.flush()


def _part(name: str, res: "SourceResult | None") -> str:
    if res is None:
        return f"{name} …"
    mark = "✓" if res.done else ("✗" if res.error else "…")
    through = f" {res.progress:.0%}" if res.progress is not None and not res.done and not res.error else ""
    return f"{name} {res.delivered:,}{through} {mark}"


def _width(stream: IO[str]) -> int:
    """The terminal's width now (it may have been resized), from the stream's own terminal."""
    try:
        return os.get_terminal_size(stream.fileno()).columns or 100
    except (OSError, ValueError, AttributeError):
        return 100


def print_summary(results: list["SourceResult"], metrics: "Metrics", stream: IO[str]) -> None:
    rows = [("SOURCE", "POLLED", "DELIVERED", "QUARANTINED", "DEAD-LETTERED", "PAGES", "STATUS")]
    for r in results:
        dead = int(metrics.total("events_dead_lettered_total", source=r.name))
        status = "ok" if r.ok and r.done else ("FAILED" if r.error else "stopped")  # why: the log line above
        rows.append((r.name, str(r.polled), str(r.delivered), str(r.quarantined), str(dead), str(r.pages), status))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        stream.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() + "\n")
    print_ledgers([(r.name, r.ledger) for r in results], stream)
    stream.flush()


def print_ledgers(ledgers: list[tuple[str, "Ledger"]], stream: IO[str], since: str = "") -> None:
    """One line per source: ``ledger NAME: read N = delivered N + ...``, marked when unbalanced."""
    for name, ledger in ledgers:
        stream.write(f"ledger {name}{since}: {ledger.line()}\n")
    if any(ledger.already_delivered for _, ledger in ledgers):
        stream.write("already delivered: events read again and not sent twice (a poll re-reads its lookback, and "
                     "the edge of its last search to miss nothing), so read and POLLED may exceed what the vendor "
                     "holds\n")
