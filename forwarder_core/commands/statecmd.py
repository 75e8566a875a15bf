"""``siem-forwarder state``: each source's checkpoint, lag and last poll; reset one."""
from __future__ import annotations

import json
import os
import sys
import time

from forwarder_core.commands.progress import print_ledgers
from forwarder_core.config.loader import Config
from forwarder_core.errors import StateError
from forwarder_core.storage.checkpoint import FILENAME, Checkpoint, CheckpointStore, PollOutcome
from forwarder_core.storage.ledger import Ledger
from forwarder_core.storage.statedir import LockHeld, StateLock, ensure_state_dir
from forwarder_core.times import parse_time


def state_command(config: Config, action: str, name: str | None) -> int:
    configured = {s.name for s in config.sources}
    if action == "reset" and not name:
        print("siem-forwarder: state reset needs a source NAME")
        return 64
    exists = os.path.lexists(config.state_dir)
    if exists:
        try:
            ensure_state_dir(config.state_dir)  # only its owner reads it; root acts as the owner
        except StateError as exc:
            print(f"siem-forwarder: {exc}")
            return 74
    if not os.path.exists(os.path.join(config.state_dir, FILENAME)):
        # Nothing was ever committed here: say so without creating the state directory or its store.
        if action == "reset":
            assert name is not None
            if name not in configured:
                return unknown_source(config, name)
            if exists:  # a reset still needs the lock: a running forwarder, or a planted one, refuses it
                lock = _reset_lock(config.state_dir)
                if isinstance(lock, int):
                    return lock
                lock.release()
            print(f"{name}: had no checkpoint")
            return 0
        print_table([], {}, configured, time.time())
        print_ledgers([(n, Ledger()) for n in sorted(configured)], sys.stdout,
                      since=f" (nothing in {config.state_dir} yet)")
        return 0
    try:
        state_dir = ensure_state_dir(config.state_dir)
        store = CheckpointStore(state_dir)
    except StateError as exc:
        print(f"siem-forwarder: {exc}")
        return 74
    try:
        if action == "reset":
            assert name is not None
            if name not in configured and store.get(name) is None and name not in store.polls():
                return unknown_source(config, name)
            lock = _reset_lock(state_dir)
            if isinstance(lock, int):
                return lock
            try:
                removed = store.reset(name)
            finally:
                lock.release()
            print(f"{name}: checkpoint removed; the next poll starts from its start_time" if removed
                  else f"{name}: had no checkpoint")
            return 0
        print_table(store.all(), store.polls(), configured, time.time())
        names = sorted({cp.source for cp in store.all()} | configured)
        print_ledgers([(n, store.ledger(n)) for n in names], sys.stdout, since=" (since the state dir was created)")
        return 0
    finally:
        store.close()


def _reset_lock(state_dir: str) -> StateLock | int:
    """The state directory's lock for a reset, or the exit code after saying why it cannot be had
    (75: a forwarder, running or planted, holds it; 74: the lock file itself is refused)."""
    try:
        return StateLock(state_dir).acquire()
    except LockHeld as exc:
        print(f"siem-forwarder: {exc}; stop it before resetting a checkpoint")
        return 75
    except StateError as exc:
        print(f"siem-forwarder: {exc}")
        return 74


def unknown_source(config: Config, name: str) -> int:
    """A name neither in the config nor in the store, as ``once --source`` refuses it (EX_CONFIG)."""
    print(f"{config.path}:0: $.sources: no source named {name!r} (in the config or with a checkpoint)",
          file=sys.stderr)
    return 78


def print_table(checkpoints: list[Checkpoint], polls: dict[str, PollOutcome], configured: set[str], now: float) -> None:
    """One row per source: where its cursor stands and how far behind now, what it delivered and
    when, and how its last poll ended.

    LAG is now minus the watermark, so a source that is caught up on a quiet tenant shows a
    small lag (its settle delay plus the time since its last poll), however old its newest event.
    """
    rows = [("SOURCE", "WATERMARK", "LAG", "NEWEST EVENT", "DELIVERED AT", "EVENTS", "LAST POLL", "CURSOR")]
    seen = set()
    for cp in checkpoints:
        seen.add(cp.source)
        lag = _duration(now - parse_time(cp.watermark).timestamp()) if cp.watermark else "-"
        cursor = json.dumps(cp.cursor, separators=(",", ":"))
        rows.append((cp.source + ("" if cp.source in configured else " (not in config)"), _short(cp.watermark), lag,
                     _short(cp.newest_event), _stamp(cp.delivered_at), str(cp.delivered),
                     _poll(polls.get(cp.source), now), cursor[:60] + ("…" if len(cursor) > 60 else "")))
    for missing in sorted(configured - seen):
        rows.append((missing, "never", "-", "-", "-", "0", _poll(polls.get(missing), now), "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())


def _short(iso: str | None) -> str:
    """An RFC 3339 time to the second: the table's times are for reading, not for parsing."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(parse_time(iso).timestamp())) if iso else "-"


def _stamp(epoch: float | None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch)) if epoch else "-"


def _poll(outcome: PollOutcome | None, now: float) -> str:
    if outcome is None:
        return "-"
    text = outcome.outcome if outcome.ok else f"FAILED: {outcome.outcome}"
    return f"{_duration(now - outcome.time)} ago, {text[:70]}"


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"
