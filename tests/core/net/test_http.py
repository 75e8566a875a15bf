"""The core HTTP client against a real local server: retries, Retry-After, 401 refresh, redaction."""
from __future__ import annotations

import email.utils
import logging
import threading
import time

import pytest

from forwarder_core.errors import AuthError, HttpError, ResponseError, TransportError
from forwarder_core.metrics import Metrics
from forwarder_core.net.client import Auth, BearerAuth, HttpClient, parse_retry_after
from forwarder_core.net.waits import MAX_RETRY_AFTER, epoch_header, seconds_header
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


# ------------------------------------------------------------------ a plugin's own wait signal and the refused 401


class RateLimited(Echo):
    """Answers 429 with Okta's ``X-Rate-Limit-Reset`` (epoch seconds), no ``Retry-After``."""

    def __init__(self, reset_in: float, clock_offset: float = 0.0, body: dict | None = None) -> None:
        super().__init__()
        self.reset_in = reset_in
        self.clock_offset = clock_offset  # how far the server's clock is ahead of ours
        self.body = body or {"errorCode": "E0000047", "errorSummary": "API call exceeded rate limit"}
        self.limited = 1
        self.route("GET", "/limited", self._limited)

    def _limited(self, req):
        if self.limited <= 0:
            return json_response({"ok": True})
        self.limited -= 1
        server_now = time.time() + self.clock_offset
        headers = {"X-Rate-Limit-Reset": str(int(server_now + self.reset_in) + 1),
                   "Date": email.utils.formatdate(server_now, usegmt=True)}
        return json_response(self.body, 429, headers)


def _timed_get(c: HttpClient, path: str) -> float:
    started = time.monotonic()
    assert c.get_json(path) == {"ok": True}
    return time.monotonic() - started


def test_a_vendor_header_sets_the_wait_through_response_wait() -> None:
    with RateLimited(reset_in=1) as fake:
        plain = _timed_get(client(fake), "/limited")
        fake.limited = 1
        hinted = client(fake, response_wait=epoch_header("X-Rate-Limit-Reset"))
        waited = _timed_get(hinted, "/limited")
    assert plain < 0.5  # without the hint: the client's own short backoff
    assert 0.9 <= waited < 3.5
    assert hinted.metrics.get("rate_limit_wait_seconds_total", component="test") >= 0.9


def test_an_epoch_reset_is_measured_against_the_servers_clock() -> None:
    # The host clock is an hour behind the server's: reading the reset against our clock would
    # wait an hour (capped at 15 min); against the server's Date it is about a second.
    with RateLimited(reset_in=1, clock_offset=3600) as fake:
        waited = _timed_get(client(fake, response_wait=epoch_header("X-Rate-Limit-Reset")), "/limited")
    assert waited < 3.5


def test_a_wait_read_from_the_body_and_the_longer_of_it_and_retry_after(server: Echo) -> None:
    server.fault("status", path="/ok", status=503, retry_after="0", body={"retry_after_ms": 1200})
    c = client(server, response_wait=lambda r: r.json()["retry_after_ms"] / 1000)
    assert _timed_get(c, "/ok") >= 1.15
    server.fault("status", path="/ok", status=429, retry_after="1", body={"retry_after_ms": 10})
    assert _timed_get(c, "/ok") >= 0.95


def test_a_failing_response_wait_falls_back_to_backoff(server: Echo, caplog: pytest.LogCaptureFixture) -> None:
    server.fault("status", path="/ok", status=503, body={"no": "hint"})
    c = client(server, response_wait=lambda r: r.json()["retry_after_ms"])
    assert _timed_get(c, "/ok") < 1.0
    assert "response_wait failed" in caplog.text and "KeyError" in caplog.text


def test_seconds_header_and_caps() -> None:
    import requests

    response = requests.Response()
    response.headers["X-Wait-Ms"] = "2500"
    response.headers["X-Reset"] = str(int(time.time()) + 10**7)
    assert seconds_header("X-Wait-Ms", scale=0.001)(response) == 2.5
    assert epoch_header("X-Reset")(response) == MAX_RETRY_AFTER
    assert epoch_header("Absent")(response) is None and seconds_header("X-Reset-Bad")(response) is None


class VendorTextAuth(Auth):
    """Puts the vendor's refusal in its message: what the new refresh(client, response) is for."""

    def headers(self, client):
        return {"Authorization": "Bearer revoked"}

    def refresh(self, client, response):
        raise AuthError(f"the vendor refused the token: {response.json()['error']} ({response.status_code})")


def test_refresh_is_given_the_refused_response(server: Echo) -> None:
    with pytest.raises(AuthError, match=r"the vendor refused the token: invalid token \(401\)"):
        client(server, auth=VendorTextAuth()).get_json("/auth")
    assert len(server.calls("/auth")) == 1


def test_an_auth_written_for_refresh_client_alone_still_works(server: Echo) -> None:
    auth = RefreshingAuth(server)  # refresh(self, client): the signature before the response was passed
    assert client(server, auth=auth).get_json("/auth") == {"ok": True} and auth.refreshes == 1


def test_the_default_refresh_quotes_the_vendor(server: Echo) -> None:
    class Fixed(Auth):
        def headers(self, client):
            return {"Authorization": "Bearer nope"}

    with pytest.raises(AuthError, match=r"cannot be refreshed: .*invalid token"):
        client(server, auth=Fixed()).get_json("/auth")


def test_context_http_passes_response_wait(tmp_path) -> None:
    from forwarder_core.plugin_api import Context

    hint = epoch_header("X-Rate-Limit-Reset")
    ctx = Context(name="c", state_dir=str(tmp_path), logger=logging.getLogger("t"), metrics=Metrics())
    assert ctx.http({"base_url": "http://127.0.0.1:9"}, response_wait=hint).response_wait is hint
