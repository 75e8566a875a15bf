"""The shipped dashboard and alert rules, proven on Debian's Prometheus against a real ``run``.

``promtool`` checks the rules and runs their unit tests (siem-forwarder-rules.test.yml beside this
file); then a real Prometheus scrapes a real ``siem-forwarder run`` (the vendor and SIEM fakes of
tests/fakes, every built-in output) every second, and every dashboard panel's and every rule's
expression is evaluated through its HTTP API. A metric name the forwarder does not export, or a
panel that returns nothing while the forwarder runs, fails here rather than on an operator's screen.

Prometheus is a test dependency (scripts/install-test-deps.sh installs Debian's ``prometheus``):
when it is missing these tests fail, they are never skipped.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import REPO, forwarder_env

RULES = REPO / "packaging" / "prometheus" / "siem-forwarder-rules.yml"
DASHBOARD = REPO / "packaging" / "grafana" / "siem-forwarder.json"
RULES_TEST = Path(__file__).resolve().parent / "siem-forwarder-rules.test.yml"
JOB = "siem-forwarder"

# The dashboard's variables as a query would see them with "All" chosen.
VARIABLES = {"$__rate_interval": "30s", "$__range": "5m", "$source": ".*", "$output": ".*", "$instance": ".*"}
METRIC = r"(?:siem_forwarder_\w+|process_\w+|\bup\b)"
SELECTOR = re.compile(rf"({METRIC})(\{{[^}}]*\}})?")


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: scripts/install-test-deps.sh installs Debian's prometheus package "
                    f"(apt-get install --no-install-recommends prometheus)")
    return path


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _panel_targets() -> list[tuple[str, str]]:
    """``(panel title, expr)`` for every query of every panel."""
    dashboard = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"] if panel["type"] != "row"
            for target in panel["targets"]]


def _substitute(expr: str) -> str:
    for name in sorted(VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, VARIABLES[name])
    return expr


# --------------------------------------------------------------------------- promtool


def test_the_rules_pass_promtool_check() -> None:
    result = subprocess.run([_tool("promtool"), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout


def test_the_rules_unit_tests_pass_in_promtool() -> None:
    result = subprocess.run([_tool("promtool"), "test", "rules", RULES_TEST.name], capture_output=True, text=True,
                            cwd=RULES_TEST.parent)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_rule_has_a_summary_a_severity_and_a_unit_test_where_it_fires() -> None:
    tests = yaml.safe_load(RULES_TEST.read_text())["tests"]
    fired = {case["alertname"] for test in tests for case in test.get("alert_rule_test", []) if case["exp_alerts"]}
    quiet = {case["alertname"] for test in tests for case in test.get("alert_rule_test", []) if not case["exp_alerts"]}
    for rule in _rules():
        name = rule["alert"]
        assert rule["annotations"]["summary"].strip(), name
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        assert name in fired, f"{name}: no unit test where it fires"
        assert name in quiet, f"{name}: no unit test where it stays quiet"


def test_the_dashboard_covers_what_the_issue_asks_for_and_names_only_declared_metrics() -> None:
    from forwarder_core.metrics import CORE_METRICS
    from forwarder_core.plugin.manager import load_plugins

    declared = set(CORE_METRICS)
    plugins = load_plugins([])
    for registry in (plugins.sources, plugins.outputs):
        for _, registered in registry.items():
            declared.update(f"siem_forwarder_{n}" for n in registered.cls.declared_metrics)
    exprs = [expr for _, expr in _panel_targets()] + [rule["expr"] for rule in _rules()]
    for expr in exprs:
        for name, _ in SELECTOR.findall(expr):
            if name.startswith("siem_forwarder_"):
                assert name in declared, f"{name} (in {expr}) is declared by no part of the product"
    used = {name for expr in exprs for name, _ in SELECTOR.findall(expr)}
    for wanted in ("events_polled_total", "events_delivered_total", "events_quarantined_total",
                   "events_dead_lettered_total", "ledger_events_total", "cursor_lag_seconds", "last_event_age_seconds",
                   "poll_errors_total", "events_retried_total", "hec_responses_total", "bulk_item_status_total",
                   "buffer_bytes", "output_paused", "worker_processes", "worker_failures_total", "watermark_timestamp_seconds"):
        assert f"siem_forwarder_{wanted}" in used, wanted
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes", "up"} <= used


# --------------------------------------------------------------------------- a real Prometheus, a real run


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _until(what: str, predicate: Callable[[], Any], timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except OSError:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode("utf-8"))


class _Procs:
    def __init__(self, logs: Path):
        self.logs = logs
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 (closed with the process)
        proc = subprocess.Popen(argv, cwd=REPO, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                env=env)
        log.close()
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def tail(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]


FAKES = {
    "asana": ["tests.fakes.asana", "--events", "300"],
    "incydr": ["tests.fakes.incydr", "--events", "300"],
    "agilicus": ["tests.fakes.agilicus", "--events", "300"],
    "pangea": ["tests.fakes.pangea", "--events", "300", "--tamper", "5"],
    "hec": ["tests.fakes.splunk_hec"],
    "elastic": ["tests.fakes.elastic"],
}
CREDENTIALS = {
    "T_ASANA": "2/1204/1207:fake-service-account",
    "T_INCYDR": "secret-1",
    "T_AGILICUS": "agilicus-fake-token-0001",
    "T_PANGEA": "pts_fake_pangea_token_0123456789",
    "T_HEC": "11111111-2222-3333-4444-555555555555",
    "T_WRONG": "2/1204/1207:not-the-service-account",
}
REFUSED = "asana-refused"


def _config(tmp_path: Path, urls: dict[str, str], metrics_port: int) -> dict[str, Any]:
    start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3 * 86400))
    host, port = urls["cef"].rsplit(":", 1)
    return {
        "state_dir": str(tmp_path / "state"),
        "metrics": {"listen": f"127.0.0.1:{metrics_port}"},
        "sources": [
            {"name": "asana", "type": "asana", "interval": 5, "start_time": start,
             "options": {"base_url": urls["asana"] + "/api/1.0", "token": "${T_ASANA}", "workspace_gid": "12345"}},
            {"name": "incydr", "type": "incydr", "interval": 5, "start_time": start,
             "options": {"base_url": urls["incydr"], "client_id": "key-1", "client_secret": "${T_INCYDR}"}},
            {"name": "agilicus", "type": "agilicus", "interval": 5, "start_time": start,
             "options": {"base_url": urls["agilicus"], "token": "${T_AGILICUS}"}},
            {"name": "agilicus-auth", "type": "agilicus_auth", "interval": 5, "start_time": start,
             "options": {"base_url": urls["agilicus"], "token": "${T_AGILICUS}"}},
            {"name": "pangea", "type": "pangea", "interval": 5, "start_time": start,
             "options": {"base_url": urls["pangea"], "token": "${T_PANGEA}"}},
            # Its token is refused: every poll fails, which SiemForwarderPollErrors must see.
            {"name": REFUSED, "type": "asana", "interval": 1, "start_time": start,
             "options": {"base_url": urls["asana"] + "/api/1.0", "token": "${T_WRONG}", "workspace_gid": "12345"}},
        ],
        "outputs": [
            {"name": "splunk", "type": "splunk_hec", "options": {"url": urls["hec"], "token": "${T_HEC}"}},
            {"name": "elastic", "type": "elastic_bulk", "buffer": "disk", "options": {"url": urls["elastic"]}},
            {"name": "cef", "type": "syslog_cef",
             "options": {"host": host, "port": int(port), "protocol": "tcp", "framing": "newline"}},
        ],
    }


class _Prometheus:
    def __init__(self, url: str):
        self.url = url

    def query(self, expr: str) -> list[dict[str, Any]]:
        body = json.loads(_get(f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})))
        assert body["status"] == "success", (expr, body)
        data = body["data"]
        return data["result"] if data["resultType"] in ("vector", "matrix") else [data["result"]]

    def value(self, expr: str) -> float:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else 0.0


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[_Prometheus, str]]:
    """A real ``siem-forwarder run`` and a real Prometheus scraping it every second."""
    prometheus = _tool("prometheus")
    tmp_path = tmp_path_factory.mktemp("prometheus")
    procs = _Procs(tmp_path)
    try:
        for name, argv in FAKES.items():
            procs.start(name, [sys.executable, "-m", *argv, "--port", "0", "--ready-file", str(tmp_path / f"{name}.url")])
        procs.start("cef", [sys.executable, "-m", "tests.fakes.syslog_receiver", "--port", "0",
                            "--out", str(tmp_path / "cef.log"), "--ready-file", str(tmp_path / "cef.url")])
        urls = {name: _until(f"the {name} fake", lambda n=name: (tmp_path / f"{n}.url").exists()
                             and (tmp_path / f"{n}.url").read_text().strip())
                for name in [*FAKES, "cef"]}
        metrics_port = _free_port()
        config = tmp_path / "config.yaml"
        config.write_text(yaml.safe_dump(_config(tmp_path, urls, metrics_port), sort_keys=False))
        forwarder = procs.start("forwarder", [sys.executable, "-m", "forwarder_core", "run", "-c", str(config)],
                                env=forwarder_env(CREDENTIALS))
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        _until("the forwarder's /metrics", lambda: forwarder.poll() is None and _get(metrics_url))

        prom_port = _free_port()
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}]}],
        }))
        procs.start("prometheus", [prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
                                   f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                   f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
                    env={k: v for k, v in os.environ.items() if k != "HOME"} | {"HOME": str(tmp_path)})
        prom = _Prometheus(f"http://127.0.0.1:{prom_port}")
        _until("Prometheus to be ready", lambda: _get(f"{prom.url}/-/ready"))
        # Every source delivered, and enough scrapes since that every rate() has two samples in its window.
        _until("every source's events delivered, in Prometheus",
               lambda: prom.value('count(sum by (source) (siem_forwarder_events_delivered_total) > 0)') >= 5,
               timeout=180)
        _until("ten scrapes", lambda: prom.value(f'count_over_time(up{{job="{JOB}"}}[1m])') >= 10)
        _until("three failed polls of the refused source, in Prometheus",
               lambda: prom.value(f'increase(siem_forwarder_poll_errors_total{{source="{REFUSED}"}}[15m])') >= 3)
        assert forwarder.poll() is None, procs.tail("forwarder")
        yield prom, _get(metrics_url)
    finally:
        procs.stop()


def _exported(exposition: str) -> set[str]:
    names = set()
    for family in text_string_to_metric_families(exposition):
        names.update(sample.name for sample in family.samples)
    return names


def test_every_dashboard_panel_returns_data_from_a_real_run(running: tuple[_Prometheus, str]) -> None:
    prom, exposition = running
    exported = _exported(exposition) | {"up"}
    for title, expr in _panel_targets():
        query = _substitute(expr)
        for name, _ in SELECTOR.findall(query):
            assert name in exported, f"panel {title!r}: {name} is not exported by siem-forwarder run"
        assert prom.query(query), f"panel {title!r} returns nothing during the run: {query}"


def test_every_rule_evaluates_on_a_real_run_and_only_the_poll_errors_of_the_refused_source_trip_one(
        running: tuple[_Prometheus, str]) -> None:
    prom, exposition = running
    exported = _exported(exposition) | {"up"}
    for rule in _rules():
        for name, labels in SELECTOR.findall(rule["expr"]):
            assert name in exported, f"rule {rule['alert']}: {name} is not exported by siem-forwarder run"
            assert prom.query(name + labels), f"rule {rule['alert']}: {name}{labels} has no series in Prometheus"
        tripped = [r["metric"] for r in prom.query(rule["expr"])]
        if rule["alert"] == "SiemForwarderPollErrors":
            assert [m.get("source") for m in tripped] == [REFUSED], tripped
        else:
            assert tripped == [], f"rule {rule['alert']} would fire on this run: {tripped}"
    loaded = json.loads(_get(f"{prom.url}/api/v1/rules"))["data"]["groups"]
    health = {rule["name"]: (rule["health"], rule.get("lastError", "")) for g in loaded for rule in g["rules"]}
    assert set(health) == {rule["alert"] for rule in _rules()}
    assert all(h == "ok" for h, _ in health.values()), health


def test_the_dashboard_panels_have_unique_ids_and_titles_and_do_not_overlap() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    titles = [p["title"] for p in panels if p["type"] != "row"]
    assert len(set(titles)) == len(titles), titles
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24, panel["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_docs_monitoring_lists_every_panel_and_every_rule() -> None:
    text = (REPO / "docs" / "monitoring.md").read_text()
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert f"| {panel['title']} |" in text, panel["title"]
    for rule in _rules():
        assert f"| `{rule['alert']}` |" in text, rule["alert"]
