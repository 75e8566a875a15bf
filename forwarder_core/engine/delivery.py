"""Delivering a batch to one output: retries, backoff, pause, dead letters.

:class:`OutputRunner` wraps one output instance. :meth:`OutputRunner.deliver` returns True only
when every event of the batch was accepted or dead-lettered (written and fsynced); the
pipeline commits a cursor only then. Failures are logged once per change of state (ok →
failing → paused → ok), not once per retry, so an output down for hours does not flood the
journal.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

import backoff

from forwarder_core.errors import OutputError
from forwarder_core.metrics import Metrics
from forwarder_core.plugin.base import Output
from forwarder_core.plugin.encoded import EncodedEvents
from forwarder_core.plugin.results import SendResult, send_result_problem
from forwarder_core.plugin.watch import PLUGIN_CALLS
from forwarder_core.secrets import redact
from forwarder_core.storage.setaside import SetAside

REMIND_EVERY = 600.0


class _WrongAnswer(Exception):
    """An output answered ``send`` with a value that cannot say what was accepted."""


class OutputRunner:
    """One output instance plus its delivery policy. Thread-safe: ``send`` is serialized."""

    accepts_encoded = True
    """:meth:`deliver` takes a batch encoded in a worker (:class:`EncodedEvents`) as well as events."""

    def __init__(self, output: Output, dead_letter: SetAside, metrics: Metrics, stop: threading.Event,
                 *, max_backoff: float = 300.0, logger: logging.Logger | None = None, plugin: str | None = None):
        self.output = output
        self.name = output.name
        self.plugin = plugin or output.config.type
        """The name of the plugin the output's type comes from, for the messages about its answers."""
        self.dead_letter = dead_letter
        self.metrics = metrics
        self.stop = stop
        self.max_backoff = max_backoff
        self.log = logger or logging.getLogger("siem_forwarder.delivery")
        self.lock = threading.Lock()
        self.state = "ok"
        self.reason = ""
        self._state_since = time.monotonic()
        self._reminded = 0.0

    def wants(self, source_name: str) -> bool:
        wanted = self.output.config.sources
        return wanted is None or source_name in wanted

    # ------------------------------------------------------------------ state and logging

    def _set_state(self, state: str, reason: str) -> None:
        now = time.monotonic()
        if state != self.state:
            if state == "ok":
                self.log.warning("output %s: delivering again after %.0fs (%s)", self.name, now - self._state_since, self.reason)
            elif state == "paused":
                self.log.error("output %s: paused, the SIEM refuses this configuration: %s. Cursors stay where they "
                               "are; fix the config and the output resumes by itself", self.name, reason)
            else:
                self.log.error("output %s: failing: %s. Cursors stay where they are; retrying with backoff",
                               self.name, reason)
            self.state, self.reason, self._state_since, self._reminded = state, reason, now, now
        elif state != "ok" and now - self._reminded >= REMIND_EVERY:
            self._reminded = now
            self.log.error("output %s: still %s after %.0fs: %s", self.name, state, now - self._state_since, reason)
        self.metrics.set("output_paused", 1 if state == "paused" else 0, output=self.name)

    # ------------------------------------------------------------------ delivery

    def deliver(self, events: list[dict[str, Any]] | EncodedEvents, source_name: str, give_up_at: float | None = None,
                tally: dict[str, int] | None = None) -> bool:
        """Send until every event is accepted or dead-lettered; False if stopped or given up.

        ``events`` is the normalized events (sent with ``send``) or their batch encoded in a
        worker (sent with ``send_encoded``; a retry sends the sub-batch of what is pending).
        ``tally`` (for the source's ledger) gets ``accepted`` and ``dead_lettered`` added.
        """
        pending = list(range(len(events)))
        hook = "send_encoded" if isinstance(events, EncodedEvents) else "send"
        waits = backoff.expo(base=2, factor=0.5, max_value=self.max_backoff)
        next(waits)
        while pending:
            wait: float | None = None
            try:
                with self.lock, PLUGIN_CALLS.running(self.plugin, hook, f"output {self.name}"):
                    if isinstance(events, EncodedEvents):
                        result = self.output.send_encoded(events.batch.take(pending))
                    else:
                        result = self.output.send([events[i] for i in pending])
                problem = send_result_problem(result, len(pending))
                if problem is not None:  # an answer that cannot say what was accepted: none of it was
                    raise _WrongAnswer(f"plugin {self.plugin}: {hook} {problem}; the batch is sent again")
            except OutputError as exc:
                self.metrics.inc("output_errors_total", output=self.name)
                self._set_state("paused" if exc.pause else "failing", redact(str(exc)))
                wait = exc.retry_after
            except _WrongAnswer as exc:
                self.metrics.inc("output_errors_total", output=self.name)
                self.metrics.inc("plugin_errors_total", plugin=self.plugin, hook=hook)
                self._set_state("failing", redact(str(exc)))
            except Exception as exc:  # a plugin bug must not lose the batch either
                self.metrics.inc("output_errors_total", output=self.name)
                self.metrics.inc("plugin_errors_total", plugin=self.plugin, hook=hook)
                self._set_state("failing", redact(f"plugin {self.plugin}: {hook} raised {type(exc).__name__}: {exc}"))
                if self.state == "failing" and time.monotonic() - self._state_since < 1:
                    self.log.debug("output %s: send raised", self.name, exc_info=True)
            else:
                pending = self._apply(result, events, pending, source_name, tally)
                if not pending:
                    break
                self._set_state("ok", "")
                wait = result.retry_after
            if give_up_at is not None and time.monotonic() >= give_up_at:
                return False
            delay = wait if wait is not None else backoff.full_jitter(next(waits))
            if give_up_at is not None:
                delay = max(0.0, min(delay, give_up_at - time.monotonic()))
            if self.stop.wait(delay):
                return False
        self._set_state("ok", "")
        return True

    def _apply(self, result: SendResult, events: list[dict[str, Any]] | EncodedEvents, pending: list[int], source_name: str,
               tally: dict[str, int] | None = None) -> list[int]:
        """Record a verdict: dead-letter the rejects, count the accepted, return what to retry.

        ``result`` passed :func:`send_result_problem`: each index is in range and named once, so
        each event ends in exactly one of accepted, dead-lettered or retried, as the ledger counts it.
        """
        retry = sorted(pending[i] for i in result.retry)
        rejected = {pending[i]: str(reason) for i, reason in result.rejected.items()}
        if rejected:
            records = [SetAside.record(source_name, redact(reason), *_id_and_raw(events, i), output=self.name)
                       for i, reason in rejected.items()]
            self.dead_letter.write(self.name, records)
            self.metrics.inc("events_dead_lettered_total", len(records), output=self.name, source=source_name)
            first = next(iter(rejected.values()))
            self.log.warning("output %s: %d event(s) of %s refused for good, written to %s (first reason: %s)",
                             self.name, len(records), source_name, self.dead_letter.path(self.name), redact(first)[:300])
        accepted = len(pending) - len(retry) - len(rejected)
        if tally is not None:
            tally["accepted"] = tally.get("accepted", 0) + accepted
            tally["dead_lettered"] = tally.get("dead_lettered", 0) + len(rejected)
        if accepted:
            self.metrics.inc("events_delivered_total", accepted, output=self.name, source=source_name)
        if retry:
            self.metrics.inc("events_retried_total", len(retry), output=self.name, source=source_name)
        return retry

    def close(self) -> None:
        try:
            self.output.close()
        except Exception as exc:
            self.log.warning("output %s: close failed: %s", self.name, redact(str(exc)))


def _id_and_raw(events: list[dict[str, Any]] | EncodedEvents, i: int) -> tuple[Any, Any]:
    if isinstance(events, EncodedEvents):
        return events.ids[i], events.raws[i]
    return events[i].get("id"), events[i].get("raw")
