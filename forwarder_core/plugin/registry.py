"""The registry plugins add their source and output classes to, and where each came from."""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from forwarder_core.errors import ConfigError
from forwarder_core.metrics import Metrics, check_declaration
from forwarder_core.plugin.base import Output, Source
from forwarder_core.plugin.context import ComponentConfig, Context
from forwarder_core.secrets import redact


@dataclass(frozen=True)
class Registered:
    cls: type
    distribution: str
    version: str
    plugin: str


class Registry:
    """Source or output types by ``type_name``. One instance per kind."""

    def __init__(self, kind: str, base: type[Source] | type[Output]):
        self.kind = kind
        self.base = base
        self._types: dict[str, Registered] = {}
        self.problems: list[str] = []
        self._origin = ("unknown", "", "")

    def set_origin(self, distribution: str, version: str, plugin: str) -> None:
        self._origin = (distribution, version, plugin)

    def add(self, cls: Any) -> None:
        """Register a class; a class that breaks the rules is reported, not registered."""
        dist, version, plugin = self._origin
        name = getattr(cls, "type_name", None)
        if not isinstance(cls, type) or not issubclass(cls, self.base):
            self.problems.append(f"plugin {plugin}: {cls!r} is not a {self.base.__name__} subclass")
            return
        if not isinstance(name, str) or not name:
            self.problems.append(f"plugin {plugin}: {cls.__name__} has no type_name")
            return
        if not isinstance(getattr(cls, "options_schema", None), dict):
            self.problems.append(f"plugin {plugin}: {cls.__name__} has no options_schema")
            return
        if name in self._types:
            first = self._types[name]
            self.problems.append(
                f"plugin {plugin}: {self.kind} type {name!r} is already provided by {first.distribution} "
                f"({first.plugin}); keeping the first"
            )
            return
        for metric, (kind, help_text) in cls.declared_metrics.items():
            try:
                check_declaration(metric, kind, help_text)
            except ValueError as exc:
                self.problems.append(f"plugin {plugin}: {cls.__name__}: {exc}")
        self._types[name] = Registered(cls, dist, version, plugin)

    def get(self, name: str) -> Registered | None:
        return self._types.get(name)

    def names(self) -> list[str]:
        return sorted(self._types)

    def items(self) -> list[tuple[str, Registered]]:
        return sorted(self._types.items())

    def __contains__(self, name: object) -> bool:
        return name in self._types


def new_registries() -> tuple[Registry, Registry]:
    return Registry("source", Source), Registry("output", Output)


def _context(comp: ComponentConfig, state_dir: str, metrics: Metrics, stop: threading.Event, probe: bool,
             halt: threading.Event | None) -> Context:
    return Context(name=comp.name, state_dir=state_dir, logger=logging.getLogger(f"siem_forwarder.{comp.name}"),
                   metrics=metrics, stop=stop, probe=probe, halt=halt)


def plugin_of(registry: Any, type_name: str) -> str:
    """The name of the plugin that registered ``type_name`` (the type name itself when unknown)."""
    registered = registry.get(type_name) if registry is not None else None
    return registered.plugin if registered is not None else type_name


def instantiate(registry: Any, comp: ComponentConfig, state_dir: str, metrics: Metrics, stop: threading.Event,
                *, probe: bool = False, halt: threading.Event | None = None) -> Any:
    """Build one plugin instance of ``comp``'s type with the context the core lends it.

    A constructor that raises anything but a :class:`ConfigError` is a plugin bug: it becomes a
    ConfigError line naming the component, its type and the plugin, so ``run`` and ``once`` end
    with that line (exit 78) rather than a traceback, and a reload is refused.
    """
    registered = registry.get(comp.type)
    try:
        return registered.cls(comp, _context(comp, state_dir, metrics, stop, probe, halt))
    except ConfigError:
        raise
    except Exception as exc:
        text = redact(f"{type(exc).__name__}: {exc}").replace("\n", " ")[:300]
        raise ConfigError([f"{comp.file}:{comp.line}: {comp.name} ({registry.kind} type {comp.type}): plugin "
                           f"{registered.plugin}: __init__ raised {text}"]) from None
