"""siem-forwarder core: config, plugin manager, pipeline, checkpoints, HTTP client and CLI.

Plugin authors need only this module's :data:`hookimpl` marker and
:mod:`forwarder_core.plugin_api` (their tests: :mod:`forwarder_core.testing`)::

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

Everything else is internal and grouped by concern. Packages import downward only, in this
order (tests/core/test_architecture.py fails on an upward import or a cycle, naming both modules):

    commands   what an operator runs: cli, daemon, systemd, health, progress, state, replay, connect
       |
    engine     moving events: app, pipeline, polls, fetch, prepare, delivery, disk buffer, pools
       |
    config     the config file: YAML with lines, ${VAR}, components, problems, schemas
       |
    storage    what is kept: the state directory's checkpoints, ledger, quarantine and dead letters,
               durable appends; a fleet's PostgreSQL store and leases
       |
    plugin     what plugins meet: base classes, context, results, traits, hooks, registry, loader
       |
    net        HTTP: the client, auth, waits, error bodies
       |
    helpers    top-level modules: errors, secrets, metrics, logs, times, jsoncodec

``plugin_api`` and ``testing`` stand beside the order: they are the public faces, may import any
package, and no module of the core imports them. ``_moved`` keeps the module paths of earlier
releases working, with a DeprecationWarning.

This module stays tiny on purpose: ``siem-forwarder --version`` imports it and nothing else.
"""
from __future__ import annotations

import pluggy

from forwarder_core import _moved

__version__ = "0.1.0"

PROJECT = "siem_forwarder"
"""One word for the entry-point group, the hook markers and the plugin manager."""

hookimpl = pluggy.HookimplMarker(PROJECT)
hookspec = pluggy.HookspecMarker(PROJECT)

_moved.install()

__all__ = ["PROJECT", "__version__", "hookimpl", "hookspec"]
