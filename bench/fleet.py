"""The fleet benchmark: ``siem-forwarder run`` instances sharing one config through a private PostgreSQL.

Measures, in one invocation:

- **ownership**: 3 instances x ``--sources`` sources (idle ``counter`` sources, no events): seconds
  from the start until every source is held, and how evenly;
- **steady state**: PostgreSQL transactions per second (``pg_stat_database.xact_commit``; every
  statement the forwarder sends runs in a transaction of its own, the renewal included) over
  ``--steady`` seconds once the shares are stable;
- **hand-over**: seconds from a ``kill -9`` of one instance until its sources are held by the others;
- **backfill**: events/s of ``--backfill-sources`` sources x ``--events`` events spread over 1, 2
  and 3 instances (the same ``counter`` sources and file outputs each time).

PostgreSQL runs with ``fsync = off`` (a test cluster): the figures are the forwarder's load on it,
not the disk's speed.

Usage::

    .venv/bin/python bench/fleet.py                         # 2,000 sources, the figures of RESULTS.md
    .venv/bin/python bench/fleet.py --sources 200 --events 2000 --steady 10   # a quick look
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from forwarder_core.storage.pg import Database  # noqa: E402
from tests.conftest import FIXTURES, _pip_target  # noqa: E402
from tests.postgres import Postgres  # noqa: E402

TTL = 10


class Bench:
    def __init__(self, top: Path, pg: Postgres, kit: Path):
        self.top, self.pg, self.kit = top, pg, kit
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def write(self, name: str, sources: int, events: int) -> Path:
        config = {
            "state_dir": "${SF_STATE}", "plugin_paths": [str(self.kit)], "workers": 0, "log_level": "warning",
            "max_concurrent_polls": 16,
            "cluster": {"dsn": self.pg.dsn, "instance": "${SF_INSTANCE}", "lease_ttl": TTL},
            "sources": [{"name": f"s{i:05d}", "type": "counter", "interval": 30,
                         "options": {"count": events, "page_size": 500}} for i in range(sources)],
            "outputs": [{"name": "out", "type": "file", "options": {"path": "${SF_OUT}"}}],
        }
        path = self.top / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    def start(self, config: Path, name: str) -> None:
        state = self.top / f"state-{name}"
        state.mkdir(exist_ok=True)
        env = dict(os.environ, SF_INSTANCE=name, SF_STATE=str(state), SF_OUT=str(self.top / f"out-{name}.jsonl"))
        with open(self.top / f"log-{name}.txt", "ab") as log:  # the child keeps its own descriptor
            self.procs[name] = subprocess.Popen([sys.executable, "-m", "forwarder_core", "run", "-c", str(config)],
                                                env=env, stdout=subprocess.DEVNULL, stderr=log)

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
        self.procs.clear()

    def query(self, sql: str) -> list[Any]:
        db = Database(self.pg.dsn)
        try:
            return db.run(lambda cur: (cur.execute(sql), cur.fetchall())[1])
        except Exception:
            return []
        finally:
            db.close()

    def held(self) -> dict[str, int]:
        rows = self.query("SELECT owner, count(*) FROM sf_leases WHERE owner IS NOT NULL AND expires > now() "
                          "GROUP BY owner")
        return {r[0]: int(r[1]) for r in rows}

    def wait(self, what: Any, timeout: float) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if what():
                return time.monotonic() - started
            time.sleep(0.2)
        raise SystemExit(f"timed out after {timeout:.0f}s")


def ownership(b: Bench, sources: int, steady: float) -> dict[str, Any]:
    config = b.write("own", sources, 0)
    started = time.monotonic()
    for name in ("a", "b", "c"):
        b.start(config, name)
    b.wait(lambda: sum(b.held().values()) == sources, 600)
    owned_after = time.monotonic() - started
    b.wait(lambda: len(b.held()) == 3 and max(b.held().values()) - min(b.held().values()) <= 1, 600)
    even_after = time.monotonic() - started
    time.sleep(TTL)  # past every first take
    before = b.query("SELECT xact_commit FROM pg_stat_database WHERE datname = 'forwarder'")[0][0]
    time.sleep(steady)
    after = b.query("SELECT xact_commit FROM pg_stat_database WHERE datname = 'forwarder'")[0][0]
    tps = (after - before) / steady
    victim = b.procs["b"]
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    killed = time.monotonic()
    b.wait(lambda: set(b.held()) == {"a", "c"} and sum(b.held().values()) == sources, 600)
    handover = time.monotonic() - killed
    shares = sorted(b.held().values())
    b.stop()
    return {"sources": sources, "owned_s": round(owned_after, 1), "even_s": round(even_after, 1),
            "steady_tps": round(tps, 1), "handover_s": round(handover, 1), "after_kill": shares}


def backfill(b: Bench, instances: int, sources: int, events: int) -> dict[str, Any]:
    b.pg.reset()
    config = b.write(f"fill{instances}", sources, events)
    for f in b.top.glob("out-*.jsonl"):
        f.unlink()
    started = time.monotonic()
    for n in range(instances):
        b.start(config, f"i{n}")

    def done() -> bool:
        rows = b.query("SELECT cursor FROM sf_checkpoints")
        return len(rows) == sources and all(json.loads(r[0])["next"] == events for r in rows)
    b.wait(done, 1800)
    took = time.monotonic() - started
    b.stop()
    delivered = sum(f.read_bytes().count(b"\n") for f in b.top.glob("out-*.jsonl"))
    return {"instances": instances, "events": sources * events, "delivered": delivered, "seconds": round(took, 1),
            "events_per_s": round(sources * events / took)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sources", type=int, default=2000)
    ap.add_argument("--steady", type=float, default=30.0)
    ap.add_argument("--backfill-sources", type=int, default=12)
    ap.add_argument("--events", type=int, default=20000)
    args = ap.parse_args()
    top = Path(tempfile.mkdtemp(prefix="siem-forwarder-bench-fleet-"))
    os.chmod(top, 0o755)
    pg = Postgres(top / "pg")
    pg.init()
    pg.start()
    kit = _pip_target(FIXTURES / "testkit", top / "kit")
    b = Bench(top, pg, kit)
    try:
        own = ownership(b, args.sources, args.steady)
        print(json.dumps({"ownership": own}), flush=True)
        for n in (1, 2, 3):
            print(json.dumps({"backfill": backfill(b, n, args.backfill_sources, args.events)}), flush=True)
    finally:
        b.stop()
        pg.stop("immediate")
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    main()
