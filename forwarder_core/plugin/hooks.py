"""Typed calls of the hooks: one method per hook of :mod:`forwarder_core.plugin.hookspecs`, keyword-only.

``pm.hook.<name>(**kwargs)`` is untyped: a misspelt argument or a wrong value type shows up only
when a plugin trips over it. The core calls every hook through :class:`Hooks` instead, so its
call sites are type-checked and a hook's arguments are spelt out once, here. A meta-test keeps
the methods and the hookspecs in step.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pluggy

    from forwarder_core.plugin.registry import Registry


class Hooks:
    """The hooks of a plugin manager, or of one plugin only (``only=``, to learn what each plugin registers)."""

    def __init__(self, pm: pluggy.PluginManager, *, only: object | None = None):
        self._pm = pm
        self._only = only

    def _caller(self, name: str) -> Any:
        if self._only is None:
            return getattr(self._pm.hook, name)
        others = [p for _, p in self._pm.list_name_plugin() if p is not None and p is not self._only]
        return self._pm.subset_hook_caller(name, remove_plugins=others)

    def implemented(self, name: str) -> bool:
        """Whether any plugin implements hook ``name`` (the pipeline skips per-page hooks nobody implements)."""
        return bool(getattr(self._pm.hook, name).get_hookimpls())

    def forwarder_register_sources(self, *, registry: Registry) -> None:
        self._caller("forwarder_register_sources")(registry=registry)

    def forwarder_register_outputs(self, *, registry: Registry) -> None:
        self._caller("forwarder_register_outputs")(registry=registry)

    def forwarder_configure(self, *, config: dict[str, Any]) -> None:
        self._caller("forwarder_configure").call_historic(kwargs={"config": config})

    def forwarder_transform_events(self, *, source_name: str,
                                   events: list[dict[str, Any]]) -> list[list[dict[str, Any]] | None]:
        result: list[list[dict[str, Any]] | None] = self._caller("forwarder_transform_events")(
            source_name=source_name, events=events)
        return result

    def forwarder_page_delivered(self, *, source_name: str, count: int, cursor: Any) -> None:
        self._caller("forwarder_page_delivered")(source_name=source_name, count=count, cursor=cursor)
