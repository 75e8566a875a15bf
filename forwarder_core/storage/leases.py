"""Leases and instances of a fleet, in PostgreSQL: who polls which source, and who is alive.

Each source has one row in ``sf_leases``: its owner, a token drawn from a sequence at every
hand-over, and an expiry. An instance renews every lease it holds in one statement (the token
must still match, so a lease another instance took over is not renewed: it is lost), takes free
or expired sources up to its share with ``FOR UPDATE SKIP LOCKED`` (two instances never take the
same row), and releases a source by clearing its owner. The fence is elsewhere
(:meth:`~forwarder_core.storage.pgstore.PgStore.commit`): a page is committed only under the token.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from forwarder_core.storage.pg import Database


@dataclass(frozen=True)
class Instance:
    name: str
    version: str
    config_hash: str
    heartbeat: float
    """Epoch seconds of the last heartbeat."""
    held: int
    age: float
    """Seconds since the last heartbeat, by PostgreSQL's clock."""


@dataclass(frozen=True)
class Taken:
    source: str
    token: int
    previous: str | None
    """The instance that held it before (a hand-over when not None)."""


class Leases:
    def __init__(self, db: Database, instance: str, ttl: float):
        self.db = db
        self.instance = instance
        self.ttl = ttl

    def declare(self, sources: list[str]) -> None:
        """Give every source of the config a lease row (free until someone takes it)."""
        self.db.run(lambda cur: cur.execute(
            # NOT EXISTS first: a row locked by a paused instance must not make this statement wait
            "INSERT INTO sf_leases (source) SELECT s FROM unnest(%s::text[]) AS s "
            "WHERE NOT EXISTS (SELECT 1 FROM sf_leases WHERE source = s) ON CONFLICT (source) DO NOTHING", (sources,)))

    def register(self, version: str, config_hash: str) -> None:
        self.db.run(lambda cur: cur.execute(
            "INSERT INTO sf_instances (name, version, config_hash) VALUES (%s, %s, %s) ON CONFLICT (name) DO UPDATE "
            "SET version = excluded.version, config_hash = excluded.config_hash, started = now(), heartbeat = now()",
            (self.instance, version, config_hash)))

    def renew(self, tokens: dict[str, int]) -> dict[str, int]:
        """Heartbeat, and extend every lease still held under its token, in one statement; the
        leases returned are the ones still held."""
        def run(cur: Any) -> dict[str, int]:
            cur.execute(
                "WITH beat AS (UPDATE sf_instances SET heartbeat = now(), held = %s WHERE name = %s) "
                "UPDATE sf_leases l SET expires = now() + make_interval(secs => %s) "
                "FROM unnest(%s::text[], %s::bigint[]) AS mine(source, token) "
                "WHERE l.source = mine.source AND l.token = mine.token AND l.owner = %s RETURNING l.source, l.token",
                (len(tokens), self.instance, self.ttl, list(tokens), list(tokens.values()), self.instance))
            return {r[0]: r[1] for r in cur.fetchall()}
        return self.db.run(run)

    def live(self) -> list[str]:
        """The instances whose heartbeat is younger than the lease time, by name."""
        def run(cur: Any) -> list[str]:
            cur.execute("SELECT name FROM sf_instances WHERE heartbeat > now() - make_interval(secs => %s) "
                        "ORDER BY name", (self.ttl,))
            return [r[0] for r in cur.fetchall()]
        return self.db.run(run)

    def take(self, sources: list[str], limit: int) -> list[Taken]:
        """Take up to ``limit`` of ``sources`` that are free, whose lease expired, or that this
        instance held before it lost track of them (PostgreSQL was away): each under a new token."""
        if limit <= 0 or not sources:
            return []

        def run(cur: Any) -> list[Taken]:
            cur.execute(
                "WITH picked AS (SELECT source, owner FROM sf_leases WHERE source = ANY(%s) "
                "AND (owner IS NULL OR owner = %s OR expires IS NULL OR expires < now()) "
                "ORDER BY expires NULLS FIRST, source "
                "LIMIT %s FOR UPDATE SKIP LOCKED) "
                "UPDATE sf_leases l SET owner = %s, token = nextval('sf_lease_tokens'), "
                "expires = now() + make_interval(secs => %s) FROM picked WHERE l.source = picked.source "
                "RETURNING l.source, l.token, picked.owner",
                (sources, self.instance, limit, self.instance, self.ttl))
            return [Taken(r[0], r[1], r[2] if r[2] != self.instance else None) for r in cur.fetchall()]
        return self.db.run(run)

    def release(self, held: dict[str, int]) -> None:
        """Give the sources up (only under their tokens: a lease already lost is not touched)."""
        if held:
            self.db.run(lambda cur: cur.execute(
                "UPDATE sf_leases l SET owner = NULL, expires = NULL FROM unnest(%s::text[], %s::bigint[]) "
                "AS mine(source, token) WHERE l.source = mine.source AND l.token = mine.token AND l.owner = %s",
                (list(held), list(held.values()), self.instance)))

    def leave(self) -> None:
        """A clean stop: the instance is no longer alive (its leases are released by :meth:`release`)."""
        self.db.run(lambda cur: cur.execute("DELETE FROM sf_instances WHERE name = %s", (self.instance,)))


def instances(db: Database) -> list[Instance]:
    def run(cur: Any) -> list[Instance]:
        cur.execute("SELECT name, version, config_hash, extract(epoch FROM heartbeat), "
                    "(SELECT count(*) FROM sf_leases l WHERE l.owner = i.name AND l.expires > now()), "
                    "extract(epoch FROM now() - heartbeat) FROM sf_instances i ORDER BY name")
        return [Instance(r[0], r[1], r[2], float(r[3]), int(r[4]), float(r[5])) for r in cur.fetchall()]
    return db.run(run)


def fair_share(total: int, live: list[str], me: str) -> int:
    """This instance's share of ``total`` sources among ``live`` instances: the counts differ by
    at most one, and the first ``total % len(live)`` instances by name carry the extra one."""
    members = sorted(set(live) | {me})
    base, extra = divmod(total, len(members))
    return base + (1 if members.index(me) < extra else 0)
