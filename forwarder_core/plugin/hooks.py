"""Typed calls of the hooks: one method per hook of :mod:`forwarder_core.plugin.hookspecs`, keyword-only.

``pm.hook.<name>(**kwargs)`` is untyped: a misspelt argument or a wrong value type shows up only
when a plugin trips over it. The core calls every hook through :class:`Hooks` instead, so its
call sites are type-checked and a hook's arguments are spelt out once, here. A meta-test keeps
the methods and the hookspecs in step.

Every hook is hostile input: a plugin that raises, or answers with a value the core cannot use,
becomes a :class:`PluginError` that names the plugin and the hook. The per-page hooks are called
one plugin at a time (pluggy's order), so each answer is checked against what that plugin was
given, and the call is in :data:`~forwarder_core.plugin.watch.PLUGIN_CALLS` while it runs.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from forwarder_core.plugin.watch import PLUGIN_CALLS
from forwarder_core.secrets import redact

if TYPE_CHECKING:
    import pluggy

    from forwarder_core.plugin.registry import Registry

TRANSFORM = "forwarder_transform_events"
PAGE_DELIVERED = "forwarder_page_delivered"


class PluginError(Exception):
    """A plugin raised in a hook or answered it with a wrong value: ``plugin``, ``hook`` and what it did."""

    def __init__(self, plugin: str, hook: str, problem: str):
        super().__init__(f"plugin {plugin}: {hook} {problem}")
        self.plugin = plugin
        self.hook = hook
        self.problem = problem


def raised(exc: BaseException) -> str:
    """``raised RuntimeError: <message>``, redacted and cut to one line of reasonable length."""
    text = redact(f"{type(exc).__name__}: {exc}").replace("\n", " ")
    return f"raised {text[:300]}"


def blame(pm: pluggy.PluginManager, hook: str, exc: BaseException) -> str:
    """The name of the plugin whose implementation of ``hook`` ``exc`` was raised in (from its
    traceback: pluggy re-raises a plugin's exception without saying whose it was)."""
    codes = {impl.function.__code__: impl.plugin_name for impl in getattr(pm.hook, hook).get_hookimpls()
             if hasattr(impl.function, "__code__")}
    tb = exc.__traceback__
    name = None
    while tb is not None:
        name = name or codes.get(tb.tb_frame.f_code)
        tb = tb.tb_next
    return name or "?"


class Hooks:
    """The hooks of a plugin manager, or of one plugin only (``only=``, to learn what each plugin registers)."""

    def __init__(self, pm: pluggy.PluginManager, *, only: object | None = None):
        self._pm = pm
        self._only = only
        self._each: dict[str, list[tuple[str, Any]]] = {}

    def _caller(self, name: str) -> Any:
        if self._only is None:
            return getattr(self._pm.hook, name)
        others = [p for _, p in self._pm.list_name_plugin() if p is not None and p is not self._only]
        return self._pm.subset_hook_caller(name, remove_plugins=others)

    def _per_plugin(self, name: str) -> list[tuple[str, Any]]:
        """``(plugin name, a caller of its implementation only)`` in pluggy's call order, made once."""
        each = self._each.get(name)
        if each is None:
            order: list[tuple[str, object]] = []
            for impl in reversed(getattr(self._pm.hook, name).get_hookimpls()):
                if (self._only is None or impl.plugin is self._only) and impl.plugin not in [p for _, p in order]:
                    order.append((impl.plugin_name, impl.plugin))
            everyone = [p for _, p in self._pm.list_name_plugin() if p is not None]
            each = [(plugin_name, self._pm.subset_hook_caller(name, remove_plugins=[p for p in everyone if p is not plugin]))
                    for plugin_name, plugin in order]
            self._each[name] = each
        return each

    def implemented(self, name: str) -> bool:
        """Whether any plugin implements hook ``name`` (the pipeline skips per-page hooks nobody implements)."""
        return bool(getattr(self._pm.hook, name).get_hookimpls())

    def forwarder_register_sources(self, *, registry: Registry) -> None:
        self._caller("forwarder_register_sources")(registry=registry)

    def forwarder_register_outputs(self, *, registry: Registry) -> None:
        self._caller("forwarder_register_outputs")(registry=registry)

    def forwarder_configure(self, *, config: dict[str, Any]) -> None:
        """Every plugin's ``forwarder_configure``; a raise is a :class:`PluginError` naming the plugin."""
        try:
            self._caller("forwarder_configure").call_historic(kwargs={"config": config})
        except Exception as exc:
            raise PluginError(blame(self._pm, "forwarder_configure", exc), "forwarder_configure", raised(exc)) from exc

    def forwarder_transform_events(self, *, source_name: str, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The events every plugin kept, in page order: the same dicts, changed in place or not.

        Each plugin gets a list of its own of the events still kept; its answer is what it returns,
        or that list as it left it when it returns None. An answer other than a list of events of
        the page (a string, copies, new dicts) is a :class:`PluginError`, as is a raise.
        """
        kept = list(events)
        for plugin, call in self._per_plugin(TRANSFORM):
            given = list(kept)
            try:
                with PLUGIN_CALLS.running(plugin, TRANSFORM, f"source {source_name}"):
                    answers = call(source_name=source_name, events=given)
            except Exception as exc:
                raise PluginError(plugin, TRANSFORM, raised(exc)) from exc
            kept = _kept(plugin, kept, answers[-1] if answers else given)
        return kept

    def forwarder_page_delivered(self, *, source_name: str, count: int, cursor: Any) -> list[PluginError]:
        """Tell every plugin; returns what each that raised did (the others are told all the same)."""
        failed = []
        for plugin, call in self._per_plugin(PAGE_DELIVERED):
            try:
                with PLUGIN_CALLS.running(plugin, PAGE_DELIVERED, f"source {source_name}"):
                    call(source_name=source_name, count=count, cursor=cursor)
            except Exception as exc:
                failed.append(PluginError(plugin, PAGE_DELIVERED, raised(exc)))
        return failed


def _kept(plugin: str, before: list[dict[str, Any]], answer: Any) -> list[dict[str, Any]]:
    """The events of ``before`` that ``answer`` keeps, or a :class:`PluginError` for a wrong answer."""
    if not isinstance(answer, list):
        raise PluginError(plugin, TRANSFORM, f"returned a {type(answer).__name__}, not None or a list of the "
                                             "events it was given")
    mine = {id(e) for e in before}
    strangers = sum(1 for e in answer if id(e) not in mine)
    if strangers:
        raise PluginError(plugin, TRANSFORM, f"returned {strangers} item(s) that are not events it was given "
                                             "(copies or new objects; change events in place and return those to keep)")
    keep = {id(e) for e in answer}
    return [e for e in before if id(e) in keep]
