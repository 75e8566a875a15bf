"""Progress of ``once``: a live line on a terminal, plain lines otherwise, and the summary table."""
from __future__ import annotations

import shutil
import threading
import time
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from forwarder_core.metrics import Metrics
    from forwarder_core.ledger import Ledger
    from forwarder_core.pipeline import SourceResult


class ProgressReporter:
    """Per-source counts as pages are delivered. Thread-safe (sources report from their threads)."""

    def __init__(self, names: list[str], stream: IO[str], plain_every: float = 5.0):
        self.stream = stream
        self.tty = stream.isatty()
        self.state: dict[str, "SourceResult | None"] = {name: None for name in names}
        self._lock = threading.Lock()
        self._last_plain: dict[str, float] = {}
        self.plain_every = plain_every
        self.started = time.monotonic()

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
                status = "done" if result.done else ("FAILED: " + result.error if result.error else "running")
                self.stream.write(f"{result.name}: {result.delivered} delivered, {result.quarantined} quarantined, "
                                  f"{result.pages} page(s) [{status}]\n")
                self.stream.flush()

    def _draw(self) -> None:
        width = shutil.get_terminal_size((100, 20)).columns
        parts = []
        for name, res in self.state.items():
            if res is None:
                parts.append(f"{name} …")
            else:
                mark = "✓" if res.done else ("✗" if res.error else "…")
                parts.append(f"{name} {res.delivered:,} {mark}")
        elapsed = time.monotonic() - self.started
        line = f"[{elapsed:5.0f}s] " + " | ".join(parts)
        self.stream.write("\r" + line[: width - 1].ljust(width - 1))
        self.stream.flush()

    def finish(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def print_summary(results: list["SourceResult"], metrics: "Metrics", stream: IO[str]) -> None:
    rows = [("SOURCE", "POLLED", "DELIVERED", "QUARANTINED", "DEAD-LETTERED", "PAGES", "STATUS")]
    for r in results:
        dead = int(metrics.total("events_dead_lettered_total", source=r.name))
        status = "ok" if r.ok and r.done else (r.error or "stopped")
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
