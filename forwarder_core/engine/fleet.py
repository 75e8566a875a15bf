"""One instance's part in a fleet: which sources it polls, kept by a thread that renews its leases.

Every ``lease_ttl / 3`` seconds the keeper heartbeats and renews every lease it holds in one
statement (:meth:`~forwarder_core.storage.leases.Leases.renew`); a lease that did not renew was
taken over, and its source is dropped at once. It then counts the live instances, works out its
fair share (:func:`~forwarder_core.storage.leases.fair_share`), takes free or expired sources up
to it, and gives back the sources above it, but only those idle between polls (a hand-over
happens at a page boundary, never mid-page, and never more than needed).

When PostgreSQL cannot be reached the keeper keeps trying; once ``lease_ttl`` has passed since
the last renewal it drops every source (it could not commit them anyway, and another instance
may own them by now), says so in the log, on ``/health`` and in ``fleet_connected``, and takes
its share again when PostgreSQL answers.
"""
from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from forwarder_core import __version__
from forwarder_core.errors import StateError
from forwarder_core.metrics import Metrics
from forwarder_core.storage.leases import Leases, fair_share
from forwarder_core.storage.pgstore import PgStore

log = logging.getLogger("siem_forwarder.fleet")

FLEET_METRICS: dict[str, tuple[str, str]] = {
    "fleet_leases_held": ("gauge", "Sources whose lease this instance holds."),
    "fleet_connected": ("gauge", "1 while this instance reaches PostgreSQL and renews its leases."),
    "fleet_leases_acquired_total": ("counter", "Leases this instance took (free, expired or handed over)."),
    "fleet_leases_lost_total": ("counter", "Leases this instance lost (taken over, or dropped without PostgreSQL)."),
    "fleet_leases_released_total": ("counter", "Leases this instance gave back (above its fair share, or stopping)."),
    "fleet_handovers_total": ("counter", "Leases this instance took over from another instance."),
    "fleet_fence_refusals_total": ("counter", "Page commits refused because the lease had moved (the page is sent again by the new owner)."),
    "fleet_postgres_errors_total": ("counter", "Failed statements or connections to the fleet's PostgreSQL."),
}


def config_hash(document: dict[str, Any]) -> str:
    """A short digest of the config (secrets were never in it), so ``cluster`` can show which
    instances run the same one."""
    text = json.dumps(document, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


class Fleet:
    """Keeps this instance's leases; see the module docstring.

    ``gained(names)`` and ``lost(names)`` tell the scheduler; ``idle(name)`` says whether a source
    is between polls (so it may be handed over now).
    """

    def __init__(self, leases: Leases, store: PgStore, sources: list[str], metrics: Metrics, stop: threading.Event,
                 *, gained: Callable[[list[str]], None] = lambda names: None,
                 lost: Callable[[list[str]], None] = lambda names: None,
                 idle: Callable[[str], bool] = lambda name: True):
        self.leases = leases
        self.store = store
        self.sources = list(sources)
        self.metrics = metrics
        self.stop = stop
        self.gained = gained
        self.lost = lost
        self.idle = idle
        self.interval = max(1.0, leases.ttl / 3)
        self.held: dict[str, int] = {}
        self.problem: str | None = None
        self.last_renewed = time.monotonic()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._labels = {"instance": leases.instance}
        metrics.declare_all(FLEET_METRICS)
        for name in FLEET_METRICS:
            if name.endswith("_total"):
                metrics.inc(name, 0, **self._labels)
        metrics.set("fleet_connected", 0, **self._labels)
        metrics.set("fleet_leases_held", 0, **self._labels)
        store.on_fence = self._fenced

    # ------------------------------------------------------------------ life

    def join(self, document: dict[str, Any]) -> None:
        """Register and declare the sources (raises StateError when PostgreSQL cannot be reached)."""
        self.leases.declare(self.sources)
        self.leases.register(__version__, config_hash(document))

    def start(self) -> None:
        self.step()
        self._thread = threading.Thread(target=self._loop, name="fleet", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self.stop.wait(self.interval):
            self.step()

    def close(self) -> None:
        """A clean stop: give every source back at once, so the others need not wait for expiry."""
        if self._thread is not None:
            self._thread.join(self.interval + 10)
        with self._lock:
            held, self.held = dict(self.held), {}
        try:
            self.leases.release(held)
            self.leases.leave()
            self._count("fleet_leases_released_total", len(held))
        except StateError as exc:
            log.warning("fleet: could not give back %d lease(s) on the way out (%s); they expire in %.0fs",
                        len(held), exc, self.leases.ttl)

    def grab_free(self) -> list[str]:
        """``once``: take every source no live instance holds; the rest are left to their holders."""
        taken = self.leases.take(self.sources, len(self.sources))
        with self._lock:
            for t in taken:
                self.held[t.source] = t.token
                self.store.hold(t.source, t.token)
        self._count("fleet_leases_acquired_total", len(taken))
        self._gauge()
        return sorted(t.source for t in taken)

    # ------------------------------------------------------------------ one round

    def step(self) -> None:
        try:
            self._round()
        except StateError as exc:
            self._count("fleet_postgres_errors_total")
            self.metrics.set("fleet_connected", 0, **self._labels)
            first = self.problem is None
            self.problem = f"cannot reach PostgreSQL: {exc}"
            if first:
                log.error("fleet: %s; polling goes on until the leases would expire (%.0fs)", self.problem,
                          self.leases.ttl)
            if time.monotonic() - self.last_renewed > self.leases.ttl:
                self._drop_all("PostgreSQL unreachable for longer than lease_ttl")

    def _round(self) -> None:
        with self._lock:
            held = dict(self.held)
        renewed = self.leases.renew(held)
        self.last_renewed = time.monotonic()
        if self.problem is not None:
            log.info("fleet: PostgreSQL answers again; instance %s renews its leases", self.leases.instance)
        self.problem = None
        self.metrics.set("fleet_connected", 1, **self._labels)
        gone = [s for s in held if s not in renewed]
        if gone:
            self._lose(gone, "taken over by another instance")
        live = self.leases.live()
        share = fair_share(len(self.sources), live, self.leases.instance)
        with self._lock:
            have = len(self.held)
        if have < share:
            wanted = [s for s in self.sources if s not in self.held]
            taken = self.leases.take(wanted, share - have)
            if taken:
                with self._lock:
                    for t in taken:
                        self.held[t.source] = t.token
                        self.store.hold(t.source, t.token)
                self._count("fleet_leases_acquired_total", len(taken))
                self._count("fleet_handovers_total", sum(1 for t in taken if t.previous))
                log.info("fleet: took %d source(s): %s", len(taken), ", ".join(t.source for t in taken))
                self.gained([t.source for t in taken])
        elif have > share:
            self._give_back(have - share)
        self._gauge()

    def _give_back(self, excess: int) -> None:
        with self._lock:
            candidates = [s for s in sorted(self.held, reverse=True) if self.idle(s)][:excess]
            back = {s: self.held.pop(s) for s in candidates}
            for s in back:
                self.store.hold(s, None)
        if not back:
            return
        self.lost(list(back))
        self.leases.release(back)
        self._count("fleet_leases_released_total", len(back))
        log.info("fleet: gave back %d source(s) above this instance's share: %s", len(back), ", ".join(back))

    # ------------------------------------------------------------------ losing

    def _fenced(self, source: str) -> None:
        self._count("fleet_fence_refusals_total")
        log.warning("fleet: source %s: commit refused, the lease moved to another instance; dropping the source",
                    source)
        self._lose([source], "fenced at commit")

    def _lose(self, sources: list[str], why: str) -> None:
        with self._lock:
            dropped = [s for s in sources if self.held.pop(s, None) is not None]
            for s in dropped:
                self.store.hold(s, None)
        if dropped:
            self._count("fleet_leases_lost_total", len(dropped))
            log.warning("fleet: lost %d source(s) (%s): %s", len(dropped), why, ", ".join(dropped))
            self.lost(dropped)
        self._gauge()

    def _drop_all(self, why: str) -> None:
        with self._lock:
            names = list(self.held)
        if names:
            self._lose(names, why)

    def _count(self, name: str, amount: float = 1) -> None:
        if amount:
            self.metrics.inc(name, amount, **self._labels)

    def _gauge(self) -> None:
        with self._lock:
            self.metrics.set("fleet_leases_held", len(self.held), **self._labels)

    def owns(self, source: str) -> bool:
        with self._lock:
            return source in self.held
