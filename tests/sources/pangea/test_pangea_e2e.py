"""``pangea`` through the real ``siem-forwarder`` process: tampered events end in the quarantine."""
from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from forwarder_core.storage.checkpoint import CheckpointStore
from tests.fakes.pangea import TOKEN, PangeaFake, canonical
from tests.helpers import read_jsonl, run_forwarder

START = datetime.now(timezone.utc) - timedelta(minutes=20)


@pytest.fixture
def fake() -> Iterator[PangeaFake]:
    with PangeaFake(60, start=START, buffer_size=8) as server:
        yield server  # type: ignore[misc]


def config(tmp_path: Path, fake: PangeaFake, **options: Any) -> dict[str, Any]:
    return {
        "state_dir": str(tmp_path / "state"),
        "sources": [{"name": "pangea-main", "type": "pangea", "start_time": (START - timedelta(seconds=1)).isoformat(),
                     "options": {"base_url": fake.url, "token": "${PANGEA_TOKEN}", "settle_delay": 0,
                                 "page_size": 25, **options}}],
        "outputs": [{"name": "out", "type": "file", "options": {"path": str(tmp_path / "out.jsonl")}}],
    }


def quarantined(tmp_path: Path) -> list[dict[str, Any]]:
    return [rec for f in sorted((tmp_path / "state" / "quarantine").glob("*.jsonl")) for rec in read_jsonl(f)]


def test_tampered_events_are_quarantined_and_the_rest_delivered_verified(tmp_path: Path, fake: PangeaFake) -> None:
    altered = next(i for i, r in enumerate(fake.records) if i > 10 and "signature" not in r.envelope)
    forged = next(i for i, r in enumerate(fake.records) if i > 30 and "signature" in r.envelope)
    fake.alter_after_hashing(altered)
    fake.bad_signature(forged)
    bad = {fake.records[altered].hash: "hash", fake.records[forged].hash: "signature"}

    done = run_forwarder(tmp_path, config(tmp_path, fake), env={"PANGEA_TOKEN": TOKEN})
    assert done.returncode == 0, done.stderr
    out = read_jsonl(tmp_path / "out.jsonl")
    assert [e["id"] for e in out] == [r.hash for r in fake.records if r.hash not in bad]
    for event in out:
        assert event["integrity"]["hash"] == "pass" and event["integrity"]["membership"] == "pass"
        assert event["integrity"]["signature"] in ("pass", "none")
        assert hashlib.sha256(canonical(event["raw"])).hexdigest() == event["id"]

    aside = quarantined(tmp_path)
    assert {rec["id"]: rec for rec in aside}.keys() == bad.keys()
    for rec in aside:
        assert bad[rec["id"]] in rec["reason"] and rec["source"] == "pangea-main"
        assert rec["raw"]["hash"] == rec["id"] and "envelope" in rec["raw"]
    security = [line for line in done.stderr.splitlines() if "SECURITY" in line]
    assert len(security) == 2 and all("quarantined" in line for line in security)
    assert TOKEN not in done.stderr + done.stdout

    again = run_forwarder(tmp_path, config(tmp_path, fake), env={"PANGEA_TOKEN": TOKEN})
    assert again.returncode == 0, again.stderr
    assert len(read_jsonl(tmp_path / "out.jsonl")) == len(out)
    assert len(quarantined(tmp_path)) == 2
    cursor = CheckpointStore(str(tmp_path / "state")).get("pangea-main").cursor
    assert cursor["v"] == 1 and TOKEN not in str(cursor)


def test_forward_mode_delivers_tampered_events_flagged(tmp_path: Path, fake: PangeaFake) -> None:
    fake.corrupt_proof(7)
    done = run_forwarder(tmp_path, config(tmp_path, fake, on_verification_failure="forward"),
                         env={"PANGEA_TOKEN": TOKEN})
    assert done.returncode == 0, done.stderr
    out = read_jsonl(tmp_path / "out.jsonl")
    assert len(out) == 60 and not quarantined(tmp_path)
    flagged = [e for e in out if e["integrity"]["membership"] == "fail"]
    assert [e["id"] for e in flagged] == [fake.records[7].hash]


@pytest.mark.parametrize("served", ["", None, "tampered"], ids=["empty hash", "missing hash", "tampered envelope"])
def test_forward_mode_delivers_an_event_without_a_usable_hash_flagged_and_says_so(
        tmp_path: Path, fake: PangeaFake, served: str | None) -> None:
    """CONTRACT.md: a Pangea event without a usable hash gets the digest id; forward mode delivers it
    with integrity.hash: fail, and the SECURITY line says what really happened."""
    index = 12
    if served == "tampered":
        fake.alter_after_hashing(index)
        expected_id = fake.records[index].hash
    else:
        fake.serve_hash(index, served)
        expected_id = hashlib.sha256(canonical(fake.records[index].envelope)).hexdigest()
    done = run_forwarder(tmp_path, config(tmp_path, fake, on_verification_failure="forward"),
                         env={"PANGEA_TOKEN": TOKEN})
    assert done.returncode == 0, done.stderr
    out = read_jsonl(tmp_path / "out.jsonl")
    assert len(out) == 60 and not quarantined(tmp_path)
    flagged = [e for e in out if e["integrity"]["hash"] == "fail"]
    assert [e["id"] for e in flagged] == [expected_id]
    if served != "tampered":  # the digest covers the envelope as served, which raw is
        assert hashlib.sha256(canonical(flagged[0]["raw"])).hexdigest() == expected_id
    security = [line for line in done.stderr.splitlines() if "SECURITY" in line]
    assert len(security) == 1 and "forwarded flagged in integrity" in security[0]


@pytest.mark.parametrize("served", ["", None])
def test_quarantine_records_of_pangea_events_carry_their_verdicts(tmp_path: Path, fake: PangeaFake,
                                                                 served: str | None) -> None:
    fake.serve_hash(5, served)
    fake.corrupt_proof(20)
    done = run_forwarder(tmp_path, config(tmp_path, fake), env={"PANGEA_TOKEN": TOKEN})
    assert done.returncode == 0, done.stderr
    aside = quarantined(tmp_path)
    assert len(aside) == 2 and len(read_jsonl(tmp_path / "out.jsonl")) == 58
    by_check = {("hash" if rec["integrity"]["hash"] == "fail" else "membership"): rec for rec in aside}
    assert by_check.keys() == {"hash", "membership"}
    assert by_check["membership"]["integrity"]["membership"] == "fail"
    assert by_check["membership"]["id"] == fake.records[20].hash
    assert all(set(rec["integrity"]) >= {"hash", "membership", "signature"} for rec in aside)
