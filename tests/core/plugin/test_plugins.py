"""Plugin discovery: built-ins through the entry-point group, a broken plugin, a third-party one."""
from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from forwarder_core import hookimpl
from forwarder_core.plugin.manager import build_registries, get_plugin_manager, load_plugins
from forwarder_core.plugin_api import Output
from tests.conftest import FIXTURES, _pip_target
from tests.helpers import REPO, read_jsonl, run_forwarder


def test_plugins_lists_builtins_with_distribution_and_version(tmp_path: Path) -> None:
    from forwarder_core import __version__

    result = run_forwarder(tmp_path, None, "plugins")
    assert result.returncode == 0
    rows = [line.split() for line in result.stdout.splitlines()]
    assert ["output", "file", "siem-forwarder", __version__] in rows
    assert ["output", "stdout", "siem-forwarder", __version__] in rows


def test_builtins_come_from_the_entry_point_group() -> None:
    from importlib import metadata

    names = {ep.name: ep.value for ep in metadata.entry_points(group="siem_forwarder")}
    assert names["file"] == "siem_forwarder_plugins.outputs.file"
    assert names["stdout"] == "siem_forwarder_plugins.outputs.stdout"
    import siem_forwarder_plugins

    assert "plugins" not in sys.modules or sys.modules["plugins"] is not siem_forwarder_plugins


@pytest.fixture(scope="module")
def broken_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(_pip_target(FIXTURES / "broken_plugin", tmp_path_factory.mktemp("broken")))


def test_a_broken_plugin_is_named_and_skipped(tmp_path: Path, broken_path: str, testkit_path: str) -> None:
    config = {"plugin_paths": [broken_path, testkit_path],
              "sources": [{"name": "c", "type": "counter", "options": {"count": 3}}],
              "outputs": [{"name": "out", "type": "file", "options": {"path": str(tmp_path / "o.jsonl")}}]}
    result = run_forwarder(tmp_path, config)
    assert result.returncode == 0, result.stderr
    assert "plugin broken (siem-forwarder-broken 6.6.6) disabled: ModuleNotFoundError" in result.stderr
    assert len(read_jsonl(tmp_path / "o.jsonl")) == 3
    listing = run_forwarder(tmp_path, None, "plugins", "-c", str(tmp_path / "config.yaml"))
    assert listing.returncode == 0
    assert "disabled plugin broken (siem-forwarder-broken 6.6.6)" in listing.stdout
    assert ["source", "counter", "siem-forwarder-testkit", "1.0.0"] in [line.split() for line in listing.stdout.splitlines()]


def test_third_party_plugin_installed_into_the_environment(tmp_path: Path) -> None:
    example = REPO / "examples" / "siem-forwarder-example"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    subprocess.run(pip + ["install", "--no-deps", str(example)], check=True, capture_output=True)
    try:
        result = run_forwarder(tmp_path, None, "plugins")
        assert ["output", "webhook", "siem-forwarder-example", "0.1.0"] in [line.split() for line in result.stdout.splitlines()]
    finally:
        subprocess.run(pip + ["uninstall", "--yes", "siem-forwarder-example"], check=True, capture_output=True)
    result = run_forwarder(tmp_path, None, "plugins")
    assert "webhook" not in result.stdout


def test_misspelt_hook_is_caught_at_load(caplog: pytest.LogCaptureFixture) -> None:
    class Misspelt:
        @hookimpl
        def forwarder_register_ouputs(self, registry):  # noqa: D401 - misspelt on purpose
            pass

    pm = get_plugin_manager()
    pm.register(Misspelt(), name="misspelt")
    import pluggy

    with pytest.raises(pluggy.PluginValidationError, match="unknown hook 'forwarder_register_ouputs'"):
        pm.check_pending()


def test_registry_rejects_bad_classes_and_duplicates() -> None:
    class NoType(Output):
        options_schema = {"type": "object"}

    class Dup(Output):
        type_name = "file"
        options_schema = {"type": "object"}

    class Plugin:
        @hookimpl
        def forwarder_register_outputs(self, registry):
            registry.add(NoType)
            registry.add(Dup)
            registry.add(object)

    plugins = load_plugins()
    plugins.pm.register(Plugin(), name="bad")
    _, outputs = build_registries(plugins.pm, plugins.loaded)
    assert outputs.get("file").distribution == "siem-forwarder"
    joined = "\n".join(outputs.problems)
    assert "NoType has no type_name" in joined
    assert "output type 'file' is already provided by siem-forwarder" in joined
    assert "is not a Output subclass" in joined


def test_a_plugins_declared_metrics_get_their_type_and_help(tmp_path: Path) -> None:
    from forwarder_core.metrics import Metrics
    from forwarder_core.plugin.registry import new_registries
    from forwarder_core.plugin_api import ComponentConfig, Context
    from forwarder_core.testing import MemoryOutput

    class Counting(MemoryOutput):
        type_name = "counting"
        declared_metrics = {"counting_batches_total": ("counter", "Batches a counting output took.")}

    class Wrong(MemoryOutput):
        type_name = "wrong"
        declared_metrics = {"wrong_things": ("histogram", "Not a kind the core renders.")}

    _, outputs = new_registries()
    outputs.add(Counting)
    outputs.add(Wrong)
    metrics = Metrics()
    Counting(ComponentConfig(name="o", type="counting", options={}),
             Context(name="o", state_dir=str(tmp_path), logger=logging.getLogger("t"), metrics=metrics))
    metrics.inc("counting_batches_total", output="o")
    text = metrics.render()
    assert "# TYPE siem_forwarder_counting_batches_total counter" in text
    assert "# HELP siem_forwarder_counting_batches_total Batches a counting output took." in text
    assert outputs.problems == ["plugin : Wrong: metric siem_forwarder_wrong_things: type must be one of counter, "
                                "gauge, not 'histogram'"]
