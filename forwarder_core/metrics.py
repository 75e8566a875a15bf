"""In-process counters and gauges, rendered in the Prometheus text format.

Plugins count through ``self.metrics`` (``inc``/``set``); the core renders them for the
``/metrics`` endpoint and for the ``once`` summary. Label sets are small and fixed (source,
output, status, code), so a dict keyed by ``(name, labels)`` is enough and costs nothing to read.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Iterable

_HELP: dict[str, tuple[str, str]] = {
    "siem_forwarder_events_polled_total": ("counter", "Raw events read from a source."),
    "siem_forwarder_events_delivered_total": ("counter", "Events accepted by an output."),
    "siem_forwarder_events_quarantined_total": ("counter", "Events that failed validation and went to the quarantine."),
    "siem_forwarder_events_dead_lettered_total": ("counter", "Events an output rejected for good, written to the dead-letter file."),
    "siem_forwarder_events_retried_total": ("counter", "Events sent to an output again after a retryable failure."),
    "siem_forwarder_events_filtered_total": ("counter", "Events removed by a forwarder_transform_events plugin."),
    "siem_forwarder_pages_committed_total": ("counter", "Source pages delivered to every output and checkpointed."),
    "siem_forwarder_poll_errors_total": ("counter", "Polls that failed (the cursor stayed where it was)."),
    "siem_forwarder_output_errors_total": ("counter", "Batches an output failed to take as a whole."),
    "siem_forwarder_http_requests_total": ("counter", "HTTP requests by component and status (0 = no answer)."),
    "siem_forwarder_http_retries_total": ("counter", "HTTP requests retried by the core client."),
    "siem_forwarder_rate_limit_waits_total": ("counter", "Waits on 429/Retry-After."),
    "siem_forwarder_rate_limit_wait_seconds_total": ("counter", "Seconds spent waiting on rate limits."),
    "siem_forwarder_cursor_lag_seconds": ("gauge", "Now minus the newest delivered event time, per source."),
    "siem_forwarder_last_event_age_seconds": ("gauge", "Seconds since a source last delivered any event (alert on it)."),
    "siem_forwarder_last_poll_timestamp_seconds": ("gauge", "Unix time of the last successful poll, per source."),
    "siem_forwarder_bulk_item_status_total": ("counter", "Elasticsearch _bulk items by output and item status (201, 409, 429, 400, ...)."),
    "siem_forwarder_hec_responses_total": ("counter", "Splunk HEC answers by output and HEC code (http_<status> when the answer was not HEC's)."),
    "siem_forwarder_output_paused": ("gauge", "1 while an output is paused on an auth or config error."),
    "siem_forwarder_syslog_messages_total": ("counter", "Syslog messages a syslog_cef output wrote to its socket."),
    "siem_forwarder_cef_truncated_total": ("counter", "CEF messages cut to fit max_message_bytes (UDP by default)."),
    "siem_forwarder_pangea_verifications_total": ("counter", "Pangea tamper-evidence verdicts by check and result (pass, fail, none)."),
    "siem_forwarder_pangea_verification_failures_total": ("counter", "Pangea events that failed a tamper-evidence check, by check."),
}


METRIC_KINDS = ("counter", "gauge")


def describe(name: str, kind: str, help_text: str) -> None:
    """Give a metric its ``# TYPE`` and ``# HELP`` lines on ``/metrics``.

    Called for each entry of a plugin class's ``declared_metrics`` when it is registered, so a
    plugin's metrics are typed and explained like the core's. The first description of a name wins.
    """
    if kind not in METRIC_KINDS:
        raise ValueError(f"metric {name}: kind must be one of {', '.join(METRIC_KINDS)}, not {kind!r}")
    _HELP.setdefault(Metrics._name(name), (kind, help_text))


def _key(name: str, labels: dict[str, str]) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted((k, str(v)) for k, v in labels.items()))


class Metrics:
    """Thread-safe counters and gauges; names get the ``siem_forwarder_`` prefix when missing."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self.started = time.time()

    @staticmethod
    def _name(name: str) -> str:
        return name if name.startswith("siem_forwarder_") else "siem_forwarder_" + name

    def inc(self, name: str, amount: float = 1, **labels: str) -> None:
        key = _key(self._name(name), labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0) + amount

    def set(self, name: str, value: float, **labels: str) -> None:
        key = _key(self._name(name), labels)
        with self._lock:
            self._values[key] = value

    def get(self, name: str, **labels: str) -> float:
        with self._lock:
            return self._values.get(_key(self._name(name), labels), 0)

    def total(self, name: str, **match: str) -> float:
        """Sum of a metric over every label set that contains ``match``."""
        name = self._name(name)
        want = set((k, str(v)) for k, v in match.items())
        with self._lock:
            return sum(v for (n, labels), v in self._values.items() if n == name and want <= set(labels))

    def items(self) -> Iterable[tuple[str, dict[str, str], float]]:
        with self._lock:
            snapshot = list(self._values.items())
        for (name, labels), value in sorted(snapshot):
            yield name, dict(labels), value

    def render(self) -> str:
        """The Prometheus text exposition format (version 0.0.4)."""
        lines: list[str] = []
        seen: set[str] = set()
        for name, labels, value in self.items():
            if name not in seen:
                seen.add(name)
                kind, help_text = _HELP.get(name, ("untyped", name))
                lines.append(f"# HELP {name} {help_text}")
                lines.append(f"# TYPE {name} {kind}")
            if labels:
                body = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
                lines.append(f"{name}{{{body}}} {_number(value)}")
            else:
                lines.append(f"{name} {_number(value)}")
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
