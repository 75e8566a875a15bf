"""Thirty sources of every vendor fake, shared by three ``run`` instances, one of them killed mid-backfill.

Six sources of each built-in type (Asana, Incydr, Agilicus audits and auth audits, Pangea with a
tampered event) read the demo's vendor fakes into Elasticsearch and Splunk HEC. Sources of one
type read the same tenant, so Elasticsearch, whose ``_id`` is the source type and the event id,
must hold each vendor event exactly once however often it was sent; HEC holds each source's
events, at most a page again per hand-over; every source's ledger balances.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from forwarder_core.errors import StateError
from forwarder_core.storage.pg import Database
from tests.fakes.elastic import FakeElasticsearch
from tests.fakes.splunk_hec import DEFAULT_TOKEN, SplunkHecFake
from tests.helpers import REPO, forwarder_env, write_config
from tests.postgres import Postgres

sys.path.insert(0, str(REPO / "scripts"))
import demo

EVENTS = 300
COPIES = 6
INDEX = "logs-fleet-vendors"
ES_KEY_ID, ES_KEY = "fleet", "fleet-es-key-0001"


def _query(pg: Postgres, sql: str) -> list[Any]:
    db = Database(pg.dsn)
    try:
        return db.run(lambda cur: (cur.execute(sql), cur.fetchall())[1])
    except StateError:
        return []
    finally:
        db.close()


def test_thirty_vendor_sources_over_three_instances_deliver_every_event_across_a_kill(
        tmp_path: Path, postgres: Postgres) -> None:
    (tmp_path / "fakes").mkdir()
    urls, fakes = demo.start_fakes(tmp_path / "fakes", EVENTS)
    es = FakeElasticsearch()
    api_key = es.add_api_key(ES_KEY_ID, ES_KEY)
    es.start()
    hec = SplunkHecFake().start()
    procs: dict[str, subprocess.Popen[str]] = {}
    try:
        base = demo.config(tmp_path / "fakes", urls)
        sources = [dict(s, name=f"{s['name']}-{n}") for s in base["sources"] for n in range(COPIES)]
        config = {
            "state_dir": "${SF_STATE}", "workers": 0, "shutdown_timeout": 5,
            "cluster": {"dsn": postgres.dsn, "instance": "${SF_INSTANCE}", "lease_ttl": 5},
            "sources": [dict(s, interval=1) for s in sources],
            "outputs": [
                {"name": "es", "type": "elastic_bulk",
                 "options": {"url": es.url, "index": INDEX, "api_key": "${FLEET_ES_KEY}", "timeout": 5}},
                {"name": "hec", "type": "splunk_hec",
                 "options": {"url": hec.url, "token": "${FLEET_HEC_TOKEN}", "timeout": 5}},
            ],
        }
        path = write_config(tmp_path / "fleet.yaml", config)
        env = {**demo.CREDENTIALS, "FLEET_ES_KEY": api_key, "FLEET_HEC_TOKEN": DEFAULT_TOKEN}
        for name in ("a", "b", "c"):
            (tmp_path / name).mkdir()
            with open(tmp_path / f"log-{name}.txt", "w") as log:
                procs[name] = subprocess.Popen(
                    [sys.executable, "-m", "forwarder_core", "run", "-c", str(path)], stdout=log, stderr=log,
                    text=True, stdin=subprocess.DEVNULL,
                    env=forwarder_env({**env, "SF_INSTANCE": name, "SF_STATE": str(tmp_path / name)}))
        deadline = time.monotonic() + 120
        while es.count(INDEX) < EVENTS and time.monotonic() < deadline:
            time.sleep(0.2)
        os.kill(procs["c"].pid, signal.SIGKILL)
        procs["c"].wait()

        def caught_up() -> bool:
            rows = _query(postgres, "SELECT source FROM sf_polls WHERE ok AND outcome LIKE 'caught up%'")
            return len(rows) == len(sources)
        deadline = time.monotonic() + 300
        while not caught_up():
            assert time.monotonic() < deadline, "not every source caught up: see log-a.txt, log-b.txt"
            assert procs["a"].poll() is None and procs["b"].poll() is None
            time.sleep(0.5)
        time.sleep(1)

        ledgers: dict[str, dict[str, int]] = {}
        for source, term, n in _query(postgres, "SELECT source, term, sum(count) FROM sf_ledger GROUP BY source, term"):
            ledgers.setdefault(source, {})[term] = int(n)
        assert sorted(ledgers) == sorted(s["name"] for s in sources)
        for source, terms in ledgers.items():
            delivered = terms.get("delivered", 0) // 2  # each event counted once per output (es, hec)
            handled = (delivered + terms.get("quarantined", 0) + terms.get("dead_lettered", 0) // 2
                       + terms.get("filtered", 0) + terms.get("already_delivered", 0) + terms.get("held_back", 0))
            assert terms.get("read") == handled, (source, terms)

        # Elasticsearch: every vendor event once, whichever source and instance sent it, however often
        docs = es.documents(INDEX).values()
        by_type = Counter(doc["event"]["dataset"] for doc in docs)
        ids = [(doc["event"]["dataset"], doc["event"]["id"]) for doc in docs]
        assert len(ids) == len(set(ids))
        assert len(by_type) == 5 and all(n >= EVENTS - 5 for n in by_type.values()), by_type  # pangea: tampered set aside
        # HEC: every source's events (a source's copy of its vendor's tenant), at most a page again
        # for each source the killed instance was sending
        with hec._cond:
            sent = Counter((e["fields"]["forwarder_source"], e["fields"]["event_id"]) for e in hec.events)
        for source in (s["name"] for s in sources):
            mine = {key: n for key, n in sent.items() if key[0] == source}
            delivered = ledgers[source].get("delivered", 0) // 2
            assert len(mine) == delivered, (source, len(mine), delivered)
        assert sum(sent.values()) - len(sent) <= 100 * len(sources)  # at most a page (<= 100 events) per source
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        es.stop()
        hec.stop()
        for p in fakes:
            p.terminate()
        for p in fakes:
            p.wait(10)
