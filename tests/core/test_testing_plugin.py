"""The pytest plugin shipped for plugin authors: its fixtures run the real pipeline."""
from __future__ import annotations

pytest_plugins: list[str] = []  # forwarder_core.testing is loaded through the pytest11 entry point


def test_plugin_manager_fixture(forwarder_plugin_manager) -> None:
    assert "file" in forwarder_plugin_manager.outputs
    assert forwarder_plugin_manager.pm.hook.forwarder_register_sources is not None


def test_once_fixture_with_an_output(forwarder_once, tmp_path) -> None:
    raw = [{"id": str(i), "time": f"2026-01-01T00:00:0{i}Z"} for i in range(3)] + [{"id": "bad"}]
    run = forwarder_once(output={"type": "file", "options": {"path": str(tmp_path / "o.jsonl")}}, raw_events=raw)
    assert run.ok and run.delivered == 3
    assert [q["raw"] for q in run.quarantined] == [{"id": "bad"}]
    assert len((tmp_path / "o.jsonl").read_text().splitlines()) == 3


def test_once_fixture_with_a_source(forwarder_once, testkit_path) -> None:
    run = forwarder_once(source={"type": "counter", "options": {"count": 12, "page_size": 5}},
                         plugin_paths=[testkit_path])
    assert run.ok
    assert [e["id"] for e in run.events] == [f"counter-{i}" for i in range(12)]
    assert run.metrics.get("pages_committed_total", source="src") == 3
