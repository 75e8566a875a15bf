"""The operator's commands with a ``cluster:`` block, against a real PostgreSQL."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from forwarder_core.storage.leases import Leases
from forwarder_core.storage.pg import Database
from tests.helpers import read_jsonl, run_forwarder
from tests.postgres import Postgres
from tests.rsyslog import free_port

PASSWORD = "pg-canary-Pa55word"


def _config(tmp_path: Path, postgres: Postgres, testkit_path: str, sources: int = 3, **counter: Any) -> dict[str, Any]:
    return {
        "state_dir": str(tmp_path / "state"),
        "plugin_paths": [testkit_path],
        "workers": 0,
        "cluster": {"dsn": f"{postgres.dsn} password={PASSWORD}", "instance": "cli", "lease_ttl": 5},
        "sources": [{"name": f"c{i}", "type": "counter", "options": {"count": 50, "page_size": 10, **counter}}
                    for i in range(sources)],
        "outputs": [{"name": "out", "type": "file", "options": {"path": str(tmp_path / "out.jsonl")}}],
    }


def test_buffer_disk_with_a_cluster_is_a_config_error_saying_why(tmp_path: Path, postgres: Postgres,
                                                                 testkit_path: str) -> None:
    config = _config(tmp_path, postgres, testkit_path)
    config["outputs"][0]["buffer"] = "disk"
    checked = run_forwarder(tmp_path, config, "check")
    assert checked.returncode == 78
    assert "$.outputs[0].buffer: buffer: disk cannot be used with cluster" in checked.stdout + checked.stderr


def test_a_cluster_without_a_dsn_or_with_a_short_lease_is_refused(tmp_path: Path, postgres: Postgres,
                                                                   testkit_path: str) -> None:
    config = _config(tmp_path, postgres, testkit_path)
    config["cluster"] = {"lease_ttl": 2}
    checked = run_forwarder(tmp_path, config, "check")
    said = checked.stdout + checked.stderr
    assert checked.returncode == 78
    assert "$.cluster: 'dsn' is a required property" in said
    assert "$.cluster.lease_ttl: 2 is less than the minimum of 5" in said


def test_check_connect_names_the_dsn_it_cannot_reach_and_never_prints_its_password(
        tmp_path: Path, postgres: Postgres, testkit_path: str) -> None:
    config = _config(tmp_path, postgres, testkit_path)
    config["cluster"]["dsn"] = f"host=127.0.0.1 port={free_port()} user=forwarder password={PASSWORD} connect_timeout=2"
    checked = run_forwarder(tmp_path, config, "check", "--connect")
    said = checked.stdout + checked.stderr
    assert checked.returncode != 0
    assert "cluster PostgreSQL (dsn): FAILED: cannot reach the cluster's dsn" in said
    assert PASSWORD not in said
    good = _config(tmp_path, postgres, testkit_path)
    checked = run_forwarder(tmp_path, good, "check", "--connect")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "cluster PostgreSQL (dsn): ok" in checked.stdout


def test_once_takes_the_free_sources_skips_those_another_instance_holds_and_resumes(
        tmp_path: Path, postgres: Postgres, testkit_path: str) -> None:
    db = Database(postgres.dsn)
    db.migrate()
    other = Leases(db, "other", 60)
    other.declare(["c0", "c1", "c2"])
    other.register("t", "h")
    assert [t.source for t in other.take(["c0"], 1)] == ["c0"]
    config = _config(tmp_path, postgres, testkit_path)
    first = run_forwarder(tmp_path, config, "once")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "source c0: polled by another instance of the fleet; skipped" in first.stderr
    events = read_jsonl(tmp_path / "out.jsonl")
    assert sorted({e["source"]["name"] for e in events}) == ["c1", "c2"] and len(events) == 100
    other.release({"c0": _token(db, "c0")})
    second = run_forwarder(tmp_path, config, "once")
    assert second.returncode == 0, second.stdout + second.stderr
    events = read_jsonl(tmp_path / "out.jsonl")
    assert len(events) == 150 and len({e["id"] + e["source"]["name"] for e in events}) == 150  # c0 once, none again
    state = run_forwarder(tmp_path, config, "state")
    assert state.returncode == 0, state.stdout + state.stderr
    assert '{"next":50}' in state.stdout and "c0: none (free" in state.stdout
    assert PASSWORD not in state.stdout + state.stderr + first.stderr + second.stderr
    db.close()


def _token(db: Database, source: str) -> int:
    return int(db.run(lambda cur: (cur.execute("SELECT token FROM sf_leases WHERE source = %s", (source,)),
                                   cur.fetchone())[1][0]))


def test_state_import_moves_a_single_hosts_checkpoints_in_and_never_moves_a_cursor_back(
        tmp_path: Path, postgres: Postgres, testkit_path: str) -> None:
    single = _config(tmp_path, postgres, testkit_path)
    del single["cluster"]
    done = run_forwarder(tmp_path, single, "once")
    assert done.returncode == 0, done.stderr
    fleet = _config(tmp_path, postgres, testkit_path, count=80)
    fleet["state_dir"] = str(tmp_path / "fleet-state")
    imported = run_forwarder(tmp_path, fleet, "state", "import", "--from", str(tmp_path / "state"))
    assert imported.returncode == 0, imported.stdout + imported.stderr
    assert imported.stdout.count(": imported") == 3
    more = run_forwarder(tmp_path, fleet, "once")  # the fleet goes on from 50, to 80
    assert more.returncode == 0, more.stderr
    events = read_jsonl(tmp_path / "out.jsonl")
    assert len(events) == 3 * 80 and len({(e["source"]["name"], e["id"]) for e in events}) == 240
    again = run_forwarder(tmp_path, fleet, "state", "import", "--from", str(tmp_path / "state"))
    assert again.stdout.count("kept (the fleet's cursor is as new or newer)") == 3
    shown = run_forwarder(tmp_path, fleet, "state")
    assert shown.stdout.count('{"next":80}') == 3


def test_quarantine_records_live_in_postgresql_and_are_listed_and_replayed_from_any_host(
        tmp_path: Path, postgres: Postgres, testkit_path: str) -> None:
    config = _config(tmp_path, postgres, testkit_path, sources=1, invalid_every=10)
    ran = run_forwarder(tmp_path, config, "once")
    assert ran.returncode == 0, ran.stderr
    assert not (tmp_path / "state" / "quarantine" / "c0.jsonl").exists()
    elsewhere = dict(config, state_dir=str(tmp_path / "other-host"))
    listed = run_forwarder(tmp_path, elsewhere, "quarantine")
    assert listed.returncode == 0, listed.stderr
    assert "quarantine: source c0: 5 record(s)" in listed.stdout
    replayed = run_forwarder(tmp_path, elsewhere, "quarantine", "replay")
    assert "0 event(s) delivered and removed, 5 kept" in replayed.stdout  # still invalid: kept, not doubled
    listed = run_forwarder(tmp_path, elsewhere, "quarantine")
    assert "quarantine: source c0: 5 record(s)" in listed.stdout


def test_cluster_lists_the_instances_and_warns_when_their_configs_differ(
        tmp_path: Path, postgres: Postgres, testkit_path: str) -> None:
    db = Database(postgres.dsn)
    db.migrate()
    Leases(db, "host-a", 30).register("0.1.0", "aaaaaaaaaaaa")
    Leases(db, "host-b", 30).register("0.1.0", "bbbbbbbbbbbb")
    config = _config(tmp_path, postgres, testkit_path)
    config["cluster"]["lease_ttl"] = 300
    shown = run_forwarder(tmp_path, config, "cluster")
    assert shown.returncode == 0, shown.stderr
    assert "host-a" in shown.stdout and "host-b" in shown.stdout and "live" in shown.stdout
    assert "warning: the live instances run 2 different configs" in shown.stdout
    db.close()
