"""The checkpoint store: one SQLite database (WAL) in ``state_dir``, one row per source.

A row holds the source's opaque JSON cursor, when it was last committed, the time the cursor
stands at (its watermark, where the source can tell), and the newest event time delivered and
when. A second table holds each source's last poll and its outcome, so ``state`` can say
"caught up a minute ago" or "failing since" without the daemon running; the ``ledger`` table
adds up each source's ledger (:mod:`forwarder_core.storage.ledger`) since the state directory was
created, in the same transaction as the cursor, so the totals are exact across crashes and
survive ``state reset``. A commit is one SQLite transaction, so a crash (even mid-write) leaves either
the old row or the new one. A store that SQLite cannot read is refused with a clear error and
never reset silently: resetting would re-send or skip a tenant's whole history. SQLite opens its
files by name, so they are checked first (:func:`~forwarder_core.storage.nofollow.sqlite_file`):
regular files of this user, never symlinks.
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

from forwarder_core.errors import StateError
from forwarder_core.secrets import redact_cut
from forwarder_core.storage.ledger import Ledger
from forwarder_core.storage.nofollow import same_file, sqlite_file

FILENAME = "checkpoints.sqlite"
SCHEMA_VERSION = 2
_ADDED_COLUMNS = (("watermark", "TEXT"), ("delivered_at", "REAL"))
"""Columns added by schema version 2; older stores get them on open, and keep every row."""


@dataclass
class Checkpoint:
    source: str
    cursor: Any
    updated: float
    newest_event: str | None
    delivered: int
    watermark: str | None = None
    delivered_at: float | None = None


@dataclass
class PollOutcome:
    source: str
    time: float
    ok: bool
    outcome: str


class CheckpointStore:
    """Thread-safe: each source thread commits its own row through one shared connection."""

    def __init__(self, state_dir: str):
        self.path = os.path.join(state_dir, FILENAME)
        self._lock = threading.Lock()
        try:
            checked = sqlite_file(state_dir, self.path)
        except OSError as exc:
            raise StateError(f"checkpoint store {self.path}: {exc.strerror or exc}") from None
        existed = checked.st_size > 0
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            if existed:
                self._check()
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS checkpoints (source TEXT PRIMARY KEY, cursor TEXT NOT NULL, "
                "updated REAL NOT NULL, newest_event TEXT, delivered INTEGER NOT NULL DEFAULT 0)"
            )
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(checkpoints)")}
            for name, kind in _ADDED_COLUMNS:
                if name not in columns:
                    self._db.execute(f"ALTER TABLE checkpoints ADD COLUMN {name} {kind}")
            self._db.execute("CREATE TABLE IF NOT EXISTS polls (source TEXT PRIMARY KEY, time REAL NOT NULL, "
                             "ok INTEGER NOT NULL, outcome TEXT NOT NULL)")
            self._db.execute("CREATE TABLE IF NOT EXISTS ledger (source TEXT NOT NULL, term TEXT NOT NULL, "
                             "output TEXT NOT NULL, count INTEGER NOT NULL, PRIMARY KEY (source, term, output))")
            self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        except sqlite3.DatabaseError as exc:
            raise StateError(
                f"checkpoint store {self.path} is unreadable ({exc}); it was left untouched. Restore it from a "
                f"backup, or move it away to start every source from its start_time again"
            ) from None
        try:
            same_file(state_dir, self.path, checked)
        except BaseException:
            self._db.close()
            raise

    def _check(self) -> None:
        row = self._db.execute("PRAGMA quick_check").fetchone()
        if not row or row[0] != "ok":
            raise sqlite3.DatabaseError(f"integrity check failed: {row[0] if row else 'no answer'}")

    def get(self, source: str) -> Checkpoint | None:
        with self._lock:
            row = self._db.execute(
                "SELECT source, cursor, updated, newest_event, delivered, watermark, delivered_at FROM checkpoints "
                "WHERE source = ?", (source,)
            ).fetchone()
        if row is None:
            return None
        try:
            cursor = json.loads(row[1])
        except ValueError:
            raise StateError(f"checkpoint of source {source!r} in {self.path} is not valid JSON; refusing to guess") from None
        return Checkpoint(row[0], cursor, row[2], row[3], row[4], row[5], row[6])

    def all(self) -> list[Checkpoint]:
        with self._lock:
            rows = self._db.execute("SELECT source FROM checkpoints ORDER BY source").fetchall()
        return [cp for (name,) in rows if (cp := self.get(name)) is not None]

    def ledger(self, source: str) -> Ledger:
        """The source's ledger totals since the state directory was created."""
        with self._lock:
            rows = self._db.execute("SELECT term, output, count FROM ledger WHERE source = ?", (source,)).fetchall()
        return Ledger.from_rows(rows)

    def commit(self, source: str, cursor: Any, newest_event: str | None, delivered: int,
               watermark: str | None = None, ledger: Ledger | None = None) -> None:
        """Store the cursor, and add the page's ``ledger``, atomically (one transaction, fsynced
        by SQLite before it returns)."""
        text = json.dumps(cursor, separators=(",", ":"), sort_keys=True)
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT INTO checkpoints (source, cursor, updated, newest_event, delivered, watermark, delivered_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT(source) DO UPDATE SET cursor = excluded.cursor, updated = excluded.updated, "
                    "newest_event = COALESCE(excluded.newest_event, checkpoints.newest_event), "
                    "delivered = checkpoints.delivered + excluded.delivered, "
                    "watermark = COALESCE(excluded.watermark, checkpoints.watermark), "
                    "delivered_at = COALESCE(excluded.delivered_at, checkpoints.delivered_at)",
                    (source, text, now, newest_event, delivered, watermark, now if delivered else None),
                )
                if ledger is not None:
                    self._db.executemany(
                        "INSERT INTO ledger (source, term, output, count) VALUES (?, ?, ?, ?) "
                        "ON CONFLICT(source, term, output) DO UPDATE SET count = ledger.count + excluded.count",
                        [(source, term, output, n) for term, output, n in ledger.rows() if n])
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def record_poll(self, source: str, ok: bool, outcome: str) -> None:
        """Remember how the source's latest poll ended (``caught up``, or why it failed)."""
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO polls (source, time, ok, outcome) VALUES (?, ?, ?, ?)",
                             (source, time.time(), int(ok), redact_cut(outcome, 500)))

    def polls(self) -> dict[str, PollOutcome]:
        with self._lock:
            rows = self._db.execute("SELECT source, time, ok, outcome FROM polls").fetchall()
        return {row[0]: PollOutcome(row[0], row[1], bool(row[2]), row[3]) for row in rows}

    def reset(self, source: str) -> bool:
        with self._lock:
            cur = self._db.execute("DELETE FROM checkpoints WHERE source = ?", (source,))
            self._db.execute("DELETE FROM polls WHERE source = ?", (source,))
        return cur.rowcount > 0

    def close(self) -> None:
        with self._lock:
            self._db.close()


def store_problems(state_dir: str) -> list[str]:
    """What would make ``run``/``once`` refuse the checkpoint store (exit 74), found read-only.

    For ``check``: the store is opened as SQLite's read-only URI (no lock taken, nothing
    created, so a running daemon is left alone), its pages checked as :class:`CheckpointStore`
    checks them, and each cursor parsed. A store that does not exist yet is no problem.
    """
    path = os.path.join(state_dir, FILENAME)
    if not os.path.lexists(path):
        return []
    refused = (f"checkpoint store {path} is unreadable ({{}}); run and once would refuse it. Restore it from a "
               f"backup, or move it away to start every source from its start_time again")
    try:
        db = sqlite3.connect(f"file:{urllib.parse.quote(path)}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error as exc:
        return [refused.format(exc)]
    try:
        row = db.execute("PRAGMA quick_check").fetchone()
        if not row or row[0] != "ok":
            return [refused.format(f"integrity check failed: {row[0] if row else 'no answer'}")]
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "checkpoints" not in tables:
            return []
        bad = []
        for source, cursor in db.execute("SELECT source, cursor FROM checkpoints ORDER BY source"):
            try:
                json.loads(cursor)
            except (TypeError, ValueError):
                bad.append(f"checkpoint of source {source!r} in {path} is not valid JSON; run and once would refuse it")
        return bad
    except sqlite3.Error as exc:
        return [refused.format(exc)]
    finally:
        db.close()
