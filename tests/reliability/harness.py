"""Breaking things on purpose: the real ``siem-forwarder run`` against a vendor fake and a SIEM.

One :class:`VendorProcess` (the Incydr fake in its own process, a backlog of a few thousand
events served a small page at a time) feeds one :class:`Sink` (a file, the Splunk HEC fake, the
Elasticsearch fake, or a real rsyslog over TCP). :func:`run_rounds` then, round after round,
starts the forwarder, waits until the sink holds a seeded random share of the backlog, maybe
takes the sink down (connection refused, 503, a refused token) and brings it back, and kills the
forwarder with SIGKILL a random few milliseconds later: while it polls, between a send and its
commit, or while SQLite writes the checkpoint. A last run catches up, and :class:`Outcome`
compares what the sink holds with what the vendor served.

Nothing here waits on wall-clock guesses about the forwarder: a round waits for the sink's own
count. The only deliberate sleeps are the outage itself and the random kill delay.
"""
from __future__ import annotations

import base64
import json
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import requests

from forwarder_core.plugin_api import content_id
from forwarder_core.storage.checkpoint import CheckpointStore
from tests.fakes.elastic import FakeElasticsearch
from tests.fakes.splunk_hec import DEFAULT_TOKEN, SplunkHecFake
from tests.helpers import REPO, start_forwarder

CLIENT_ID = "reliability-client"
CLIENT_SECRET = "reliability-secret-0001"
ES_KEY_ID, ES_KEY = "reliability", "es-key-0001"
INDEX = "logs-incydr.audit-reliability"


def wait_until(predicate: Any, timeout: float, what: str, proc: subprocess.Popen[str] | None = None,
               log: list[str] | None = None) -> None:
    """Poll ``predicate`` (every 20 ms) until true; fail with ``what`` and the forwarder's last log lines."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            tail = "".join(log[-30:]) if log is not None else (proc.stderr.read() if proc.stderr else "")
            raise AssertionError(f"the forwarder exited ({proc.returncode}) while waiting for {what}:\n{tail}")
        if time.monotonic() > deadline:
            tail = "".join(log[-30:]) if log is not None else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{tail}")
        time.sleep(0.02)


# --------------------------------------------------------------------------------------- vendor


class VendorProcess:
    """The Incydr fake in its own process; :meth:`served_ids` reads back, over its API, every event it holds."""

    def __init__(self, workdir: Path, *, events: int, seed: int, span: float = 3600.0, identical: int = 0):
        self.workdir = workdir
        self.identical = identical
        ready = workdir / "incydr.url"
        ready.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.fakes.incydr", "--events", str(events), "--seed", str(seed),
             "--span", str(span), "--port", "0", "--ready-file", str(ready),
             "--client-id", CLIENT_ID, "--client-secret", CLIENT_SECRET, "--identical", str(identical)],
            cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wait_until(ready.exists, 60, "the Incydr fake to listen")
        self.url = ready.read_text().strip()
        self.span = span
        self.start_time = (datetime.now(timezone.utc) - timedelta(seconds=span + 600)).strftime("%Y-%m-%dT%H:%M:%SZ")

    def source_config(self, page_size: int) -> dict[str, Any]:
        return {"name": "incydr", "type": "incydr", "interval": 1, "start_time": self.start_time,
                "options": {"base_url": self.url, "client_id": CLIENT_ID,
                            "client_secret": "${RELIABILITY_INCYDR_SECRET}",
                            "page_size": page_size, "settle_delay": 30, "timeout": 10}}

    def served_ids(self) -> set[str]:
        """The ids of every event the vendor holds, as the contract defines them: content hashes,
        ``<hash>-<n>`` for the n-th identical copy."""
        basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        token = requests.post(f"{self.url}/v1/oauth", headers={"Authorization": f"Basic {basic}"},
                              timeout=10).json()["access_token"]
        ids: set[str] = set()
        met: Counter[str] = Counter()
        page = 0
        while True:
            answer = requests.post(f"{self.url}/v1/audit/search-audit-log", timeout=30,
                                   headers={"Authorization": f"Bearer {token}"},
                                   json={"page": page, "pageSize": 10_000}).json()
            events = answer.get("events") or []
            for event in events:
                digest = content_id(event)
                met[digest] += 1
                ids.add(digest if met[digest] == 1 else f"{digest}-{met[digest]}")
            if len(events) < 10_000:
                return ids
            page += 1

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# --------------------------------------------------------------------------------------- sinks


class _Droppable:
    """Mixin for an in-process fake: go down as a crashed SIEM does (listener and open connections
    closed, so keep-alive connections see a reset), and come back on the same port with its data."""

    def start(self) -> Any:
        started = super().start()  # type: ignore[misc]
        # A client killed mid-request resets its connection: expected here, not worth a traceback.
        self._httpd.handle_error = lambda request, client_address: None  # type: ignore[attr-defined]
        return started

    def _dispatch(self, h: Any) -> None:
        conns: set[socket.socket] = self.__dict__.setdefault("_open_conns", set())
        conns.add(h.connection)
        super()._dispatch(h)  # type: ignore[misc]

    def go_down(self) -> None:
        self._down_port = self.port  # type: ignore[attr-defined]
        self.stop()  # type: ignore[attr-defined]
        for conn in list(self.__dict__.get("_open_conns", ())):
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.__dict__.get("_open_conns", set()).clear()

    def come_up(self) -> None:
        self._port = self._down_port  # the base class binds self._port
        for _ in range(100):
            try:
                self.start()  # type: ignore[attr-defined]
                return
            except OSError:  # the old listener's port not released yet
                time.sleep(0.05)
        raise RuntimeError("could not listen on the same port again")


class _Hec(_Droppable, SplunkHecFake):
    pass


class _Elastic(_Droppable, FakeElasticsearch):
    """Counts every ``create`` answered 409: a resend that the deterministic ``_id`` absorbed."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.conflicts = 0

    def _write_doc(self, op: str, name: str, doc_id: str | None, line: bytes, pipeline: str | None) -> dict[str, Any]:
        result = super()._write_doc(op, name, doc_id, line, pipeline)
        if result.get("status") == 409:
            self.conflicts += 1
        return result

    def recover(self) -> None:
        with self._lock:
            self._request_faults.clear()


class Sink:
    """A SIEM (or file) the forwarder writes to, how to read back what it holds, and its outages."""

    type_name = ""
    outages: tuple[str, ...] = ()
    """Outage kinds: "refused" (the SIEM stops; same port later), "503", "token" (credentials refused)."""
    down_only_when_idle = False
    """Take it down only while no forwarder runs (and what it sent has landed): see :class:`SyslogSink`."""

    def output(self) -> dict[str, Any]:
        raise NotImplementedError

    def ids(self) -> list[str]:
        """Every event id the sink holds, once per copy."""
        raise NotImplementedError

    def count(self) -> int:
        return len(self.ids())

    def down(self, kind: str) -> None:
        raise NotImplementedError

    def up(self, kind: str) -> None:
        raise NotImplementedError

    def extra(self) -> dict[str, Any]:
        return {}

    def settle(self) -> None:
        """Return once what was sent has landed (a receiver that writes asynchronously)."""

    def env(self) -> dict[str, str]:
        """Secrets the output's config names as ``${VAR}``."""
        return {}

    def close(self) -> None:
        pass


class FileSink(Sink):
    type_name = "file"

    def __init__(self, path: Path):
        self.path = path
        self.torn = 0

    def output(self) -> dict[str, Any]:
        return {"name": "out", "type": "file", "options": {"path": str(self.path)}}

    def ids(self) -> list[str]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        ids, torn = [], 0
        for line in data.split(b"\n")[:-1]:  # the last piece may still be being written
            try:
                ids.append(json.loads(line)["id"])
            except ValueError:
                torn += 1
        self.torn = torn
        return ids

    def extra(self) -> dict[str, Any]:
        self.ids()
        return {"torn_lines": self.torn}


class HecSink(Sink):
    type_name = "splunk_hec"
    outages = ("refused", "503", "token")

    def __init__(self) -> None:
        self.fake = _Hec(keep_events=False).start()
        self.url = self.fake.url  # it stays the same while the fake is down

    def output(self) -> dict[str, Any]:
        return {"name": "out", "type": "splunk_hec", "options": {"url": self.url, "token": "${RELIABILITY_HEC_TOKEN}",
                                                                  "timeout": 5}}

    def env(self) -> dict[str, str]:
        return {"RELIABILITY_HEC_TOKEN": DEFAULT_TOKEN}

    def ids(self) -> list[str]:
        with self.fake._cond:
            return list(self.fake.event_ids)

    def count(self) -> int:
        return self.fake.indexed_count

    def down(self, kind: str) -> None:
        if kind == "refused":
            self.fake.go_down()
        elif kind == "503":
            self.fake.busy(10**9)
        else:
            self.fake.tokens[DEFAULT_TOKEN].disabled = True

    def up(self, kind: str) -> None:
        if kind == "refused":
            self.fake.come_up()
        elif kind == "503":
            self.fake.busy(0)
        else:
            self.fake.tokens[DEFAULT_TOKEN].disabled = False

    def close(self) -> None:
        self.fake.stop()


class ElasticSink(Sink):
    type_name = "elastic_bulk"
    outages = ("refused", "503", "token")

    def __init__(self) -> None:
        self.fake = _Elastic()
        self.api_key = self.fake.add_api_key(ES_KEY_ID, ES_KEY)
        self.fake.start()
        self.url = self.fake.url

    def output(self) -> dict[str, Any]:
        return {"name": "out", "type": "elastic_bulk",
                "options": {"url": self.url, "index": INDEX, "api_key": "${RELIABILITY_ES_API_KEY}",
                                                          "timeout": 5}}

    def env(self) -> dict[str, str]:
        return {"RELIABILITY_ES_API_KEY": self.api_key}

    def ids(self) -> list[str]:
        return [doc["event"]["id"] for doc in self.fake.documents(INDEX).values()]

    def count(self) -> int:
        return self.fake.count(INDEX)

    def down(self, kind: str) -> None:
        if kind == "refused":
            self.fake.go_down()
        elif kind == "503":
            self.fake.reject_requests(10**9, status=503)
        else:  # the key was rotated in the cluster (with no key at all, the fake would run without security)
            self.fake.api_keys[ES_KEY_ID] = "rotated-" + ES_KEY

    def up(self, kind: str) -> None:
        if kind == "refused":
            self.fake.come_up()
        elif kind == "503":
            self.fake.recover()
        else:
            self.fake.api_keys[ES_KEY_ID] = ES_KEY

    def extra(self) -> dict[str, Any]:
        return {"resends_refused_as_409": self.fake.conflicts}

    def close(self) -> None:
        self.fake.stop()


_CEF_ID = re.compile(r"cs1=([0-9a-f]{64}(?:-[0-9]+)?)")


class SyslogSink(Sink):
    """A real rsyslog (see :mod:`tests.rsyslog`) receiving CEF over TCP; "down" stops rsyslogd.

    Syslog over TCP has no application acknowledgement: bytes a receiver had not yet read when
    it stopped are gone, and the sender cannot know (docs/outputs/syslog_cef.md, "What remains").
    That is the receiver's loss, not the forwarder's, so rsyslog is stopped only between a kill
    and the next start, once what was sent has landed; the forwarder then starts against a
    refused port, backs off, and must catch up when rsyslog returns.
    """

    type_name = "syslog_cef"
    outages = ("refused",)
    down_only_when_idle = True

    def __init__(self, receiver: Any):
        self.receiver = receiver

    def output(self) -> dict[str, Any]:
        return {"name": "out", "type": "syslog_cef",
                "options": {"host": "127.0.0.1", "port": self.receiver.tcp_port, "protocol": "tcp"}}

    def ids(self) -> list[str]:
        return [m.group(1) for line in self.receiver.lines() if (m := _CEF_ID.search(line))]

    def settle(self) -> None:
        settled_at, held = time.monotonic(), self.count()
        while time.monotonic() - settled_at < 0.3:  # rsyslog writes its file asynchronously
            time.sleep(0.02)
            if (now := self.count()) != held:
                settled_at, held = time.monotonic(), now

    def down(self, kind: str) -> None:
        self.settle()
        self.receiver.stop()

    def up(self, kind: str) -> None:
        self.receiver.start()

    def close(self) -> None:
        self.receiver.stop()


# --------------------------------------------------------------------------------------- rounds


@dataclass
class Outcome:
    """What one output type went through and what it holds at the end."""

    output_type: str
    rounds: int
    page_size: int
    expected: int
    buffer: str = "memory"
    workers: int | None = None
    """The ``workers:`` setting the daemon ran with (None: left to its default)."""
    kills: int = 0
    outages: Counter[str] = field(default_factory=Counter)
    received: int = 0
    distinct: int = 0
    missing: int = 0
    unexpected: int = 0
    duplicates: int = 0
    max_copies: int = 0
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    log: list[str] = field(default_factory=list, repr=False)

    resending_outages: int = 0
    """Outages that cut a connection mid-request (a page may have landed without its answer)."""
    worst_round: int = 0
    """The most duplicates one round (one kill, and the outage in it) added."""
    rounds_over_bound: int = 0
    """Rounds that added more duplicates than one page per disruption in them."""
    ledger: str = ""
    """The source's ledger since the state dir was created, as ``state`` prints it."""
    ledger_balanced: bool = False
    """The ledger balances, and no run logged an unbalanced page."""

    @property
    def disruptions(self) -> int:
        """Events after which one page may be sent twice: kills, and a SIEM dropping connections mid-request."""
        return self.kills + self.resending_outages

    @property
    def duplicate_bound(self) -> int:
        if self.output_type == "elastic_bulk":
            return 0
        return self.page_size * self.disruptions

    @property
    def ok(self) -> bool:
        return (self.missing == 0 and self.unexpected == 0 and self.duplicates <= self.duplicate_bound
                and self.rounds_over_bound == 0 and self.ledger_balanced)

    def row(self) -> str:
        outages = ", ".join(f"{n} {k}" for k, n in sorted(self.outages.items())) or "none"
        extra = "".join(f", {k} {v}" for k, v in self.extra.items())
        name = self.output_type + (f" ({self.buffer} buffer)" if self.buffer != "memory" else "")
        name += f" (workers {self.workers})" if self.workers is not None else ""
        return (f"{name:<12} rounds {self.rounds:>3}  kills {self.kills:>3}  outages [{outages}]  "
                f"events {self.expected:>6}  received {self.received:>6}  missing {self.missing}  "
                f"duplicates {self.duplicates} (bound {self.duplicate_bound}, max copies {self.max_copies}, "
                f"worst round {self.worst_round}, rounds over the bound {self.rounds_over_bound})"
                f"{extra}  {self.seconds:.0f}s\n    ledger: {self.ledger}")


def _config(workdir: Path, vendor: VendorProcess, sink: Sink, page_size: int, max_backoff: float,
            buffer: str, workers: int | None) -> dict[str, Any]:
    config = {"state_dir": str(workdir / "state"), "delivery": {"max_backoff": max_backoff},
              "sources": [vendor.source_config(page_size)], "outputs": [{**sink.output(), "buffer": buffer}]}
    if workers is not None:
        config["workers"] = workers
    return config


def _kill(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    if proc.stdout is not None:
        proc.stdout.close()  # stderr belongs to its pump, which ends at EOF and closes it


def _drain_stderr(proc: subprocess.Popen[str], into: list[str]) -> threading.Thread:
    """Read the forwarder's stderr as it comes, so a chatty log never blocks it on a full pipe."""
    def pump() -> None:
        assert proc.stderr is not None
        with proc.stderr:
            for line in proc.stderr:
                into.append(line)
    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return thread


def run_rounds(workdir: Path, vendor: VendorProcess, sink: Sink, *, rounds: int, seed: int, page_size: int,
               outage_chance: float = 0.5, max_backoff: float = 1.0, catch_up_timeout: float = 180.0,
               buffer: str = "memory", workers: int | None = None) -> Outcome:
    """Kill and restart the forwarder ``rounds`` times at seeded random points, with outages; return the tally."""
    rng = random.Random(f"{seed}-{sink.type_name}")
    started = time.monotonic()
    expected = vendor.served_ids()
    outcome = Outcome(sink.type_name, rounds, page_size, len(expected), buffer=buffer, workers=workers)
    config = _config(workdir, vendor, sink, page_size, max_backoff, buffer, workers)
    logs: list[str] = []
    env = {"RELIABILITY_INCYDR_SECRET": CLIENT_SECRET, **sink.env()}
    duplicates_so_far = 0
    for number in range(rounds):
        disruptions_before = outcome.disruptions
        # Crash points spread over the backlog: round i dies somewhere in the i-th slice of it.
        target = int(len(expected) * (number + rng.random()) / (rounds + 1))
        kind = rng.choice(sink.outages) if sink.outages and rng.random() < outage_chance else None
        crash_in_outage = kind is not None and rng.random() < 0.3
        if kind is not None and sink.down_only_when_idle:
            sink.down(kind)
            outcome.outages[kind] += 1
        mark = len(logs)
        proc = start_forwarder(workdir, dict(config), env=env)
        pump = _drain_stderr(proc, logs)
        try:
            if kind is not None and sink.down_only_when_idle:
                time.sleep(rng.uniform(0.5, 2.0))  # the forwarder starts against a receiver that is down
                sink.up(kind)
                kind = None
            # Each kill lands mid-stream: after this process delivered something (unless nothing is left).
            floor = sink.count()
            if floor < len(expected):
                target = max(target, floor + 1)
                wait_until(lambda: sink.count() >= target, catch_up_timeout,
                           f"{sink.type_name} to hold {target} events (round {number + 1})", proc, logs)
            else:
                wait_until(lambda: any("siem-forwarder running" in line for line in logs[mark:]), 60,
                           "the daemon to start", proc, logs)
            if kind is not None:
                sink.down(kind)
                outcome.outages[kind] += 1
                outcome.resending_outages += kind == "refused"
                time.sleep(rng.uniform(0.5, 2.0))  # the outage itself: a span of time, not an event to await
                if not crash_in_outage:
                    sink.up(kind)
                    before = sink.count()
                    wait_until(lambda: sink.count() > before or expected <= set(sink.ids()), catch_up_timeout,
                               f"{sink.type_name} to receive again after a {kind} outage "
                               f"(it held {before} events, {len(expected - set(sink.ids()))} missing)", proc)
            time.sleep(rng.uniform(0.0, 0.15))  # the kill lands anywhere: mid-poll, mid-send, mid-commit
            _kill(proc)
            outcome.kills += 1
            if crash_in_outage:
                sink.up(kind)  # type: ignore[arg-type]
        finally:
            if proc.poll() is None:
                _kill(proc)
            pump.join(5)
        sink.settle()
        ids = sink.ids()
        added = len(ids) - len(set(ids)) - duplicates_so_far
        duplicates_so_far += added
        outcome.worst_round = max(outcome.worst_round, added)
        if sink.type_name != "elastic_bulk" and added > page_size * (outcome.disruptions - disruptions_before):
            outcome.rounds_over_bound += 1
    proc = start_forwarder(workdir, dict(config), env=env)
    pump = _drain_stderr(proc, logs)
    try:
        # SIGTERM is the clean stop only once the daemon has installed its handlers.
        mark = len(logs)
        wait_until(lambda: any("siem-forwarder running" in line for line in logs[mark:]), 60,
                   "the daemon to start", proc)
        wait_until(lambda: expected <= set(sink.ids()), catch_up_timeout, f"{sink.type_name} to hold every event "
                   "after the last restart", proc)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        pump.join(5)
        if code != 0:
            raise AssertionError(f"the forwarder exited {code} on SIGTERM:\n{''.join(logs[-30:])}")
    finally:
        if proc.poll() is None:
            _kill(proc)
    ids = sink.ids()
    copies = Counter(ids)
    outcome.received = len(ids)
    outcome.distinct = len(copies)
    outcome.missing = len(expected - copies.keys())
    outcome.unexpected = len(copies.keys() - expected)
    outcome.duplicates = len(ids) - len(copies)
    outcome.max_copies = max(copies.values(), default=0)
    outcome.extra = sink.extra()
    store = CheckpointStore(str(workdir / "state"))
    try:
        ledger = store.ledger(config["sources"][0]["name"])
    finally:
        store.close()
    outcome.ledger = ledger.line()
    # Every kill costs at most the pages it cut short, which are read again: the committed ones
    # account for every event the vendor served, at least once.
    outcome.ledger_balanced = (ledger.balanced and ledger.read >= len(expected)
                               and not any("ledger does not balance" in line for line in logs))
    outcome.seconds = time.monotonic() - started
    outcome.log = logs
    return outcome
