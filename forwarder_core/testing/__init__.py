"""A pytest plugin for siem-forwarder plugin authors (loaded automatically through ``pytest11``).

Fixtures:

``forwarder_plugin_manager``
    A fresh plugin manager with every installed plugin loaded (yours included, once your
    package is installed), and the source and output registries.

``forwarder_once``
    Runs the real pipeline once, in-process, with your source or your output::

        def test_my_source(forwarder_once):
            run = forwarder_once(source={"type": "mysource", "options": {"token": "t"}})
            assert run.ok and run.events[0]["source"]["type"] == "mysource"

        def test_my_output(forwarder_once):
            run = forwarder_once(output={"type": "myoutput", "options": {...}},
                                 raw_events=[{"id": "1", "time": "2026-01-01T00:00:00Z"}])
            assert run.delivered == 1

    When you give a source, the events land in an in-memory output (``run.events``, the
    normalized events); when you give an output, an in-memory ``memory`` source feeds it
    ``raw_events`` (each needs ``id`` and ``time``). ``run.quarantined`` and
    ``run.dead_letters`` hold what was set aside, ``run.metrics`` the counters.

    Calls in one test share one state directory (``tmp_path / "state"``), so a second call
    resumes from the cursor the first committed: that is how to test a resume. Pass
    ``state_dir=`` (any top-level config key is a keyword) for a fresh start. The run is
    strict about the ledger: a page whose ledger does not balance raises.

``forwarder_fake_api``
    A local HTTP server (:class:`FakeServer`, importable from here with :class:`Request`,
    :class:`Response`, :class:`Fault`, :func:`json_response` and :data:`HTML_ERROR`) to stand in for your
    vendor's API or your SIEM, programmed with routes, pages and faults::

        def test_my_source_waits_as_told(forwarder_fake_api, forwarder_once):
            api = forwarder_fake_api
            api.pages("GET", "/api/v1/logs", EVENTS, page_size=2)
            api.fault("status", path="/api/v1/logs", status=429, headers={"X-Rate-Limit-Reset": "..."})
            run = forwarder_once(source={"type": "mysource", "options": {"base_url": api.url, "token": "t"}})
            assert run.ok and len(api.calls("/api/v1/logs")) == 4

SIEM fakes (:mod:`forwarder_core.testing.siem`): :class:`SplunkHecFake`, :class:`ElasticBulkFake` and
:class:`SyslogReceiver`, each with ``output()`` giving the built-in output's block, to show your
events rendered by ``splunk_hec``, ``elastic_bulk`` and ``syslog_cef``.
"""
from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from forwarder_core import hookimpl
from forwarder_core.net.waits import NO_RETRY_HEADER
from forwarder_core.plugin.base import Output, Source
from forwarder_core.plugin.results import Page, SendResult
from forwarder_core.storage.ledger import LedgerError
from forwarder_core.testing.fakehttp import (
    HTML_ERROR,
    FakeServer,
    Fault,
    Handler,
    HandlerCrashed,
    Request,
    Response,
    json_response,
)
from forwarder_core.testing.siem import ElasticBulkFake, SplunkHecFake, SyslogReceiver


class MemorySource(Source):
    """Yields the ``events`` option as one page per ``page_size`` events."""

    type_name = "memory"
    vendor = "Test"
    product = "Memory"
    options_schema = {"type": "object", "properties": {"events": {"type": "array"},
                                                        "page_size": {"type": "integer", "default": 100}}}

    def poll(self, cursor: Any) -> Iterator[Page]:
        events = self.options.get("events", [])
        start = (cursor or {}).get("next", 0)
        size = self.options.get("page_size", 100)
        for first in range(start, len(events), size):
            chunk = events[first:first + size]
            yield Page(chunk, {"next": first + len(chunk)})

    def normalize(self, raw: dict[str, Any]) -> dict[str, Any]:
        return self.make_event(raw, id=str(raw["id"]), timestamp=raw["time"], action=raw.get("action"))


_collected: dict[str, list[dict[str, Any]]] = {}
_collected_lock = threading.Lock()


class MemoryOutput(Output):
    """Keeps every event it is sent, by output name."""

    type_name = "memory"
    options_schema = {"type": "object", "properties": {}}

    def send(self, events: list[dict[str, Any]]) -> SendResult:
        with _collected_lock:
            _collected.setdefault(self.name, []).extend(events)
        return SendResult()


class _MemoryPlugin:
    @hookimpl
    def forwarder_register_sources(self, registry: Any) -> None:
        if "memory" not in registry:
            registry.add(MemorySource)

    @hookimpl
    def forwarder_register_outputs(self, registry: Any) -> None:
        if "memory" not in registry:
            registry.add(MemoryOutput)


@dataclass
class OnceRun:
    """What ``forwarder_once`` did: per-source results (``.ok``, ``.done``, ``.polled``, ``.delivered``,
    ``.quarantined``, ``.filtered``, ``.pages``, ``.error``), the delivered events, the set-aside records."""

    results: list[Any]
    events: list[dict[str, Any]]
    quarantined: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    metrics: Any = None

    @property
    def ok(self) -> bool:
        return all(r.ok and r.done for r in self.results)

    @property
    def delivered(self) -> int:
        return sum(r.delivered for r in self.results)


def _jsonl(directory: Path) -> list[dict[str, Any]]:
    if not directory.is_dir():
        return []
    return [json.loads(line) for path in sorted(directory.glob("*.jsonl")) for line in path.read_text().splitlines()]


def load_with_memory(plugin_paths: list[str], extra: list[Any] = ()) -> Any:  # type: ignore[assignment]
    """Installed plugins, the in-memory ``memory`` source and output, and ``extra`` plugin objects."""
    from forwarder_core.plugin.manager import PluginSet, build_registries, get_plugin_manager, load_entry_points

    pm = get_plugin_manager()
    loaded = load_entry_points(pm, plugin_paths)
    pm.register(_MemoryPlugin(), name="siem_forwarder.testing")
    for n, plugin in enumerate(extra):
        pm.register(plugin, name=f"test-plugin-{n}")
    sources, outputs = build_registries(pm, loaded)
    return PluginSet(pm, loaded, sources, outputs)


def run_once(tmp_path: Path, *, source: dict[str, Any] | None = None, output: dict[str, Any] | None = None,
             raw_events: list[dict[str, Any]] | None = None, give_up_after: float | None = None,
             plugins: list[Any] = (), **settings: Any) -> OnceRun:  # type: ignore[assignment]
    """Run the pipeline once in-process; see the module docstring. ``plugins``: extra hook objects.

    ``give_up_after`` (seconds an output may keep failing before the run stops) defaults to the
    config's ``delivery.once_give_up_after``, as in ``siem-forwarder once``, else 30."""
    import yaml

    from forwarder_core.config.loader import load_config
    from forwarder_core.engine.app import build_app, run_sources_once

    source = dict(source or {"type": "memory", "options": {"events": raw_events or []}})
    output = dict(output or {"type": "memory"})
    source.setdefault("name", "src")
    output.setdefault("name", "out")
    source.setdefault("start_time", "2000-01-01T00:00:00Z")
    document = {"state_dir": str(tmp_path / "state"), "sources": [source], "outputs": [output], **settings}
    path = tmp_path / "forwarder-once.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    extra = list(plugins)
    config, plugin_set = load_config(str(path), lambda paths: load_with_memory(paths, extra))
    with _collected_lock:
        _collected.pop(output["name"], None)
    if give_up_after is None:
        give_up_after = float(config.setting("delivery", "once_give_up_after", 30.0))
    app = build_app(config, plugin_set)
    try:
        results = run_sources_once(app, give_up_after=give_up_after)
    finally:
        app.close()
    with _collected_lock:
        events = _collected.pop(output["name"], [])
    state = Path(config.state_dir)
    return OnceRun(results, events, _jsonl(state / "quarantine"), _jsonl(state / "dead-letter"), app.metrics)


@pytest.fixture
def forwarder_plugin_manager() -> Any:
    """A fresh manager with every installed plugin, and its registries (``.sources``, ``.outputs``)."""
    from forwarder_core.plugin.manager import load_plugins

    return load_plugins()


@pytest.fixture
def forwarder_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``forwarder_once(source=..., output=..., raw_events=...) -> OnceRun``; see the module docstring.

    Runs with the strict ledger (:data:`forwarder_core.storage.ledger.STRICT_ENV`): a page whose ledger
    does not balance raises :class:`~forwarder_core.storage.ledger.LedgerError` instead of being logged.
    """
    from forwarder_core.storage.ledger import STRICT_ENV

    monkeypatch.setenv(STRICT_ENV, "1")

    def run(**kwargs: Any) -> OnceRun:
        return run_once(tmp_path, **kwargs)

    return run


@pytest.fixture
def forwarder_fake_api() -> Iterator[FakeServer]:
    """A local HTTP server faking a vendor's API: ``.url``, ``route()``, ``pages()``, ``fault()``, ``calls()``."""
    with FakeServer() as server:
        yield server


__all__ = [
    "NO_RETRY_HEADER",
    "HTML_ERROR", "ElasticBulkFake", "FakeServer", "Fault", "Handler", "HandlerCrashed", "LedgerError", "MemoryOutput", "MemorySource", "OnceRun",
    "Request", "Response", "SplunkHecFake", "SyslogReceiver",
    "forwarder_fake_api", "forwarder_once", "forwarder_plugin_manager", "json_response", "load_with_memory", "run_once",
]
