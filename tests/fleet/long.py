"""The fleet's long form (not run by the suite): rounds of random kills, pauses and joins.

Each round starts or resumes instances, waits a random while, then does one of: ``kill -9`` an
instance, ``SIGSTOP`` one for 2 x lease_ttl then ``SIGCONT``, start a new one, or stop one cleanly.
At the end every instance left catches up, and the outcome is checked as the suite's tests check
it: every event delivered, duplicates within one page per source per disruption, every cursor at
the end, no two processes polling one source at once outside a pause.

    .venv/bin/python -m tests.fleet.long --rounds 20 --seed 7
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import tempfile
import time
from pathlib import Path

from tests.conftest import FIXTURES, _pip_target
from tests.fleet.test_fleet_run import PAGE, SOURCES, TTL, Fleet, _assert_every_event_delivered, wait_for
from tests.helpers import write_config
from tests.postgres import Postgres


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--seed", type=int, default=int(time.time()))
    args = ap.parse_args()
    rng = random.Random(args.seed)
    top = Path(tempfile.mkdtemp(prefix="siem-forwarder-fleet-long-"))
    os.chmod(top, 0o755)
    pg = Postgres(top / "pg")
    pg.init()
    pg.start()
    (top / "run").mkdir()
    fleet = Fleet(top / "run", pg, str(_pip_target(FIXTURES / "testkit", top / "kit")))
    for source in fleet.config["sources"]:
        source["options"].update(count=3000, page_delay=0.02)
    write_config(fleet.config_path, fleet.config)
    disruptions = 0
    names = iter(f"i{n}" for n in range(1000))
    try:
        for _ in range(3):
            fleet.start(next(names))
        for r in range(args.rounds):
            time.sleep(rng.uniform(1, TTL))
            alive = [n for n, p in fleet.procs.items() if p.poll() is None]
            action = rng.choice(["kill", "pause", "join", "stop"]) if len(alive) > 1 else "join"
            victim = rng.choice(alive)
            print(f"round {r + 1}: {action} {'' if action == 'join' else victim}", flush=True)
            if action == "kill":
                os.kill(fleet.procs[victim].pid, signal.SIGKILL)
            elif action == "pause":
                os.kill(fleet.procs[victim].pid, signal.SIGSTOP)
                time.sleep(2 * TTL)
                os.kill(fleet.procs[victim].pid, signal.SIGCONT)
            elif action == "stop":
                fleet.procs[victim].send_signal(signal.SIGTERM)
            else:
                fleet.start(next(names))
            disruptions += 1
        if not any(p.poll() is None for p in fleet.procs.values()):
            fleet.start(next(names))

        def done() -> bool:
            cursors = fleet.cursors()
            return len(cursors) == SOURCES and all(n == 3000 for n in cursors.values())
        wait_for(done, 1800, "every source caught up", {})
        _assert_every_event_delivered(fleet, max_extra=PAGE * SOURCES * (disruptions + 1), count=3000)
        print(f"seed {args.seed}: {args.rounds} rounds, {disruptions} disruptions: every event delivered", flush=True)
    finally:
        fleet.stop_all()
        pg.stop("immediate")
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    main()
