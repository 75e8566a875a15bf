"""Hostile and broken vendor answers never crash a source or hold back the others.

One ``siem-forwarder once`` runs six sources at once. Four read from Incydr fakes that answer
every search with garbage: JSON cut short, an HTML page with status 200, the wrong types, a
20 MB string, nesting 100,000 deep. One reads a healthy Asana fake, one an Incydr fake whose
backlog holds events that break the schema (wrong types, missing fields, a 1 MB string, deep
nesting). ``once`` must exit 1 naming each broken source with a readable reason, and deliver
every good event of the others, set the bad events aside in the quarantine, and move their
cursors.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from forwarder_core.plugin_api import content_id
from forwarder_core.storage.checkpoint import CheckpointStore
from tests.fakes.asana import AsanaFake
from tests.fakes.base import Request, Response
from tests.fakes.incydr import IncydrFake
from tests.helpers import run_forwarder

ASANA_TOKEN = "2/1204/1207:fake-service-account"
GARBAGE = {
    "truncated": b'{"events":[{"type$":"audit_log::logged_in/1","actorId":"10","timestamp":"2026-11-2',
    "html": b"<!DOCTYPE html><html><body><h1>Maintenance</h1></body></html>",
    "wrong-types": json.dumps({"events": {"0": "not a list"}, "totalResultCount": "many"}).encode(),
    "huge-string": b'"' + b"x" * 20_000_000 + b'"',
    "deep": b"[" * 100_000 + b"]" * 100_000,
}


class GarbageIncydr(IncydrFake):
    """An Incydr whose OAuth and count work, and whose search answers ``body`` with status 200."""

    def __init__(self, body: bytes):
        super().__init__(events=3)
        self.body = body
        self._routes = [r for r in self._routes if r[1].pattern != "^/v1/audit/search-audit-log$"]
        self.route("POST", "/v1/audit/search-audit-log", self._garbage)

    def _garbage(self, req: Request) -> Response:
        content_type = "text/html" if self.body.startswith(b"<") else "application/json"
        return Response(body=self.body, content_type=content_type)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """JSON lines split on "\\n" only: U+2028 inside a string is legal JSON, and str.splitlines would cut there."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]


@pytest.fixture
def fakes() -> Iterator[dict[str, Any]]:
    started: dict[str, Any] = {kind: GarbageIncydr(body).start() for kind, body in GARBAGE.items()}
    started["asana"] = AsanaFake(events=150).start()
    started["incydr"] = IncydrFake(events=200).start()
    yield started
    for fake in started.values():
        fake.stop()


def _broken_events(fake: IncydrFake) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Events that break the schema, and hostile ones that are still valid."""
    at = fake.begin + timedelta(minutes=10)
    broken = [
        fake.make_event(at, **{"type$": 42}),
        {k: v for k, v in fake.make_event(at + timedelta(seconds=1)).items() if k != "type$"},
        fake.make_event(at + timedelta(seconds=2), actorId={"nested": ["not", "a", "string"]}),
    ]
    deep: Any = "bottom"
    for _ in range(200):
        deep = {"d": deep}
    hostile = [
        fake.make_event(at + timedelta(seconds=3), actorAgent="A" * 1_000_000),
        fake.make_event(at + timedelta(seconds=4), requestJson=deep),
        fake.make_event(at + timedelta(seconds=5), actorName="\u202eevil\u0000name\u2028|=\\"),
    ]
    return broken, hostile


def test_garbage_from_some_sources_stops_neither_them_nor_the_others(tmp_path: Path, fakes: dict[str, Any]) -> None:
    broken, hostile = _broken_events(fakes["incydr"])
    fakes["incydr"].add_events(broken + hostile)
    start = (datetime.now(timezone.utc) - timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    sources = [{"name": f"garbage-{kind}", "type": "incydr", "start_time": start,
                "options": {"base_url": fakes[kind].url, "client_id": "key-1", "client_secret": "${SECRET}",
                            "settle_delay": 0, "timeout": 10}} for kind in GARBAGE]
    sources.append({"name": "asana", "type": "asana", "start_time": start,
                    "options": {"base_url": fakes["asana"].url + "/api/1.0", "token": "${ASANA}",
                                "workspace_gid": "12345", "page_size": 50}})
    sources.append({"name": "incydr", "type": "incydr", "start_time": start,
                    "options": {"base_url": fakes["incydr"].url, "client_id": "key-1", "client_secret": "${SECRET}",
                                "page_size": 50}})
    out = tmp_path / "out.jsonl"
    config = {"state_dir": str(tmp_path / "state"), "sources": sources,
              "outputs": [{"name": "out", "type": "file", "options": {"path": str(out)}}]}
    done = run_forwarder(tmp_path, config, env={"SECRET": "secret-1", "ASANA": ASANA_TOKEN}, timeout=180)

    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    for kind in GARBAGE:
        (line,) = [ln for ln in done.stdout.splitlines() if f"garbage-{kind}" in ln and not ln.startswith("ledger ")]
        assert "poll failed" in line or "failed" in line.lower(), done.stdout
        (ledger,) = [ln for ln in done.stdout.splitlines() if ln.startswith(f"ledger garbage-{kind}:")]
        assert "UNBALANCED" not in ledger
    said = done.stderr  # once says a failed poll's reason once, in its log line; the table says FAILED
    assert "nested too deeply" in said
    assert "expected JSON, got an HTML page" in said
    assert "invalid or truncated JSON" in said
    assert "'events' is a dict, not a list" in said
    assert "expected a JSON object, got str" in said

    delivered = read_jsonl(out)
    by_source: dict[str, set[str]] = {}
    for event in delivered:
        by_source.setdefault(event["source"]["name"], set()).add(event["id"])
    assert by_source["asana"] == {e["gid"] for e in fakes["asana"].events()}
    served = {content_id(e) for e in fakes["incydr"].events()}
    held = read_jsonl(tmp_path / "state" / "quarantine" / "incydr.jsonl")
    assert {content_id(e) for e in broken} == {content_id(r["raw"]) for r in held}
    assert by_source["incydr"] == served - {content_id(e) for e in broken}
    assert {content_id(e) for e in hostile} <= by_source["incydr"]
    assert not {name for name in by_source if name.startswith("garbage-")}

    store = CheckpointStore(str(tmp_path / "state"))
    try:
        assert store.get("asana") is not None and store.get("incydr") is not None
        assert all(store.get(f"garbage-{kind}") is None for kind in GARBAGE)
    finally:
        store.close()
