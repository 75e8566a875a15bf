"""``check --connect``: authenticate to each source and reach each output, forwarding nothing.

Every component is tried once (no retry loop: the HTTP client runs in probe mode), all of them
at the same time, and the whole check is bounded: a component still silent at the deadline is
reported as such, so five unreachable vendors cost one timeout, not five times the retry policy.
"""
from __future__ import annotations

import dataclasses
import queue
import tempfile
import threading
import time
from typing import Any

from forwarder_core.config.loader import Config
from forwarder_core.metrics import Metrics
from forwarder_core.plugin.context import ComponentConfig
from forwarder_core.plugin.registry import instantiate
from forwarder_core.secrets import redact

DEFAULT_BOUND = 10.0
"""Seconds the whole check may take; also the cap on each component's own ``timeout``."""


def check_connections(config: Config, plugins: Any, bound: float = DEFAULT_BOUND, out: Any = None) -> bool:
    """Print one line per component (``source NAME (type): ok: ...`` or ``FAILED: cause``); True when all passed."""
    metrics = Metrics()
    stop = threading.Event()
    jobs = [("source", plugins.sources, c) for c in config.sources] + [("output", plugins.outputs, c) for c in config.outputs]
    answers: queue.Queue[tuple[int, bool, str]] = queue.Queue()
    with tempfile.TemporaryDirectory(prefix="siem-forwarder-check-") as scratch:  # never touch the real state
        for n, (_kind, registry, comp) in enumerate(jobs):
            # Daemon threads: one stuck in a vendor's TCP handshake must not keep the process alive.
            threading.Thread(target=_probe, args=(n, registry, _capped(comp, bound), scratch, metrics, stop, answers),
                             name=f"check-{comp.name}", daemon=True).start()
        verdicts: dict[int, tuple[bool, str]] = {}
        deadline = time.monotonic() + bound
        while len(verdicts) < len(jobs):
            try:
                n, ok, text = answers.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            verdicts[n] = (ok, text)
        stop.set()
    for n, (kind, _, comp) in enumerate(jobs):
        ok, text = verdicts.get(n, (False, f"no answer within {bound:g} s"))
        print(f"{kind} {comp.name} ({comp.type}): {'ok' if ok else 'FAILED'}: {text}", file=out, flush=True)
    return len(verdicts) == len(jobs) and all(ok for ok, _ in verdicts.values())


def _capped(comp: ComponentConfig, bound: float) -> ComponentConfig:
    """The component with its ``timeout`` option no longer than the whole check."""
    options = dict(comp.options)
    options["timeout"] = min(float(options.get("timeout", bound)), bound)
    return dataclasses.replace(comp, options=options)


def _probe(n: int, registry: Any, comp: ComponentConfig, scratch: str, metrics: Metrics, stop: threading.Event,
           answers: queue.Queue[tuple[int, bool, str]]) -> None:
    try:
        component = instantiate(registry, comp, scratch, metrics, stop, probe=True)
        try:
            answers.put((n, True, component.check_connection()))
        finally:
            component.close()
    except Exception as exc:
        answers.put((n, False, _cause(redact(str(exc)), comp.name) or type(exc).__name__))


def _cause(text: str, name: str) -> str:
    """The message without the ``NAME: `` prefixes plugins add for the logs: the line names it already."""
    return " ".join(text.removeprefix(f"{name}: ").replace(f": {name}: ", ": ").split())
