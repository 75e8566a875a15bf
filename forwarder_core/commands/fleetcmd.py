"""The operator's view of a fleet: ``cluster``, ``state`` (owners), ``state import``, and the
PostgreSQL line of ``check --connect``.

None of these joins the fleet or takes a lease; only ``state import`` writes (checkpoints, never
moving a cursor backwards).
"""
from __future__ import annotations

import os
import sys
import time
from collections import Counter
from typing import Any, TextIO

from forwarder_core.commands.progress import print_ledgers
from forwarder_core.commands.statecmd import print_table, unknown_source
from forwarder_core.config.loader import Config
from forwarder_core.engine.stores import database
from forwarder_core.errors import StateError
from forwarder_core.storage.checkpoint import CheckpointStore
from forwarder_core.storage.leases import instances
from forwarder_core.storage.pg import SCHEMA_VERSION
from forwarder_core.storage.pgstore import PgSetAside, PgStore
from forwarder_core.storage.setaside import DEAD_LETTER, QUARANTINE
from forwarder_core.storage.setaside_files import group_reason
from forwarder_core.storage.statedir import ensure_state_dir


def cluster_command(config: Config, out: TextIO = sys.stdout) -> int:
    """List the instances: name, version, last heartbeat, sources held, config hash."""
    if config.cluster is None:
        print("siem-forwarder: this config has no cluster: block; it runs as one instance", file=out)
        return 78
    db = database(config)
    try:
        members = instances(db)
    except StateError as exc:
        print(f"siem-forwarder: {exc}", file=out)
        return 74
    finally:
        db.close()
    ttl = config.cluster.lease_ttl
    rows = [("INSTANCE", "VERSION", "HEARTBEAT", "STATE", "SOURCES", "CONFIG")]
    for m in members:
        state = "live" if m.age < ttl else "gone (no heartbeat)"
        rows.append((m.name, m.version, f"{m.age:.0f}s ago", state, str(m.held), m.config_hash))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip(), file=out)
    hashes = {m.config_hash for m in members if m.age < ttl}
    if len(hashes) > 1:
        print(f"warning: the live instances run {len(hashes)} different configs; every instance of a fleet "
              "should run the same one", file=out)
    if not members:
        print("no instance has joined this fleet yet", file=out)
    return 0


def fleet_state_command(config: Config, action: str, name: str | None, from_dir: str | None,
                        out: TextIO = sys.stdout) -> int:
    store = PgStore(database(config))
    try:
        if action == "import":
            return _import(store, from_dir, out)
        if action == "reset":
            return _reset(store, config, name, out)
        configured = {s.name for s in config.sources}
        print_table(store.all(), store.polls(), configured, time.time())
        owners = store.owners()
        now = time.time()
        print("\nOWNERS", file=out)
        for source in sorted(configured | set(owners)):
            owner, expires = owners.get(source, (None, None))
            if owner and expires and expires > now:
                print(f"  {source}: {owner} (lease for {expires - now:.0f}s more)", file=out)
            else:
                print(f"  {source}: none (free for the next instance to take)", file=out)
        names = sorted({cp.source for cp in store.all()} | configured)
        print_ledgers([(n, store.ledger(n)) for n in names], out, since=" (since the fleet began)")
        return 0
    except StateError as exc:
        print(f"siem-forwarder: {exc}", file=out)
        return 74
    finally:
        store.close()


def _reset(store: PgStore, config: Config, name: str | None, out: TextIO) -> int:
    if not name:
        print("siem-forwarder: state reset needs a source NAME", file=out)
        return 64
    if name not in {s.name for s in config.sources} and store.get(name) is None:
        return unknown_source(config, name)
    owner, expires = store.owners().get(name, (None, None))
    if owner and expires and expires > time.time():
        print(f"siem-forwarder: source {name} is being polled by instance {owner}; remove it from the config "
              "(or stop the fleet) before resetting its checkpoint", file=out)
        return 75
    removed = store.reset(name)
    print(f"{name}: checkpoint removed; the next poll starts from its start_time" if removed
          else f"{name}: had no checkpoint", file=out)
    return 0


def _import(store: PgStore, from_dir: str | None, out: TextIO) -> int:
    if not from_dir:
        print("siem-forwarder: state import needs --from STATE_DIR (a single host's state directory)", file=out)
        return 64
    store.db.migrate()
    local = CheckpointStore(from_dir)
    try:
        for cp in local.all():
            print(f"{cp.source}: {store.import_checkpoint(cp, local.ledger(cp.source))}", file=out)
    finally:
        local.close()
    return 0


def list_fleet_set_aside(config: Config, out: TextIO) -> int:
    """``quarantine list`` for a fleet: the records in PostgreSQL, grouped as the files are."""
    db = database(config)
    try:
        shown = 0
        for kind in (QUARANTINE, DEAD_LETTER):
            by_name: dict[str, list[dict[str, Any]]] = {}
            for _id, name, record in PgSetAside(db, kind).records():
                by_name.setdefault(name, []).append(record)
            for name, records in sorted(by_name.items()):
                shown += 1
                what = "source" if kind == QUARANTINE else "output"
                print(f"{kind}: {what} {name}: {len(records)} record(s)", file=out)
                for reason, count in Counter(group_reason(str(r.get("reason", "(no reason)"))) for r in records).most_common():
                    print(f"  {count:>7}  {reason}", file=out)
        if not shown:
            print("nothing set aside in the fleet's PostgreSQL", file=out)
        return 0
    except StateError as exc:
        print(f"siem-forwarder: {exc}", file=out)
        return 74
    finally:
        db.close()


def check_postgres(config: Config) -> tuple[bool, str]:
    """``check --connect``: PostgreSQL answers and its schema is one this release knows."""
    db = database(config)
    try:
        found = db.schema_version()
    except StateError as exc:
        return False, f"cannot reach the cluster's dsn: {exc}"
    finally:
        db.close()
    if found is None:
        return True, "reached; the schema is created by the first instance that starts"
    if found > SCHEMA_VERSION:
        return False, f"schema version {found} is newer than this release knows ({SCHEMA_VERSION}); upgrade siem-forwarder"
    return True, f"reached; schema version {found}"


_REPLAY_LOCK = 0x5F5F_5352  # pg_try_advisory_lock key: one replay at a time in a fleet


def replay_fleet(config: Config, plugins: Any, *, sources: list[str] | None, outputs: list[str] | None,
                 dead_letter: bool, out: TextIO) -> int:
    """``quarantine replay`` for a fleet: the records in PostgreSQL go through the same replay as the
    files (each name's records in a scratch file), and what is still set aside replaces exactly the
    records that were read, so records the running instances add meanwhile are kept."""
    import json
    import tempfile

    from forwarder_core.commands.replay import Replayer
    from forwarder_core.storage.setaside_files import read_file, selected

    try:
        ensure_state_dir(config.state_dir)  # the local one: the replayer's plugins may keep files there
    except StateError as exc:
        print(f"siem-forwarder: {exc}", file=out)
        return 74
    db = database(config)
    kind = DEAD_LETTER if dead_letter else QUARANTINE
    replayer = Replayer(config, plugins, out)
    replayer.dead_letter = PgSetAside(db, DEAD_LETTER)  # type: ignore[assignment]  # the same write() and path()
    records = PgSetAside(db, kind)
    total_sent = total_kept = 0
    try:
        if not db.run(lambda cur: (cur.execute("SELECT pg_try_advisory_lock(%s)", (_REPLAY_LOCK,)), cur.fetchone())[1][0]):
            print("siem-forwarder: another replay is running in this fleet; try again when it has finished", file=out)
            return 75
        by_name: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        for rid, name, record in records.records():
            by_name.setdefault(name, []).append((rid, record))
        with tempfile.TemporaryDirectory(prefix="siem-forwarder-replay-") as scratch:
            # Laid out as a state directory (scratch/<kind>/<n>.jsonl): the replay rewrites its files there.
            replayer.state_dir = scratch
            os.mkdir(os.path.join(scratch, kind), 0o700)
            files = []
            for n, (name, rows) in enumerate(sorted(by_name.items())):
                path = os.path.join(scratch, kind, f"{n}.jsonl")
                lines = [json.dumps(r, ensure_ascii=False, separators=(",", ":"), default=str) + "\n" for _, r in rows]
                with open(path, "w", encoding="utf-8") as fh:
                    fh.writelines(lines)
                f = read_file(kind, path, lines)
                f.name = name
                files.append((f, [rid for rid, _ in rows]))
            chosen = {id(f) for f in selected([f for f, _ in files], sources, outputs if dead_letter else None)}
            if not chosen:
                print("nothing to replay in the fleet's PostgreSQL", file=out)
                return 0
            for f, ids in files:
                if id(f) not in chosen:
                    continue
                sent, why = (replayer.replay_dead_letters(f, sources) if dead_letter
                             else replayer.replay_quarantine(f, outputs))
                kept = []
                if os.path.exists(f.path):  # a replay that kept nothing removes the file
                    with open(f.path, encoding="utf-8") as fh:
                        kept = [json.loads(line) for line in fh if line.strip()]
                _replace(db, ids, kind, f.name, kept)
                total_sent += sent
                total_kept += sum(why.values())
                print(f"{kind} {f.name}: {sent} event(s) delivered and removed, {sum(why.values())} kept", file=out)
                for reason, count in why.most_common():
                    print(f"  {count:>7}  kept: {reason}", file=out)
    except StateError as exc:
        print(f"siem-forwarder: {exc}", file=out)
        return 74
    finally:
        replayer.stop.set()
        replayer.close()
        db.close()  # ends the session, and with it the advisory lock
    print(f"replayed {total_sent} event(s); {total_kept} still set aside", file=out)
    return 0 if total_kept == 0 else 1


def _replace(db: Any, ids: list[int], kind: str, name: str, kept: list[dict[str, Any]]) -> None:
    import json

    def run(cur: Any) -> None:
        cur.execute("DELETE FROM sf_setaside WHERE id = ANY(%s)", (ids,))
        if kept:
            cur.executemany("INSERT INTO sf_setaside (kind, name, time, record) VALUES (%s, %s, %s, %s)",
                            [(kind, name, time.time(), json.dumps(r, ensure_ascii=False, separators=(",", ":"),
                                                                   default=str)) for r in kept])
    db.run(run)
