"""``siem-forwarder quarantine list|replay`` through the real process.

Dead letters come from a real refusal (the Elasticsearch fake refuses "poisoned" documents with
an item 400, as a mapping conflict does) and go back once the mapping is fixed. Quarantined
events come from a real schema failure; replay re-normalizes and re-validates them, so what is
still broken stays, with its reason, and what now passes is delivered and leaves the file.
"""
from __future__ import annotations

import io
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from forwarder_core import hookimpl
from forwarder_core.commands.replay import replay_command
from forwarder_core.config.loader import load_config
from forwarder_core.storage.setaside import QUARANTINE, SetAside
from forwarder_core.testing import load_with_memory
from tests.fakes.elastic import FakeElasticsearch
from tests.helpers import read_jsonl, run_forwarder, start_forwarder

STREAM = "logs-counter.audit-default"


@pytest.fixture
def es() -> Iterator[FakeElasticsearch]:
    with FakeElasticsearch() as fake:
        yield fake  # type: ignore[misc]


def _es_config(counter_config: Any, es: FakeElasticsearch, **source: Any) -> dict[str, Any]:
    cfg = counter_config(**{"count": 30, "page_size": 10, **source})
    cfg["delivery"] = {"once_give_up_after": 3, "max_backoff": 0.5}
    cfg["outputs"] = [{"name": "elastic", "type": "elastic_bulk",
                       "options": {"url": es.url, "index": "logs-{vendor}.audit-default"}}]
    return cfg


def _quarantine(tmp_path: Path, *args: str) -> Any:
    return run_forwarder(tmp_path, None, "quarantine", *args, config_path=tmp_path / "config.yaml")


def test_dead_letters_are_listed_then_replayed_to_their_output_once_fixed(
        tmp_path: Path, counter_config: Any, es: FakeElasticsearch) -> None:
    es.poison(b'"seq":12,')
    es.poison(b'"seq":17,')
    es.poison(b'"seq":25,')
    cfg = _es_config(counter_config, es)
    assert run_forwarder(tmp_path, cfg).returncode == 0
    assert es.count(STREAM) == 27
    letters = Path(cfg["state_dir"]) / "dead-letter" / "elastic.jsonl"

    listed = _quarantine(tmp_path, "list")
    assert listed.returncode == 0, listed.stderr
    assert "dead-letter/elastic.jsonl: output elastic: 3 record(s) from counter (3)" in listed.stdout
    assert "      3  " in listed.stdout and "document_parsing_exception" in listed.stdout

    es._poison.remove(b'"seq":12,')  # the mapping is fixed for two of the three
    es._poison.remove(b'"seq":25,')
    partly = _quarantine(tmp_path, "replay", "--dead-letter")
    assert partly.returncode == 1, partly.stdout + partly.stderr
    assert "2 event(s) delivered and removed, 1 kept" in partly.stdout
    assert es.count(STREAM) == 29
    (left,) = read_jsonl(letters)
    assert left["id"] == "counter-17" and "document_parsing_exception" in left["reason"]
    assert stat.S_IMODE(os.stat(letters).st_mode) == 0o600
    assert not [p for p in letters.parent.iterdir() if p.name.endswith(".tmp")]

    es._poison.clear()
    done = _quarantine(tmp_path, "replay", "--dead-letter", "--output", "elastic")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "replayed 1 event(s); 0 still set aside" in done.stdout
    assert es.count(STREAM) == 30
    assert not letters.exists()
    assert "nothing set aside" in _quarantine(tmp_path, "list").stdout


def test_dead_letter_without_replay_lists_the_dead_letters_only(
        tmp_path: Path, counter_config: Any, es: FakeElasticsearch) -> None:
    es.poison(b'"seq":12,')
    cfg = _es_config(counter_config, es, invalid_every=5)
    assert run_forwarder(tmp_path, cfg).returncode == 0
    both = _quarantine(tmp_path)
    assert "quarantine/counter.jsonl: source counter" in both.stdout and "dead-letter/elastic.jsonl" in both.stdout
    for args in (["--dead-letter"], ["list", "--dead-letter"]):
        listed = _quarantine(tmp_path, *args)
        assert listed.returncode == 0, listed.stderr
        assert "dead-letter/elastic.jsonl: output elastic: 1 record(s) from counter (1)" in listed.stdout, args
        assert "quarantine/counter.jsonl" not in listed.stdout, (args, listed.stdout)


def test_replay_keeps_what_still_fails_validation_with_its_reason(tmp_path: Path, counter_config: Any) -> None:
    cfg = counter_config(count=20, page_size=10, invalid_every=5)
    assert run_forwarder(tmp_path, cfg).returncode == 0
    out = tmp_path / "out.jsonl"
    held = Path(cfg["state_dir"]) / "quarantine" / "counter.jsonl"
    before = held.read_bytes()
    assert len(read_jsonl(held)) == 4 and len(read_jsonl(out)) == 16

    listed = _quarantine(tmp_path, "list", "--source", "counter")
    assert "quarantine/counter.jsonl: source counter: 4 record(s)" in listed.stdout
    assert "is not of type 'integer'" in listed.stdout

    again = _quarantine(tmp_path, "replay")
    assert again.returncode == 1
    assert "0 event(s) delivered and removed, 4 kept" in again.stdout
    assert "kept: " in again.stdout and "'integer'" in again.stdout
    assert held.read_bytes() == before  # the same reason: the lines stay byte for byte
    assert len(read_jsonl(out)) == 16


def test_quarantined_events_that_now_pass_go_to_every_routed_output(tmp_path: Path, counter_config: Any) -> None:
    cfg = counter_config(count=0)
    cfg["outputs"].append({"name": "second", "type": "file", "options": {"path": str(tmp_path / "second.jsonl")}})
    cfg["outputs"].append({"name": "elsewhere", "type": "file", "sources": ["other"],
                           "options": {"path": str(tmp_path / "elsewhere.jsonl")}})
    cfg["sources"].append({"name": "other", "type": "counter", "options": {"count": 0}})
    assert run_forwarder(tmp_path, cfg).returncode == 0
    # Records as the pipeline writes them when a schema (since fixed) refused the events.
    fixed = [{"seq": n, "time": f"2026-01-01T00:00:{n:02d}Z", "user": "user1", "action": "login"} for n in (3, 4)]
    broken = {"seq": "5", "time": "2026-01-01T00:00:05Z", "user": "user1", "action": "login"}
    SetAside(cfg["state_dir"], QUARANTINE).write("counter", [
        SetAside.record("counter", "$.raw.seq: '3' is not of type 'integer'", "counter-3", fixed[0]),
        SetAside.record("counter", "$.raw.seq: '5' is not of type 'integer'", "counter-5", broken),
        SetAside.record("counter", "$.raw.seq: '4' is not of type 'integer'", "counter-4", fixed[1]),
    ])
    done = _quarantine(tmp_path, "replay", "--source", "counter")
    assert done.returncode == 1
    assert "2 event(s) delivered and removed, 1 kept" in done.stdout
    for name in ("out.jsonl", "second.jsonl"):
        assert [e["id"] for e in read_jsonl(tmp_path / name)] == ["counter-3", "counter-4"]
        assert read_jsonl(tmp_path / name)[0]["raw"] == fixed[0]
    assert not (tmp_path / "elsewhere.jsonl").exists()
    (left,) = read_jsonl(Path(cfg["state_dir"]) / "quarantine" / "counter.jsonl")
    assert left["raw"] == broken and left["id"] == "counter-5"


def test_replay_checks_the_raw_schema_before_normalize(tmp_path: Path, counter_config: Any) -> None:
    # The pipeline's own prepare step: an event still malformed stays with the schema's words,
    # not with whatever normalize() would have tripped over (here a KeyError on 'seq').
    cfg = counter_config(count=0)
    assert run_forwarder(tmp_path, cfg).returncode == 0
    no_seq = {"time": "2026-01-01T00:00:05Z", "user": "user1", "action": "login"}
    SetAside(cfg["state_dir"], QUARANTINE).write("counter", [SetAside.record("counter", "old", None, no_seq)])
    done = _quarantine(tmp_path, "replay")
    assert done.returncode == 1 and "0 event(s) delivered and removed, 1 kept" in done.stdout
    (left,) = read_jsonl(Path(cfg["state_dir"]) / "quarantine" / "counter.jsonl")
    assert left["reason"] == "raw schema: $.raw: 'seq' is a required property"
    assert "normalize failed" not in done.stdout


def test_an_output_still_down_keeps_every_record(tmp_path: Path, counter_config: Any, es: FakeElasticsearch) -> None:
    cfg = _es_config(counter_config, es, count=0)
    assert run_forwarder(tmp_path, cfg).returncode == 0
    raw = {"seq": 1, "time": "2026-01-01T00:00:01Z", "user": "u", "action": "login"}
    SetAside(cfg["state_dir"], QUARANTINE).write("counter", [SetAside.record("counter", "old schema", "counter-1", raw)])
    es.stop()
    done = _quarantine(tmp_path, "replay")
    assert done.returncode == 1
    assert "kept: output elastic kept failing" in done.stdout
    assert read_jsonl(Path(cfg["state_dir"]) / "quarantine" / "counter.jsonl")[0]["raw"] == raw


def test_pangea_records_are_kept_and_the_refusal_says_why(tmp_path: Path) -> None:
    cfg = {"state_dir": str(tmp_path / "state"),
           "sources": [{"name": "audit", "type": "pangea",
                        "options": {"base_url": "http://127.0.0.1:9", "token": "pts_not_used"}}],
           "outputs": [{"name": "out", "type": "file", "options": {"path": str(tmp_path / "out.jsonl")}}]}
    assert run_forwarder(tmp_path, cfg, "check").returncode == 0
    (tmp_path / "state").mkdir()
    SetAside(cfg["state_dir"], QUARANTINE).write("audit", [SetAside.record(
        "audit", "Pangea tamper evidence failed: hash check(s) did not verify", "ab" * 32,
        {"envelope": {"event": {"message": "x"}, "received_at": "2026-01-01T00:00:00.000000Z"}, "hash": "ab" * 32})])
    done = _quarantine(tmp_path, "replay")
    assert done.returncode == 1
    assert "Pangea events are not replayed from the quarantine" in done.stdout
    assert "on_verification_failure: forward" in done.stdout
    assert len(read_jsonl(tmp_path / "state" / "quarantine" / "audit.jsonl")) == 1
    assert not (tmp_path / "out.jsonl").exists()


def test_replay_refuses_while_the_daemon_holds_the_state(tmp_path: Path, counter_config: Any) -> None:
    cfg = counter_config(count=0)
    proc = start_forwarder(tmp_path, cfg)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "siem-forwarder running" in line:
                break
        done = _quarantine(tmp_path, "replay")
        assert done.returncode == 75
        assert "another siem-forwarder is running" in done.stdout and "stop it before replaying" in done.stdout
    finally:
        proc.terminate()
        assert proc.wait(30) == 0


def test_replay_applies_the_transform_plugins_as_the_pipeline_does(tmp_path: Path) -> None:
    class Labels:
        @hookimpl
        def forwarder_transform_events(self, source_name: str, events: list[dict[str, Any]]) -> Any:
            for event in events:
                event["labels"] = {"site": "lab"}
                if event["id"] == "3":
                    event["labels"] = {"bad": 3}  # labels must be strings: set aside again
            return [e for e in events if e["action"] != "drop"]

    out = tmp_path / "out.jsonl"
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"state_dir": str(tmp_path / "state"),
                                    "sources": [{"name": "src", "type": "memory", "options": {"events": []}}],
                                    "outputs": [{"name": "out", "type": "file", "options": {"path": str(out)}}]}))
    config, plugins = load_config(str(path), lambda paths: load_with_memory(paths, [Labels()]))
    os.makedirs(config.state_dir, exist_ok=True)
    raws = [{"id": str(n), "time": f"2026-01-01T00:00:0{n}Z", "action": "drop" if n == 2 else "keep"} for n in (1, 2, 3)]
    SetAside(config.state_dir, QUARANTINE).write("src", [SetAside.record("src", "old", r["id"], r) for r in raws])

    said = io.StringIO()
    assert replay_command(config, plugins, sources=None, outputs=None, dead_letter=False, out=said) == 1
    assert [(e["id"], e["labels"]) for e in read_jsonl(out)] == [("1", {"site": "lab"})]
    (left,) = read_jsonl(Path(config.state_dir) / "quarantine" / "src.jsonl")
    assert left["id"] == "3" and "forwarder_transform_events" in left["reason"]
    assert "2 event(s) delivered and removed, 1 kept" in said.getvalue()  # the filtered one is handled


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give files to another user")
def test_replay_run_as_root_acts_as_the_service_user_so_what_it_writes_stays_the_services(
        tmp_path: Path, counter_config: Any, es: FakeElasticsearch) -> None:
    es.poison(b'"seq":3,')
    es.poison(b'"seq":4,')
    cfg = _es_config(counter_config, es, count=6)
    shared = Path(tempfile.mkdtemp(prefix="siem-forwarder-replay-"))  # tmp_path is private to root
    shared.chmod(0o755)
    try:
        cfg["state_dir"] = str(shared / "state")
        assert run_forwarder(tmp_path, cfg).returncode == 0
        state = Path(cfg["state_dir"])
        service_user = 65534
        for path in [state, *state.rglob("*")]:
            os.lchown(path, service_user, service_user)
        es._poison.remove(b'"seq":3,')
        done = _quarantine(tmp_path, "replay", "--dead-letter")  # as root
        assert done.returncode == 1, done.stdout + done.stderr
        assert "running as uid 65534" in done.stderr
        letters = state / "dead-letter" / "elastic.jsonl"
        assert [r["id"] for r in read_jsonl(letters)] == ["counter-4"]
        assert (os.stat(letters).st_uid, os.stat(letters).st_gid) == (service_user, service_user)
        assert os.stat(letters.parent).st_uid == service_user
        assert {p.stat().st_uid for p in state.rglob("*")} == {service_user}
    finally:
        shutil.rmtree(shared)
