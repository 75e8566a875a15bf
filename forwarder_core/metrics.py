"""In-process counters and gauges, exposed through ``prometheus_client``.

Plugins count through ``self.metrics`` (``inc``/``set``); the core serves them on ``/metrics``
and reads them for the ``once`` summary. Label sets are small and fixed (source, output, status,
code), so a dict keyed by ``(name, labels)`` is enough and costs nothing on the hot path; the
exposition is ``prometheus_client``'s own, with its process collector (CPU, memory, open fds,
start time), so what Prometheus parses is what the standard library writes.

Every metric is declared with a type and a help text: the core's below, a plugin's through its
class's ``declared_metrics`` (or :meth:`Metrics.declare`). A plugin that only calls ``inc``/``set``
still works; its metrics are exposed as ``untyped`` and their help says they were not declared.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.metrics_core import Metric

KINDS = ("counter", "gauge")
UNDECLARED_HELP = "A plugin's metric that was not declared (declare it with a type and help text)."

CORE_METRICS: dict[str, tuple[str, str]] = {
    "siem_forwarder_events_polled_total": ("counter", "Raw events read from a source."),
    "siem_forwarder_events_delivered_total": ("counter", "Events accepted by an output."),
    "siem_forwarder_events_quarantined_total": ("counter", "Events that failed validation and went to the quarantine."),
    "siem_forwarder_events_dead_lettered_total": ("counter", "Events an output rejected for good, written to the dead-letter file."),
    "siem_forwarder_events_retried_total": ("counter", "Events sent to an output again after a retryable failure."),
    "siem_forwarder_events_filtered_total": ("counter", "Events removed by a forwarder_transform_events plugin."),
    "siem_forwarder_pages_committed_total": ("counter", "Source pages delivered to every output and checkpointed."),
    "siem_forwarder_poll_errors_total": ("counter", "Polls that failed (the cursor stayed where it was)."),
    "siem_forwarder_polls_without_progress_total": ("counter", "Polls stopped because the source repeated a cursor "
                                                               "or served an identical page (a vendor fault)."),
    "siem_forwarder_output_errors_total": ("counter", "Batches an output failed to take as a whole."),
    "siem_forwarder_http_requests_total": ("counter", "HTTP requests by component and status (0 = no answer)."),
    "siem_forwarder_http_retries_total": ("counter", "HTTP requests retried by the core client."),
    "siem_forwarder_http_responses_refused_total": ("counter", "HTTP responses cut off by a bound, by reason: "
                                                    "too_large (max_response_bytes) or deadline (request_deadline)."),
    "siem_forwarder_rate_limit_waits_total": ("counter", "Waits on 429/Retry-After."),
    "siem_forwarder_rate_limit_wait_seconds_total": ("counter", "Seconds spent waiting on rate limits."),
    "siem_forwarder_cursor_lag_seconds": ("gauge", "Now minus the newest delivered event time, per source."),
    "siem_forwarder_watermark_timestamp_seconds": ("gauge", "Unix time up to which a source has read everything (its "
                                                   "checkpoint's watermark); time() minus it is the source's lag."),
    "siem_forwarder_last_event_age_seconds": ("gauge", "Seconds since a source last delivered any event (alert on it)."),
    "siem_forwarder_last_poll_timestamp_seconds": ("gauge", "Unix time of the last successful poll, per source."),
    "siem_forwarder_output_paused": ("gauge", "1 while an output is paused on an auth or config error."),
    "siem_forwarder_buffer_bytes": ("gauge", "Bytes held in an output's disk buffer."),
    "siem_forwarder_ledger_events_total": ("counter", "A source's ledger by term (read, delivered, quarantined, "
                                           "dead_lettered, filtered, already_delivered, held_back), per output where it applies."),
    "siem_forwarder_ledger_unbalanced_total": ("counter", "Pages whose ledger did not balance: a bug, logged at ERROR."),
    "siem_forwarder_worker_processes": ("gauge", "Worker processes preparing pages (0: the main process prepares them)."),
    "siem_forwarder_worker_failures_total": ("counter", "Pages a worker process failed to prepare (it died, or raised); "
                                             "each was prepared again in the main process."),
    "siem_forwarder_plugin_errors_total": ("counter", "Calls in which a plugin raised or answered a wrong value, by "
                                           "plugin and hook; none counted an event as delivered or filtered."),
}

PER_SOURCE = ("events_polled_total", "events_quarantined_total", "events_filtered_total", "pages_committed_total",
              "poll_errors_total", "ledger_unbalanced_total", "worker_failures_total", "polls_without_progress_total")
"""The core counters labelled ``source``."""
PER_OUTPUT = ("output_errors_total",)
"""The core counters labelled ``output``."""
PER_ROUTE = ("events_delivered_total", "events_dead_lettered_total", "events_retried_total")
"""The core counters labelled ``output`` and ``source``, one series per source an output receives."""
PER_CLIENT = ("http_retries_total", "rate_limit_waits_total", "rate_limit_wait_seconds_total")
"""The core counters labelled ``component``, one series per HTTP client a component makes."""


def _key(name: str, labels: Mapping[str, str]) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted((k, str(v)) for k, v in labels.items()))


def full_name(name: str) -> str:
    """Names get the ``siem_forwarder_`` prefix when missing."""
    return name if name.startswith("siem_forwarder_") else "siem_forwarder_" + name


def check_declaration(name: str, kind: str, help_text: str) -> str:
    """The full name of a well-formed declaration; ValueError says what is wrong with it.

    The registry calls it for each ``declared_metrics`` entry when a plugin class is added, so a
    bad declaration is reported by ``plugins`` and ``check`` rather than at the first poll.
    """
    name = full_name(name)
    if kind not in KINDS:
        raise ValueError(f"metric {name}: type must be one of {', '.join(KINDS)}, not {kind!r}")
    if kind == "counter" and not name.endswith("_total"):
        raise ValueError(f"metric {name}: a counter's name ends in _total")
    if not help_text.strip():
        raise ValueError(f"metric {name}: the help text is empty")
    return name


class Metrics:
    """Thread-safe counters and gauges; see the module docstring."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self._declared: dict[str, tuple[str, str]] = dict(CORE_METRICS)
        self.started = time.time()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))
        ProcessCollector(registry=self.registry)

    _name = staticmethod(full_name)

    def declare(self, name: str, kind: str, help_text: str) -> None:
        """Give a metric its Prometheus type (``counter`` or ``gauge``) and help text.

        Counter names end in ``_total``, as Prometheus expects; a declaration is idempotent.
        """
        name = check_declaration(name, kind, help_text)
        with self._lock:
            self._declared[name] = (kind, help_text.strip())

    def declare_all(self, declarations: Mapping[str, tuple[str, str]]) -> None:
        for name, (kind, help_text) in declarations.items():
            self.declare(name, kind, help_text)

    def inc(self, name: str, amount: float = 1, **labels: str) -> None:
        key = _key(full_name(name), labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0) + amount

    def set(self, name: str, value: float, **labels: str) -> None:
        key = _key(full_name(name), labels)
        with self._lock:
            self._values[key] = value

    def zero(self, name: str, **labels: str) -> None:
        """Export a series at 0 until it is first counted (a value already there stays).

        A counter that appears only once non-zero hides its first increase from ``increase()``
        and from an alert on it, so every series the forwarder can count is made at start-up.
        """
        key = _key(full_name(name), labels)
        with self._lock:
            self._values.setdefault(key, 0)

    def get(self, name: str, **labels: str) -> float:
        with self._lock:
            return self._values.get(_key(full_name(name), labels), 0)

    def total(self, name: str, **match: str) -> float:
        """Sum of a metric over every label set that contains ``match``."""
        name = full_name(name)
        want = set((k, str(v)) for k, v in match.items())
        with self._lock:
            return sum(v for (n, labels), v in self._values.items() if n == name and want <= set(labels))

    def items(self) -> Iterable[tuple[str, dict[str, str], float]]:
        with self._lock:
            snapshot = list(self._values.items())
        for (name, labels), value in sorted(snapshot):
            yield name, dict(labels), value

    def declared(self, name: str) -> tuple[str, str] | None:
        with self._lock:
            return self._declared.get(full_name(name))

    def render(self) -> str:
        """The Prometheus text exposition format (version 0.0.4), written by ``prometheus_client``."""
        return generate_latest(self.registry).decode("utf-8")


class _Collector:
    """Hands the current values to ``prometheus_client`` as metric families, one per name."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for name, labels, value in self.metrics.items():
            family = families.get(name)
            if family is None:
                kind, help_text = self.metrics.declared(name) or ("untyped", UNDECLARED_HELP)
                # prometheus_client names a counter family without its _total and adds it back.
                family = Metric(name[: -len("_total")] if kind == "counter" else name, help_text, kind)
                families[name] = family
            family.add_sample(name, labels, value)
        yield from families.values()
