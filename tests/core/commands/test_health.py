"""The metrics and health listener, exercised over real HTTP on a loopback port."""
from __future__ import annotations

import http.client
import socket
from collections.abc import Iterator

import pytest

from forwarder_core.commands.health import HealthServer
from forwarder_core.metrics import Metrics


class Problems:
    """A health callable whose answer the test changes between requests."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.error: Exception | None = None

    def __call__(self) -> list[str]:
        if self.error is not None:
            raise self.error
        return list(self.items)


@pytest.fixture
def metrics() -> Metrics:
    m = Metrics()
    m.inc("events_delivered_total", 42, source="asana-main", output="splunk")
    m.set("cursor_lag_seconds", 12.5, source="asana-main")
    return m


@pytest.fixture
def problems() -> Problems:
    return Problems()


@pytest.fixture
def server(metrics: Metrics, problems: Problems) -> Iterator[HealthServer]:
    srv = HealthServer(metrics, problems, port=0).start()
    yield srv
    srv.stop()


def get(server: HealthServer, path: str, method: str = "GET") -> tuple[int, str, str]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type") or "", resp.read().decode("utf-8")
    finally:
        conn.close()


def test_metrics_serves_prometheus_text(server: HealthServer, metrics: Metrics) -> None:
    code, ctype, body = get(server, "/metrics")
    assert code == 200
    assert ctype.startswith("text/plain; version=0.0.4")
    assert "# HELP process_cpu_seconds_total" in body  # prometheus_client's process collector
    assert 'siem_forwarder_events_delivered_total{output="splunk",source="asana-main"} 42' in body
    assert "# TYPE siem_forwarder_cursor_lag_seconds gauge" in body


def test_metrics_are_live(server: HealthServer, metrics: Metrics) -> None:
    metrics.inc("events_delivered_total", 8, source="asana-main", output="splunk")
    _, _, body = get(server, "/metrics")
    assert 'siem_forwarder_events_delivered_total{output="splunk",source="asana-main"} 50' in body


def test_health_ok_when_nothing_is_stuck(server: HealthServer) -> None:
    assert get(server, "/health")[0::2] == (200, "ok\n")


def test_health_lists_each_problem_on_its_own_line(server: HealthServer, problems: Problems) -> None:
    problems.items = ["source asana-main: no successful poll for 900 s",
                      "output splunk: paused\non 403"]
    code, _, body = get(server, "/health")
    assert code == 503
    assert body.splitlines() == ["source asana-main: no successful poll for 900 s",
                                 "output splunk: paused on 403"]
    problems.items = []
    assert get(server, "/health")[0] == 200


def test_health_callable_that_raises_is_unhealthy(server: HealthServer, problems: Problems) -> None:
    problems.error = RuntimeError("secret-ish detail")
    code, _, body = get(server, "/health")
    assert code == 503
    assert body == "health check failed: RuntimeError\n"


def test_unknown_path_is_404(server: HealthServer) -> None:
    assert get(server, "/")[0] == 404
    assert get(server, "/metrics?x=1")[0] == 200


def test_only_get_is_served(server: HealthServer) -> None:
    assert get(server, "/metrics", method="POST")[0] == 501


def test_binds_loopback_by_default(metrics: Metrics, problems: Problems) -> None:
    srv = HealthServer(metrics, problems, port=0)
    assert srv.host == "127.0.0.1"
    with srv:
        assert srv._server is not None
        assert srv._server.server_address[0] == "127.0.0.1"


def test_stop_closes_the_port(metrics: Metrics, problems: Problems) -> None:
    srv = HealthServer(metrics, problems, port=0).start()
    port = srv.port
    assert get(srv, "/health")[0] == 200
    srv.stop()
    srv.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_port_in_use_fails_at_start(server: HealthServer, metrics: Metrics,
                                    problems: Problems) -> None:
    with pytest.raises(OSError):
        HealthServer(metrics, problems, port=server.port).start()
