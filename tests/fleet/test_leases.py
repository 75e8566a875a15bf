"""Leases, the fence and the schema, against a real PostgreSQL."""
from __future__ import annotations

import threading
from typing import Any

import pytest

from forwarder_core.engine.fleet import Fleet
from forwarder_core.errors import StateError
from forwarder_core.metrics import Metrics
from forwarder_core.storage.leases import Leases, fair_share, instances
from forwarder_core.storage.ledger import Ledger
from forwarder_core.storage.pg import SCHEMA_VERSION, Database
from forwarder_core.storage.pgstore import FenceError, PgStore
from tests.postgres import Postgres

SOURCES = [f"s{i:02d}" for i in range(10)]


def _db(pg: Postgres) -> Database:
    db = Database(pg.dsn)
    db.migrate()
    return db


def _expire(db: Database, source: str) -> None:
    db.run(lambda cur: cur.execute("UPDATE sf_leases SET expires = now() - interval '1 second' WHERE source = %s",
                                   (source,)))


def test_instances_starting_together_create_the_schema_once(postgres: Postgres) -> None:
    errors: list[BaseException] = []

    def start() -> None:
        try:
            Database(postgres.dsn).migrate()
        except BaseException as exc:  # pragma: no cover - the assertion below reports it
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert Database(postgres.dsn).schema_version() == SCHEMA_VERSION


def test_a_schema_newer_than_this_release_is_refused_naming_the_version_to_run(postgres: Postgres) -> None:
    db = _db(postgres)
    db.run(lambda cur: cur.execute("UPDATE sf_meta SET value = %s WHERE key = 'schema_version'",
                                   (str(SCHEMA_VERSION + 1),)))
    db.run(lambda cur: cur.execute("UPDATE sf_meta SET value = '9.9.9' WHERE key = 'written_by'"))
    with pytest.raises(StateError, match=rf"version {SCHEMA_VERSION + 1}.*run siem-forwarder 9\.9\.9 or newer"):
        Database(postgres.dsn).migrate()


@pytest.mark.parametrize("total", [0, 1, 7, 10, 2000])
@pytest.mark.parametrize("members", [1, 2, 3, 4])
def test_fair_shares_add_up_and_differ_by_at_most_one(total: int, members: int) -> None:
    live = [f"i{n}" for n in range(members)]
    shares = [fair_share(total, live, me) for me in live]
    assert sum(shares) == total
    assert max(shares) - min(shares) <= 1


def test_an_instance_alone_takes_every_source_and_a_second_takes_half_once_the_first_gives_back(
        postgres: Postgres) -> None:
    db_a, db_b = _db(postgres), _db(postgres)
    a, b = Leases(db_a, "a", 30), Leases(db_b, "b", 30)
    a.declare(SOURCES)
    a.register("t", "h")
    taken = a.take(SOURCES, fair_share(len(SOURCES), a.live(), "a"))
    assert sorted(t.source for t in taken) == SOURCES
    b.register("t", "h")
    assert b.take(SOURCES, fair_share(len(SOURCES), b.live(), "b")) == []  # all held, none expired
    held = {t.source: t.token for t in taken}
    share_a = fair_share(len(SOURCES), a.live(), "a")
    back = dict(sorted(held.items())[share_a:])
    a.release(back)
    got = b.take(SOURCES, fair_share(len(SOURCES), b.live(), "b"))
    assert sorted(t.source for t in got) == sorted(back)
    assert all(t.previous is None for t in got)  # given back, not taken over
    assert {i.name: i.held for i in instances(db_a)} == {"a": share_a, "b": len(back)}


def test_renewal_keeps_only_the_leases_still_held_under_their_token(postgres: Postgres) -> None:
    db = _db(postgres)
    a, b = Leases(db, "a", 30), Leases(db, "b", 30)
    a.declare(SOURCES[:3])
    a.register("t", "h")
    b.register("t", "h")
    held = {t.source: t.token for t in a.take(SOURCES[:3], 3)}
    _expire(db, "s01")
    [over] = b.take(SOURCES[:3], 1)
    assert over.source == "s01" and over.previous == "a" and over.token != held["s01"]
    assert sorted(a.renew(held)) == ["s00", "s02"]


class _Counting(Database):
    def __init__(self, dsn: str):
        super().__init__(dsn)
        self.statements = 0

    def run(self, fn: Any) -> Any:
        db = self

        class Cursor:
            def __init__(self, cur: Any):
                self._cur = cur

            def __getattr__(self, name: str) -> Any:
                return getattr(self._cur, name)

            def execute(self, *args: Any, **kwargs: Any) -> Any:
                db.statements += 1
                return self._cur.execute(*args, **kwargs)

            def executemany(self, *args: Any, **kwargs: Any) -> Any:
                db.statements += 1
                return self._cur.executemany(*args, **kwargs)
        return super().run(lambda cur: fn(Cursor(cur)))


def test_all_leases_are_renewed_with_the_heartbeat_in_one_statement(postgres: Postgres) -> None:
    db = _Counting(postgres.dsn)
    db.migrate()
    many = [f"t{i:04d}" for i in range(500)]
    leases = Leases(db, "a", 30)
    leases.declare(many)
    leases.register("t", "h")
    held = {t.source: t.token for t in leases.take(many, 500)}
    db.statements = 0
    assert len(leases.renew(held)) == 500
    assert db.statements == 1


def test_a_commit_after_the_lease_moved_is_refused_and_the_cursor_stays_the_new_owners(postgres: Postgres) -> None:
    db_a, db_b = _db(postgres), _db(postgres)
    a, b = Leases(db_a, "a", 30), Leases(db_b, "b", 30)
    store_a, store_b = PgStore(db_a, "a"), PgStore(db_b, "b")
    a.declare(["s"])
    [mine] = a.take(["s"], 1)
    store_a.hold("s", mine.token)
    store_a.commit("s", {"next": 10}, None, 10, ledger=Ledger(read=10, delivered={"out": 10}))
    _expire(db_a, "s")  # a was paused past its lease
    [theirs] = b.take(["s"], 1)
    store_b.hold("s", theirs.token)
    store_b.commit("s", {"next": 20}, None, 10, ledger=Ledger(read=10, delivered={"out": 10}))
    fenced: list[str] = []
    store_a.on_fence = fenced.append
    with pytest.raises(FenceError):
        store_a.commit("s", {"next": 15}, None, 5, ledger=Ledger(read=5, delivered={"out": 5}))
    assert fenced == ["s"] and "s" not in store_a.tokens
    cp = store_b.get("s")
    assert cp is not None and cp.cursor == {"next": 20} and cp.delivered == 20
    assert store_b.ledger("s").read == 20  # the refused page added nothing


def test_a_store_without_a_token_for_the_source_cannot_commit(postgres: Postgres) -> None:
    db = _db(postgres)
    Leases(db, "a", 30).declare(["s"])
    with pytest.raises(FenceError):
        PgStore(db, "a").commit("s", {"next": 1}, None, 1)
    assert PgStore(db).get("s") is None


def test_the_keeper_takes_its_share_drops_a_lost_lease_and_gives_back_only_idle_sources(postgres: Postgres) -> None:
    db_a, db_b = _db(postgres), _db(postgres)
    stop = threading.Event()
    gained: list[str] = []
    lost: list[str] = []
    busy = {"s00", "s01", "s02", "s03", "s04"}
    fleet_a = Fleet(Leases(db_a, "a", 30), PgStore(db_a, "a"), SOURCES, Metrics(), stop,
                    gained=gained.extend, lost=lost.extend, idle=lambda name: name not in busy)
    fleet_a.join({})
    fleet_a.step()
    assert sorted(gained) == SOURCES
    fleet_b = Fleet(Leases(db_b, "b", 30), PgStore(db_b, "b"), SOURCES, Metrics(), stop)
    fleet_b.join({})
    fleet_a.step()  # a now has 10 against a share of 5: it gives back the 5 idle ones, never a busy one
    assert sorted(lost) == ["s05", "s06", "s07", "s08", "s09"]
    fleet_b.step()
    assert sorted(fleet_b.held) == ["s05", "s06", "s07", "s08", "s09"]
    fleet_a.step()
    assert sorted(fleet_a.held) == sorted(busy)  # nothing more given back: a holds its share
    assert fleet_a.metrics.get("fleet_leases_released_total", instance="a") == 5


def test_without_postgresql_the_keeper_drops_every_source_once_the_leases_would_have_expired(
        postgres: Postgres) -> None:
    db = _db(postgres)
    lost: list[str] = []
    fleet = Fleet(Leases(db, "a", 5), PgStore(db, "a"), SOURCES[:2], Metrics(), threading.Event(), lost=lost.extend)
    fleet.join({})
    fleet.step()
    assert sorted(fleet.held) == SOURCES[:2]
    postgres.stop()  # a clean restart (the test cluster runs with fsync off: a crash would lose its data)
    try:
        fleet.step()
        assert fleet.problem is not None and "cannot reach PostgreSQL" in fleet.problem
        assert lost == []  # within lease_ttl it keeps its sources
        fleet.last_renewed -= 6
        fleet.step()
        assert sorted(lost) == SOURCES[:2] and fleet.held == {}
        assert fleet.metrics.get("fleet_connected", instance="a") == 0
    finally:
        postgres.start()
    fleet.step()
    assert fleet.problem is None and sorted(fleet.held) == SOURCES[:2]
