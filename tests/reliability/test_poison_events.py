"""No poison event: whatever value the JSON parser accepts is delivered or set aside, never a failed poll.

A vendor (:mod:`tests.fakes.hostile_data`) serves events holding lone surrogates, NUL and control
characters, ``1e400``, ``2**70``, nesting near the decoder's limit, through every built-in output
at once (file, Splunk HEC, Elasticsearch ``_bulk``, syslog CEF over TCP). Each event must end
delivered or in the quarantine / a dead-letter file with a reason; the poll must succeed, its
cursor move, and a second run send nothing again.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from forwarder_core.storage.checkpoint import CheckpointStore
from forwarder_core.storage.ledger import STRICT_ENV
from forwarder_core.testing import load_with_memory
from tests.fakes.elastic import FakeElasticsearch
from tests.fakes.hostile_data import POISON, HostilePlugin, HostileVendor, event_text, good_text
from tests.fakes.splunk_hec import DEFAULT_TOKEN, SplunkHecFake
from tests.fakes.syslog_receiver import SyslogReceiver

ES_KEY_ID, ES_KEY = "poison", "poison-key-0001"
INDEX = "logs-poison-default"


@dataclass
class Sinks:
    hec: SplunkHecFake
    es: FakeElasticsearch
    syslog: SyslogReceiver
    syslog_path: Path
    file: Path
    es_api_key: str

    def outputs(self) -> list[dict[str, Any]]:
        host, port = self.syslog.server_address[:2]
        return [
            {"name": "file", "type": "file", "options": {"path": str(self.file)}},
            {"name": "hec", "type": "splunk_hec", "options": {"url": self.hec.url, "token": DEFAULT_TOKEN,
                                                              "ack_poll_interval": 0.05}},
            {"name": "es", "type": "elastic_bulk", "options": {"url": self.es.url, "index": INDEX,
                                                               "api_key": self.es_api_key}},
            {"name": "cef", "type": "syslog_cef", "options": {"host": host, "port": port, "protocol": "tcp",
                                                              "framing": "newline"}},
        ]

    def syslog_lines(self) -> list[bytes]:
        self.syslog.out.flush()
        return [line for line in self.syslog_path.read_bytes().split(b"\n") if line]


@pytest.fixture
def sinks(tmp_path: Path) -> Iterator[Sinks]:
    import threading

    hec = SplunkHecFake().start()
    es = FakeElasticsearch().start()
    api_key = es.add_api_key(ES_KEY_ID, ES_KEY)
    syslog_path = tmp_path / "syslog.log"
    receiver = SyslogReceiver(str(syslog_path))
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    yield Sinks(hec, es, receiver, syslog_path, tmp_path / "out.jsonl", api_key)  # type: ignore[arg-type]
    receiver.shutdown()
    receiver.server_close()
    hec.stop()
    es.stop()


@dataclass
class Run:
    results: list[Any]
    metrics: Any
    state: Path

    @property
    def result(self) -> Any:
        (only,) = self.results
        return only

    def set_aside(self, kind: str) -> list[dict[str, Any]]:
        """The records of ``quarantine`` or ``dead-letter``, read as strict JSON lines."""
        folder = self.state / kind
        records = []
        for path in sorted(folder.glob("*.jsonl")) if folder.is_dir() else []:
            for line in path.read_bytes().split(b"\n"):
                if line:
                    records.append(json.loads(line.decode("utf-8")))  # strict UTF-8: never a lone surrogate
        return records


def passed(result: Any) -> int:
    """Events the prepare step handed to the outputs (read, less what was quarantined, filtered or
    already delivered): each output then delivered or dead-lettered every one of them.
    ``result.delivered`` is what every output accepted, so one output's dead letter lowers it."""
    return (result.polled - result.quarantined - result.filtered - result.ledger.already_delivered
            - result.ledger.held_back)



def run_once(tmp_path: Path, source: dict[str, Any], outputs: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch,
             **settings: Any) -> Run:
    """``siem-forwarder once`` in-process with several outputs and the strict ledger."""
    from forwarder_core.config.loader import load_config
    from forwarder_core.engine.app import build_app, run_sources_once

    monkeypatch.setenv(STRICT_ENV, "1")
    document = {"state_dir": str(tmp_path / "state"), "sources": [source], "outputs": outputs,
                "delivery": {"once_give_up_after": 3}, **settings}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    config, plugin_set = load_config(str(path), lambda paths: load_with_memory(paths, [HostilePlugin()]))
    app = build_app(config, plugin_set)
    try:
        results = run_sources_once(app, give_up_after=3)
    finally:
        app.close()
    return Run(results, app.metrics, Path(config.state_dir))


def follow(vendor: HostileVendor, name: str = "hostile") -> dict[str, Any]:
    return {"name": name, "type": "hostile_follow", "start_time": "2026-11-01T00:00:00Z",
            "options": {"base_url": vendor.url}}


# ---------------------------------------------------------------------------------------- finding 1


def test_a_lone_surrogate_is_delivered_by_every_output_and_never_sent_twice(
        tmp_path: Path, sinks: Sinks, monkeypatch: pytest.MonkeyPatch) -> None:
    """The issue's case: ``"name": "\\ud800"`` beside a good event, file + HEC + bulk + syslog."""
    texts = [good_text(0), event_text(1, POISON["surrogate"], name="surrogate"), good_text(2)]
    with HostileVendor("events", texts, page_size=3) as vendor:
        first = run_once(tmp_path, follow(vendor), sinks.outputs(), monkeypatch)
        second = run_once(tmp_path, follow(vendor), sinks.outputs(), monkeypatch)

    assert first.result.ok and first.result.done, first.result.error
    assert passed(first.result) == 3 and first.result.quarantined == 0
    assert second.result.ok and second.result.delivered == 0  # the cursor moved: nothing again
    assert CheckpointStore(str(first.state)).get("hostile").cursor == "3"
    assert first.set_aside("dead-letter") == [] and first.set_aside("quarantine") == []

    # file: strict UTF-8 JSON lines, the lone surrogate as U+FFFD
    lines = sinks.file.read_bytes().split(b"\n")[:-1]
    events = [json.loads(line.decode("utf-8")) for line in lines]
    assert [e["id"] for e in events] == ["good-0", "surrogate-1", "good-2"]
    assert events[1]["raw"]["payload"] == "\ufffd"
    # HEC and bulk: JSON bodies, the lone surrogate escaped, so the receiver reads it back exactly
    assert sorted(sinks.hec.event_ids) == ["good-0", "good-2", "surrogate-1"]
    (poisoned,) = [e for e in sinks.hec.events if e["fields"]["event_id"] == "surrogate-1"]
    assert poisoned["event"]["payload"] == "\ud800"
    docs = sinks.es.documents(INDEX)
    assert len(docs) == 3
    (doc,) = [d for d in docs.values() if d["event"]["id"] == "surrogate-1"]
    assert json.loads(doc["event"]["original"])["payload"] == "\ud800"
    # syslog CEF: text, U+FFFD; one message per event over both runs
    messages = sinks.syslog_lines()
    assert len(messages) == 3
    assert all(m.decode("utf-8") for m in messages)


@pytest.mark.parametrize("kind", sorted(POISON))
def test_every_hostile_value_is_delivered_or_set_aside_with_its_reason(
        tmp_path: Path, sinks: Sinks, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    texts = [good_text(0), event_text(1, POISON[kind], name=kind), good_text(2)]
    with HostileVendor("events", texts, page_size=2) as vendor:
        first = run_once(tmp_path, follow(vendor), sinks.outputs(), monkeypatch)
        second = run_once(tmp_path, follow(vendor), sinks.outputs(), monkeypatch)

    result = first.result
    assert result.ok and result.done, result.error
    assert second.result.ok and second.result.delivered == 0
    assert CheckpointStore(str(first.state)).get("hostile").cursor == "3"
    quarantined = first.set_aside("quarantine")
    dead = first.set_aside("dead-letter")
    assert passed(result) + result.quarantined == 3
    assert all(r["reason"] for r in quarantined + dead)
    assert {r["id"] for r in quarantined} <= {f"{kind}-1"}
    assert {r["id"] for r in dead} <= {f"{kind}-1"}
    if passed(result) == 3:
        # each output delivered the event, or set it aside with a reason: never both, never neither
        file_ids = [json.loads(line)["id"] for line in sinks.file.read_bytes().split(b"\n")[:-1]]
        by_output = {"file": file_ids, "hec": sinks.hec.event_ids,
                     "es": [d["event"]["id"] for d in sinks.es.documents(INDEX).values()],
                     "cef": [m for m in sinks.syslog_lines() if f"{kind}-1".encode() in m]}
        for output, got in by_output.items():
            refused = [r for r in dead if r.get("output") == output]
            count = len(got) if output == "cef" else got.count(f"{kind}-1")
            assert count + len(refused) == 1, (output, got, refused)
            assert output == "cef" or sorted(set(got) - {f"{kind}-1"}) == ["good-0", "good-2"]


def test_an_event_id_holding_a_lone_surrogate_is_delivered_everywhere(
        tmp_path: Path, sinks: Sinks, monkeypatch: pytest.MonkeyPatch) -> None:
    """The id itself is vendor data: ``"id": "\\ud800-1"``. Bulk's ``_id`` hash, HEC's fields, the
    file's line and CEF's externalId all take it."""
    texts = [good_text(0), event_text(1, "1", name="\\ud800")]
    with HostileVendor("events", texts, page_size=2) as vendor:
        run = run_once(tmp_path, follow(vendor), sinks.outputs(), monkeypatch)
    assert run.result.ok and run.result.delivered == 2, run.result.error
    assert run.set_aside("dead-letter") == [] and run.set_aside("quarantine") == []
    assert sorted(sinks.hec.event_ids) == ["good-0", "\ud800-1"]
    assert sorted(d["event"]["id"] for d in sinks.es.documents(INDEX).values()) == ["good-0", "\ud800-1"]
    assert [json.loads(line)["id"] for line in sinks.file.read_bytes().split(b"\n") if line] == ["good-0", "\ufffd-1"]
    assert len(sinks.syslog_lines()) == 2


def test_the_builtin_incydr_source_validates_hashes_and_delivers_poison_events(
        tmp_path: Path, sinks: Sinks, monkeypatch: pytest.MonkeyPatch) -> None:
    """Incydr events have no id: theirs is the digest of their canonical JSON, so a lone surrogate
    reaches content_id, the raw schema and every output's encoder. Each event is delivered or set
    aside; the same ids come out twice running (stable digests), and nothing is sent again."""
    from datetime import datetime, timedelta, timezone

    from forwarder_core.plugin_api import content_id
    from tests.fakes.incydr import IncydrFake

    with IncydrFake(events=2, start=datetime.now(timezone.utc) - timedelta(hours=2), span=600) as fake:
        at = fake.begin + timedelta(minutes=5)
        deep: Any = "bottom"
        for _ in range(300):
            deep = [deep]
        poison = [fake.make_event(at, actorName="\ud800"),
                  fake.make_event(at + timedelta(seconds=1), actorName="a\x00b\x1b", requestJson={"\udc80": 2**70}),
                  fake.make_event(at + timedelta(seconds=2), requestJson={"n": float("inf")}),
                  fake.make_event(at + timedelta(seconds=3), requestJson=deep)]
        fake.add_events(poison)
        source = {"name": "incydr", "type": "incydr", "start_time": (at - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                  "options": {"base_url": fake.url, "client_id": "key-1", "client_secret": "secret-1", "page_size": 2,
                              "settle_delay": 0}}
        first = run_once(tmp_path, source, sinks.outputs(), monkeypatch)
        second = run_once(tmp_path, source, sinks.outputs(), monkeypatch)
        served = fake.events()

    assert first.result.ok and first.result.done, first.result.error
    assert second.result.ok and second.result.delivered == 0
    # the infinity has no canonical JSON, so no id: quarantined (each time a poll reads it)
    held = first.set_aside("quarantine")
    assert held and all(r["raw"] == json.loads(json.dumps(poison[2])) and r["reason"] for r in held)
    hashable = [e for e in served if e is not poison[2] and e.get("requestJson") != {"n": float("inf")}]
    assert len(hashable) == 5 and passed(first.result) == 5
    assert content_id(poison[0]) == content_id(json.loads(json.dumps(poison[0])))  # stable over a round trip
    delivered = {content_id(e) for e in hashable}
    assert content_id(poison[0]) in delivered
    assert set(sinks.hec.event_ids) | {r["id"] for r in first.set_aside("dead-letter") if r["output"] == "hec"} == delivered
    assert len(sinks.hec.event_ids) == len(set(sinks.hec.event_ids))
