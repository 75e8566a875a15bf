"""Each hook of forwarder_core/hookspecs.py, exercised through the real pipeline."""
from __future__ import annotations

import inspect
import re
from pathlib import Path

from forwarder_core import hookimpl
from forwarder_core.plugin import hookspecs

RAW = [{"id": str(i), "time": f"2026-01-01T00:00:0{i}Z", "action": "a" if i % 2 else "b"} for i in range(6)]


def test_forwarder_register_outputs(forwarder_plugin_manager) -> None:
    # The built-ins arrive through this hook, from the entry-point group.
    assert forwarder_plugin_manager.outputs.get("file").plugin == "file"
    impls = forwarder_plugin_manager.pm.hook.forwarder_register_outputs.get_hookimpls()
    assert {i.plugin_name for i in impls} >= {"file", "stdout"}


def test_forwarder_register_sources(forwarder_once, testkit_path) -> None:
    class Plugin:
        @hookimpl
        def forwarder_register_sources(self, registry):
            from forwarder_core.testing import MemorySource

            class Renamed(MemorySource):
                type_name = "renamed_memory"

            registry.add(Renamed)

    run = forwarder_once(source={"type": "renamed_memory", "options": {"events": RAW}}, plugins=[Plugin()])
    assert run.ok and len(run.events) == 6
    assert run.events[0]["source"]["type"] == "renamed_memory"


def test_forwarder_configure_is_historic_and_gets_the_config(forwarder_once) -> None:
    seen = []

    class Plugin:
        @hookimpl
        def forwarder_configure(self, config):
            seen.append(config)

    forwarder_once(raw_events=RAW, plugins=[Plugin()])
    assert seen and seen[0]["sources"][0]["name"] == "src"


def test_forwarder_transform_events_enriches_and_filters(forwarder_once) -> None:
    class Plugin:
        @hookimpl
        def forwarder_transform_events(self, source_name, events):
            for event in events:
                event["labels"] = {"site": "lab", "from": source_name}
            return [e for e in events if e["action"] == "a"]

    run = forwarder_once(raw_events=RAW, plugins=[Plugin()])
    assert [e["id"] for e in run.events] == ["1", "3", "5"]
    assert all(e["labels"] == {"site": "lab", "from": "src"} for e in run.events)
    assert run.metrics.get("events_filtered_total", source="src") == 3
    assert run.ok


def test_forwarder_transform_events_that_breaks_an_event_quarantines_it(forwarder_once) -> None:
    class Plugin:
        @hookimpl
        def forwarder_transform_events(self, source_name, events):
            events[0]["labels"] = {"n": 1}  # labels must be strings
            return None

    run = forwarder_once(raw_events=RAW, plugins=[Plugin()])
    assert len(run.events) == 5
    assert "forwarder_transform_events" in run.quarantined[0]["reason"]


def test_forwarder_page_delivered_after_commit(forwarder_once) -> None:
    calls = []

    class Plugin:
        @hookimpl
        def forwarder_page_delivered(self, source_name, count, cursor):
            calls.append((source_name, count, cursor))

    forwarder_once(source={"type": "memory", "options": {"events": RAW, "page_size": 4}}, plugins=[Plugin()])
    assert calls == [("src", 4, {"next": 4}), ("src", 2, {"next": 6})]


def _hook_names() -> list[str]:
    return [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("forwarder_")]


def test_every_hook_is_documented_in_hookspecs_and_docs() -> None:
    docs = (Path(__file__).resolve().parents[3] / "docs" / "plugins.md").read_text()
    for name in _hook_names():
        assert getattr(hookspecs, name).__doc__, f"{name} has no docstring"
        assert f"`{name}" in docs, f"{name} is missing from docs/plugins.md"


def _in_code(docs: str, name: str) -> bool:
    """``name`` appears in the docs inside backticks (`name`, `name(...)`, `x.name`)."""
    return re.search(rf"`[^`\n]*\b{re.escape(name)}\b[^`\n]*`", docs) is not None


def _public_members(cls: type) -> set[str]:
    import dataclasses

    names = {n for klass in cls.__mro__ if klass.__module__.startswith("forwarder_core")
             for n in vars(klass) if not n.startswith("_")}
    if dataclasses.is_dataclass(cls):
        names |= {f.name for f in dataclasses.fields(cls) if not f.name.startswith("_")}
    return names


def test_every_public_name_of_the_plugin_api_is_in_the_docs() -> None:
    from forwarder_core import errors, plugin_api, testing
    from forwarder_core.net import auth, waits
    from forwarder_core.testing import fakehttp

    docs = (Path(__file__).resolve().parents[3] / "docs" / "plugins.md").read_text()
    missing = [f"forwarder_core.plugin_api.{n}" for n in plugin_api.__all__ if not _in_code(docs, n)]
    for name in plugin_api.__all__:
        obj = getattr(plugin_api, name)
        if isinstance(obj, type) and obj.__module__.startswith("forwarder_core."):
            missing += [f"{name}.{m}" for m in sorted(_public_members(obj)) if not _in_code(docs, m)]
    errors_public = [n for n, obj in vars(errors).items() if isinstance(obj, type) and issubclass(obj, Exception)]
    for module, public in ((errors, errors_public), (auth, auth.__all__), (waits, waits.__all__)):
        missing += [f"{module.__name__}.{n}" for n in public if not _in_code(docs, n)]
    missing += [f"HttpClient.{m}" for m in ("request", "get_json", "post_json", "json", "url", "sleep", "close")
                if not _in_code(docs, m)]
    import inspect as _inspect

    from forwarder_core.net.client import HttpClient

    missing += [f"HttpClient.request({p})" for p in _inspect.signature(HttpClient.request).parameters
                if p != "self" and not _in_code(docs, p)]
    missing += [f"FakeServer.{m}" for m in _public_members(fakehttp.FakeServer) if not _in_code(docs, m)]
    missing += [f"fixture {n}" for n in vars(testing) if n.startswith("forwarder_") and not _in_code(docs, n)]
    assert not missing, "missing from docs/plugins.md: " + ", ".join(missing)


def test_every_hook_has_a_typed_keyword_only_call() -> None:
    from forwarder_core.plugin.hooks import Hooks

    for name in _hook_names():
        spec = inspect.signature(getattr(hookspecs, name))
        method = getattr(Hooks, name, None)
        assert method is not None, f"forwarder_core.plugin.hooks.Hooks has no {name}()"
        params = list(inspect.signature(method).parameters.values())[1:]
        assert [p.name for p in params] == list(spec.parameters), f"Hooks.{name} takes other arguments than its spec"
        assert all(p.kind is p.KEYWORD_ONLY for p in params), f"Hooks.{name} must take keywords only"
    assert not [m for m in vars(Hooks) if m.startswith("forwarder_") and m not in _hook_names()], "a stale method"


def test_every_hook_has_a_test() -> None:
    here = Path(__file__).read_text()
    for name in _hook_names():
        assert re.search(rf"def test_{name}\b|def test_\w*{name}", here), f"{name} has no test in {__file__}"


def test_last_event_age_is_set_even_for_a_source_that_delivered_nothing(forwarder_once) -> None:
    run = forwarder_once(raw_events=[])
    assert ("siem_forwarder_last_event_age_seconds", {"source": "src"}) in [(n, labels) for n, labels, _ in run.metrics.items()]
    busy = forwarder_once(raw_events=RAW)
    assert busy.metrics.get("last_event_age_seconds", source="src") < 5
