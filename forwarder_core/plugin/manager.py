"""The plugin manager: built from installed entry points, one broken plugin never fatal.

pluggy's own ``load_setuptools_entrypoints`` stops at the first plugin that fails to import;
a daemon must not, so :func:`load_entry_points` walks the ``siem_forwarder`` group itself and
logs a broken plugin by name. Plugins come only from installed entry points (plus the
``plugin_paths`` directories an operator lists, added to the end of ``sys.path``), never from
a module path in the config.
"""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from importlib import metadata

import pluggy

from forwarder_core import PROJECT
from forwarder_core.plugin import hookspecs
from forwarder_core.plugin.hooks import Hooks
from forwarder_core.plugin.registry import Registry, new_registries

log = logging.getLogger("siem_forwarder.plugins")
IN_PROCESS = "(registered in process)"
"""The distribution of a plugin registered on the manager by code rather than through an entry point."""


@dataclass
class LoadedPlugin:
    name: str
    distribution: str
    version: str
    module: str
    error: str | None = None


@dataclass
class PluginSet:
    """The manager, what it loaded (or failed to), and the source and output registries."""

    pm: pluggy.PluginManager
    loaded: list[LoadedPlugin] = field(default_factory=list)
    sources: Registry | None = None
    outputs: Registry | None = None

    @property
    def failed(self) -> list[LoadedPlugin]:
        return [p for p in self.loaded if p.error]

    @property
    def hooks(self) -> Hooks:
        """The typed hook calls (the core never calls ``pm.hook`` directly)."""
        return Hooks(self.pm)


def get_plugin_manager() -> pluggy.PluginManager:
    """A fresh manager with the hookspecs added and no plugins registered."""
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    return pm


def load_entry_points(pm: pluggy.PluginManager, plugin_paths: list[str] | tuple[str, ...] = ()) -> list[LoadedPlugin]:
    """Register every plugin of the entry-point group; log and skip those that fail."""
    for path in plugin_paths:
        if path not in sys.path:
            sys.path.append(path)
    results: list[LoadedPlugin] = []
    seen: dict[str, LoadedPlugin] = {}
    for ep in sorted(metadata.entry_points(group=PROJECT), key=lambda e: e.name):
        dist = ep.dist.metadata["Name"] if ep.dist is not None else "unknown"
        version = ep.dist.version if ep.dist is not None else ""
        info = LoadedPlugin(ep.name, dist, version, ep.value)
        if ep.name in seen:
            log.warning("plugin %s from %s ignored: the name is already taken by %s", ep.name, dist, seen[ep.name].distribution)
            continue
        seen[ep.name] = info
        try:
            module = ep.load()
            pm.register(module, name=ep.name)
        except Exception as exc:  # a broken plugin is reported by name, never fatal
            info.error = f"{type(exc).__name__}: {exc}"
            log.error("plugin %s (%s %s) disabled: %s", ep.name, dist, version, info.error)
        results.append(info)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        bad = getattr(exc, "plugin", None)
        bad_name = pm.get_name(bad) if bad is not None else None
        log.error("plugin %s disabled: %s", bad_name or "?", exc)
        if bad is not None:
            pm.unregister(bad)
        for info in results:
            if info.name == bad_name:
                info.error = str(exc)
    return results


def build_registries(pm: pluggy.PluginManager, loaded: list[LoadedPlugin]) -> tuple[Registry, Registry]:
    """Ask each plugin, one at a time, for its types, so each type knows its distribution."""
    sources, outputs = new_registries()
    by_name = {p.name: p for p in loaded}
    for plugin_name, plugin in pm.list_name_plugin():
        if plugin is None or plugin_name is None:
            continue
        info = by_name.get(plugin_name) or LoadedPlugin(plugin_name, IN_PROCESS, "", str(plugin))
        hooks = Hooks(pm, only=plugin)
        for register, registry in ((hooks.forwarder_register_sources, sources),
                                   (hooks.forwarder_register_outputs, outputs)):
            registry.set_origin(info.distribution, info.version, plugin_name)
            try:
                register(registry=registry)
            except Exception as exc:
                registry.problems.append(f"plugin {plugin_name}: {register.__name__} failed: {type(exc).__name__}: {exc}")
    for problem in sources.problems + outputs.problems:
        log.error("%s", problem)
    return sources, outputs


def load_plugins(plugin_paths: list[str] | tuple[str, ...] = (), pm: pluggy.PluginManager | None = None) -> PluginSet:
    """The usual start-up: a manager, every installed plugin, both registries."""
    pm = pm or get_plugin_manager()
    loaded = load_entry_points(pm, plugin_paths)
    sources, outputs = build_registries(pm, loaded)
    return PluginSet(pm, loaded, sources, outputs)
