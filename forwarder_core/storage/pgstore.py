"""The checkpoint store and the set-aside records of a fleet, in PostgreSQL, with the lease as a fence.

:class:`PgStore` answers what :class:`~forwarder_core.storage.checkpoint.CheckpointStore` answers
(cursors, poll records, ledger totals), so the engine and the ``state`` command use either. Its
:meth:`PgStore.commit` is fenced: the transaction that stores a page's cursor first runs
``UPDATE sf_leases ... WHERE source = %s AND owner = %s AND token = %s``, which takes the lease
row's lock until the commit; when it updates no row, another instance holds the source now (its
token changed at the hand-over) and the commit raises :class:`FenceError` without touching the
cursor. An instance that was paused or cut off past its lease can never commit over the new owner.
"""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from typing import Any

from forwarder_core.errors import StateError
from forwarder_core.storage.checkpoint import Checkpoint, PollOutcome
from forwarder_core.storage.ledger import Ledger
from forwarder_core.storage.pg import Database
from forwarder_core.storage.setaside import record_line


class FenceError(StateError):
    """This instance no longer holds the source's lease: its page must not be committed."""

    def __init__(self, source: str):
        super().__init__(f"source {source}: the lease moved to another instance; this page is not committed here "
                         "(the new owner sends it again)")
        self.source = source


class PgStore:
    """Cursors, poll records and ledger totals in PostgreSQL; see the module docstring.

    ``instance`` and :attr:`tokens` (source -> the lease token this instance holds, kept by
    :class:`~forwarder_core.engine.fleet.Fleet`) make commits fenced; a store opened without an
    instance (``state``, ``check``) only reads and resets.
    """

    def __init__(self, db: Database, instance: str | None = None):
        self.db = db
        self.path = "PostgreSQL (cluster.dsn)"
        self.instance = instance
        self.tokens: dict[str, int] = {}
        self._tokens_lock = threading.Lock()
        self.on_fence: Any = None
        """Called with the source's name when a commit was refused by the fence."""

    def get(self, source: str) -> Checkpoint | None:
        def read(cur: Any) -> Any:
            cur.execute("SELECT source, cursor, updated, newest_event, delivered, watermark, delivered_at "
                        "FROM sf_checkpoints WHERE source = %s", (source,))
            return cur.fetchone()
        row = self.db.run(read)
        if row is None:
            return None
        try:
            cursor = json.loads(row[1])
        except ValueError:
            raise StateError(f"checkpoint of source {source!r} in PostgreSQL is not valid JSON; refusing to guess") from None
        return Checkpoint(row[0], cursor, row[2], row[3], row[4], row[5], row[6])

    def all(self) -> list[Checkpoint]:
        def names(cur: Any) -> list[str]:
            cur.execute("SELECT source FROM sf_checkpoints ORDER BY source")
            return [r[0] for r in cur.fetchall()]
        return [cp for name in self.db.run(names) if (cp := self.get(name)) is not None]

    def ledger(self, source: str) -> Ledger:
        def read(cur: Any) -> list[tuple[str, str, int]]:
            cur.execute("SELECT term, output, count FROM sf_ledger WHERE source = %s", (source,))
            return list(cur.fetchall())
        return Ledger.from_rows(self.db.run(read))

    def hold(self, source: str, token: int | None) -> None:
        with self._tokens_lock:
            if token is None:
                self.tokens.pop(source, None)
            else:
                self.tokens[source] = token

    def commit(self, source: str, cursor: Any, newest_event: str | None, delivered: int,
               watermark: str | None = None, ledger: Ledger | None = None) -> None:
        """Store the cursor and add the page's ledger in one transaction, fenced by the lease."""
        text = json.dumps(cursor, separators=(",", ":"), sort_keys=True)
        now = time.time()
        with self._tokens_lock:
            token = self.tokens.get(source)

        def write(cur: Any) -> bool:
            if self.instance is not None:
                cur.execute("UPDATE sf_leases SET commits = commits + 1 WHERE source = %s AND owner = %s AND token = %s",
                            (source, self.instance, token if token is not None else -1))
                if cur.rowcount != 1:
                    return False
            cur.execute(
                "INSERT INTO sf_checkpoints (source, cursor, updated, newest_event, delivered, watermark, delivered_at) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (source) DO UPDATE SET cursor = excluded.cursor, "
                "updated = excluded.updated, newest_event = COALESCE(excluded.newest_event, sf_checkpoints.newest_event), "
                "delivered = sf_checkpoints.delivered + excluded.delivered, "
                "watermark = COALESCE(excluded.watermark, sf_checkpoints.watermark), "
                "delivered_at = COALESCE(excluded.delivered_at, sf_checkpoints.delivered_at)",
                (source, text, now, newest_event, delivered, watermark, now if delivered else None))
            rows = [(source, term, output, n) for term, output, n in (ledger.rows() if ledger else []) if n]
            if rows:
                cur.executemany("INSERT INTO sf_ledger (source, term, output, count) VALUES (%s, %s, %s, %s) "
                                "ON CONFLICT (source, term, output) DO UPDATE SET count = sf_ledger.count + excluded.count",
                                rows)
            return True

        if not self.db.run(write):
            self.hold(source, None)
            if self.on_fence is not None:
                self.on_fence(source)
            raise FenceError(source)

    def record_poll(self, source: str, ok: bool, outcome: str) -> None:
        self.db.run(lambda cur: cur.execute(
            "INSERT INTO sf_polls (source, time, ok, outcome) VALUES (%s, %s, %s, %s) ON CONFLICT (source) "
            "DO UPDATE SET time = excluded.time, ok = excluded.ok, outcome = excluded.outcome",
            (source, time.time(), ok, outcome[:500])))

    def polls(self) -> dict[str, PollOutcome]:
        def read(cur: Any) -> list[Any]:
            cur.execute("SELECT source, time, ok, outcome FROM sf_polls")
            return list(cur.fetchall())
        return {r[0]: PollOutcome(r[0], r[1], bool(r[2]), r[3]) for r in self.db.run(read)}

    def owners(self) -> dict[str, tuple[str | None, float | None]]:
        """source -> (owner, lease expiry as epoch seconds) for ``state``."""
        def read(cur: Any) -> list[Any]:
            cur.execute("SELECT source, owner, extract(epoch FROM expires) FROM sf_leases")
            return list(cur.fetchall())
        return {r[0]: (r[1], float(r[2]) if r[2] is not None else None) for r in self.db.run(read)}

    def reset(self, source: str) -> bool:
        def delete(cur: Any) -> bool:
            cur.execute("DELETE FROM sf_checkpoints WHERE source = %s", (source,))
            gone = bool(cur.rowcount > 0)
            cur.execute("DELETE FROM sf_polls WHERE source = %s", (source,))
            return gone
        return self.db.run(delete)

    def import_checkpoint(self, cp: Checkpoint, ledger: Ledger) -> str:
        """``state import``: copy one single-host checkpoint in, never moving a cursor backwards
        (a source the fleet already holds a newer cursor for is left as it is)."""
        def write(cur: Any) -> str:
            cur.execute("SELECT updated FROM sf_checkpoints WHERE source = %s FOR UPDATE", (cp.source,))
            row = cur.fetchone()
            if row is not None and row[0] >= cp.updated:
                return "kept (the fleet's cursor is as new or newer)"
            cur.execute("DELETE FROM sf_checkpoints WHERE source = %s", (cp.source,))
            cur.execute("INSERT INTO sf_checkpoints (source, cursor, updated, newest_event, delivered, watermark, "
                        "delivered_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                        (cp.source, json.dumps(cp.cursor, separators=(",", ":"), sort_keys=True), cp.updated,
                         cp.newest_event, cp.delivered, cp.watermark, cp.delivered_at))
            if row is None:
                cur.executemany("INSERT INTO sf_ledger (source, term, output, count) VALUES (%s, %s, %s, %s) "
                                "ON CONFLICT (source, term, output) DO UPDATE SET count = excluded.count",
                                [(cp.source, t, o, n) for t, o, n in ledger.rows() if n])
            return "imported" if row is None else "imported (newer than the fleet's)"
        return self.db.run(write)

    def close(self) -> None:
        self.db.close()


class PgSetAside:
    """Quarantine or dead-letter records in ``sf_setaside`` (the same records the files hold), so
    ``quarantine list`` and ``replay`` work from any host."""

    def __init__(self, db: Database, kind: str):
        self.db = db
        self.kind = kind

    def path(self, name: str) -> str:
        return f"PostgreSQL sf_setaside ({self.kind} {name})"

    def write(self, name: str, records: Iterable[dict[str, Any]]) -> int:
        now = time.time()
        # record_line: the same strict UTF-8 the files hold, whatever the event (a lone surrogate escaped)
        rows = [(self.kind, name, now, record_line(r).decode("utf-8").rstrip("\n")) for r in records]
        if rows:
            self.db.run(lambda cur: cur.executemany(
                "INSERT INTO sf_setaside (kind, name, time, record) VALUES (%s, %s, %s, %s)", rows))
        return len(rows)

    def records(self, name: str | None = None) -> list[tuple[int, str, dict[str, Any]]]:
        """(id, name, record) of this kind, oldest first."""
        def read(cur: Any) -> list[Any]:
            if name is None:
                cur.execute("SELECT id, name, record FROM sf_setaside WHERE kind = %s ORDER BY id", (self.kind,))
            else:
                cur.execute("SELECT id, name, record FROM sf_setaside WHERE kind = %s AND name = %s ORDER BY id",
                            (self.kind, name))
            return list(cur.fetchall())
        return [(r[0], r[1], json.loads(r[2])) for r in self.db.run(read)]

    def remove(self, ids: list[int]) -> None:
        if ids:
            self.db.run(lambda cur: cur.execute("DELETE FROM sf_setaside WHERE id = ANY(%s)", (ids,)))

    def files(self) -> list[str]:
        return []
