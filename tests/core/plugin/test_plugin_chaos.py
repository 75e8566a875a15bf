"""A plugin that raises, hangs or answers garbage in any hook never fakes success and never stops the core.

The chaos plugin (tests/fixtures/chaos_plugin) is installed like any third-party plugin and
found through ``plugin_paths``; ``SF_CHAOS`` (or the file ``SF_CHAOS_FILE`` names) says which
hook misbehaves and how. In process: every run is strict about the ledger, so a page whose
events were counted as something they were not fails the test. In a real process: ``check``,
``once`` and ``run`` name the plugin in one line, and ``run`` survives a reload it breaks.
"""
from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from forwarder_core.errors import ConfigError
from tests.conftest import FIXTURES, _pip_target
from tests.helpers import lines_written, read_jsonl, run_forwarder, start_forwarder, write_config

RAW = [{"id": str(i), "time": f"2026-01-01T00:00:0{i}Z", "action": "a"} for i in range(6)]
TRANSFORM_GARBAGE = ["raise", "string", "copies", "foreign", "dict", "tuple", "replaced"]
SEND_GARBAGE = ["raise", "none", "string", "dict", "out_of_range", "negative", "duplicate", "both", "bool",
                "str_index", "retry_not_list", "retry_after"]


@pytest.fixture(scope="module")
def chaos_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(_pip_target(FIXTURES / "chaos_plugin", tmp_path_factory.mktemp("chaos")))


@pytest.fixture
def chaos(monkeypatch: pytest.MonkeyPatch, forwarder_once: Any, chaos_path: str, tmp_path: Path) -> Any:
    """``chaos("hook=mode", **once_kwargs)``: a one-shot run with the chaos plugin loaded."""
    def run(switch: str, **kwargs: Any) -> Any:
        monkeypatch.setenv("SF_CHAOS", switch)
        kwargs.setdefault("raw_events", RAW)
        kwargs.setdefault("workers", 0)
        return forwarder_once(plugin_paths=[chaos_path], **kwargs)
    return run


def _logged(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records)


# ----------------------------------------------------------------------------- transform (finding 5)


@pytest.mark.parametrize("mode", TRANSFORM_GARBAGE)
def test_a_transform_that_raises_or_answers_garbage_quarantines_the_page_never_filters_it(
        chaos: Any, caplog: pytest.LogCaptureFixture, mode: str) -> None:
    run = chaos(f"forwarder_transform_events={mode}")
    assert run.delivered == 0 and run.events == []
    assert run.metrics.get("events_filtered_total", source="src") == 0
    assert run.results[0].filtered == 0 and run.results[0].quarantined == len(RAW)
    assert sorted(r["id"] for r in run.quarantined) == sorted(e["id"] for e in RAW)
    assert [r["raw"] for r in sorted(run.quarantined, key=lambda r: r["id"])] == RAW
    reason = run.quarantined[0]["reason"]
    assert "plugin chaos" in reason and "forwarder_transform_events" in reason
    assert run.ok  # set aside with its reason is handled: the source moves on
    assert "plugin chaos" in _logged(caplog)
    assert run.metrics.get("plugin_errors_total", plugin="chaos", hook="forwarder_transform_events") == 1


def test_a_transform_garbage_answer_in_a_worker_process_quarantines_too(chaos: Any) -> None:
    raw = [{"id": str(i), "time": "2026-01-01T00:00:00Z"} for i in range(150)]  # above SMALL_PAGE: a worker
    run = chaos("forwarder_transform_events=copies", raw_events=raw, workers=1)
    assert run.delivered == 0 and run.results[0].filtered == 0 and run.results[0].quarantined == 150
    assert "plugin chaos" in run.quarantined[0]["reason"]


def test_a_well_behaved_transform_beside_the_chaos_plugin_still_filters(chaos: Any) -> None:
    from forwarder_core import hookimpl

    class Keeper:
        @hookimpl
        def forwarder_transform_events(self, source_name, events):
            events[:] = [e for e in events if e["id"] != "0"]  # filtering in place counts as filtering too
            return None

    run = chaos("", plugins=[Keeper()])
    assert run.delivered == 5 and run.results[0].filtered == 1 and run.quarantined == []


# ----------------------------------------------------------------------------- send (finding 5)


@pytest.mark.parametrize("mode", SEND_GARBAGE)
def test_an_output_that_raises_or_answers_garbage_delivers_nothing_and_keeps_the_cursor(
        chaos: Any, caplog: pytest.LogCaptureFixture, tmp_path: Path, mode: str) -> None:
    output = {"type": "chaos", "options": {"path": str(tmp_path / "out.jsonl")}}
    run = chaos(f"send={mode}", output=output, delivery={"once_give_up_after": 0})
    assert not run.ok and run.delivered == 0
    assert run.metrics.get("events_delivered_total", output="out", source="src") == 0
    assert run.dead_letters == []
    assert "output out kept failing" in (run.results[0].error or "")
    if mode != "raise":
        assert "plugin chaos" in _logged(caplog) and "send" in _logged(caplog)
    again = chaos("", output=output)  # the cursor did not move: everything is sent once it behaves
    assert again.ok and again.delivered == len(RAW)
    assert [e["id"] for e in read_jsonl(tmp_path / "out.jsonl")] == [e["id"] for e in RAW]


def test_an_output_garbage_answer_fails_the_send_and_is_retried_until_it_behaves(chaos: Any, tmp_path: Path) -> None:
    output = {"type": "chaos", "options": {"path": str(tmp_path / "out.jsonl")}}
    run = chaos("send=out_of_range@2", output=output, delivery={"once_give_up_after": 60, "max_backoff": 0.1})
    assert run.ok and run.delivered == len(RAW)
    assert run.metrics.get("output_errors_total", output="out") == 2  # two failed sends, then the whole batch again
    assert run.metrics.get("events_retried_total", output="out", source="src") == 0
    assert [e["id"] for e in read_jsonl(tmp_path / "out.jsonl")] == [e["id"] for e in RAW]


# ----------------------------------------------------------------------------- other hooks


def test_forwarder_page_delivered_that_raises_says_the_cursor_was_committed(
        chaos: Any, caplog: pytest.LogCaptureFixture) -> None:
    run = chaos("forwarder_page_delivered=raise", source={"type": "memory", "options": {"events": RAW, "page_size": 4}})
    assert run.ok and run.delivered == len(RAW) and run.results[0].pages == 2  # both pages: the poll went on
    text = _logged(caplog)
    assert "cursor stays where it was" not in text
    assert "plugin chaos: forwarder_page_delivered raised" in text and "committed" in text
    again = chaos("")
    assert again.delivered == 0  # committed indeed


@pytest.mark.parametrize("switch", ["forwarder_page_delivered=value", "forwarder_configure=value"])
def test_a_value_returned_by_a_notification_hook_changes_nothing(chaos: Any, switch: str) -> None:
    run = chaos(switch)
    assert run.ok and run.delivered == len(RAW)


def test_forwarder_configure_that_raises_is_a_config_error_naming_the_plugin(chaos: Any) -> None:
    with pytest.raises(ConfigError) as caught:
        chaos("forwarder_configure=raise")
    [line] = caught.value.problems
    assert "plugin chaos" in line and "forwarder_configure" in line and "RuntimeError" in line


@pytest.mark.parametrize("switch", ["forwarder_register_outputs=raise", "forwarder_register_sources=raise",
                                    "forwarder_register_outputs=value", "forwarder_register_sources=value"])
def test_a_registration_hook_that_fails_is_named_and_the_rest_runs(chaos: Any, caplog: pytest.LogCaptureFixture,
                                                                   switch: str) -> None:
    run = chaos(switch)
    assert run.ok and run.delivered == len(RAW)
    assert "plugin chaos" in _logged(caplog)


# ----------------------------------------------------------------------------- the commands (finding 6)


def _config(tmp_path: Path, chaos_path: str, testkit_path: str, **source: Any) -> dict[str, Any]:
    return {"state_dir": str(tmp_path / "state"), "plugin_paths": [chaos_path, testkit_path], "workers": 0,
            "sources": [{"name": "counter", "type": "counter", "options": {"count": 5}, **source}],
            "outputs": [{"name": "out", "type": "file", "options": {"path": str(tmp_path / "out.jsonl")}}]}


@pytest.mark.parametrize("command", ["check", "once", "run"])
def test_a_raise_at_start_up_is_one_line_naming_the_plugin_exit_78(tmp_path: Path, chaos_path: str,
                                                                   testkit_path: str, command: str) -> None:
    config = _config(tmp_path, chaos_path, testkit_path)
    result = run_forwarder(tmp_path, config, command, env={"SF_CHAOS": "forwarder_configure=raise"}, timeout=60)
    assert result.returncode == 78, result.stdout + result.stderr
    text = result.stdout + result.stderr
    assert "Traceback" not in text
    named = [line for line in text.splitlines() if "plugin chaos" in line and "forwarder_configure" in line]
    assert len(named) == 1, text
    assert not (tmp_path / "out.jsonl").exists()


def test_check_names_a_plugin_whose_registration_raised(tmp_path: Path, chaos_path: str, testkit_path: str) -> None:
    config = _config(tmp_path, chaos_path, testkit_path)
    config["outputs"] = [{"name": "out", "type": "chaos", "options": {"path": str(tmp_path / "out.jsonl")}}]
    result = run_forwarder(tmp_path, config, "check", env={"SF_CHAOS": "forwarder_register_outputs=raise"}, timeout=60)
    assert result.returncode == 78
    assert "Traceback" not in result.stdout + result.stderr
    assert "plugin chaos" in result.stdout + result.stderr


def wait_for(predicate: Any, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_sighup_with_a_configure_that_raises_keeps_the_old_config_running(tmp_path: Path, chaos_path: str,
                                                                          testkit_path: str) -> None:
    switch = tmp_path / "switch"
    config = _config(tmp_path, chaos_path, testkit_path, interval=1)
    proc = start_forwarder(tmp_path, config, env={"SF_CHAOS_FILE": str(switch)})
    try:
        assert wait_for(lambda: lines_written(tmp_path / "out.jsonl") == 5)
        switch.write_text("forwarder_configure=raise")
        config["sources"][0]["options"]["count"] = 7
        write_config(tmp_path / "config.yaml", config)
        proc.send_signal(signal.SIGHUP)
        time.sleep(1.5)
        assert proc.poll() is None, "a reload a plugin breaks must not stop the daemon"
        assert lines_written(tmp_path / "out.jsonl") == 5  # the old config (count 5) still runs
        switch.write_text("")
        proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: lines_written(tmp_path / "out.jsonl") == 7)
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    refused = [line for line in err.splitlines() if "reload refused" in line]
    assert refused and "plugin chaos" in refused[0] and "forwarder_configure" in refused[0]
    assert [e["id"] for e in read_jsonl(tmp_path / "out.jsonl")] == [f"counter-{i}" for i in range(7)]


# ----------------------------------------------------------------------------- hangs


@pytest.mark.parametrize("hook", ["forwarder_transform_events", "forwarder_page_delivered", "send"])
def test_a_hung_hook_is_named_and_sigterm_still_stops_the_daemon(tmp_path: Path, chaos_path: str,
                                                                 testkit_path: str, hook: str) -> None:
    config = _config(tmp_path, chaos_path, testkit_path)
    config["sources"].append({"name": "other", "type": "counter", "options": {"count": 3}})
    config["outputs"][0]["sources"] = ["other"]
    config["outputs"].append({"name": "stuck", "type": "chaos", "sources": ["counter"],
                              "options": {"path": str(tmp_path / "stuck.jsonl")}})
    config["shutdown_timeout"] = 1
    config["delivery"] = {"plugin_call_warn_after": 0.5}
    switch = tmp_path / "switch"
    switch.write_text(f"{hook}=hang")
    proc = start_forwarder(tmp_path, config, env={"SF_CHAOS_FILE": str(switch), "SF_CHAOS_SOURCE": "counter"})
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True)
    reader.start()
    try:
        # The other source keeps moving while the chaos plugin holds its own.
        assert wait_for(lambda: lines_written(tmp_path / "out.jsonl") == 3)
        assert wait_for(lambda: any("not returned" in line for line in lines)), "".join(lines)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        reader.join(timeout=10)
    finally:
        proc.kill()
    err = "".join(lines)
    assert proc.returncode == 0, err
    hung = [line for line in err.splitlines() if "plugin chaos" in line and hook in line]
    assert hung and "not returned" in hung[0], err
    if hook != "forwarder_page_delivered":
        assert lines_written(tmp_path / "stuck.jsonl") == 0


def test_slow_plugin_calls_are_reported_by_name() -> None:
    from forwarder_core.plugin.watch import PluginCalls

    calls = PluginCalls()
    with calls.running("chaos", "send", "output out"):
        assert calls.overdue(after=0.0)[0].startswith("plugin chaos: send (output out) has not returned")
        assert calls.overdue(after=3600.0) == []
    assert calls.overdue(after=0.0) == []


@pytest.mark.parametrize("hook", ["forwarder_transform_events", "send"])
def test_once_with_a_hung_hook_still_stops_on_sigterm_and_commits_nothing(tmp_path: Path, chaos_path: str,
                                                                          testkit_path: str, hook: str) -> None:
    config = _config(tmp_path, chaos_path, testkit_path)
    config["outputs"] = [{"name": "out", "type": "chaos", "options": {"path": str(tmp_path / "out.jsonl")}}]
    config["shutdown_timeout"] = 1
    hanging = tmp_path / "hanging"
    proc = start_forwarder(tmp_path, config, "once",
                           env={"SF_CHAOS": f"{hook}=hang", "SF_CHAOS_HANGING": str(hanging)})
    try:
        assert wait_for(hanging.exists)
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 1, err  # stopped before it caught up: not everything was delivered
    assert "abandoned" in err and "Traceback" not in err
    assert lines_written(tmp_path / "out.jsonl") == 0
    again = run_forwarder(tmp_path, config, "once", timeout=60)
    assert again.returncode == 0, again.stderr
    assert [e["id"] for e in read_jsonl(tmp_path / "out.jsonl")] == [f"counter-{i}" for i in range(5)]
