"""The module paths of releases before the core was grouped by concern, kept working with a warning.

``from forwarder_core.http import HttpClient`` was how a plugin imported the HTTP client; the core's
modules now live in packages (``forwarder_core.net.client``) and plugins import from
:mod:`forwarder_core.plugin_api`. A finder on ``sys.meta_path`` answers each old path with the
module that now holds its code, after a :class:`DeprecationWarning` that names where to import
from instead, so a plugin written against the old paths installs and runs unchanged.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType

_PUBLIC = "forwarder_core.plugin_api"
_TESTING = "forwarder_core.testing"

MOVED: dict[str, tuple[str, str]] = {
    # old module: (the module that holds its code now, where a plugin should import from)
    "http": ("net.client", _PUBLIC),
    "auth": ("net.auth", _PUBLIC),
    "waits": ("net.waits", _PUBLIC),
    "fakehttp": ("testing.fakehttp", _TESTING),
    "context": ("plugin.context", _PUBLIC),
    "results": ("plugin.results", _PUBLIC),
    "encoded": ("plugin.encoded", _PUBLIC),
    "source_traits": ("plugin.source_traits", _PUBLIC),
    "option_schemas": ("plugin.option_schemas", _PUBLIC),
    "cef_parser": ("plugin.cef", _PUBLIC),
    "durable": ("storage.durable", _PUBLIC),
    "hookspecs": ("plugin.hookspecs", "forwarder_core.plugin.hookspecs"),
    "hooks": ("plugin.hooks", "forwarder_core.plugin.hooks"),
    "registry": ("plugin.registry", "forwarder_core.plugin.registry"),
    "plugins": ("plugin.manager", "forwarder_core.plugin.manager"),
    "ledger": ("storage.ledger", "forwarder_core.storage.ledger"),
    "checkpoint": ("storage.checkpoint", "forwarder_core.storage.checkpoint"),
    "statedir": ("storage.statedir", "forwarder_core.storage.statedir"),
    "setaside": ("storage.setaside", "forwarder_core.storage.setaside"),
    "schema": ("config.schema", "forwarder_core.config.schema"),
    "app": ("engine.app", "forwarder_core.engine.app"),
    "pipeline": ("engine.pipeline", "forwarder_core.engine.pipeline"),
    "cli": ("commands.cli", "forwarder_core.commands.cli"),
}


class _Alias(importlib.abc.Loader):
    def __init__(self, old: str, new: str, instead: str):
        self.old, self.new, self.instead = old, new, instead

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        warnings.warn(f"{self.old} has moved; import from {self.instead} instead", DeprecationWarning, stacklevel=2)
        return importlib.import_module(self.new)

    def exec_module(self, module: ModuleType) -> None:
        """The module is the one that holds the code, already executed."""


class MovedFinder(importlib.abc.MetaPathFinder):
    """Finds each old path of :data:`MOVED`, and nothing else."""

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> importlib.machinery.ModuleSpec | None:
        prefix, _, name = fullname.partition(".")
        if prefix != "forwarder_core" or name not in MOVED:
            return None
        new, instead = MOVED[name]
        return importlib.machinery.ModuleSpec(fullname, _Alias(fullname, f"forwarder_core.{new}", instead))


def install() -> None:
    if not any(isinstance(f, MovedFinder) for f in sys.meta_path):
        sys.meta_path.append(MovedFinder())
