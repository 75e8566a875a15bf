"""``check --connect``: authenticate to each source and reach each output, forwarding nothing."""
from __future__ import annotations

import threading

from forwarder_core.app import instantiate
from forwarder_core.config import Config
from forwarder_core.metrics import Metrics
from forwarder_core.secrets import redact


def check_connections(config: Config, plugins: object) -> bool:
    metrics = Metrics()
    stop = threading.Event()
    ok = True
    import tempfile

    with tempfile.TemporaryDirectory(prefix="siem-forwarder-check-") as scratch:  # never touch the real state
        for kind, registry, comps in (("source", plugins.sources, config.sources),  # type: ignore[attr-defined]
                                      ("output", plugins.outputs, config.outputs)):  # type: ignore[attr-defined]
            for comp in comps:
                try:
                    component = instantiate(registry, comp, scratch, metrics, stop)
                    try:
                        what = component.check_connection()
                    finally:
                        component.close()
                    print(f"{kind} {comp.name} ({comp.type}): ok: {what}")
                except Exception as exc:
                    ok = False
                    print(f"{kind} {comp.name} ({comp.type}): FAILED: {redact(str(exc)) or type(exc).__name__}")
    return ok
