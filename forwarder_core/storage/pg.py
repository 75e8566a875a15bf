"""The fleet's PostgreSQL: one connection per store, the schema created once and migrated by version.

With a ``cluster:`` block, every instance of one config keeps its checkpoints, poll records,
ledger totals, set-aside records and leases in one PostgreSQL database (tables prefixed
``sf_``, so the database may be shared). Instances that start together on an empty database
create the schema once: the creation runs under a transaction-level advisory lock. An instance
refuses a schema newer than it knows, saying which version wrote it.

psycopg 3 is an optional dependency (the ``cluster`` extra, which the packages include): it is
imported only when a config has a ``cluster:`` block.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from forwarder_core import __version__
from forwarder_core.errors import StateError
from forwarder_core.secrets import redact

SCHEMA_VERSION = 1
_SCHEMA_LOCK = 0x5F5F_5346  # pg_advisory_xact_lock key: "__SF"
_TABLES = (
    "CREATE TABLE IF NOT EXISTS sf_meta (key text PRIMARY KEY, value text NOT NULL)",
    "CREATE TABLE IF NOT EXISTS sf_checkpoints (source text PRIMARY KEY, cursor text NOT NULL, "
    "updated double precision NOT NULL, newest_event text, delivered bigint NOT NULL DEFAULT 0, watermark text, "
    "delivered_at double precision)",
    "CREATE TABLE IF NOT EXISTS sf_polls (source text PRIMARY KEY, time double precision NOT NULL, "
    "ok boolean NOT NULL, outcome text NOT NULL)",
    "CREATE TABLE IF NOT EXISTS sf_ledger (source text NOT NULL, term text NOT NULL, output text NOT NULL, "
    "count bigint NOT NULL, PRIMARY KEY (source, term, output))",
    "CREATE TABLE IF NOT EXISTS sf_setaside (id bigserial PRIMARY KEY, kind text NOT NULL, name text NOT NULL, "
    "time double precision NOT NULL, record text NOT NULL)",
    "CREATE TABLE IF NOT EXISTS sf_instances (name text PRIMARY KEY, version text NOT NULL, config_hash text NOT NULL, "
    "started timestamptz NOT NULL DEFAULT now(), heartbeat timestamptz NOT NULL DEFAULT now(), "
    "held integer NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS sf_leases (source text PRIMARY KEY, owner text, token bigint NOT NULL DEFAULT 0, "
    "expires timestamptz, commits bigint NOT NULL DEFAULT 0)",
    "CREATE SEQUENCE IF NOT EXISTS sf_lease_tokens",
)
T = TypeVar("T")


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise StateError("the cluster: block needs psycopg 3 (pip install 'siem-forwarder[cluster]'; "
                         "the .deb and .rpm include it)") from None
    return psycopg


def connection_problem(exc: BaseException) -> str:
    """What went wrong talking to PostgreSQL, without the DSN's password."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return redact(text)[:300]


class Database:
    """One connection (autocommit, explicit transactions), reopened after a failure; thread-safe.

    TCP keepalives and ``tcp_user_timeout`` bound how long a call can hang on a cut network, so
    an instance notices within seconds that it cannot commit; ``idle_in_transaction_session_timeout``
    makes PostgreSQL end the session of an instance paused inside a transaction (``SIGSTOP``, a
    frozen VM), so the row locks it held do not outlive it.
    """

    def __init__(self, dsn: str, *, application: str = "siem-forwarder", timeout: float = 5.0):
        self._dsn = dsn
        self._timeout = timeout
        self._application = application
        self._lock = threading.RLock()
        self._conn: Any = None
        self.psycopg = _psycopg()

    def _connect(self) -> Any:
        ms = int(self._timeout * 1000)
        return self.psycopg.connect(
            self._dsn, autocommit=True, connect_timeout=max(1, int(self._timeout)),
            application_name=self._application, keepalives=1, keepalives_idle=max(1, int(self._timeout)),
            keepalives_interval=1, keepalives_count=3, tcp_user_timeout=ms,
            options=f"-c statement_timeout={ms * 4} -c lock_timeout={ms * 2} "
                    f"-c idle_in_transaction_session_timeout={ms * 2}")

    @contextmanager
    def cursor(self) -> Iterator[Any]:
        """A cursor inside one transaction; any failure rolls back, drops the connection and
        raises :class:`StateError` (OperationalError) or the error itself (anything else)."""
        with self._lock:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = self._connect()
                with self._conn.transaction(), self._conn.cursor() as cur:
                    yield cur
            except self.psycopg.OperationalError as exc:
                self._drop()
                raise StateError(f"PostgreSQL: {connection_problem(exc)}") from None
            except self.psycopg.Error as exc:
                if self._conn is not None and self._conn.broken:
                    self._drop()
                raise StateError(f"PostgreSQL: {connection_problem(exc)}") from None

    def run(self, fn: Callable[[Any], T]) -> T:
        with self.cursor() as cur:
            return fn(cur)

    def _drop(self) -> None:
        try:
            if self._conn is not None:
                self._conn.close()
        except Exception:
            pass
        self._conn = None

    def close(self) -> None:
        with self._lock:
            self._drop()

    def migrate(self) -> None:
        """Create the schema (once, under an advisory lock) or check that this version knows it."""
        def create(cur: Any) -> None:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            cur.execute("SELECT to_regclass('sf_meta')")
            if cur.fetchone()[0] is not None:
                cur.execute("SELECT key, value FROM sf_meta WHERE key IN ('schema_version', 'written_by')")
                meta = dict(cur.fetchall())
                found = int(meta.get("schema_version", "0"))
                if found > SCHEMA_VERSION:
                    raise StateError(
                        f"the fleet's PostgreSQL schema is version {found}, written by siem-forwarder "
                        f"{meta.get('written_by', '?')}; this siem-forwarder {__version__} knows up to version "
                        f"{SCHEMA_VERSION}: run siem-forwarder {meta.get('written_by', 'a newer release')} or newer")
                if found == SCHEMA_VERSION:
                    return
            for statement in _TABLES:
                cur.execute(statement)
            cur.execute("INSERT INTO sf_meta VALUES ('schema_version', %s), ('written_by', %s) "
                        "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (str(SCHEMA_VERSION), __version__))
        self.run(create)

    def schema_version(self) -> int | None:
        def read(cur: Any) -> int | None:
            cur.execute("SELECT to_regclass('sf_meta')")
            if cur.fetchone()[0] is None:
                return None
            cur.execute("SELECT value FROM sf_meta WHERE key = 'schema_version'")
            row = cur.fetchone()
            return int(row[0]) if row else None
        return self.run(read)
