"""A rate limit signalled by a status other than 429 (GitHub's 403), told to the client by the plugin."""
from __future__ import annotations

import email.utils
import time

import pytest

from forwarder_core.errors import AuthError, HttpError
from forwarder_core.metrics import Metrics
from forwarder_core.net.client import HttpClient
from forwarder_core.plugin_api import epoch_header, first_of, retry_after, when_header
from forwarder_core.testing import FakeServer, json_response

GITHUB_RATE_LIMIT = first_of(retry_after, when_header("x-ratelimit-remaining", "0", epoch_header("x-ratelimit-reset")))
"""What a GitHub source hands ``context.http(rate_limit=...)``: the secondary limit's Retry-After
first, else the hourly reset once the quota is spent."""


class GitHub(FakeServer):
    """Answers ``/audit-log`` with 403s carrying GitHub's rate-limit headers, then 200."""

    def __init__(self) -> None:
        super().__init__()
        self.refusals: list[dict[str, str]] = []
        self.route("GET", "/audit-log", self._audit_log)

    def _audit_log(self, req):
        if self.refusals:
            headers = {"Date": email.utils.formatdate(time.time(), usegmt=True), **self.refusals.pop(0)}
            return json_response({"message": "API rate limit exceeded"}, 403, headers)
        return json_response([{"action": "repo.create"}])


def _client(fake: FakeServer, waits: list[float], **kw) -> HttpClient:
    c = HttpClient(component="github", options={"base_url": fake.url, "timeout": 5}, metrics=Metrics(),
                   backoff_factor=0.01, **kw)
    c.sleep = waits.append  # type: ignore[method-assign]  # record what it would wait; waiting is not the point
    return c


def _hourly(reset_in: int, remaining: str = "0") -> dict[str, str]:
    return {"x-ratelimit-remaining": remaining, "x-ratelimit-reset": str(int(time.time()) + reset_in)}


def test_a_403_hourly_limit_waits_for_the_reset_instead_of_failing_as_refused_credentials() -> None:
    with GitHub() as fake:
        fake.refusals.append(_hourly(600))
        waits: list[float] = []
        c = _client(fake, waits, rate_limit=GITHUB_RATE_LIMIT)
        assert c.get_json("/audit-log") == [{"action": "repo.create"}]
    assert len(waits) == 1 and 590 <= waits[0] <= 601
    assert c.metrics.get("rate_limit_waits_total", component="github") == 1


def test_a_short_secondary_limit_retry_after_does_not_wait_for_the_hourly_reset() -> None:
    with GitHub() as fake:
        fake.refusals.append({"retry-after": "60", **_hourly(3000, remaining="12")})
        fake.refusals.append({"retry-after": "30", **_hourly(3000)})
        waits: list[float] = []
        assert _client(fake, waits, rate_limit=GITHUB_RATE_LIMIT).get_json("/audit-log") == [{"action": "repo.create"}]
    assert waits == [60.0, 30.0]


def test_a_403_that_is_not_a_rate_limit_is_still_refused_credentials() -> None:
    with GitHub() as fake:
        fake.refusals.append({"x-ratelimit-remaining": "4999", "x-ratelimit-reset": str(int(time.time()) + 600)})
        waits: list[float] = []
        with pytest.raises(AuthError, match="credentials refused"):
            _client(fake, waits, rate_limit=GITHUB_RATE_LIMIT).get_json("/audit-log")
    assert waits == []


def test_without_the_plugins_rate_limit_a_403_is_refused_credentials() -> None:
    with GitHub() as fake:
        fake.refusals.append(_hourly(600))
        with pytest.raises(AuthError):
            _client(fake, []).get_json("/audit-log")


def test_a_rate_limit_that_outlasts_every_try_is_an_http_error_not_an_auth_error() -> None:
    with GitHub() as fake:
        fake.refusals.extend([{"retry-after": "1"}] * 3)
        waits: list[float] = []
        with pytest.raises(HttpError, match="403") as caught:
            _client(fake, waits, rate_limit=GITHUB_RATE_LIMIT, max_tries=3).get_json("/audit-log")
    assert not isinstance(caught.value, AuthError) and waits == [1.0, 1.0]


def test_context_http_passes_rate_limit(tmp_path) -> None:
    import logging

    from forwarder_core.plugin_api import Context

    ctx = Context(name="github", state_dir=str(tmp_path), logger=logging.getLogger("t"), metrics=Metrics())
    assert ctx.http({"base_url": "http://127.0.0.1:9"}, rate_limit=GITHUB_RATE_LIMIT).rate_limit is GITHUB_RATE_LIMIT
