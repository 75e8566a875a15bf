"""The pytest plugin shipped for plugin authors: its fixtures run the real pipeline."""
from __future__ import annotations

pytest_plugins: list[str] = []  # forwarder_core.testing is loaded through the pytest11 entry point


def test_plugin_manager_fixture(forwarder_plugin_manager) -> None:
    """The fixture is a manager with every installed plugin loaded: each built-in source and output is
    registered through it and none failed to load."""
    plugins = forwarder_plugin_manager
    assert not plugins.failed and not plugins.sources.problems and not plugins.outputs.problems
    assert {"asana", "incydr", "agilicus", "pangea"} <= set(plugins.sources.names())
    assert {"file", "stdout", "splunk_hec", "elastic_bulk", "syslog_cef"} <= set(plugins.outputs.names())
    assert len(plugins.pm.hook.forwarder_register_sources.get_hookimpls()) >= 4


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


def test_once_fixture_is_strict_about_the_ledger(request, monkeypatch) -> None:
    from forwarder_core.storage.ledger import STRICT_ENV

    monkeypatch.delenv(STRICT_ENV, raising=False)  # as in a plugin's own suite
    request.getfixturevalue("forwarder_once")
    import os

    assert os.environ.get(STRICT_ENV) == "1"


def test_once_fixture_takes_give_up_after_from_the_config(forwarder_once) -> None:
    from forwarder_core import hookimpl
    from forwarder_core.errors import OutputError
    from forwarder_core.plugin_api import Output

    sends: list[int] = []

    class Refusing(Output):
        type_name = "refusing"

        def send(self, events):
            sends.append(len(events))
            raise OutputError("the SIEM is down")

    class Plugin:
        @hookimpl
        def forwarder_register_outputs(self, registry) -> None:
            registry.add(Refusing)

    run = forwarder_once(output={"type": "refusing"}, plugins=[Plugin()],
                         raw_events=[{"id": "1", "time": "2026-01-01T00:00:00Z"}],
                         delivery={"once_give_up_after": 0})
    assert not run.ok and run.delivered == 0
    assert sends == [1]  # given up after the first refusal, as the config says, not retried for 30 s


def test_once_fixture_calls_in_one_test_resume_from_the_committed_cursor(forwarder_once, tmp_path) -> None:
    raw = [{"id": str(i), "time": f"2026-01-01T00:00:0{i}Z"} for i in range(4)]
    first = forwarder_once(raw_events=raw[:2], source={"type": "memory", "options": {"events": raw[:2]}})
    again = forwarder_once(source={"type": "memory", "options": {"events": raw}})
    fresh = forwarder_once(source={"type": "memory", "options": {"events": raw}}, state_dir=str(tmp_path / "other"))
    assert [e["id"] for e in first.events] == ["0", "1"]
    assert [e["id"] for e in again.events] == ["2", "3"]
    assert [e["id"] for e in fresh.events] == ["0", "1", "2", "3"]


def _source_plugin(cls):
    from forwarder_core import hookimpl

    class Plugin:
        @hookimpl
        def forwarder_register_sources(self, registry) -> None:
            registry.add(cls)

    return Plugin()


def test_once_fixture_raises_a_config_error_from_init_with_its_lines(forwarder_once) -> None:
    import pytest

    from forwarder_core.plugin_api import ConfigError, Source

    class NeedsAOrB(Source):
        type_name = "needs_a_or_b"
        vendor = product = "T"

        def __init__(self, config, context):
            super().__init__(config, context)
            raise ConfigError([f"{config.file}:{config.line}: {config.path}.options: 'a' or 'b' is required"])

        def poll(self, cursor):
            return iter(())

    with pytest.raises(ConfigError, match=r"forwarder-once\.yaml:\d+: \$\.sources\[0\]\.options: 'a' or 'b' is required"):
        forwarder_once(source={"type": "needs_a_or_b"}, plugins=[_source_plugin(NeedsAOrB)])


def test_a_check_options_that_raises_is_reported_at_the_block(forwarder_once) -> None:
    import pytest

    from forwarder_core.plugin_api import ConfigError, Source

    class Buggy(Source):
        type_name = "buggy_rules"
        vendor = product = "T"

        @classmethod
        def check_options(cls, options):
            return [((), options["missing"])]

        def poll(self, cursor):
            return iter(())

    with pytest.raises(ConfigError, match=r"\$\.sources\[0\]\.options: buggy_rules\.check_options failed: KeyError"):
        forwarder_once(source={"type": "buggy_rules"}, plugins=[_source_plugin(Buggy)])
