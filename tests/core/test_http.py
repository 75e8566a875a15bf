"""The core HTTP client against a real local server: retries, Retry-After, 401 refresh, redaction."""
from __future__ import annotations

import email.utils
import logging
import threading
import time

import pytest

from forwarder_core.errors import AuthError, HttpError, ResponseError, TransportError
from forwarder_core.http import Auth, BearerAuth, HttpClient, parse_retry_after
from forwarder_core.metrics import Metrics
from forwarder_core.secrets import Secret
from tests.fakes.base import FakeServer, json_response

TOKEN = "tok-SECRET-9f8e7d"


class Echo(FakeServer):
    name = "echo"

    def __init__(self) -> None:
        super().__init__()
        self.valid_token = TOKEN
        self.route("GET", "/ok", lambda r: json_response({"ok": True}))
        self.route("GET", "/bad", lambda r: json_response({"error": "bad request"}, 400))
        self.route("GET", "/auth", self._auth)

    def _auth(self, req):
        if req.headers.get("Authorization") != f"Bearer {self.valid_token}":
            return json_response({"error": "invalid token"}, 401)
        return json_response({"ok": True})


@pytest.fixture
def server():
    with Echo() as fake:
        yield fake


def client(server: FakeServer, **kw) -> HttpClient:
    kw.setdefault("backoff_factor", 0.01)
    return HttpClient(component="test", options={"base_url": server.url, "timeout": 5}, metrics=Metrics(), **kw)


def test_retries_5xx_then_succeeds(server: Echo) -> None:
    server.fault("status", path="/ok", status=503, count=2)
    assert client(server).get_json("/ok") == {"ok": True}
    assert len(server.calls("/ok")) == 3


def test_honours_retry_after_seconds(server: Echo) -> None:
    server.fault("status", path="/ok", status=429, retry_after="1")
    c = client(server)
    started = time.monotonic()
    assert c.get_json("/ok") == {"ok": True}
    assert time.monotonic() - started >= 0.95
    assert c.metrics.get("rate_limit_waits_total", component="test") == 1


def test_honours_retry_after_http_date() -> None:
    now = time.time()
    header = email.utils.formatdate(now + 30, usegmt=True)
    assert 28 <= parse_retry_after(header, now=now) <= 30
    assert parse_retry_after("garbage") is None
    assert parse_retry_after("100000") == 900.0  # capped


def test_no_retry_on_other_4xx(server: Echo) -> None:
    with pytest.raises(HttpError) as info:
        client(server).get_json("/bad")
    assert info.value.status == 400
    assert len(server.calls("/bad")) == 1


def test_gives_up_after_max_tries(server: Echo) -> None:
    server.fault("status", path="/ok", status=500, count=10)
    with pytest.raises(HttpError) as info:
        client(server, max_tries=3).get_json("/ok")
    assert "500" in str(info.value) and "after 3 attempts" in str(info.value)
    assert len(server.calls("/ok")) == 3


def test_html_page_and_truncated_json_are_retried_then_explained(server: Echo) -> None:
    server.fault("html200", path="/ok")
    server.fault("truncate", path="/ok")
    assert client(server).get_json("/ok") == {"ok": True}
    server.fault("html200", path="/ok", count=5)
    with pytest.raises(ResponseError) as info:
        client(server, max_tries=2).get_json("/ok")
    assert "expected JSON, got an HTML page" in str(info.value)


def test_dropped_connection_is_retried(server: Echo) -> None:
    server.fault("drop", path="/ok")
    assert client(server).get_json("/ok") == {"ok": True}


def test_connection_refused_is_a_transport_error() -> None:
    c = HttpClient(component="t", options={"base_url": "http://127.0.0.1:9", "timeout": 2}, max_tries=2,
                   backoff_factor=0.01)
    with pytest.raises(TransportError) as info:
        c.get_json("/x")
    assert "connection refused" in str(info.value)


class RefreshingAuth(Auth):
    def __init__(self, server: Echo):
        self.server = server
        self.token = "stale-token-1234"
        self.refreshes = 0

    def headers(self, client):
        return {"Authorization": f"Bearer {self.token}"}

    def refresh(self, client):
        self.refreshes += 1
        self.token = TOKEN


def test_401_refreshes_once_and_retries(server: Echo) -> None:
    auth = RefreshingAuth(server)
    assert client(server, auth=auth).get_json("/auth") == {"ok": True}
    assert auth.refreshes == 1


def test_401_after_refresh_is_an_auth_error(server: Echo) -> None:
    auth = RefreshingAuth(server)
    server.valid_token = "something-else"
    with pytest.raises(AuthError):
        client(server, auth=auth).get_json("/auth")
    assert auth.refreshes == 1
    assert len(server.calls("/auth")) == 2


def test_user_agent_and_no_secret_in_errors_or_logs(server: Echo, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret = Secret(TOKEN)
    assert str(secret) == repr(secret) == "***"
    server.fault("status", path="/bad", status=503, count=1, body={"error": f"echoing your token {TOKEN}"})
    c = client(server, auth=BearerAuth(secret))
    with pytest.raises(HttpError) as info:
        c.get_json("/bad?token=" + TOKEN)
    assert TOKEN not in str(info.value)
    # Our own records never carry it (the stderr handler also masks third-party records: see test_security).
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("siem_forwarder")]
    assert ours and not any(TOKEN in m for m in ours)
    assert server.calls("/bad")[0].headers["User-Agent"].startswith("siem-forwarder/")
    assert server.calls("/bad")[0].headers["Authorization"] == f"Bearer {TOKEN}"


def test_stop_interrupts_a_retry_wait(server: Echo) -> None:
    server.fault("status", path="/ok", status=429, retry_after="30")
    stop = threading.Event()
    c = client(server, stop=stop)
    threading.Timer(0.3, stop.set).start()
    started = time.monotonic()
    with pytest.raises(TransportError):
        c.get_json("/ok")
    assert time.monotonic() - started < 5
