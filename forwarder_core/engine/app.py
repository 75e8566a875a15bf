"""Assembling a running forwarder from a validated config: outputs, sources, state."""
from __future__ import annotations

import dataclasses
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from forwarder_core.config.components import plugin_view
from forwarder_core.config.loader import Config
from forwarder_core.engine import workers
from forwarder_core.engine.delivery import OutputRunner
from forwarder_core.engine.diskbuffer import BufferedOutputRunner
from forwarder_core.engine.fleet import Fleet
from forwarder_core.engine.pipeline import SourceRunner
from forwarder_core.engine.pollpool import PollPool
from forwarder_core.engine.polls import Progress, SourceResult
from forwarder_core.engine.stores import open_state
from forwarder_core.errors import ConfigError
from forwarder_core.metrics import PER_OUTPUT, PER_ROUTE, PER_SOURCE, Metrics
from forwarder_core.plugin.hooks import PluginError
from forwarder_core.plugin.manager import PluginSet
from forwarder_core.plugin.registry import instantiate, plugin_of
from forwarder_core.storage.ledger import TERMS
from forwarder_core.storage.statedir import StateLock, ensure_state_dir
from forwarder_core.times import parse_time

log = logging.getLogger("siem_forwarder")


@dataclass
class App:
    config: Config
    plugins: PluginSet
    metrics: Metrics
    stop: threading.Event
    store: Any  # CheckpointStore, or PgStore for a fleet
    lock: StateLock
    outputs: list[Any] = field(default_factory=list)  # OutputRunner or BufferedOutputRunner
    sources: list[SourceRunner] = field(default_factory=list)
    workers: Any = None
    """The :class:`~forwarder_core.engine.workers.WorkerPool`, where ``workers`` is on."""
    fleet: Fleet | None = None
    """This instance's leases, with a ``cluster:`` block (:mod:`forwarder_core.engine.fleet`)."""
    halt: threading.Event = field(default_factory=threading.Event)
    """Cuts off the outputs' requests in flight. The stop lets a batch being sent finish (within
    ``shutdown_timeout``); closing the app sets this, so what is still sending then is abandoned."""

    def close(self) -> None:
        self.stop.set()  # wakes every retry wait and drainer; nothing uncommitted is lost
        self.halt.set()
        if self.workers is not None:
            self.workers.close()
        for runner in self.sources:
            try:
                runner.source.close()
            except Exception as exc:
                log.warning("source %s: close failed: %s", runner.name, exc)
        for output in self.outputs:
            output.close()
        if self.fleet is not None:
            self.fleet.close()
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
        state = open_state(config, state_dir, metrics, stop)
    except Exception:
        lock.release()
        raise
    store, quarantine, dead_letter = state.store, state.quarantine, state.dead_letter
    app = App(config, plugins, metrics, stop, store, lock, fleet=state.fleet)
    try:
        max_backoff = float(config.setting("delivery", "max_backoff", 300))
        for comp in config.outputs:
            output = instantiate(plugins.outputs, comp, state_dir, metrics, stop, halt=app.halt)
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
        export_series(app)
        if not configured:
            configure_plugins(config, plugins)
    except BaseException:
        app.close()
        raise
    return app


def configure_plugins(config: Config, plugins: PluginSet) -> None:
    """Every plugin's ``forwarder_configure`` (secrets wrapped); one that raises is a
    :class:`ConfigError` naming it.

    ``check`` calls it too, so a plugin that refuses the config fails ``check`` (exit 78) as it
    would fail ``run``, and a reload it refuses is refused before the running config is touched.
    """
    try:
        plugins.hooks.forwarder_configure(config=plugin_view(config.document, plugins))
    except PluginError as exc:
        raise ConfigError([f"{config.path}:0: $: {exc}"]) from None


def export_series(app: App) -> None:
    """Make every series the forwarder can count, at 0, before the first poll.

    A counter that first appears non-zero hides that increase from ``increase()`` and from the
    alert rules (packaging/prometheus/), so each source, output and route is on ``/metrics``
    from start-up. A plugin's :meth:`metric_series` that raises is reported by name and skipped.
    """
    metrics = app.metrics
    for impl in app.plugins.pm.hook.forwarder_transform_events.get_hookimpls():
        metrics.zero("plugin_errors_total", plugin=impl.plugin_name, hook="forwarder_transform_events")
    for output in app.outputs:
        for name in PER_OUTPUT:
            metrics.zero(name, output=output.name)
        metrics.zero("output_paused", output=output.name)
        plugin = getattr(output, "plugin", None) or plugin_of(app.plugins.outputs, output.output.config.type)
        for hook in ("send", "send_encoded"):
            metrics.zero("plugin_errors_total", plugin=plugin, hook=hook)
        _plugin_series(metrics, output.output)
    for runner in app.sources:
        for name in PER_SOURCE:
            metrics.zero(name, source=runner.name)
        metrics.zero("last_event_age_seconds", source=runner.name)
        checkpoint = app.store.get(runner.name)
        if checkpoint is not None and checkpoint.watermark:
            metrics.set("watermark_timestamp_seconds", parse_time(checkpoint.watermark).timestamp(), source=runner.name)
        for term in TERMS:
            if term in ("delivered", "dead_lettered"):
                for output in runner.routes:
                    metrics.zero("ledger_events_total", source=runner.name, term=term, output=output.name)
            else:
                metrics.zero("ledger_events_total", source=runner.name, term=term)
        for output in runner.routes:
            for name in PER_ROUTE:
                metrics.zero(name, output=output.name, source=runner.name)
        _plugin_series(metrics, runner.source)
    metrics.set("worker_processes", app.workers.size if app.workers is not None else 0)


def _plugin_series(metrics: Metrics, component: Any) -> None:
    try:
        for name, labels in component.metric_series():
            metrics.zero(name, **labels)
    except Exception as exc:
        log.warning("%s: its metric_series() failed (%s: %s); its counters appear once counted",
                    component.name, type(exc).__name__, exc)


def run_sources_once(app: App, progress: Progress | None = None, give_up_after: float | None = None,
                     shutdown_timeout: float | None = None) -> list[SourceResult]:
    """Run every source until caught up, ``max_concurrent_polls`` at a time (:mod:`forwarder_core.engine.pollpool`).

    Once the stop event is set, the polls still running get ``shutdown_timeout`` seconds to end;
    one that has not (its plugin blocked where the stop cannot reach) is abandoned, its page
    uncommitted, and reported as such.
    """
    results: dict[str, SourceResult] = {}

    def done(runner: SourceRunner, result: SourceResult) -> None:
        results[runner.name] = result

    pool = PollPool(app.config.max_concurrent_polls, app.stop, on_done=done, progress=progress,
                    give_up_after=give_up_after)
    for runner in app.sources:
        pool.submit(runner)
    pool.start()
    abandoned: dict[str, SourceResult] = {}
    try:
        if not pool.wait_idle(shutdown_timeout):
            abandoned = {name: _abandoned(result, shutdown_timeout) for name, result in dict(pool.in_flight).items()}
            log.warning("stopping: source(s) %s still busy %.0fs after the stop were abandoned; their cursors did "
                        "not move, so their pages will be read again on the next run",
                        ", ".join(sorted(abandoned)), shutdown_timeout or 0)
    finally:
        pool.close(0 if abandoned else None)
    if pool.error is not None:
        raise pool.error
    return [results.get(r.name) or abandoned.get(r.name) or _not_polled(r, progress) for r in app.sources]


def _abandoned(result: SourceResult, after: float | None) -> SourceResult:
    """A copy of the result of a poll still running when ``once`` gave up on it (its thread may
    still run: the store is not touched for it)."""
    return dataclasses.replace(result, done=False, error=f"stopped: still busy {after or 0:.0f}s after the stop "
                                                         f"(shutdown_timeout); abandoned, its page not committed")


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
