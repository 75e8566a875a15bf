"""Assembling a running forwarder from a validated config: outputs, sources, state."""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from forwarder_core.config.loader import Config
from forwarder_core.engine import workers
from forwarder_core.engine.delivery import OutputRunner
from forwarder_core.engine.diskbuffer import BufferedOutputRunner
from forwarder_core.engine.pipeline import SourceRunner
from forwarder_core.engine.pollpool import PollPool
from forwarder_core.engine.polls import Progress, SourceResult
from forwarder_core.errors import ConfigError
from forwarder_core.metrics import Metrics
from forwarder_core.plugin.hooks import PluginError
from forwarder_core.plugin.manager import PluginSet
from forwarder_core.plugin.registry import instantiate, plugin_of
from forwarder_core.state.checkpoint import CheckpointStore
from forwarder_core.state.setaside import DEAD_LETTER, QUARANTINE, SetAside
from forwarder_core.state.statedir import StateLock, ensure_state_dir

log = logging.getLogger("siem_forwarder")


@dataclass
class App:
    config: Config
    plugins: PluginSet
    metrics: Metrics
    stop: threading.Event
    store: CheckpointStore
    lock: StateLock
    outputs: list[Any] = field(default_factory=list)  # OutputRunner or BufferedOutputRunner
    sources: list[SourceRunner] = field(default_factory=list)
    workers: Any = None
    """The :class:`~forwarder_core.engine.workers.WorkerPool`, where ``workers`` is on."""

    def close(self) -> None:
        self.stop.set()  # wakes every retry wait and drainer; nothing uncommitted is lost
        if self.workers is not None:
            self.workers.close()
        for runner in self.sources:
            try:
                runner.source.close()
            except Exception as exc:
                log.warning("source %s: close failed: %s", runner.name, exc)
        for output in self.outputs:
            output.close()
        self.store.close()
        self.lock.release()


def build_app(config: Config, plugins: PluginSet, *, metrics: Metrics | None = None,
              stop: threading.Event | None = None, only_sources: list[str] | None = None,
              configured: bool = False) -> App:
    """Open the state directory (locked), construct every output and source, configure the plugins
    (unless ``configured``: a reload has done it before it stopped the running config)."""
    metrics = metrics or Metrics()
    stop = stop or threading.Event()
    state_dir = ensure_state_dir(config.state_dir)
    lock = StateLock(state_dir).acquire()
    try:
        store = CheckpointStore(state_dir)
    except Exception:
        lock.release()
        raise
    app = App(config, plugins, metrics, stop, store, lock)
    try:
        dead_letter = SetAside(state_dir, DEAD_LETTER)
        quarantine = SetAside(state_dir, QUARANTINE)
        max_backoff = float(config.setting("delivery", "max_backoff", 300))
        for comp in config.outputs:
            output = instantiate(plugins.outputs, comp, state_dir, metrics, stop)
            runner: Any = OutputRunner(output, dead_letter, metrics, stop, max_backoff=max_backoff,
                                       plugin=plugin_of(plugins.outputs, comp.type))
            if comp.buffer == "disk":
                runner = BufferedOutputRunner(runner, state_dir, comp.buffer_max_bytes)
                runner.start()
            app.outputs.append(runner)
        hooks = plugins.hooks
        transform = hooks.forwarder_transform_events if hooks.implemented("forwarder_transform_events") else None
        delivered = hooks.forwarder_page_delivered if hooks.implemented("forwarder_page_delivered") else None
        wanted = set(only_sources) if only_sources else None
        if wanted:
            unknown = wanted - {c.name for c in config.sources}
            if unknown:
                raise ConfigError([f"{config.path}:0: $.sources: no source named {n!r}" for n in sorted(unknown)])
        for comp in config.sources:
            if wanted and comp.name not in wanted:
                continue
            source = instantiate(plugins.sources, comp, state_dir, metrics, stop)
            runner = SourceRunner(source, app.outputs, store, quarantine, metrics, stop,
                                  transform=transform, page_delivered=delivered)
            if not runner.routes:
                log.warning("source %s: no output receives it; its events would only be polled, so it is skipped",
                            comp.name)
                continue
            app.sources.append(runner)
        if config.workers > 0:
            app.workers = workers.attach(config, plugins, app.sources, stop, metrics)
        if not configured:
            configure_plugins(config, plugins)
    except BaseException:
        app.close()
        raise
    return app


def configure_plugins(config: Config, plugins: PluginSet) -> None:
    """Every plugin's ``forwarder_configure``; one that raises is a :class:`ConfigError` naming it.

    ``check`` calls it too, so a plugin that refuses the config fails ``check`` (exit 78) as it
    would fail ``run``, and a reload it refuses is refused before the running config is touched.
    """
    try:
        plugins.hooks.forwarder_configure(config=config.document)
    except PluginError as exc:
        raise ConfigError([f"{config.path}:0: $: {exc}"]) from None


def run_sources_once(app: App, progress: Progress | None = None, give_up_after: float | None = None,
                     grace: float | None = None) -> list[SourceResult]:
    """Run every source until caught up, ``max_concurrent_polls`` at a time (:mod:`forwarder_core.engine.pollpool`).

    Once ``app.stop`` is set, a poll still running ``grace`` seconds later is abandoned (its page
    uncommitted) and ends as stopped."""
    results: dict[str, SourceResult] = {}

    def done(runner: SourceRunner, result: SourceResult) -> None:
        results[runner.name] = result

    pool = PollPool(app.config.max_concurrent_polls, app.stop, on_done=done, progress=progress,
                    give_up_after=give_up_after)
    for runner in app.sources:
        pool.submit(runner)
    pool.start()
    idle = False
    try:
        idle = pool.wait_idle(grace)
    finally:
        stuck = sorted(pool.running)
        pool.close(None if idle else 0.0)
    if not idle:
        log.warning("stopping: %s still running after %.0fs (a call that does not return) abandoned; their "
                    "cursors did not move, so those pages are read again on the next run", ", ".join(stuck), grace)
    if pool.error is not None:
        raise pool.error
    return [results.get(r.name) or _not_polled(r, progress) for r in app.sources]


def _not_polled(runner: SourceRunner, progress: Progress | None) -> SourceResult:
    """A source still waiting for a slot when ``once`` was stopped: it ends as stopped, like the rest."""
    poll = runner.open_poll()
    runner.end_poll(poll, progress)
    return poll.result


def drain_buffers(app: App, give_up_after: float | None) -> list[str]:
    """``once``: empty every disk buffer; return a line per output that still holds events."""
    left = []
    for runner in app.outputs:
        if isinstance(runner, BufferedOutputRunner) and not runner.drain(give_up_after):
            left.append(f"output {runner.name}: {runner.buffer.count} event(s) still in its disk buffer "
                        f"({runner.reason or 'stopped'}); they are kept and sent on the next run")
    return left
