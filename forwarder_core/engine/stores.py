"""Where a forwarder keeps its state: SQLite in ``state_dir``, or PostgreSQL for a fleet.

Without a ``cluster:`` block, the checkpoint store and the quarantine and dead-letter files live
in the state directory. With one, they live in PostgreSQL (:mod:`forwarder_core.storage.pgstore`)
and the instance keeps its leases there (:class:`~forwarder_core.engine.fleet.Fleet`); the state
directory then holds only the lock.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from forwarder_core.config.loader import Config
from forwarder_core.engine.fleet import Fleet
from forwarder_core.metrics import Metrics
from forwarder_core.secrets import reveal
from forwarder_core.storage.checkpoint import CheckpointStore
from forwarder_core.storage.leases import Leases
from forwarder_core.storage.pg import Database
from forwarder_core.storage.pgstore import PgSetAside, PgStore
from forwarder_core.storage.setaside import DEAD_LETTER, QUARANTINE, SetAside


@dataclass
class State:
    store: Any
    """A :class:`CheckpointStore` or a :class:`PgStore`: the same questions, the same answers."""
    quarantine: Any
    dead_letter: Any
    fleet: Fleet | None = None


def database(config: Config) -> Database:
    assert config.cluster is not None
    return Database(reveal(config.cluster.dsn) or "", application=f"siem-forwarder {config.cluster.instance}")


def open_state(config: Config, state_dir: str, metrics: Metrics, stop: threading.Event) -> State:
    """The stores ``run`` and ``once`` write to; for a fleet, its schema made ready and the instance
    registered (a StateError when PostgreSQL cannot be reached)."""
    if config.cluster is None:
        return State(CheckpointStore(state_dir), SetAside(state_dir, QUARANTINE), SetAside(state_dir, DEAD_LETTER))
    db = database(config)
    try:
        db.migrate()
        store = PgStore(db, instance=config.cluster.instance)
        leases = Leases(db, config.cluster.instance, config.cluster.lease_ttl)
        fleet = Fleet(leases, store, [c.name for c in config.sources], metrics, stop)
        fleet.join(config.document)
    except BaseException:
        db.close()
        raise
    return State(store, PgSetAside(db, QUARANTINE), PgSetAside(db, DEAD_LETTER), fleet)


def read_store(config: Config) -> Any:
    """The checkpoint store for the commands that only read (``state``): never a lease, never the schema."""
    if config.cluster is None:
        return CheckpointStore(config.state_dir)
    return PgStore(database(config))
