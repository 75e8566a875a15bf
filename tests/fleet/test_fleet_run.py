"""Several ``siem-forwarder run`` processes on one config, sharing its sources through a real PostgreSQL.

Every instance writes what it delivered to a file of its own, and the ``counter`` sources log
each poll's start and end with the polling process's pid, so the tests can see who polled what,
and when. Events are ``counter-<seq>`` per source; a source is done when its cursor reached
``COUNT``.
"""
from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from forwarder_core.errors import StateError
from forwarder_core.storage.pg import Database
from tests.helpers import forwarder_env, write_config
from tests.postgres import Postgres
from tests.rsyslog import free_port

SOURCES = 12
COUNT = 300
PAGE = 20
TTL = 5


class Fleet:
    def __init__(self, tmp_path: Path, postgres: Postgres, testkit_path: str):
        self.tmp = tmp_path
        self.pg = postgres
        self.procs: dict[str, subprocess.Popen[str]] = {}
        self._ports: dict[str, int] = {}
        self.config_path = tmp_path / "fleet.yaml"
        self.poll_log = tmp_path / "polls.log"
        self.config: dict[str, Any] = {
            "state_dir": "${SF_STATE}",
            "plugin_paths": [testkit_path],
            "workers": 0,
            "shutdown_timeout": 5,
            "metrics": {"listen": "127.0.0.1:${SF_METRICS_PORT}"},
            "cluster": {"dsn": "${SF_DSN}", "instance": "${SF_INSTANCE}", "lease_ttl": TTL},
            "sources": [{"name": f"c{i:02d}", "type": "counter", "interval": 1,
                         "options": {"count": COUNT, "page_size": PAGE, "page_delay": 0.05,
                                     "poll_log": str(self.poll_log)}} for i in range(SOURCES)],
            "outputs": [{"name": "out", "type": "file", "options": {"path": "${SF_OUT}"}}],
        }
        write_config(self.config_path, self.config)

    def out(self, name: str) -> Path:
        return self.tmp / f"out-{name}.jsonl"

    def start(self, name: str, dsn: str | None = None, extra_env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        (self.tmp / f"state-{name}").mkdir(exist_ok=True)
        env = {"SF_INSTANCE": name, "SF_STATE": str(self.tmp / f"state-{name}"), "SF_OUT": str(self.out(name)),
               "SF_DSN": dsn or self.pg.dsn, "SF_METRICS_PORT": str(self.metrics_port(name)), **(extra_env or {})}
        with open(self.log(name), "a") as log:  # a file, not a pipe nobody reads while the test waits
            proc = subprocess.Popen([sys.executable, "-m", "forwarder_core", "run", "-c", str(self.config_path)],
                                    stdout=log, stderr=log, text=True, env=forwarder_env(env), stdin=subprocess.DEVNULL)
        self.procs[name] = proc
        return proc

    def metrics_port(self, name: str) -> int:
        if name not in self._ports:
            self._ports[name] = free_port()
        return self._ports[name]

    def get(self, name: str, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port(name)}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return 0, ""

    def log(self, name: str) -> Path:
        return self.tmp / f"log-{name}.txt"

    def delivered(self) -> dict[str, Counter[str]]:
        """source -> how often each event id was delivered, over every instance."""
        seen: dict[str, Counter[str]] = defaultdict(Counter)
        for name in self.procs:
            for event in _complete_lines(self.out(name)):
                seen[event["source"]["name"]][event["id"]] += 1
        return seen

    def cursors(self) -> dict[str, int]:
        db = Database(self.pg.dsn)
        try:
            rows = db.run(lambda cur: (cur.execute("SELECT source, cursor FROM sf_checkpoints"), cur.fetchall())[1])
        except StateError:
            return {}  # not created yet, or PostgreSQL restarting
        finally:
            db.close()
        import json
        return {r[0]: json.loads(r[1])["next"] for r in rows}

    def done(self) -> bool:
        cursors = self.cursors()
        return len(cursors) == SOURCES and all(n == COUNT for n in cursors.values())

    def held(self) -> dict[str, int]:
        db = Database(self.pg.dsn)
        try:
            rows = db.run(lambda cur: (cur.execute(
                "SELECT owner, count(*) FROM sf_leases WHERE owner IS NOT NULL AND expires > now() GROUP BY owner"),
                cur.fetchall())[1])
        except StateError:
            return {}
        finally:
            db.close()
        return {r[0]: int(r[1]) for r in rows}

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    os.kill(proc.pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _complete_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    data = path.read_bytes()
    whole = data[: data.rfind(b"\n") + 1]
    import json
    return [json.loads(line) for line in whole.decode().split("\n") if line.strip()]


def wait_for(what: Callable[[], bool], timeout: float, why: str, procs: dict[str, subprocess.Popen[str]]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if what():
            return
        dead = {n: p.returncode for n, p in procs.items() if p.poll() is not None and p.returncode not in (0, -9)}
        assert not dead, f"instances exited: {dead} (their logs are log-NAME.txt in the test's directory)"
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {why}")


@pytest.fixture
def fleet(tmp_path: Path, postgres: Postgres, testkit_path: str) -> Iterator[Fleet]:
    f = Fleet(tmp_path, postgres, testkit_path)
    try:
        yield f
    finally:
        f.stop_all()


def _assert_every_event_delivered(fleet: Fleet, max_extra: int, count: int = COUNT) -> None:
    seen = fleet.delivered()
    assert sorted(seen) == [f"c{i:02d}" for i in range(SOURCES)]
    for source, ids in seen.items():
        missing = {f"counter-{n}" for n in range(count)} - set(ids)
        assert not missing, f"{source}: {len(missing)} event(s) never delivered"
    extra = sum(n - 1 for ids in seen.values() for n in ids.values())
    assert extra <= max_extra, f"{extra} duplicate deliveries, more than {max_extra}"


def _polls_never_overlap(log: Path, exclude_pids: set[int] = frozenset()) -> None:  # type: ignore[assignment]
    """No two processes polled one source at the same time (from the sources' own poll log)."""
    spans: dict[str, list[tuple[float, float, int]]] = defaultdict(list)
    open_: dict[tuple[int, str], float] = {}
    for line in log.read_text().splitlines():
        pid, source, what, at = line.split()
        if int(pid) in exclude_pids:
            continue
        if what == "start":
            open_[(int(pid), source)] = float(at)
        elif (int(pid), source) in open_:
            spans[source].append((open_.pop((int(pid), source)), float(at), int(pid)))
    for source, items in spans.items():
        items.sort()
        for (_s1, e1, p1), (s2, _e2, p2) in itertools.pairwise(items):
            assert p1 == p2 or s2 >= e1, f"{source}: pid {p1} polled until {e1}, pid {p2} started at {s2}"


def test_three_instances_share_every_source_and_deliver_every_event_once(fleet: Fleet) -> None:
    for name in ("a", "b", "c"):
        fleet.start(name)
    wait_for(fleet.done, 180, "every source caught up", fleet.procs)
    wait_for(lambda: sorted(fleet.held().values()) == [4, 4, 4], 180, "fair shares of 4", fleet.procs)
    _assert_every_event_delivered(fleet, max_extra=PAGE * SOURCES)
    _polls_never_overlap(fleet.poll_log)
    db = Database(fleet.pg.dsn)
    try:
        ledger = db.run(lambda cur: (cur.execute(
            "SELECT source, term, sum(count) FROM sf_ledger GROUP BY source, term"), cur.fetchall())[1])
    finally:
        db.close()
    by_source: dict[str, dict[str, int]] = defaultdict(dict)
    for source, term, n in ledger:
        by_source[source][term] = int(n)
    for source, terms in by_source.items():
        assert terms.get("read") == COUNT, (source, terms)  # one commit per page: each event counted once


def test_a_killed_instance_s_sources_resume_on_the_others_from_their_committed_cursor(fleet: Fleet) -> None:
    for name in ("a", "b", "c"):
        fleet.start(name)
    wait_for(lambda: sum(len(c) for c in fleet.delivered().values()) > COUNT, 240, "a backfill under way",
             fleet.procs)
    os.kill(fleet.procs["b"].pid, signal.SIGKILL)
    fleet.procs["b"].wait()
    wait_for(fleet.done, 180, "every source caught up without b", fleet.procs)
    _assert_every_event_delivered(fleet, max_extra=PAGE * SOURCES)
    wait_for(lambda: sorted(fleet.held()) == ["a", "c"] and sorted(fleet.held().values()) == [6, 6], 180,
             "a and c holding 6 each", fleet.procs)


def test_a_paused_instance_is_fenced_off_and_loses_nothing(fleet: Fleet) -> None:
    fleet.start("a")
    wait_for(lambda: len(fleet.delivered()) >= SOURCES // 2, 240, "a backfill under way", fleet.procs)
    os.kill(fleet.procs["a"].pid, signal.SIGSTOP)
    fleet.start("b")
    time.sleep(2 * TTL)  # a's leases expire; b takes every source over
    wait_for(lambda: fleet.held().get("b") == SOURCES, 180, "b holding every source", fleet.procs)
    os.kill(fleet.procs["a"].pid, signal.SIGCONT)
    wait_for(fleet.done, 180, "every source caught up", fleet.procs)
    wait_for(lambda: sorted(fleet.held().values()) == [6, 6], 180, "a back with its share", fleet.procs)
    _assert_every_event_delivered(fleet, max_extra=PAGE * SOURCES * 2)
    cursors = fleet.cursors()
    assert all(n == COUNT for n in cursors.values())
    fleet.stop_all()
    assert "commit refused, the lease moved to another instance" in fleet.log("a").read_text()


def test_a_fourth_instance_joining_gets_its_share(fleet: Fleet) -> None:
    for name in ("a", "b", "c"):
        fleet.start(name)
    wait_for(lambda: sorted(fleet.held().values()) == [4, 4, 4], 240, "three shares of 4", fleet.procs)
    fleet.start("d")
    wait_for(lambda: sorted(fleet.held().values()) == [3, 3, 3, 3], 240, "four shares of 3", fleet.procs)
    wait_for(fleet.done, 180, "every source caught up", fleet.procs)
    _assert_every_event_delivered(fleet, max_extra=PAGE * SOURCES)
    _polls_never_overlap(fleet.poll_log)


def test_postgresql_restarting_mid_run_loses_nothing(fleet: Fleet) -> None:
    for name in ("a", "b"):
        fleet.start(name)
    wait_for(lambda: sum(len(c) for c in fleet.delivered().values()) > COUNT, 240, "a backfill under way",
             fleet.procs)
    fleet.pg.stop()
    time.sleep(2)
    fleet.pg.start()
    wait_for(fleet.done, 180, "every source caught up after the restart", fleet.procs)
    _assert_every_event_delivered(fleet, max_extra=PAGE * SOURCES * 2)


def test_an_instance_cut_off_from_postgresql_stops_polling_and_comes_back_by_itself(fleet: Fleet) -> None:
    with TcpProxy(fleet.pg.port) as proxy:
        fleet.start("a", dsn=fleet.pg.dsn.replace(f"port={fleet.pg.port}", f"port={proxy.port}"))
        fleet.start("b")
        wait_for(lambda: sorted(fleet.held().values()) == [6, 6], 240, "two shares of 6", fleet.procs)
        proxy.cut()
        wait_for(lambda: fleet.held() == {"b": SOURCES}, 180, "b holding every source", fleet.procs)
        wait_for(lambda: "PostgreSQL unreachable for longer than lease_ttl" in fleet.log("a").read_text(), 180,
                 "a dropping its sources", fleet.procs)
        status, said = fleet.get("a", "/health")
        assert status == 503 and "fleet: cannot reach PostgreSQL" in said
        assert 'siem_forwarder_fleet_connected{instance="a"} 0.0' in fleet.get("a", "/metrics")[1]
        assert 'siem_forwarder_fleet_leases_held{instance="a"} 0.0' in fleet.get("a", "/metrics")[1]
        proxy.restore()
        wait_for(lambda: sorted(fleet.held().values()) == [6, 6], 240, "a back with its share", fleet.procs)
        wait_for(fleet.done, 180, "every source caught up", fleet.procs)
    _assert_every_event_delivered(fleet, max_extra=PAGE * SOURCES * 2)


class TcpProxy:
    """A loopback TCP forwarder to PostgreSQL that can cut every connection and refuse new ones."""

    def __init__(self, target_port: int):
        import socket

        self.target = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open = True
        self.conns: list[Any] = []
        self._stop = False

    def __enter__(self) -> TcpProxy:
        import threading

        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop = True
        self.cut()
        self.listener.close()

    def _accept(self) -> None:
        import socket
        import threading

        self.listener.settimeout(0.5)
        while not self._stop:
            try:
                client, _ = self.listener.accept()
            except OSError:
                continue
            if not self.open:
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            except OSError:
                client.close()
                continue
            self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: Any, dst: Any) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.close()
                except OSError:
                    pass

    def cut(self) -> None:
        import socket

        self.open = False
        for sock in self.conns:
            try:
                sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            except OSError:
                pass
        self.conns = []

    def restore(self) -> None:
        self.open = True


def test_thirty_two_sources_over_three_instances_reach_elasticsearch_exactly_once_across_a_kill(
        tmp_path: Path, postgres: Postgres, testkit_path: str) -> None:
    """Elasticsearch holds every event once (its ``_id`` makes a resent page a no-op); HEC and the
    file hold every event, with at most one page again per source handed over."""
    from tests.reliability.harness import INDEX, ElasticSink, HecSink

    es, hec = ElasticSink(), HecSink()
    fleet = Fleet(tmp_path, postgres, testkit_path)
    count, sources = 200, 32
    for source in fleet.config["sources"]:
        source["options"].update(count=count, prefix_ids=True, page_delay=0.02)
    fleet.config["sources"] += [{**fleet.config["sources"][0], "name": f"c{i:02d}"} for i in range(SOURCES, sources)]
    fleet.config["outputs"] += [dict(es.output(), name="es"), dict(hec.output(), name="hec")]
    write_config(fleet.config_path, fleet.config)
    env = {**es.env(), **hec.env()}
    try:
        for name in ("a", "b", "c"):
            fleet.start(name, extra_env=env)
        wait_for(lambda: es.count() > count * 4, 240, "a backfill under way", fleet.procs)
        os.kill(fleet.procs["c"].pid, signal.SIGKILL)
        fleet.procs["c"].wait()

        def all_done() -> bool:
            cursors = fleet.cursors()
            return len(cursors) == sources and all(n == count for n in cursors.values())
        wait_for(all_done, 300, "every source caught up", fleet.procs)
        wanted = {f"c{i:02d}-counter-{n}" for i in range(sources) for n in range(count)}
        es_ids = [doc["event"]["id"] for doc in es.fake.documents(INDEX).values()]
        assert len(es_ids) == len(wanted) and set(es_ids) == wanted  # exactly once
        hec_ids = Counter(hec.ids())
        assert set(hec_ids) == wanted
        assert sum(hec_ids.values()) - len(wanted) <= PAGE * sources
    finally:
        fleet.stop_all()
        es.close()
        hec.close()
