"""/metrics is prometheus_client's exposition: typed, with help, process metrics, every old name."""
from __future__ import annotations

import http.client
import threading
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from forwarder_core.commands.health import HealthServer
from forwarder_core.config.loader import load_config
from forwarder_core.metrics import UNDECLARED_HELP, Metrics
from forwarder_core.plugin.manager import load_plugins
from forwarder_core.plugin.registry import instantiate

# Every metric name that existed before /metrics moved to prometheus_client.
EXISTING = (
    "events_polled_total", "events_delivered_total", "events_quarantined_total", "events_dead_lettered_total",
    "events_retried_total", "events_filtered_total", "pages_committed_total", "poll_errors_total",
    "output_errors_total", "http_requests_total", "http_retries_total", "rate_limit_waits_total",
    "rate_limit_wait_seconds_total", "cursor_lag_seconds", "last_event_age_seconds", "last_poll_timestamp_seconds",
    "bulk_item_status_total", "hec_responses_total", "output_paused", "syslog_messages_total", "cef_truncated_total",
    "pangea_verifications_total", "pangea_verification_failures_total", "buffer_bytes", "source_window_rereads_total",
    "agilicus_window_overflow_total", "source_offset_restarts_total", "bulk_request_splits_total",
)


def _scrape(metrics: Metrics) -> str:
    with HealthServer(metrics, lambda: [], port=0) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        assert response.status == 200
        assert response.getheader("Content-Type", "").startswith("text/plain; version=0.0.4")
        body = response.read().decode("utf-8")
        conn.close()
    return body


def _families(text: str) -> dict[str, object]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def test_every_metric_is_typed_with_help_and_the_process_collector_is_there() -> None:
    metrics = Metrics()
    plugins = load_plugins([])
    for registry in (plugins.sources, plugins.outputs):  # what each built-in declares for its instances
        for _, registered in registry.items():
            metrics.declare_all(registered.cls.declared_metrics)
    for n, name in enumerate(EXISTING):
        metrics.inc(name, n + 1, source="asana-main")
    families = _families(_scrape(metrics))
    samples = {s.name for family in families.values() for s in family.samples}
    for name in EXISTING:
        assert f"siem_forwarder_{name}" in samples, name
    for family in families.values():
        assert family.type in ("counter", "gauge"), (family.name, family.type)
        assert family.documentation and family.documentation != family.name, family.name
    for name in ("process_cpu_seconds", "process_resident_memory_bytes", "process_open_fds",
                 "process_start_time_seconds"):
        assert name in families, name
    assert families["siem_forwarder_events_delivered"].type == "counter"
    assert families["siem_forwarder_cursor_lag_seconds"].type == "gauge"
    assert families["siem_forwarder_hec_responses"].documentation.startswith("Splunk HEC answers")


def test_an_undeclared_plugin_metric_still_appears_untyped_with_a_help_that_says_so() -> None:
    metrics = Metrics()
    metrics.inc("legacy_plugin_things_total", 3, source="x")
    metrics.set("legacy_plugin_level", 0.5)
    text = _scrape(metrics)
    assert "# TYPE siem_forwarder_legacy_plugin_things_total untyped" in text
    families = _families(text)
    assert families["siem_forwarder_legacy_plugin_things_total"].type == "unknown"
    assert families["siem_forwarder_legacy_plugin_things_total"].documentation == UNDECLARED_HELP
    assert [s.value for s in families["siem_forwarder_legacy_plugin_level"].samples] == [0.5]


def test_a_plugin_instance_declares_its_metrics_on_construction(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(f"state_dir: {tmp_path}/state\nsources: []\noutputs:\n"
                    "  - {name: hec, type: splunk_hec, options: {url: 'http://127.0.0.1:9', token: t-0123456789}}\n")
    config, plugins = load_config(str(path), load_plugins)
    metrics = Metrics()
    output = instantiate(plugins.outputs, config.outputs[0], str(tmp_path), metrics, threading.Event())
    output.close()
    assert metrics.declared("hec_responses_total") == ("counter", output.declared_metrics["hec_responses_total"][1])


def test_declarations_follow_prometheus_conventions() -> None:
    metrics = Metrics()
    for bad in (("things", "counter", "x"), ("level", "histogram", "x"), ("level", "gauge", " ")):
        try:
            metrics.declare(*bad)
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad}")


def test_every_declared_counter_is_exported_at_zero_from_start_up_for_each_source_and_output(tmp_path: Path) -> None:
    """increase() and an alert see a counter's first event only when its series existed before it."""
    from forwarder_core.engine.app import build_app
    from forwarder_core.metrics import CORE_METRICS

    path = tmp_path / "config.yaml"
    path.write_text(
        f"state_dir: {tmp_path}/state\n"
        "sources:\n"
        "  - {name: asana-main, type: asana, options: {base_url: 'http://127.0.0.1:9', token: t-0123456789,"
        " workspace_gid: '1'}}\n"
        "  - {name: pangea-main, type: pangea, options: {base_url: 'http://127.0.0.1:9', token: pts_0123456789}}\n"
        "outputs:\n"
        "  - {name: hec, type: splunk_hec, options: {url: 'http://127.0.0.1:9', token: t-0123456789}}\n"
        "  - {name: es, type: elastic_bulk, sources: [asana-main], options: {url: 'http://127.0.0.1:9'}}\n"
        "  - {name: cef, type: syslog_cef, options: {host: 127.0.0.1, port: 9}}\n")
    config, plugins = load_config(str(path), load_plugins)
    app = build_app(config, plugins)
    try:
        families = _families(app.metrics.render())
        declared = dict(CORE_METRICS)
        for runner in [*app.outputs, *app.sources]:
            component = getattr(runner, "output", None) or runner.source
            declared.update({f"siem_forwarder_{n}": v for n, v in component.declared_metrics.items()})
    finally:
        app.close()
    series = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}

    def has(name: str, **labels: str) -> bool:
        return series.get((name, tuple(sorted(labels.items())))) == 0

    for name, (kind, _) in declared.items():
        if kind == "counter":
            assert any(n == name for n, _ in series), f"{name} is not exported at start-up"
    for source in ("asana-main", "pangea-main"):
        for name in ("events_polled_total", "events_quarantined_total", "events_filtered_total",
                     "poll_errors_total", "ledger_unbalanced_total", "worker_failures_total", "pages_committed_total"):
            assert has(f"siem_forwarder_{name}", source=source), (name, source)
        assert has("siem_forwarder_ledger_events_total", source=source, term="read")
        assert has("siem_forwarder_events_delivered_total", source=source, output="hec")
        assert has("siem_forwarder_events_dead_lettered_total", source=source, output="cef")
        assert has("siem_forwarder_ledger_events_total", source=source, term="dead_lettered", output="hec")
    assert has("siem_forwarder_events_delivered_total", source="asana-main", output="es")
    assert ("siem_forwarder_events_delivered_total",
            tuple(sorted({"source": "pangea-main", "output": "es"}.items()))) not in series  # not routed there
    assert has("siem_forwarder_cef_truncated_total", output="cef")
    assert has("siem_forwarder_hec_responses_total", output="hec", code="0")
    assert has("siem_forwarder_bulk_item_status_total", output="es", status="201")
    assert has("siem_forwarder_pangea_verifications_total", source="pangea-main", check="hash", result="fail")
    assert has("siem_forwarder_source_offset_restarts_total", source="asana-main")
    assert has("siem_forwarder_output_errors_total", output="es")
    assert has("siem_forwarder_output_paused", output="cef")
    assert has("siem_forwarder_http_retries_total", component="hec")
    assert ("siem_forwarder_worker_processes", ()) in series
