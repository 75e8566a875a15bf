"""``siem-forwarder state``: each source's checkpoint and lag; reset one."""
from __future__ import annotations

import json
import sys
import time

from forwarder_core.checkpoint import CheckpointStore
from forwarder_core.config import Config
from forwarder_core.errors import StateError
from forwarder_core.plugin_api import parse_time
from forwarder_core.progress import print_ledgers
from forwarder_core.statedir import StateLock, ensure_state_dir


def state_command(config: Config, action: str, name: str | None) -> int:
    try:
        state_dir = ensure_state_dir(config.state_dir)
        store = CheckpointStore(state_dir)
    except StateError as exc:
        print(f"siem-forwarder: {exc}")
        return 74
    try:
        if action == "reset":
            if not name:
                print("siem-forwarder: state reset needs a source NAME")
                return 64
            try:
                lock = StateLock(state_dir).acquire()
            except StateError as exc:
                print(f"siem-forwarder: {exc}; stop it before resetting a checkpoint")
                return 75
            try:
                removed = store.reset(name)
            finally:
                lock.release()
            print(f"{name}: checkpoint removed; the next poll starts from its start_time" if removed
                  else f"{name}: had no checkpoint")
            return 0
        configured = {s.name for s in config.sources}
        rows = [("SOURCE", "UPDATED", "NEWEST EVENT", "LAG", "DELIVERED", "CURSOR")]
        now = time.time()
        seen = set()
        for cp in store.all():
            seen.add(cp.source)
            lag = "-"
            if cp.newest_event:
                lag = _duration(now - parse_time(cp.newest_event).timestamp())
            cursor = json.dumps(cp.cursor, separators=(",", ":"))
            name_col = cp.source + ("" if cp.source in configured else " (not in config)")
            rows.append((name_col, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(cp.updated)),
                         cp.newest_event or "-", lag, str(cp.delivered), cursor[:80] + ("…" if len(cursor) > 80 else "")))
        for missing in sorted(configured - seen):
            rows.append((missing, "never", "-", "-", "0", "-"))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for row in rows:
            print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        names = sorted(seen | configured)
        print_ledgers([(n, store.ledger(n)) for n in names], sys.stdout, since=" (since the state dir was created)")
        return 0
    finally:
        store.close()


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"
