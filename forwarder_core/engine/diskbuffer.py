"""``buffer: disk``: a durable queue in front of one output, so one SIEM down for days holds back no other.

Events routed to a buffered output are appended to ``state_dir/buffer/<output>.sqlite`` in one
transaction; for the source, that is acceptance, so its cursor moves. A drainer thread sends
the queue in order, one source page at a time, through the output's usual delivery policy
(retries, backoff, dead letters) and deletes a page's rows only after the output accepted them,
so a crash re-sends at most one page (or DRAIN_BATCH events of a bigger one), and a page the
source hands over again after a crash (queued, its cursor not yet committed) is not queued
twice: the same bound as without the buffer. When the queue holds ``buffer_max_bytes``,
appending waits (the sources stop polling): a full buffer pushes back, it never drops.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from typing import Any

from forwarder_core.engine.delivery import OutputRunner
from forwarder_core.errors import StateError
from forwarder_core.jsoncodec import escape_surrogates
from forwarder_core.storage.nofollow import same_file, sqlite_file
from forwarder_core.storage.statedir import ensure_subdir

DEFAULT_MAX_BYTES = 1 << 30
DRAIN_BATCH = 1000
DRAIN_WINDOW = 2.0

log = logging.getLogger("siem_forwarder.buffer")


class DiskBuffer:
    """The SQLite queue. Rows: ``(seq, source, payload)``; ``payload`` is the event's JSON."""

    def __init__(self, state_dir: str, output_name: str, max_bytes: int):
        directory = ensure_subdir(state_dir, "buffer")
        self.path = os.path.join(directory, f"{output_name}.sqlite")
        self.max_bytes = max_bytes
        try:
            checked = sqlite_file(state_dir, self.path)  # SQLite opens by name: a regular file, never a symlink
        except OSError as exc:
            raise StateError(f"disk buffer {self.path}: {exc.strerror or exc}") from None
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("CREATE TABLE IF NOT EXISTS queue (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
                         "source TEXT NOT NULL, payload TEXT NOT NULL, page INTEGER)")
        if "page" not in {row[1] for row in self._db.execute("PRAGMA table_info(queue)")}:
            self._db.execute("ALTER TABLE queue ADD COLUMN page INTEGER")  # a buffer from before pages were kept
        self._next_page = int(self._db.execute("SELECT COALESCE(MAX(page), 0) FROM queue").fetchone()[0]) + 1
        self._db.execute("CREATE TABLE IF NOT EXISTS last_page (source TEXT PRIMARY KEY, digest TEXT NOT NULL)")
        self._lock = threading.Lock()
        self.changed = threading.Condition(self._lock)
        row = self._db.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM queue").fetchone()
        self.count, self.bytes = int(row[0]), int(row[1])
        try:
            same_file(state_dir, self.path, checked)
        except BaseException:
            self._db.close()
            raise

    def put(self, source: str, events: list[dict[str, Any]]) -> bool:
        """Append one source page (its events keep the page number they came in); False if this very
        page was the source's last one queued.

        The source commits its cursor after the page is queued, in another database; a crash in
        between makes it read and hand over the same page again, which must not be queued twice.
        """
        digest = hashlib.sha256("\n".join(str(e.get("id")) for e in events).encode("utf-8", "backslashreplace")).hexdigest()
        # SQLite stores text as UTF-8, which has no form for a lone surrogate: write it as its JSON escape
        payloads = [escape_surrogates(json.dumps(e, ensure_ascii=False, separators=(",", ":"))) for e in events]
        size = sum(len(p) for p in payloads)
        with self._lock:
            page = self._next_page
            rows = [(source, p, page) for p in payloads]
            self._db.execute("BEGIN IMMEDIATE")
            try:
                last = self._db.execute("SELECT digest FROM last_page WHERE source = ?", (source,)).fetchone()
                if last is not None and last[0] == digest:
                    self._db.execute("ROLLBACK")
                    return False
                self._db.executemany("INSERT INTO queue (source, payload, page) VALUES (?, ?, ?)", rows)
                self._db.execute("INSERT OR REPLACE INTO last_page (source, digest) VALUES (?, ?)", (source, digest))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._next_page += 1
            self.count += len(rows)
            self.bytes += size
            self.changed.notify_all()
        return True

    def head(self, limit: int) -> list[tuple[int, str, str]]:
        """The oldest rows, up to ``limit``, and never past the end of the oldest page."""
        with self._lock:
            rows = self._db.execute("SELECT seq, source, payload, page FROM queue ORDER BY seq LIMIT ?",
                                    (limit,)).fetchall()
        if not rows:
            return []
        page = rows[0][3]
        end = next((i for i, row in enumerate(rows) if row[3] != page), len(rows))
        return [(seq, source, payload) for seq, source, payload, _ in rows[:end]]

    def delete_through(self, rows: list[tuple[int, str, str]]) -> None:
        if not rows:
            return
        with self._lock:
            self._db.execute("DELETE FROM queue WHERE seq <= ?", (rows[-1][0],))
            self.count -= len(rows)
            self.bytes -= sum(len(r[2]) for r in rows)
            self.changed.notify_all()

    def close(self) -> None:
        with self._lock:
            self._db.close()


class BufferedOutputRunner:
    """Looks like an :class:`OutputRunner` to the pipeline; delivery happens in its own thread."""

    accepts_encoded = False
    """The buffer keeps normalized events: a page prepared in a worker brings them back for it."""

    def __init__(self, inner: OutputRunner, state_dir: str, max_bytes: int | None):
        self.inner = inner
        self.name = inner.name
        self.output = inner.output
        self.metrics = inner.metrics
        self.stop = inner.stop
        self.buffer = DiskBuffer(state_dir, inner.name, max_bytes or DEFAULT_MAX_BYTES)
        self.metrics.set("buffer_bytes", self.buffer.bytes, output=self.name)
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()
        self._drain_lock = threading.Lock()
        if self.buffer.count:
            log.info("output %s: %d event(s) waiting in the disk buffer from before", self.name, self.buffer.count)

    # The pipeline reads these from an OutputRunner.
    @property
    def state(self) -> str:
        return self.inner.state

    @property
    def reason(self) -> str:
        return self.inner.reason

    def wants(self, source_name: str) -> bool:
        return self.inner.wants(source_name)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._drain_forever, name=f"drain-{self.name}", daemon=True)
            self._thread.start()

    def deliver(self, events: list[dict[str, Any]], source_name: str, give_up_at: float | None = None,
                tally: dict[str, int] | None = None) -> bool:
        """Queue the events durably; wait while the buffer is full (back-pressure, never a drop).

        Queued counts as accepted in the source's ledger (``tally``): the buffer is durable, and
        what its drain later dead-letters is counted by the output's dead-letter metrics.
        """
        self.start()
        warned = False
        with self.buffer.changed:
            while self.buffer.bytes >= self.buffer.max_bytes:
                if not warned:
                    log.warning("output %s: disk buffer full (%d bytes); holding sources back until it drains",
                                self.name, self.buffer.bytes)
                    warned = True
                if self.stop.is_set() or (give_up_at is not None and time.monotonic() >= give_up_at):
                    return False
                self.buffer.changed.wait(0.5)
        if not self.buffer.put(source_name, events):
            log.info("output %s: a page of %d event(s) from %s was already queued before a restart; "
                     "not queued twice", self.name, len(events), source_name)
        self.metrics.set("buffer_bytes", self.buffer.bytes, output=self.name)
        if tally is not None:
            tally["accepted"] = tally.get("accepted", 0) + len(events)
        return True

    def drain_once(self, give_up_at: float | None = None) -> bool:
        """Send the oldest batch; True when it was delivered (or the buffer is empty)."""
        with self._drain_lock:
            return self._drain_locked(give_up_at)

    def _drain_locked(self, give_up_at: float | None) -> bool:
        rows = self.buffer.head(DRAIN_BATCH)  # at most one source page
        if not rows:
            return True
        by_source: list[tuple[str, list[dict[str, Any]]]] = []
        for _, source, payload in rows:
            if not by_source or by_source[-1][0] != source:
                by_source.append((source, []))
            by_source[-1][1].append(json.loads(payload))
        for source, events in by_source:
            if not self.inner.deliver(events, source, give_up_at):
                return False
        self.buffer.delete_through(rows)
        self.metrics.set("buffer_bytes", self.buffer.bytes, output=self.name)
        return True

    def drain(self, give_up_after: float | None = None) -> bool:
        """Drain until empty (``once``); False if stopped or given up with events left."""
        self._stop_drainer()
        give_up_at = time.monotonic() + give_up_after if give_up_after is not None else None
        while self.buffer.count:
            if not self.drain_once(give_up_at):
                return False
        return True

    def _drain_forever(self) -> None:
        failures = 0
        while not self.stop.is_set() and not self._closing.is_set():
            with self.buffer.changed:
                if not self.buffer.count:
                    self.buffer.changed.wait(1.0)
                    continue
            # Bounded windows keep the thread responsive to close(); the backoff across windows
            # keeps a dead SIEM from being hammered.
            if self.drain_once(time.monotonic() + DRAIN_WINDOW):
                failures = 0
                continue
            failures += 1
            self._closing.wait(min(self.inner.max_backoff, 0.5 * 2 ** min(failures, 16)))

    def _stop_drainer(self) -> None:
        self._closing.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def close(self) -> None:
        self._stop_drainer()
        self.buffer.close()
        self.inner.close()
