"""Every hook a siem-forwarder plugin can implement.

Implement a hook with the :data:`forwarder_core.hookimpl` marker, in a module named under the
``siem_forwarder`` entry-point group. Declare every argument you use, without defaults (pluggy
versions differ on defaults); the core always calls hooks with keyword arguments.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from forwarder_core import hookspec

if TYPE_CHECKING:
    from forwarder_core.plugin.registry import Registry


# -------------------------------------------------------------------------------------------
# Registration


@hookspec
def forwarder_register_sources(registry: "Registry") -> None:
    """Add source classes to the registry.

    :param registry: call ``registry.add(cls)`` for each :class:`~forwarder_core.plugin.base.Source`
        subclass; the class declares ``type_name`` and ``options_schema``.
    """


@hookspec
def forwarder_register_outputs(registry: "Registry") -> None:
    """Add output classes to the registry.

    :param registry: call ``registry.add(cls)`` for each :class:`~forwarder_core.plugin.base.Output`
        subclass; the class declares ``type_name`` and ``options_schema``.
    """


# -------------------------------------------------------------------------------------------
# Lifecycle


@hookspec(historic=True)
def forwarder_configure(config: dict[str, Any]) -> None:
    """Receive the validated configuration at start-up, in ``check`` and at every reload.

    Raise to refuse it: ``check``, ``once`` and ``run`` then exit 78 with one line naming the
    plugin, and a reload is refused (the running config stays, and is given to you again).

    Historic: a plugin registered late still receives the latest call.

    :param config: the merged configuration, secrets wrapped (their ``str`` is ``***``).
    """


# -------------------------------------------------------------------------------------------
# Events


@hookspec
def forwarder_transform_events(source_name: str, events: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """Enrich or filter a page of normalized, validated events before they are routed.

    Called once per page, never per event, and only when some plugin implements it, one plugin
    at a time. Change events in place (add ``labels``) and return None, or return the list to
    keep: the same dicts, never copies. Events a plugin removes (from the list it returns, or
    from ``events`` in place) are counted as filtered, never silently lost; an event changed so
    that it no longer passes the normalized schema is quarantined. A raise, or an answer that is
    not a list of the events given, sets the whole page aside in the quarantine with the reason,
    naming the plugin: nothing of it counts as filtered.

    :param source_name: the ``name`` of the source the page came from.
    :param events: the page's normalized events.
    """


@hookspec
def forwarder_page_delivered(source_name: str, count: int, cursor: Any) -> None:
    """Learn that a page was accepted by every output and its cursor committed.

    A raise is logged with the plugin's name (the cursor stays committed) and the poll goes on.

    :param source_name: the ``name`` of the source.
    :param count: how many events the page delivered.
    :param cursor: the cursor now committed (opaque, owned by the source).
    """
