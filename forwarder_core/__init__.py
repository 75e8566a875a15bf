"""siem-forwarder core: config, plugin manager, pipeline, checkpoints, HTTP client and CLI.

Plugin authors need only this module's :data:`hookimpl` marker and the base classes in
:mod:`forwarder_core.plugin_api`::

    # my_plugin.py, registered under the ``siem_forwarder`` entry-point group
    from forwarder_core import hookimpl
    from forwarder_core.plugin_api import Output

    class Webhook(Output):
        type_name = "webhook"
        options_schema = {"type": "object", "properties": {"url": {"type": "string"}}}
        ...

    @hookimpl
    def forwarder_register_outputs(registry):
        registry.add(Webhook)

This module stays tiny on purpose: ``siem-forwarder --version`` imports it and nothing else.
"""
from __future__ import annotations

import pluggy

__version__ = "0.1.0"

PROJECT = "siem_forwarder"
"""One word for the entry-point group, the hook markers and the plugin manager."""

hookimpl = pluggy.HookimplMarker(PROJECT)
hookspec = pluggy.HookspecMarker(PROJECT)

__all__ = ["PROJECT", "__version__", "hookimpl", "hookspec"]
