"""``siem-forwarder run``: every source on its interval, forever, until SIGTERM.

SIGTERM/SIGINT: stop polling, let the batch in flight finish (or abandon it after
``shutdown_timeout``, its cursor unmoved), close, exit 0. SIGHUP: read the config again; if it
is valid, restart the sources with it (cursors are kept: they live in the state directory); if
not, log every problem and keep running the old one.
"""
from __future__ import annotations

import argparse
import logging
import random
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from forwarder_core.engine.app import App, build_app, configure_plugins
from forwarder_core.engine.pipeline import SourceRunner
from forwarder_core.engine.pollpool import PollPool
from forwarder_core.engine.polls import SourceResult
from forwarder_core.errors import ConfigError, StateError
from forwarder_core.plugin.watch import PLUGIN_CALLS
from forwarder_core.secrets import redact

log = logging.getLogger("siem_forwarder.daemon")
WEDGED_AFTER = 3600.0


class _Systemd:
    """sd_notify when running under systemd; silent otherwise."""

    def __init__(self) -> None:
        try:
            from forwarder_core.commands import systemd
        except ImportError:  # pragma: no cover
            systemd = None  # type: ignore[assignment]
        self.mod = systemd

    def send(self, *fields: str) -> None:
        if self.mod is not None:
            self.mod.notify(*fields)

    def watchdog_interval(self) -> float | None:
        return self.mod.watchdog_interval() if self.mod is not None else None


class Scheduler:
    """Every source on its own interval (with jitter), polled ``max_concurrent_polls`` at a time."""

    def __init__(self, app: App):
        self.app = app
        self.last_delivery = 0.0
        self.fleet = getattr(app, "fleet", None)
        self.owned: set[str] = set()
        """With a fleet: the sources whose lease this instance holds (the others are not polled)."""
        self._scheduled: set[str] = set()
        self._lock = threading.Lock()
        self._runners = {r.name: r for r in app.sources}
        self.pool = PollPool(app.config.max_concurrent_polls, app.stop, on_done=self._done,
                             admit=self._admit if self.fleet is not None else None)

    def start(self) -> None:
        if self.fleet is None:
            for runner in self.app.sources:
                self.pool.submit(runner, self._jitter(runner))
        else:
            self.fleet.gained, self.fleet.lost = self._gained, self._lost
            self.fleet.idle = lambda name: not self.pool.holds(name)
        self.pool.start()
        if self.fleet is not None:
            self.fleet.start()

    @staticmethod
    def _jitter(runner: SourceRunner) -> float:
        return random.uniform(0, min(5.0, runner.source.config.interval / 10))

    def _gained(self, names: list[str]) -> None:
        with self._lock:
            self.owned.update(names)
            due = [self._runners[n] for n in names if n in self._runners and n not in self._scheduled]
            self._scheduled.update(r.name for r in due)
        for runner in due:
            self.pool.submit(runner, self._jitter(runner))

    def _lost(self, names: list[str]) -> None:
        with self._lock:
            self.owned.difference_update(names)

    def _admit(self, runner: SourceRunner) -> bool:
        with self._lock:
            if runner.name in self.owned:
                return True
            self._scheduled.discard(runner.name)
            return False

    def _done(self, runner: SourceRunner, result: SourceResult) -> None:
        if result.delivered:
            self.last_delivery = time.time()
        with self._lock:
            again = not self.app.stop.is_set() and (self.fleet is None or runner.name in self.owned)
            if not again:
                self._scheduled.discard(runner.name)
        if again:
            self.pool.submit(runner, runner.source.config.interval * random.uniform(0.9, 1.1))

    def polled(self) -> list[SourceRunner]:
        """The sources this instance polls: all of them, or a fleet's share."""
        if self.fleet is None:
            return list(self.app.sources)
        with self._lock:
            return [r for r in self.app.sources if r.name in self.owned]

    def stop(self, timeout: float) -> bool:
        """Ask every source to stop; True if all finished within ``timeout``."""
        self.app.stop.set()
        return self.pool.close(timeout)

    def wedged(self) -> list[str]:
        """Sources holding a slot without progress for WEDGED_AFTER: a hung poll, which the watchdog
        exists to restart. A source waiting for a slot is not wedged; /health reports it stale."""
        now = time.monotonic()
        return [name for name, beat in dict(self.pool.running).items() if now - beat > WEDGED_AFTER]

    def status(self) -> str:
        lags = [self.app.metrics.get("cursor_lag_seconds", source=r.name) for r in self.polled()]
        lag = f", max lag {max(lags):.0f}s" if lags else ""
        last = time.strftime("%H:%M:%S", time.localtime(self.last_delivery)) if self.last_delivery else "none yet"
        paused = [o.name for o in self.app.outputs if o.state != "ok"]
        bad = f", outputs failing: {', '.join(paused)}" if paused else ""
        share = f" of {len(self.app.sources)} (fleet)" if self.fleet is not None else ""
        return f"polling {len(self.polled())}{share} source(s){lag}, last delivery {last}{bad}"


def _health_problems(app: App, scheduler: Scheduler) -> list[str]:
    problems = []
    stale_after = float(app.config.setting("metrics", "stale_after", 3600))
    now = time.time()
    fleet = getattr(app, "fleet", None)
    if fleet is not None and fleet.problem is not None:
        problems.append(f"fleet: {fleet.problem}")
    for runner in scheduler.polled():
        last = runner.last_success or app.metrics.started
        if now - last > max(stale_after, 2 * runner.source.config.interval):
            problems.append(f"source {runner.name}: no successful poll for {now - last:.0f}s")
    for output in app.outputs:
        if output.state != "ok":
            problems.append(f"output {output.name}: {output.state}: {output.reason}")
    problems.extend(f"source {name}: no progress for over {WEDGED_AFTER:.0f}s" for name in scheduler.wedged())
    problems.extend(PLUGIN_CALLS.overdue(_warn_after(app)))
    return problems


def _warn_after(app: App) -> float:
    """``delivery.plugin_call_warn_after``: a plugin's call running longer is reported (:mod:`forwarder_core.plugin.watch`)."""
    return float(app.config.setting("delivery", "plugin_call_warn_after", 60))


def _start_metrics(app: App, scheduler_ref: list[Scheduler]) -> Any:
    listen = app.config.setting("metrics", "listen", None)
    if not listen:
        return None
    from forwarder_core.commands.health import HealthServer

    host, _, port = listen.rpartition(":")
    server = HealthServer(app.metrics, lambda: _health_problems(app, scheduler_ref[0]),
                          host=host or "127.0.0.1", port=int(port))
    server.start()
    log.info("metrics and health on http://%s:%s/metrics and /health", host or "127.0.0.1", server.port)
    return server


def run_daemon(args: argparse.Namespace, load: Callable[..., Any]) -> int:
    # Signals first: a SIGTERM while the config and plugins load is a clean stop, not a kill.
    reload_requested = threading.Event()
    shutdown = threading.Event()
    wake = threading.Event()

    def on_term(signum: int, frame: Any) -> None:
        shutdown.set()
        wake.set()

    def on_hup(signum: int, frame: Any) -> None:
        reload_requested.set()
        wake.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGHUP, on_hup)

    loaded = load(args)
    if loaded is None:
        return 78
    config, plugins = loaded
    sd = _Systemd()
    try:
        app = build_app(config, plugins)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem)
        return 78
    except StateError as exc:
        log.error("%s", exc)
        return 74

    scheduler = Scheduler(app)
    holder = [scheduler]
    metrics_server = _start_metrics(app, holder)
    scheduler.start()
    log.info("siem-forwarder running: %d source(s), %d output(s), state in %s",
             len(app.sources), len(app.outputs), config.state_dir)
    sd.send("READY=1", f"STATUS={scheduler.status()}")
    tick = min(10.0, sd.watchdog_interval() or 10.0, _warn_after(app))
    while not shutdown.is_set():
        wake.wait(tick)
        wake.clear()
        if reload_requested.is_set() and not shutdown.is_set():
            reload_requested.clear()
            app, scheduler = _reload(args, load, app, scheduler, sd)
            holder[0] = scheduler
        for line in PLUGIN_CALLS.newly_overdue(_warn_after(app)):
            log.warning("%s; what it holds waits for it (SIGTERM still stops the daemon within shutdown_timeout, "
                        "abandoning that page uncommitted; after %.0fs without progress the watchdog restarts it)",
                        line, WEDGED_AFTER)
        if not scheduler.wedged():
            sd.send("WATCHDOG=1", f"STATUS={scheduler.status()}")
        else:
            log.error("sources not making progress: %s; withholding the watchdog ping", ", ".join(scheduler.wedged()))
    sd.send("STOPPING=1", "STATUS=stopping: finishing batches in flight")
    timeout = float(app.config.settings.get("shutdown_timeout", 30))
    log.info("stopping: finishing batches in flight (up to %.0fs)", timeout)
    if not scheduler.stop(timeout):
        log.warning("stopping: batches still in flight after %.0fs were abandoned; their cursors did not move, "
                    "so they will be sent again on the next start", timeout)
    app.close()
    if metrics_server is not None:
        metrics_server.stop()
    log.info("stopped")
    return 0


def _reload(args: argparse.Namespace, load: Callable[..., Any], app: App, scheduler: Scheduler,
            sd: _Systemd) -> tuple[App, Scheduler]:
    fields = ["RELOADING=1", f"MONOTONIC_USEC={int(time.monotonic() * 1_000_000)}"]
    sd.send(*fields)
    log.info("SIGHUP: reloading %s", args.config)
    loaded = load(args)
    if loaded is None:
        log.error("reload refused: the new config has problems (listed above); still running the previous one")
        sd.send("READY=1", f"STATUS=reload refused (bad config); {scheduler.status()}")
        return app, scheduler
    config, plugins = loaded
    try:
        configure_plugins(config, plugins)  # before the running config is touched: a plugin may refuse it
    except ConfigError as exc:
        for problem in exc.problems:
            log.error("reload refused: %s; still running the previous config", problem)
        try:  # the plugins may hold the refused settings now: give them the running config again
            configure_plugins(app.config, app.plugins)
        except ConfigError as again:
            log.error("after the refused reload: %s", "; ".join(again.problems))
        sd.send("READY=1", f"STATUS=reload refused (a plugin refused the config); {scheduler.status()}")
        return app, scheduler
    timeout = float(app.config.settings.get("shutdown_timeout", 30))
    scheduler.stop(timeout)
    old = app
    old.close()
    try:
        new_app = build_app(config, plugins, metrics=old.metrics, configured=True)
    except (ConfigError, StateError) as exc:
        log.error("reload failed (%s); restarting the previous configuration", "; ".join(_lines(exc)))
        new_app = build_app(old.config, old.plugins, metrics=old.metrics)
    except Exception as exc:  # a plugin's bug while building the new config must not end the daemon
        log.error("reload failed (%s); restarting the previous configuration",
                  redact(f"{type(exc).__name__}: {exc}"))
        new_app = build_app(old.config, old.plugins, metrics=old.metrics)
    new_scheduler = Scheduler(new_app)
    new_scheduler.start()
    log.info("reloaded: %d source(s), %d output(s)", len(new_app.sources), len(new_app.outputs))
    sd.send("READY=1", f"STATUS={new_scheduler.status()}")
    return new_app, new_scheduler


def _lines(exc: ConfigError | StateError) -> list[str]:
    return list(exc.problems) if isinstance(exc, ConfigError) else [str(exc)]
