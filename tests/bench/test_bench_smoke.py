"""The benchmark's short form runs to the end and every far end counts every event.

It asserts no time and no rate: CI machines differ. It proves that ``bench/run.py`` still
drives the real ``siem-forwarder once`` against every fake and output, and the bare loop, and
that each of them delivered exactly the backlog it was given: the parallel scenario with each
``workers:`` value this build takes (a build that refuses the key reports it as not supported),
and 50 Asana sources in one process, each event exactly once.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytest.importorskip("yaml")
INCYDR, OTHERS, MANY = 5_000, 500, 20


@pytest.mark.timeout(240)
def test_quick_benchmark_completes_with_exact_counts(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    results = tmp_path / "RESULTS.md"
    # Smaller than --quick's own backlogs: this checks that every scenario runs and counts, not speed.
    done = subprocess.run([sys.executable, str(REPO / "bench" / "run.py"), "--quick", "--json", str(out),
                           "--results", str(results), "--run-timeout", "60", "--incydr-events", str(INCYDR),
                           "--other-events", str(OTHERS), "--rss-events", "5000", "15000",
                           "--many-sources", str(MANY)],
                          cwd=REPO, capture_output=True, text=True, timeout=230, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    scenarios = {s["name"]: s for s in report["scenarios"]}
    expected = {
        "incydr -> syslog_cef (TCP, RFC 5424, octet counting)": INCYDR,
        "bare loop: incydr -> JSON lines over TCP": INCYDR,
        "incydr -> splunk_hec (gzip, ack off)": INCYDR,
        "incydr -> elastic_bulk (gzip)": INCYDR,
        "incydr -> file (fsync per page)": INCYDR,
        "asana -> file": OTHERS,
        "agilicus -> file": OTHERS,
    }
    for name, events in expected.items():
        assert name in scenarios, sorted(scenarios)
        scenario = scenarios[name]
        assert scenario["events"] == events
        assert scenario["runs"] == 1
        assert scenario["counts_ok"], scenario["problems"]
        assert scenario["problems"] == []
        # counted over the process tree: at least the measured process itself
        assert scenario["processes"] >= 1 and scenario["threads"] >= 1
        assert scenario["tree_rss_mb"] >= scenario["rss_mb"] > 0
        assert scenario["cpu_us_per_event"] > 0
    for workers in (0, 1, 2):
        scenario = scenarios[f"parallel: incydr -> syslog_cef, workers: {workers}"]
        assert scenario["events"] == INCYDR and scenario["settings"] == {"workers": workers}
        assert scenario["problems"] == []
        if scenario["supported"]:
            assert scenario["runs"] == 1 and scenario["counts_ok"]
        else:
            assert scenario["runs"] == 0 and scenario["note"].startswith("not supported by this build")
    many = scenarios[f"many sources: {MANY} asana sources x 100 events -> one file, one process"]
    assert many["events"] == MANY * 100 and many["runs"] == 1
    assert many["counts_ok"] and many["problems"] == [], many["problems"]
    assert many["settings"] in ({"max_concurrent_polls": 16}, {})
    rss = [s for name, s in scenarios.items() if name.startswith("peak RSS")]
    assert len(rss) == 2 and all(s["counts_ok"] for s in rss)
    assert report["ok"] is True
    assert report["version"]["runs"] == 3
    text = results.read_text()
    assert "bench/run.py --quick" in text and f"| incydr -> file (fsync per page) | {INCYDR:,} |" in text
    assert "| CPU per event, all processes <= 20 us" in text
    assert "| throughput with 1 worker vs 2 (reported) |" in text
    assert f"| {MANY} sources in one process: < 300 MB, threads bounded by the pool |" in text


@pytest.mark.timeout(240)
def test_idle_footprint_scenario_counts_every_event_and_the_processes(tmp_path: Path) -> None:
    """Four sources of 300 events in ``run``, left caught up: the default starts no worker
    process (no backlog), ``workers: 1`` keeps its worker, forkserver and resource tracker."""
    out = tmp_path / "bench.json"
    results = tmp_path / "RESULTS.md"
    done = subprocess.run([sys.executable, str(REPO / "bench" / "run.py"), "--quick", "--only", "idle",
                           "--idle-seconds", "1", "--json", str(out), "--results", str(results)],
                          cwd=REPO, capture_output=True, text=True, timeout=230, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    scenarios = {s["settings"].get("workers", "auto"): s for s in json.loads(out.read_text())["scenarios"]}
    assert set(scenarios) == {"auto", 0, 1}
    for scenario in scenarios.values():
        assert scenario["kind"] == "idle" and scenario["events"] == 1_200
        assert scenario["counts_ok"] and scenario["problems"] == [], scenario["problems"]
        assert scenario["final_rss_mb"] > 0 and scenario["final_threads"] >= 1
    assert scenarios["auto"]["processes"] == scenarios["auto"]["final_processes"] == 1
    assert scenarios[0]["processes"] == 1
    assert scenarios[1]["final_processes"] == 4  # main, forkserver, resource tracker, worker
    text = results.read_text()
    assert "## Idle footprint" in text
    assert "| idle `run`, 4 sources, default settings: peak RSS of the tree <= 70 MB, one process |" in text
